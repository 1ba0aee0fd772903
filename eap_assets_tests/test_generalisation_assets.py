"""The generalisation stage through a real Dagster instance: morphology variants simulated in NEURON,
every model kind registered, then ``generalisation`` (noise sweep; unseen variants, distances, cell
types), ``recording_generalisation`` (the recipe of the models for real recordings on its own split,
unseen variants and held-out types: the variants' recording EAPs simulated too) and
``generalisation_report`` (small scale: 2 cells + 1 variant each, 3drot, 24 EAPs)."""

from __future__ import annotations

import json

import dagster as dg
import mlflow
import pandas as pd
import pytest

from eap_assets import cli, registry
from eap_assets.core import generalisation as gen
from eap_assets.defs.generalisation import GeneralisationSettings
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.training import TrainingSettings
from eap_assets.run import materialize_graph

SMALL = "L5_SBC_bNAC219_1"  # the cheapest cell
PYRAMID = "L5_UTPC_cADpyr232_1"  # the cheapest excitatory cell
N_EAPS = 24
FLAGS = ["--quick", "--cells", f"{SMALL},{PYRAMID}", "--rotations", "3drot", "--n-eaps", str(N_EAPS), "--variants", "1",
         "--workers", "2", "--cnn-steps", "30", "--cnn-batch-size", "32", "--train-copies", "1"]
STAGES = "variants,cells,eaps,training,models,generalisation,recording_generalisation"


@pytest.fixture(scope="module")
def generalised(dagster_home, tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    code = cli.main(["run", *FLAGS, "--data-dir", str(data), "--stages", STAGES])
    return SimulationSettings(data_dir=str(data), preset="quick", n_eaps=N_EAPS, variants_per_cell=1), code


def test_generalisation_stage_measures_every_kind_and_protocol(generalised):
    settings, code = generalised
    summary = json.loads((settings.data_path / "summary.json").read_text())
    assert code == 0, [r for r in summary if r["status"] == "failed"]
    jobs = {(r["job"], r["partition"]): r["status"] for r in summary}
    assert jobs[("generalisation_job", "3drot|mtype")] == "done"
    assert jobs[("generalisation_report_job", "")] == "done"
    instance = dg.DagsterInstance.get()
    cells = instance.get_dynamic_partitions("cell_model")
    # morphology_variants made 1 variant of every BBP model; the run simulated those of the 2 selected models
    assert {SMALL, PYRAMID} <= set(cells) and sum(c.startswith(SMALL + "_sx") for c in cells) == 1
    for task in ("binary", "mtype"):
        record = json.loads((settings.data_path / "generalisation" / "3drot" / f"{task}.json").read_text())
        assert record["cells"] == 4 and record["variants"] == 2
        rows = pd.DataFrame(record["rows"])
        for protocol in ("in_distribution", "unseen_variants", "unseen_distances"):
            if record["details"][protocol].get("skipped"):  # small cells have no EAP beyond 40 µm at 24 EAPs
                assert protocol == "unseen_distances"
                continue
            for kind in registry.KINDS:
                part = rows[(rows.protocol == protocol) & (rows.kind == kind)]
                assert sorted(part["noise_uv"]) == list(gen.NOISE_LEVELS_UV), (task, protocol, kind)
                assert part["accuracy"].between(0, 100).all()
        unseen = record["details"]["unseen_variants"]["lgbm"]
        assert len(unseen["test_cells"]) == 2 and not set(unseen["train_cells"]) & set(unseen["test_cells"])
        assert set(record["registered_versions"]) == set(registry.KINDS)
        assert (settings.data_path / "generalisation" / "3drot" / f"{task}.png").stat().st_size > 1000
        materialisation = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("generalisation"), asset_partitions=[f"3drot|{task}"]),
            limit=1).records[0].asset_materialization
        assert materialisation.metadata["key"].value == record["key"]
        assert "accuracy vs noise" in materialisation.metadata
    report = (settings.data_path / "reports" / "generalisation.md").read_text()
    assert "### Targets" in report and "3drot mtype, unseen variants, 10 µV" in report
    assert "unseen morphology variants: waveform" in report
    frame = pd.read_csv(settings.data_path / "reports" / "generalisation.csv")
    assert set(frame["protocol"]) >= {"in_distribution", "unseen_variants"}
    assert "Not measured: unseen_distances" in report  # these small cells have no EAP beyond 40 µm
    # logged in MLflow: one run per rotation x task with the plot, and the report
    registry.configure(registry.default_tracking_uri(settings.data_path), "eap_assets")
    runs = mlflow.search_runs(experiment_names=["eap_assets"], filter_string="tags.mlflow.runName LIKE 'generalisation%'")
    assert len(runs) == 3


