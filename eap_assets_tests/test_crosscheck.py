"""Cross-check data made by MEArec's own code: templates, a recording and a SortingAnalyzer.

Real components at small scale: two BBP cells (BP and UTPC -- the pyramidal cell whose 0.5 s
current search keeps the most spikes) simulated by MEArec's ``simulate_templates_one_cell`` in
spawn subprocesses, 4 templates each, 5 s recordings at 32 and 30 kHz with 2 units per cell.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from eap_assets.core import cells
from eap_assets.core import crosscheck as cc

BP = "L5_BP_bAC217_1"
UTPC = "L5_UTPC_cADpyr232_1"
N_PER_CELL = 4
SEED = 3
SIM_TIME_S = 0.5
PER_CELL = 2
MIN_AMP = 30.0


@pytest.fixture(scope="module")
def two_models(models):
    return [models[BP], models[UTPC]]


@pytest.fixture(scope="module")
def templates_file(tmp_path_factory, two_models):
    out = tmp_path_factory.mktemp("crosscheck") / "templates.h5"
    cwd = os.getcwd()
    messages: list[str] = []
    cc.mearec_templates(two_models, out, N_PER_CELL, seed=SEED, sim_time_s=SIM_TIME_S, min_amp=MIN_AMP,
                        log=messages.append, n_jobs=2)
    assert os.getcwd() == cwd  # MEArec ran in subprocesses
    return out, messages


@pytest.fixture(scope="module", params=[None, 30000.0], ids=["32kHz", "30kHz"])
def recording(request, templates_file, tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "recording.h5"
    cc.mearec_recording(templates_file[0], path, fs_hz=request.param, duration_s=5.0, seed=1, per_cell=PER_CELL,
                        min_amp=MIN_AMP, max_amp=1e4, log=lambda _: None)
    return path, request.param


@pytest.fixture(scope="module")
def analyzer(recording, tmp_path_factory):
    folder = tmp_path_factory.mktemp("an") / "analyzer"
    return cc.build_analyzer(recording[0], folder, ms_before=1.0, ms_after=2.0, seed=0) + (folder,)


def _expected_units(tempgen) -> dict[str, list[int]]:
    """The first PER_CELL templates of each cell whose amplitude lies in [MIN_AMP, 1e4]."""
    amps = np.abs(tempgen.templates.reshape(len(tempgen.templates), -1).min(axis=1))
    out = {}
    for cell in (BP, UTPC):
        idx = [i for i in np.flatnonzero(tempgen.celltypes == cell) if MIN_AMP <= amps[i] <= 1e4]
        out[cell] = idx[:PER_CELL]
    return out


# -- parameters, alignment, selection (no MEArec simulation) -----------------------------------------------------

def test_template_params_keep_mearec_defaults_and_refuse_physrot():
    params = cc.mearec_template_params(n_per_cell=7, seed=5, sim_time_s=0.5, min_amp=40)
    assert (params["probe"], params["rot"], params["n"], params["seed"]) == ("SqMEA-10-15", "3drot", 7, 5)
    assert params["dt"] == 2**-5 and params["cut_out"] == [2.0, 5.0] and params["xlim"] == [10.0, 80.0]
    assert params["sim_time"] == 0.5 and params["min_amp"] == 40.0
    # MEArec's own defaults for the rest
    assert params["ncontacts"] == 10 and params["check_eap_shape"] is True and params["overhang"] == 30
    assert params["target_spikes"] == [3, 50] and params["ylim"] is None
    with pytest.raises(ValueError, match="physrot"):
        cc.mearec_template_params(rotation="physrot")
    assert cc.cell_seed(0, BP) == cc.cell_seed(0, BP) != cc.cell_seed(1, BP) != cc.cell_seed(0, UTPC)


def test_bbp_alignment_reproduces_mearec_bbp_rotations(models):
    """Pre-rotating by +pi/2 about x, then MEArec's angles == MEArec's BBP angles (x + pi/2) on the raw cell."""
    cell = cc.return_cell(models[BP].path, 5.0, 2**-5, bbp_alignment=False)

    def points():
        return np.column_stack([cell.x[:, 0], cell.y[:, 0], cell.z[:, 0]]).copy()

    raw = points()
    cell.set_rotation(x=np.pi / 2)
    aligned = points()
    assert np.ptp(raw[:, 1]) == pytest.approx(np.ptp(aligned[:, 2]), rel=1e-5)  # BBP y axis -> z
    x, y, z = 0.3, -1.1, 2.0
    cell.set_rotation(x=x, y=y, z=z)
    custom = points()
    cell.set_rotation(-x, -y, -z, rotation_order="zyx")  # MEArec's reverse rotation
    cell.set_rotation(x=-np.pi / 2)
    assert np.abs(points() - raw).max() < 1e-4
    cell.set_rotation(x=x + np.pi / 2, y=y, z=z)
    assert np.abs(points() - custom).max() < 1e-3  # µm, float32 coordinates


def test_select_units_is_per_cell_ordered_and_names_short_cells():
    celltypes = np.array([BP] * 4 + [UTPC] * 4)
    locations = np.array([[20, 0, 0], [20, 50, 0], [20, 5, 0], [20, 100, 0],
                          [30, 0, 50], [30, 0, 100], [30, 0, 150], [30, 0, 200]], dtype=float)
    amps = np.array([60, 20, 80, 70, 400, 90, 100, 301], dtype=float)
    ids = cc.select_units(celltypes, locations, amps, per_cell=2, min_amp=50, max_amp=300, min_dist=10)
    # BP: 0 in range, 1 too small, 2 too close to 0, 3 ok; UTPC: 4 and 7 too large, 5, 6. Excitatory first.
    assert ids.tolist() == [5, 6, 0, 3]
    with pytest.raises(cc.CrosscheckError, match=f"{BP}: 3 of 4 templates .* 2 of them at least 10") as err:
        cc.select_units(celltypes, locations, amps, per_cell=3, min_amp=50, max_amp=300, min_dist=10)
    assert f"{UTPC}: 2 of 4" in str(err.value)
    assert sorted(cc.select_units(celltypes, locations, amps, None, 50, 300, 0).tolist()) == [0, 2, 3, 5, 6]


# -- MEArec templates ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_templates_file_is_mearec_format_with_our_cells(templates_file):
    import MEArec

    path, messages = templates_file
    tempgen = MEArec.load_templates(path, return_h5_objects=False, verbose=False)
    assert tempgen.templates.shape == (2 * N_PER_CELL, 100, 224)
    assert tempgen.templates.dtype == np.float32
    assert tempgen.celltypes.tolist() == [BP] * N_PER_CELL + [UTPC] * N_PER_CELL
    amps = cc.template_amplitudes(tempgen.templates)
    assert np.all(amps >= MIN_AMP)
    # MEArec centres the trough (over all contacts) at the cut-out's 2 ms: sample 64 at 32 kHz
    troughs = [np.unravel_index(np.argmin(t), t.shape)[1] for t in tempgen.templates]
    assert troughs == [64] * len(troughs)
    # negative peak larger than positive (MEArec's shape check)
    assert np.all(np.abs(tempgen.templates.min(axis=(1, 2))) >= tempgen.templates.max(axis=(1, 2)))
    loc = tempgen.locations
    assert loc.shape == (2 * N_PER_CELL, 3) and np.all((loc[:, 0] >= 10) & (loc[:, 0] <= 80))
    assert np.all(np.abs(loc[:, 1:]) <= 67.5 + 30)  # probe +- MEArec's 30 µm overhang
    assert tempgen.rotations.shape == (2 * N_PER_CELL, 3)
    params = tempgen.info["params"]
    assert (params["probe"], params["rot"], int(params["n"]), int(params["seed"])) == ("SqMEA-10-15", "3drot",
                                                                                      N_PER_CELL, SEED)
    assert float(params["dt"]) == 2**-5 and float(params["sim_time"]) == SIM_TIME_S
    electrodes = tempgen.info["electrodes"]
    assert electrodes["electrode_name"] == "SqMEA-10-15" and int(electrodes["dim"]) == 10
    extra = tempgen.info["eap_assets"]
    assert int(extra["cell_seeds"][BP]) == cc.cell_seed(SEED, BP)
    assert int(extra["intracellular_spikes"][UTPC]) > 3  # MEArec's search: 3 < spikes <= 50, first one dropped
    assert any(BP in m and "intracellular spikes" in m for m in messages)


@pytest.mark.slow
def test_same_seed_gives_identical_templates(templates_file, models, tmp_path):
    import MEArec

    first = MEArec.load_templates(templates_file[0], return_h5_objects=False, verbose=False)
    again = cc.mearec_templates([models[BP]], tmp_path / "again.h5", N_PER_CELL, seed=SEED, sim_time_s=SIM_TIME_S,
                                min_amp=MIN_AMP, work_dir=tmp_path / "work", log=lambda _: None)
    second = MEArec.load_templates(again, return_h5_objects=False, verbose=False)
    bp = first.celltypes == BP
    np.testing.assert_array_equal(second.templates, first.templates[bp])
    np.testing.assert_array_equal(second.locations, first.locations[bp])
    np.testing.assert_array_equal(second.rotations, first.rotations[bp])
    # work_dir keeps MEArec's intracellular simulation and the log, keyed by the intracellular settings
    assert len(list((tmp_path / "work").glob(f"{BP}-*/imem_*_{BP}.npy"))) == 1
    assert not list(tmp_path.glob(".again.h5*"))  # no temporaries left


def _broken_copy(models, tmp_path: Path, name: str) -> cells.CellModel:
    folder = tmp_path / "models" / name
    shutil.copytree(models[BP].path, folder, ignore=shutil.ignore_patterns("x86_64", "__pycache__"))
    return cells.read_cell_model(folder)


@pytest.mark.slow
def test_a_cell_that_does_not_load_is_named(models, tmp_path):
    model = _broken_copy(models, tmp_path, "L5_BP_bAC217_8")
    model.morphology.write_text("(garbage\n")
    cwd = os.getcwd()
    with pytest.raises(cc.CrosscheckError, match="L5_BP_bAC217_8.*MEArec failed"):
        cc.mearec_templates([model], tmp_path / "t.h5", 2, sim_time_s=0.05, log=lambda _: None)
    assert os.getcwd() == cwd and not (tmp_path / "t.h5").exists()


@pytest.mark.slow
def test_a_cell_mearec_cannot_make_fire_is_named_not_fatal(models, tmp_path):
    """MEArec's current search calls sys.exit() after 10 tries: the caller survives with a clear error."""
    model = _broken_copy(models, tmp_path, "L5_BP_bAC217_9")
    bio = model.path / "biophysics.hoc"
    text, n = re.subn(r'(distribute\(\$o1\.\w+,"gNa\w+",)"[^"]*"', r'\1"(0.0 * %g)"', bio.read_text())
    assert n > 0
    bio.write_text(text)  # no sodium channels: the cell never fires
    with pytest.raises(cc.CrosscheckError, match="L5_BP_bAC217_9.*current search.*sys.exit"):
        cc.mearec_templates([model], tmp_path / "t.h5", 2, sim_time_s=0.05, log=lambda _: None)
    assert not (tmp_path / "t.h5").exists()


