"""Classifying real sorted units, end to end at small scale, through a real Dagster instance, MLflow store,
MEArec and SpikeInterface: the recording family and the served unit classifiers trained by ``eap-assets run``
(stage ``recording``), the cross-simulator check on MEArec's own templates and recordings read back by
SpikeInterface (stage ``crosscheck``), and ``eap_assets.classify`` on every input kind, with bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from eap_assets import cli, registry
from eap_assets.core.probe import ProbeGeometryError, model_plane_positions
from eap_assets.core.recording import InputError
from eap_assets.defs.recording import MARGINAL
from eap_assets.defs.resources import SimulationSettings
from eap_assets.serving import classify

CELLS = ("L5_SBC_bNAC219_1", "L5_UTPC_cADpyr232_1")  # the cheapest inhibitory and excitatory cells
N_EAPS = 40


@pytest.fixture(scope="module")
def trained(dagster_home, tmp_path_factory):
    """Cells -> recording EAPs -> training set -> 3 kinds -> unit classifiers -> MEArec cross-check, via the CLI."""
    data = tmp_path_factory.mktemp("data")
    code = cli.main(["run", "--quick", "--cells", ",".join(CELLS), "--rotations", "3drot", "--n-eaps", str(N_EAPS),
                     "--stages", "cells,recording,crosscheck", "--data-dir", str(data), "--workers", "2",
                     "--cnn-steps", "40", "--cnn-batch-size", "32"])
    assert code == 0
    settings = SimulationSettings(data_dir=str(data), preset="quick", n_eaps=N_EAPS)
    registry.configure(registry.default_tracking_uri(settings.data_path), "eap_assets")
    return settings


def _latest(asset: str, partition: str | None = None):
    instance = dg.DagsterInstance.get()
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=None if partition is None else [partition]),
        limit=1).records
    assert records, f"{asset} {partition} not materialised"
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_the_recording_family_and_the_unit_classifiers_are_registered(trained):
    for task in ("binary", "mtype"):
        partition = f"3drot|{task}"
        for kind in registry.KINDS:
            md = _latest(f"recording_{kind}_model", partition)
            assert md["registered model"] == f"recording_{kind}_SqMEA-10-15_3drot_{task}"
            assert 0 <= md["validation accuracy"] <= 1
        md = _latest("unit_classifier", partition)
        assert md["registered model"] == f"unit_classifier_SqMEA-10-15_3drot_{task}" and md["alias"] == "champion"
        report = json.loads((trained.data_path / "unit_classifier" / "3drot" / f"{task}.json").read_text())
        candidates = [row["kind"] for row in report["kinds"]]
        marginals = [f"{kind} ({MARGINAL})" for kind in registry.KINDS] if task == "binary" else []
        assert candidates == [*registry.KINDS, *marginals]  # E/I also from each kind's m-type model
        assert md["kind"] in candidates and 0 <= md["ECE test (calibrated)"] <= 1
        assert "data:image/png;base64" in md["reliability diagram"]
        best = max(report["kinds"], key=lambda row: row["validation accuracy"])
        assert report["kind"] == best["kind"]  # the champion is the candidate best on the realistic validation split
        assert report["calibration"]["temperature"] > 0
    table = pd.read_parquet(trained.data_path / "recording_training_set" / "3drot.parquet")
    assert set(table["cell"]) == set(CELLS) and set(table["split"]) == {"train", "validation", "test"}
    found = registry.registered_classifiers(rotation="3drot")
    assert set(found["task"]) == {"binary", "mtype"} and set(found["probe"]) == {"SqMEA-10-15"}


def test_the_e_i_marginal_of_the_m_type_models_is_scored_as_a_binary_candidate(trained):
    from eap_assets.core.recording_set import table_proba
    from eap_assets.defs.resources import RecordingSettings

    table = pd.read_parquet(trained.data_path / "recording_training_set" / "3drot.parquet")
    validation = table[table["split"] == "validation"]
    report = json.loads((trained.data_path / "unit_classifier" / "3drot" / "binary.json").read_text())
    rows = {row["kind"]: row for row in report["kinds"]}
    spec = RecordingSettings().spec(trained)
    for kind in registry.KINDS:
        row = rows[f"{kind} ({MARGINAL})"]
        name, version = row["source_model"].split("/")
        assert name == f"recording_{kind}_SqMEA-10-15_3drot_mtype"  # the m-type model, not the binary one
        loaded = registry.load_registered(name, version=version)
        proba = pd.DataFrame(table_proba(kind, loaded.model, validation, spec, loaded.classes), columns=loaded.classes)
        excitatory = set(validation.loc[validation["ei"] == "E", "mtype"])
        p_e = proba[[m for m in loaded.classes if m in excitatory]].sum(axis=1).to_numpy()
        answer = np.where(p_e >= 0.5, "E", "I")  # by hand: summed m-type probabilities, E where they make half
        assert row["validation accuracy"] == pytest.approx((answer == validation["ei"].to_numpy()).mean())
    champion = registry.load_classifier(registry.classifier_name("SqMEA-10-15", "3drot", "binary")).classifier
    assert champion.classes == ["E", "I"]
    assert (champion.model_classes is not None) == report["kind"].endswith(f"({MARGINAL})")


@pytest.mark.parametrize("task", ["binary", "mtype"])
def test_a_served_classifier_answers_the_same_in_a_fresh_process(trained, tmp_path, task):
    windows = np.random.default_rng(0).normal(0, 20, size=(5, 100, 96)).astype(np.float32)
    windows[:, 44, 32] -= 150.0
    np.save(tmp_path / "w.npy", windows)
    name = registry.classifier_name("SqMEA-10-15", "3drot", task)
    here = registry.load_classifier(name).classifier.predict(windows)
    script = (f"import mlflow, numpy as np; mlflow.set_tracking_uri({registry.default_tracking_uri(trained.data_path)!r});"
              f"m = mlflow.pyfunc.load_model('models:/{name}@champion');"
              f"m.predict(np.load({str(tmp_path / 'w.npy')!r})).to_parquet({str(tmp_path / 'p.parquet')!r})")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    there = pd.read_parquet(tmp_path / "p.parquet")
    assert list(there["predicted"]) == list(here["predicted"])
    assert np.allclose(there.filter(like="p_").to_numpy(), here.filter(like="p_").to_numpy(), atol=1e-6)


def _version_tags(name: str, version: str) -> dict[str, str]:
    import mlflow

    return mlflow.MlflowClient().get_model_version(name, version).tags


def test_the_crosscheck_classified_every_mearec_unit_through_spikeinterface(trained):
    import spikeinterface.full as si

    for rate in ("32000", "30000"):
        md = _latest("mearec_recording", rate)
        assert md["units"] == 2 * len(CELLS) and md["sampling rate (Hz)"] == float(rate)
        result = json.loads((trained.data_path / "crosscheck" / rate / "result.json").read_text())
        answers = pd.read_parquet(trained.data_path / "crosscheck" / rate / "answers.parquet")
        for task in ("binary", "mtype"):
            score = result["results"][task]
            assert score["units"] == 2 * len(CELLS) and score["not_classified"] == 0
            assert set(score["evaluation"]["per_cell_type"]) == {"SBC", "UTPC"}
            assert 0 <= score["ece"] <= 1
            assert 0 <= score["ece_if_calibrated"][0] <= score["ece_if_calibrated"][1] <= 1
            ood = answers[f"{task}_ood"].astype(bool)  # accuracy split by the OOD flag
            right = answers[f"{task}_predicted"] == (answers["mtype"] if task == "mtype" else answers["ei"])
            for key, rows in (("accuracy_in_distribution", ~ood), ("accuracy_ood", ood)):
                assert np.isnan(score[key]) if not rows.any() else score[key] == pytest.approx(right[rows].mean())
            served = registry.classifier_report(score["model"], score["version"])  # the version that answered
            tags = _version_tags(score["model"], score["version"])
            assert score["own_test"]["accuracy"] == 100 * served["test"]["accuracy"] == 100 * float(tags["test_accuracy"])
        assert set(answers["cell"]) == set(CELLS) and answers["binary_predicted"].isin(["E", "I"]).all()
        analyzer = si.load_sorting_analyzer(trained.data_path / "crosscheck" / rate / "analyzer")
        assert analyzer.sampling_frequency == float(rate)
        stored = analyzer.sorting.get_property("eap_mtype_predicted")  # SpikeInterface's own tools show them
        assert list(stored) == list(answers["mtype_predicted"])
    text = (trained.data_path / "reports" / "crosscheck.md").read_text()
    assert "## Targets" in text and "| SBC |" in text and "32 kHz" in text and "30 kHz" in text


def test_classify_every_input_kind_gives_the_same_answers(trained, tmp_path):
    import MEArec
    import probeinterface

    recording = trained.data_path / "crosscheck" / "32000" / "recording.h5"
    analyzer_folder = trained.data_path / "crosscheck" / "32000" / "analyzer"
    from_analyzer = classify(analyzer_folder, data_dir=trained.data_path, write_properties=False)
    from_recording = classify(recording, data_dir=trained.data_path)
    assert list(from_recording["truth_cell"]) == list(pd.read_parquet(
        trained.data_path / "crosscheck" / "32000" / "truth.parquet")["cell"])
    # the analyzer's templates (1 ms / 2 ms) and ours of the same recording (2 / 3 ms) agree on nearly every unit
    agree = (from_recording["mtype_predicted"] == from_analyzer["mtype_predicted"]).mean()
    assert agree >= 0.75
    # a .npy of the analyzer's templates on a probeinterface file whose contacts are shuffled, rotated, moved
    import spikeinterface.full as si

    analyzer = si.load_sorting_analyzer(analyzer_folder)
    templates = analyzer.get_extension("templates").get_data().transpose(0, 2, 1)
    perm = np.random.default_rng(3).permutation(100)
    angle = 0.4
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    positions = analyzer.get_channel_locations()[perm] @ rotation.T + [1000.0, 50.0]
    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=positions, shapes="circle", shape_params={"radius": 5})
    probe.set_device_channel_indices(np.arange(100))
    probeinterface.write_probeinterface(tmp_path / "probe.json", probe)
    np.save(tmp_path / "units.npy", templates[:, perm])
    out = tmp_path / "answers.csv"
    assert cli.main(["classify", str(tmp_path / "units.npy"), "--probe", str(tmp_path / "probe.json"), "--fs-hz",
                     "32000", "--filtered", "--data-dir", str(trained.data_path), "--out", str(out)]) == 0
    from_npy = pd.read_csv(out)
    assert list(from_npy["binary_predicted"]) == list(from_analyzer["binary_predicted"])
    assert np.allclose(from_npy["mtype_confidence"], from_analyzer["mtype_confidence"], atol=1e-4)
    # MEArec's own templates file: unfiltered, the model's band-pass is applied
    templates_file = trained.data_path / "crosscheck" / "templates.h5"
    from_templates = classify(templates_file, data_dir=trained.data_path)
    assert len(from_templates) == len(MEArec.load_templates(str(templates_file), verbose=False).templates)
    assert (from_templates["error"] == "").all() and from_templates["truth_cell"].notna().all()


def test_units_on_a_larger_probe_are_read_on_the_window_that_holds_them(trained, tmp_path):
    """The analyzer's units on an MEA 6 columns wider than the model's (the extra contacts silent): each unit
    is read on the placement of the model's 10 x 10 layout that holds its signal, the original block, and
    gets exactly the answers it gets on the model's own probe."""
    import probeinterface
    import spikeinterface.full as si

    analyzer_folder = trained.data_path / "crosscheck" / "32000" / "analyzer"
    from_analyzer = classify(analyzer_folder, data_dir=trained.data_path, write_properties=False)
    analyzer = si.load_sorting_analyzer(analyzer_folder)
    templates = analyzer.get_extension("templates").get_data().transpose(0, 2, 1)
    grid = analyzer.get_channel_locations()
    xs, ys = np.unique(grid[:, 0]), np.unique(grid[:, 1])
    extra = np.array([(x, y) for x in np.concatenate([xs.min() - 15.0 * np.arange(3, 0, -1),
                                                      xs.max() + 15.0 * np.arange(1, 4)]) for y in ys])
    probe = probeinterface.Probe(ndim=2, si_units="um")
    probe.set_contacts(positions=np.vstack([grid, extra]), shapes="circle", shape_params={"radius": 5})
    probeinterface.write_probeinterface(tmp_path / "wide.json", probe)
    wide = np.concatenate([templates, np.zeros((len(templates), len(extra), templates.shape[2]))], axis=1)
    np.save(tmp_path / "wide.npy", wide.astype(np.float32))
    frame = classify(tmp_path / "wide.npy", probe=tmp_path / "wide.json", fs_hz=32000, filtered=True,
                     data_dir=trained.data_path)
    assert wide.shape[1] == 160
    for task in ("binary", "mtype"):
        assert list(frame[f"{task}_predicted"]) == list(from_analyzer[f"{task}_predicted"])
        assert np.allclose(frame[f"{task}_confidence"], from_analyzer[f"{task}_confidence"], atol=1e-6)
        channels = frame[f"{task}_window_channels"].map(lambda text: sorted(int(c) for c in text.split(",")))
        assert all(c == list(range(100)) for c in channels)  # the original block, for every unit
        assert (frame[f"{task}_peak_channel"] < 100).all()
    # the window's silent contacts did not hide a unit: a unit moved onto the extra columns is found there
    moved = np.zeros_like(wide[:1])
    moved[0, 100:] = np.tile(templates[0, :10], (6, 1))[:60]
    np.save(tmp_path / "moved.npy", moved.astype(np.float32))
    frame = classify(tmp_path / "moved.npy", probe=tmp_path / "wide.json", fs_hz=32000, filtered=True,
                     data_dir=trained.data_path)
    assert int(frame.loc[0, "binary_peak_channel"]) >= 100