def test_recording_generalisation_holds_out_whole_morphologies(generalised):
    settings, code = generalised
    assert code == 0
    summary = json.loads((settings.data_path / "summary.json").read_text())
    jobs = {(r["job"], r["partition"]): r["status"] for r in summary}
    # the variants' recording EAPs were simulated for the unseen-variant protocol
    variants = [c for (job, c) in jobs if job == "recording_eaps_job" and "_sx" in c]
    assert len(variants) == 2 and all(jobs[("recording_eaps_job", c)] == "done" for c in variants)
    instance = dg.DagsterInstance.get()
    for task in ("binary", "mtype"):
        assert jobs[("recording_generalisation_job", f"3drot|{task}")] == "done"
        record = json.loads((settings.data_path / "generalisation" / "recording" / "3drot" / f"{task}.json").read_text())
        assert record["cells"] == 4 and record["variants"] == 2
        rows = pd.DataFrame(record["rows"])
        assert set(zip(rows.protocol, rows.kind)) == {(p, k) for p in ("own_split", "unseen_variants")
                                                      for k in ("lgbm", "waveform")}
        assert rows["accuracy"].between(0, 100).all() and (rows["n_test"] > 0).all()
        unseen = record["details"]["unseen_variants"]["waveform"]
        # one of the two morphologies of each m-type is never seen in training
        assert len(unseen["test_cells"]) == 2 and not set(unseen["train_cells"]) & set(unseen["test_cells"])
        assert {c.split("_sx")[0] for c in unseen["test_cells"]} == {SMALL, PYRAMID}
        # rows on every side of the morphology split
        sets = record["sets"]["unseen_variants"]["rows"]
        assert min(sets.values()) > 0 and sets["validation"] < sets["train"]
        materialisation = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("recording_generalisation"), asset_partitions=[f"3drot|{task}"]),
            limit=1).records[0].asset_materialization
        assert materialisation.metadata["key"].value == record["key"]
    # E/I with a cell type held out: with two types (one E, one I) no fold has both classes to learn from
    binary = json.loads((settings.data_path / "generalisation" / "recording" / "3drot" / "binary.json").read_text())
    assert set(binary["details"]) >= {"hold_out_type/SBC", "hold_out_type/UTPC"}
    assert binary["details"]["hold_out_type/SBC"].get("skipped")
    report = (settings.data_path / "reports" / "generalisation.md").read_text()
    assert "## The models for real recordings: unseen morphology variants and cell types" in report
    assert "3drot mtype, unseen variants, recording templates" in report
    assert "Not measured: hold_out_type/SBC" in report
    frame = pd.read_csv(settings.data_path / "reports" / "generalisation.csv")
    assert set(frame["family"]) == {"paper", "recording"}


def test_generalisation_is_skipped_when_up_to_date(generalised):
    settings, _ = generalised
    training = TrainingSettings(**{**cli.QUICK_TRAINING, "cnn_steps": 30, "cnn_batch_size": 32})
    report = materialize_graph(settings, [SMALL, PYRAMID], ["3drot"], stages_=tuple(STAGES.split(",")), workers=2,
                               log=lambda m: None, training=training, generalisation=GeneralisationSettings(train_copies=1))
    status = {(r.job, r.partition): r.status for r in report.results}
    assert status[("generalisation_job", "3drot|binary")] == "skipped"
    assert status[("generalisation_job", "3drot|mtype")] == "skipped"
    assert status[("recording_generalisation_job", "3drot|binary")] == "skipped"