# -- recording ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_recording_holds_exactly_the_selected_units(recording, templates_file):
    import MEArec
    from spikeinterface.extractors import read_mearec

    path, fs = recording
    tempgen = MEArec.load_templates(templates_file[0], return_h5_objects=False, verbose=False)
    expected = _expected_units(tempgen)
    table = cc.ground_truth(path)
    assert len(table) == 2 * PER_CELL
    assert table["cell"].value_counts().to_dict() == {BP: PER_CELL, UTPC: PER_CELL}
    for cell, idx in expected.items():
        assert sorted(table.loc[table["cell"] == cell, "template_index"]) == idx
    assert table["unit_id"].tolist() == [f"#{i}" for i in range(2 * PER_CELL)]  # SpikeInterface's ids
    assert table["ei"].tolist() == ["E"] * PER_CELL + ["I"] * PER_CELL  # MEArec puts excitatory units first
    assert (table["ei"] == table["mearec_bintype"]).all()
    assert (table["n_spikes"] > 0).all()
    # ground truth agrees with the template file: position and amplitude of each unit's template
    amps = cc.template_amplitudes(tempgen.templates)
    for row in table.itertuples():
        assert tempgen.celltypes[row.template_index] == row.cell
        np.testing.assert_allclose([row.soma_x, row.soma_y, row.soma_z], tempgen.locations[row.template_index])
        assert row.amplitude_uv == pytest.approx(amps[row.template_index], rel=1e-5)
    rec, sorting = read_mearec(path)
    assert rec.get_sampling_frequency() == (32000.0 if fs is None else fs)
    assert rec.get_num_channels() == 100 and rec.get_num_samples() == int(5.0 * rec.get_sampling_frequency())
    assert sorting.get_num_units() == 2 * PER_CELL