def test_bad_units_are_reported_and_the_others_still_classified(trained, tmp_path):
    analyzer_folder = trained.data_path / "crosscheck" / "32000" / "analyzer"
    import spikeinterface.full as si

    analyzer = si.load_sorting_analyzer(analyzer_folder)
    templates = analyzer.get_extension("templates").get_data().transpose(0, 2, 1).copy()
    templates[1, 5, 10] = np.nan
    templates[2] = 0.0
    np.save(tmp_path / "bad.npy", templates)
    frame = classify(tmp_path / "bad.npy", probe="SqMEA-10-15", fs_hz=32000, filtered=True,
                     data_dir=trained.data_path, out=tmp_path / "bad.parquet")
    assert frame.loc[1, "error"] == "its template contains NaN or inf" and frame.loc[2, "error"] == "its template is all zeros"
    assert frame.loc[[1, 2], "mtype_predicted"].isna().all()
    assert frame.drop(index=[1, 2])["mtype_predicted"].notna().all()
    assert len(pd.read_parquet(tmp_path / "bad.parquet")) == len(frame)
    # a unit without spikes in a real analyzer
    recording, sorting = si.read_mearec(trained.data_path / "crosscheck" / "32000" / "recording.h5")
    spikes = {str(u): sorting.get_unit_spike_train(u) for u in sorting.unit_ids}
    spikes["silent"] = np.array([], dtype=np.int64)
    with_silent = si.NumpySorting.from_unit_dict([spikes], sampling_frequency=sorting.sampling_frequency)
    silent = si.create_sorting_analyzer(with_silent, recording, format="memory", sparse=False)
    silent.compute(["random_spikes", "waveforms"])  # waveforms only: templates are computed from them
    frame = classify(silent, data_dir=trained.data_path)
    assert frame.set_index("unit_id").loc["silent", "error"] == "it has no spikes"
    assert frame.set_index("unit_id").drop(index="silent")["binary_predicted"].notna().all()


