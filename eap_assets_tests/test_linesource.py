"""The vectorised EAP engine against LFPy's and lfpykit's own line-source computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from eap_assets.core import cells, linesource, rotations
from eap_assets.core.eaps import EAPEngine, low_rank_factors
from eap_assets.core.probe import get_probe

from .conftest import INTERNEURON, PYRAMIDAL

N_PLACEMENTS = 20


def _placements(mode: str, templates, rng: np.random.Generator, n: int):
    """Random placements in the paper's box, plus two with a contact inside a segment's radius."""
    rots = rotations.full_rotations(mode, n + 2, rng, mtype="BP")
    pos = rng.uniform([10, -75, -75], [60, 75, 75], size=(n + 2, 3))
    contacts = get_probe().positions
    soma_radius = templates.seg_diam[0] / 2
    # soma axis passes at 0.3 and 0.6 radius from contacts 44 and 55
    pos[n] = contacts[44] + [0.3 * soma_radius, 0, 0]
    pos[n + 1] = contacts[55] + [0.6 * soma_radius, 0, 0]
    spikes = rng.integers(0, templates.n_spikes, size=n + 2)
    return rots, pos, spikes


def _lfpy_reference(model, templates, rotation, position, spike):
    """EAP computed the LFPy way: LFPy rotates and moves its own cell, RecExtElectrode maps currents."""
    import LFPy

    cell = cells.load_lfpy_cell(model, tstop=1.0)
    angles = Rotation.from_matrix(rotation).as_euler("xyz")  # extrinsic x, then y, then z = LFPy's 'xyz'
    cell.set_rotation(x=angles[0], y=angles[1], z=angles[2], rotation_order="xyz")
    cell.set_pos(*position)
    contacts = get_probe().positions
    electrode = LFPy.RecExtElectrode(cell, x=contacts[:, 0], y=contacts[:, 1], z=contacts[:, 2], sigma=0.3,
                                     method="linesource")
    return 1000.0 * electrode.get_transformation_matrix() @ templates.imem[spike]


@pytest.mark.parametrize("mode", rotations.PAPER_ROTATIONS)
def test_engine_equals_lfpy_for_every_rotation_mode(models, bp_templates, mode):
    rng = np.random.default_rng(["norot", "zrot", "xrot", "3drot"].index(mode))
    rots, pos, spikes = _placements(mode, bp_templates, rng, N_PLACEMENTS)
    ours = EAPEngine(bp_templates, dtype=np.float64).compute(rots, pos, spikes)
    for b in range(len(pos)):
        ref = _lfpy_reference(models[INTERNEURON], bp_templates, rots[b], pos[b], spikes[b])
        rel = np.abs(ours[b] - ref).max() / np.abs(ref).max()
        assert rel <= 1e-6, f"placement {b}: relative error {rel:.2e}"


def test_close_placements_really_hit_the_radius_limit(bp_templates):
    rng = np.random.default_rng(0)
    rots, pos, _ = _placements("3drot", bp_templates, rng, 0)
    start, end = linesource.place_segments(bp_templates.seg_start, bp_templates.seg_end, bp_templates.soma_pos,
                                           rots, pos)
    r_limit = bp_templates.seg_diam / 2
    clamped = linesource.linesource_matrix(start, end, r_limit, get_probe().positions)
    free = linesource.linesource_matrix(start, end, np.zeros_like(r_limit), get_probe().positions)
    assert np.any(clamped != free, axis=(1, 2)).all()  # both placements are affected by the limit


def test_matrix_equals_lfpykit_function_on_the_same_geometry(ttpc1_templates):
    from lfpykit import lfpcalc

    rng = np.random.default_rng(7)
    rots, pos, _ = _placements("3drot", ttpc1_templates, rng, 6)
    start, end = linesource.place_segments(ttpc1_templates.seg_start, ttpc1_templates.seg_end,
                                           ttpc1_templates.soma_pos, rots, pos)
    r_limit = ttpc1_templates.seg_diam / 2
    contacts = get_probe().positions
    ours = linesource.linesource_matrix(start, end, r_limit, contacts)
    for b in range(len(pos)):
        ref = np.stack([lfpcalc.calc_lfp_linesource(np.column_stack([start[b, :, 0], end[b, :, 0]]),
                                                    np.column_stack([start[b, :, 1], end[b, :, 1]]),
                                                    np.column_stack([start[b, :, 2], end[b, :, 2]]),
                                                    *c, sigma=0.3, r_limit=r_limit) for c in contacts])
        np.testing.assert_allclose(ours[b], ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def test_pyramidal_engine_equals_lfpy(models, ttpc1_templates):
    rng = np.random.default_rng(11)
    rots, pos, spikes = _placements("3drot", ttpc1_templates, rng, 3)
    ours = EAPEngine(ttpc1_templates, dtype=np.float64).compute(rots, pos, spikes)
    for b in range(len(pos)):
        ref = _lfpy_reference(models[PYRAMIDAL], ttpc1_templates, rots[b], pos[b], spikes[b])
        assert np.abs(ours[b] - ref).max() <= 1e-6 * np.abs(ref).max()


def test_mea_plane_doubles_the_infinite_medium(bp_templates):
    rng = np.random.default_rng(3)
    rots, pos, spikes = _placements("zrot", bp_templates, rng, 4)
    infinite = EAPEngine(bp_templates, medium="infinite").compute(rots, pos, spikes)
    plane = EAPEngine(bp_templates, medium="mea_plane").compute(rots, pos, spikes)
    np.testing.assert_allclose(plane, 2 * infinite, rtol=1e-12)
    with pytest.raises(ValueError, match="medium 'saline' unknown"):
        EAPEngine(bp_templates, medium="saline")


#: Largest difference of the float32 engine (low-rank currents) from float64, relative to each EAP's peak
#: (measured: < 1e-5 for TTPC1, BP, SBC, NGC; float32 rounding alone gives ~5e-6).
FLOAT32_TOLERANCE = 5e-5


@pytest.mark.parametrize("cell", ["bp_templates", "ttpc1_templates"])
def test_float32_engine_is_close_to_float64(request, cell):
    templates = request.getfixturevalue(cell)
    rng = np.random.default_rng(5)
    rots, pos, spikes = _placements("3drot", templates, rng, 40)
    f64 = EAPEngine(templates, dtype=np.float64).compute(rots, pos, spikes)
    f32 = EAPEngine(templates, dtype=np.float32).compute(rots, pos, spikes)
    assert f32.dtype == np.float32
    peaks = np.abs(f64).max(axis=(1, 2))
    assert np.all(np.abs(f32 - f64).max(axis=(1, 2)) <= FLOAT32_TOLERANCE * peaks)
    exact32 = EAPEngine(templates, dtype=np.float32, rank_tol=0.0).compute(rots, pos, spikes)
    assert np.all(np.abs(exact32 - f64).max(axis=(1, 2)) <= FLOAT32_TOLERANCE * peaks)


def test_low_rank_factors_reproduce_the_currents(ttpc1_templates):
    currents = ttpc1_templates.imem[0]
    u, v = low_rank_factors(currents, 1e-7, np.float64)
    assert u.shape[1] == v.shape[0] < currents.shape[1] // 2
    assert np.abs(u @ v - currents).max() <= 1e-6 * np.abs(currents).max()
    (exact,) = low_rank_factors(currents, 0.0, np.float32)
    np.testing.assert_array_equal(exact, currents.astype(np.float32))


def test_engine_frame_equals_placed_geometry(ttpc1_templates):
    """Moving the contacts into the cell's frame gives the matrices of the rotated and moved cell."""
    rng = np.random.default_rng(2)
    rots, pos, _ = _placements("3drot", ttpc1_templates, rng, 3)
    r_limit = ttpc1_templates.seg_diam / 2
    contacts = get_probe().positions
    start, end = linesource.place_segments(ttpc1_templates.seg_start, ttpc1_templates.seg_end,
                                           ttpc1_templates.soma_pos, rots, pos)
    placed = linesource.linesource_matrix(start, end, r_limit, contacts)
    geometry = linesource.SegmentGeometry.from_segments(ttpc1_templates.seg_start, ttpc1_templates.seg_end, r_limit,
                                                        origin=ttpc1_templates.soma_pos)
    local = geometry.to_local(contacts, rots, pos)
    for b in range(len(pos)):
        np.testing.assert_allclose(geometry.matrix(local[b]), placed[b], rtol=1e-9, atol=1e-12 * np.abs(placed).max())