def test_too_few_templates_for_the_recording_names_the_cell(templates_file, tmp_path):
    with pytest.raises(cc.CrosscheckError, match=f"{BP}: .* {N_PER_CELL + 1} needed"):
        cc.mearec_recording(templates_file[0], tmp_path / "r.h5", duration_s=1.0, per_cell=N_PER_CELL + 1,
                            min_amp=MIN_AMP, max_amp=1e4, log=lambda _: None)
    assert not (tmp_path / "r.h5").exists()


# -- SortingAnalyzer ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_analyzer_templates_and_ground_truth_agree(analyzer, recording):
    import spikeinterface as si

    sa, table, folder = analyzer
    fs = 32000.0 if recording[1] is None else recording[1]
    assert sa.sampling_frequency == fs
    templates = sa.get_extension("templates").get_data()
    n_before, n_after = int(round(1.0 * fs / 1000)), int(round(2.0 * fs / 1000))
    assert templates.shape == (2 * PER_CELL, n_before + n_after, 100)  # (units, samples, channels)
    for k, t in enumerate(templates):
        sample, _ = np.unravel_index(np.argmin(t), t.shape)
        assert abs(sample - n_before) <= 2, f"unit {sa.unit_ids[k]}: trough at {sample}, expected ~{n_before}"
    assert list(table["unit_id"]) == [str(u) for u in sa.unit_ids]
    # each analyzer template's footprint (|min| per channel) matches its own ground-truth template best
    footprint = np.abs(templates.min(axis=1))
    import MEArec

    peaks = np.asarray(MEArec.load_recordings(recording[0], return_h5_objects=False, load=["voltage_peaks"],
                                              verbose=False).voltage_peaks)
    corr = np.corrcoef(footprint, peaks)[: len(footprint), len(footprint):]
    assert np.argmax(corr, axis=1).tolist() == list(range(len(footprint)))
    assert (table["analyzer_peak_channel"] == table["peak_channel"]).mean() >= 0.75
    # band-pass (and averaging) shrink the trough; it stays within a plausible range of the raw template's
    ratio = table["analyzer_amplitude_uv"] / table["amplitude_uv"]
    assert ratio.between(0.4, 1.2).all(), ratio.tolist()
    assert {"templates", "noise_levels", "random_spikes"} <= set(sa.get_loaded_extension_names())
    reloaded = si.load_sorting_analyzer(folder)
    np.testing.assert_array_equal(reloaded.get_extension("templates").get_data(), templates)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