def test_bad_inputs_are_refused_with_what_is_wrong(trained, tmp_path):
    import spikeinterface.full as si

    recording, sorting = si.read_mearec(trained.data_path / "crosscheck" / "32000" / "recording.h5")
    bare = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    with pytest.raises(InputError, match="no 'templates' extension \\(nor 'waveforms'"):
        classify(bare, data_dir=trained.data_path)
    empty = si.create_sorting_analyzer(sorting.select_units([]), recording, format="memory", sparse=False)
    with pytest.raises(InputError, match="the analyzer has no units"):
        classify(empty, data_dir=trained.data_path)
    np.save(tmp_path / "flat.npy", np.zeros((3, 100)))
    with pytest.raises(InputError, match="flat.npy: templates must have shape \\(units, channels, samples\\)"):
        classify(tmp_path / "flat.npy", probe="SqMEA-10-15", fs_hz=32000, filtered=True, data_dir=trained.data_path)
    np.save(tmp_path / "units.npy", np.ones((2, 100, 90), np.float32))
    with pytest.raises(InputError, match="units.npy: a .npy file needs its probe, sampling rate"):
        classify(tmp_path / "units.npy", data_dir=trained.data_path)
    with pytest.raises(InputError, match="10000 Hz is too low for the model's 300-6000 Hz band"):
        classify(tmp_path / "units.npy", probe="SqMEA-10-15", fs_hz=10000, filtered=True, data_dir=trained.data_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json: not a probeinterface probe file"):
        classify(tmp_path / "units.npy", probe=tmp_path / "broken.json", fs_hz=32000, filtered=True,
                 data_dir=trained.data_path)
    small = np.ones((2, 25, 90), np.float32)
    np.save(tmp_path / "small.npy", small)
    with pytest.raises(ProbeGeometryError, match="no registered classifier knows this probe \\(25 contacts\\); "
                                                 "classifiers exist for: SqMEA-10-15 \\(100 contacts\\)"):
        classify(tmp_path / "small.npy", probe="SqMEA-5-30", fs_hz=32000, filtered=True, data_dir=trained.data_path)
    with pytest.raises(InputError, match="nope.h5: no such file"):
        classify(tmp_path / "nope.h5", data_dir=trained.data_path)
    assert len(model_plane_positions("SqMEA-5-30")) == 25


def test_templates_objects_and_zarr_analyzers_are_read_as_spikeinterface_writes_them(trained, tmp_path):
    import spikeinterface.full as si

    analyzer = si.load_sorting_analyzer(trained.data_path / "crosscheck" / "32000" / "analyzer")
    reference = classify(analyzer, data_dir=trained.data_path, write_properties=False)
    templates = analyzer.get_extension("templates").get_data(outputs="Templates")
    from_object = classify(templates, data_dir=trained.data_path)
    templates.to_zarr(tmp_path / "templates.zarr")
    from_zarr = classify(tmp_path / "templates.zarr", data_dir=trained.data_path)
    zarr_analyzer = analyzer.save_as(format="zarr", folder=tmp_path / "analyzer.zarr")
    from_zarr_analyzer = classify(tmp_path / "analyzer.zarr", data_dir=trained.data_path)
    for frame in (from_object, from_zarr, from_zarr_analyzer):
        assert list(frame["mtype_predicted"]) == list(reference["mtype_predicted"])
        assert np.allclose(frame["binary_confidence"], reference["binary_confidence"], atol=1e-5)
    reloaded = si.load_sorting_analyzer(tmp_path / "analyzer.zarr")
    assert list(reloaded.sorting.get_property("eap_binary_predicted")) == list(reference["binary_predicted"])
    assert zarr_analyzer.get_num_units() == len(reference)