def test_every_case_of_the_line_source_formula_equals_lfpykit():
    """Contacts beyond either end, beside the segment, on its axis and inside its radius."""
    from lfpykit import lfpcalc

    start = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [-20.0, 3.0, 1.0]])
    end = np.array([[0.0, 0.0, 20.0], [5.0, 25.0, 5.0], [-20.0, 3.0, 1.5]])
    r_limit = np.array([1.0, 0.5, 0.2])
    points = np.array([[3.0, 0.0, 30.0], [3.0, 0.0, -12.0], [2.0, 1.0, 10.0], [0.0, 0.0, 25.0], [0.0, 0.0, -3.0],
                       [0.3, 0.0, 4.0], [0.0, 0.0, 10.0], [5.0, 5.1, 5.0], [-20.0, 3.0, 1.2], [40.0, -30.0, 7.0]])
    # float32: the log of a ratio near 1 (a short segment far away) keeps ~1e-5 relative precision
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 3e-5)):
        ours = linesource.linesource_matrix(start, end, r_limit, points, dtype=dtype)
        ref = np.stack([lfpcalc.calc_lfp_linesource(np.column_stack([start[:, 0], end[:, 0]]),
                                                    np.column_stack([start[:, 1], end[:, 1]]),
                                                    np.column_stack([start[:, 2], end[:, 2]]),
                                                    *p, sigma=0.3, r_limit=r_limit) for p in points])
        np.testing.assert_allclose(ours, ref, rtol=rtol)
