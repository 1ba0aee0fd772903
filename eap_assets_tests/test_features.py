"""Amplitude/width features on synthetic waveforms with known answers, and probe grids."""

from __future__ import annotations

import numpy as np
import pytest

from eap_assets.core import features
from eap_assets.core.probe import ProbeError, get_probe, probe_grid

DT = 2**-5
T = 224


def _bump(centre: int, height: float, width: float = 4.0) -> np.ndarray:
    return height * np.exp(-0.5 * ((np.arange(T) - centre) / width) ** 2)


def test_ordinary_spike():
    wave = _bump(70, -100.0) + _bump(100, 40.0)
    amp, width = features.amplitude_width(wave[None], DT)
    assert amp[0] == pytest.approx(140.0, rel=1e-3)
    assert width[0] == pytest.approx(30 * DT)


def test_positive_first_spike_ignores_the_initial_positive_peak():
    wave = _bump(40, 80.0) + _bump(70, -100.0) + _bump(120, 20.0)
    amp, width = features.amplitude_width(wave[None], DT)
    assert amp[0] == pytest.approx(120.0, rel=1e-3)
    assert width[0] == pytest.approx(50 * DT)


def test_channel_below_5_uv_and_flat_channel():
    small = _bump(70, -3.0) + _bump(90, 1.0)
    flat = np.zeros(T)
    amp, width = features.amplitude_width(np.stack([small, flat]), DT)
    assert amp.tolist() == [0.0, 0.0]
    assert width.tolist() == [7.0, 7.0]  # the whole 224-sample window


def test_trough_at_the_last_sample_is_silent():
    wave = np.linspace(0, -50, T)
    amp, width = features.amplitude_width(wave[None], DT)
    assert amp[0] == 0.0 and width[0] == 7.0


def test_sqmea_grid_matches_meautility_layout():
    import MEAutility as mu

    grid = probe_grid("SqMEA-10-15")
    assert grid.shape == (10, 10)
    mea = mu.return_mea("SqMEA-10-15")
    for contact in range(100):
        assert mea.get_linear_id(grid.row[contact], grid.col[contact]) == contact
    pos = get_probe("SqMEA-10-15").positions
    # rows follow z, columns follow y, both increasing
    assert np.all(np.diff(pos[grid.row == 0][:, 1]) > 0)
    assert np.all(pos[grid.col == 0][np.argsort(grid.row[grid.col == 0])][:, 2] == np.arange(-67.5, 68, 15))


def test_feature_images_shape_and_layout():
    eaps = np.zeros((2, 100, T))
    eaps[1, 37] = _bump(70, -100.0) + _bump(100, 40.0)
    images = features.feature_images(eaps, DT)
    grid = probe_grid()
    assert images.shape == (2, 10, 10, 2) and images.dtype == np.float32
    assert images[1, grid.row[37], grid.col[37], 0] == pytest.approx(140.0, rel=1e-3)
    assert np.count_nonzero(images[..., 0]) == 1
    assert np.all(images[0, ..., 1] == 7.0)


def test_other_grid_probe_works_and_unknown_probe_is_refused():
    assert probe_grid("SqMEA-5-30").shape == (5, 5)
    assert probe_grid("SqMEA-5-30").hole_row.size == 0
    with pytest.raises(ProbeError, match="'NoSuchProbe' is neither a MEAutility probe"):
        get_probe("NoSuchProbe")


def test_bad_eap_shapes_and_values():
    with pytest.raises(ValueError, match=r"shape \(N, 100, n_samples\)"):
        features.feature_images(np.zeros((2, 64, T)), DT)
    eaps = np.zeros((3, 100, T))
    eaps[2, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in EAP rows \[2\]"):
        features.feature_images(eaps, DT)


def _dataset(n: int = 6, seed: int = 0):
    from eap_assets.core.eaps import EAPDataset

    rng = np.random.default_rng(seed)
    eaps = np.zeros((n, 100, T), dtype=np.float32)
    eaps[:, :, :] = rng.normal(0, 1, size=(n, 100, T))
    eaps[:, 7, :] += _bump(70, -100.0) + _bump(100, 40.0)  # contact 7 carries the spike
    return EAPDataset(cell_name="L5_BP_bAC217_1", rotation="zrot", probe="SqMEA-10-15", eaps=eaps,
                      positions=rng.uniform(10, 60, (n, 3)), rotations=np.repeat(np.eye(3)[None], n, axis=0),
                      spike_index=np.arange(n) % 3, candidate_index=np.arange(n) * 2, tries=2 * n, dt=DT)


def test_feature_table_rows_labels_and_schema():
    dataset = _dataset()
    table = features.feature_table(dataset, "BP", excitatory=False)
    assert len(table) == 6 and table["eap_id"].tolist() == list(range(6))
    assert set(table["ei"]) == {"I"} and set(table["mtype"]) == {"BP"} and set(table["rotation"]) == {"zrot"}
    assert features.schema_problems(table, 100) == [] and features.nonfinite_columns(table) == []
    assert np.allclose(table["amplitude_max_uv"], table["amp_c007"])
    assert np.allclose(table["peak_to_peak_uv"], np.ptp(dataset.eaps, axis=-1).max(axis=-1))
    images = features.images_from_table(table)
    assert np.array_equal(images, features.feature_images(dataset.eaps, DT))  # same images either way


def test_feature_table_problems_are_reported():
    table = features.feature_table(_dataset(), "BP", excitatory=False)
    broken = table.drop(columns=["width_c099"]).astype({"amp_c000": "float64"})
    problems = features.schema_problems(broken, 100)
    assert any("width_c099" in p for p in problems) and any("'amp_c000' has dtype float64" in p for p in problems)
    table.loc[2, "amp_c003"] = np.nan
    assert features.nonfinite_columns(table) == ["amp_c003"]
    dataset = _dataset()
    dataset.eaps[4, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf in EAP rows \\[4\\]"):
        features.feature_table(dataset, "BP", excitatory=False)
