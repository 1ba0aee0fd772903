"""The Dagster layer through a real instance: the graph materialised at tiny scale (checks
included), re-materialising up-to-date partitions is a no-op, a failed partition leaves the
others materialised, the sensor, the schedule and the definitions as the UI loads them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from eap_assets import cli, registry
from eap_assets.local import free_port
from eap_assets.core import features, models, stages
from eap_assets.serving import classify
from eap_assets.defs.io import stored_parquet_key
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.training import TrainingSettings
from eap_assets.run import execute_partition, materialize_graph, settings_run_config

from .conftest import INTERNEURON

REPO = Path(__file__).resolve().parents[1]
SMALL = "L5_SBC_bNAC219_1"  # 158 segments: the cheapest cell
PYRAMID = "L5_UTPC_cADpyr232_1"  # the cheapest excitatory cell (720 segments)
CELLS = (SMALL, PYRAMID)
ROTATIONS = ("norot", "3drot")
N_EAPS = 20


@pytest.fixture(scope="module")
def graph(dagster_home, tmp_path_factory):
    """The whole graph for 2 cells x 2 rotations x 20 EAPs (quick preset, 60 CNN steps), through the CLI."""
    data = tmp_path_factory.mktemp("data")
    code = cli.main(["run", "--quick", "--cells", ",".join(CELLS), "--rotations", ",".join(ROTATIONS),
                     "--n-eaps", str(N_EAPS), "--data-dir", str(data), "--workers", "2", "--cnn-steps", "60",
                     "--cnn-batch-size", "32", "--stages", "cells,eaps,training,models,report"])
    assert code == 0
    return SimulationSettings(data_dir=str(data), preset="quick", n_eaps=N_EAPS)


#: What the fixture's CLI flags (--quick --cnn-steps 60 --cnn-batch-size 32) amount to.
TRAINING = TrainingSettings(**{**cli.QUICK_TRAINING, "cnn_steps": 60, "cnn_batch_size": 32})


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, out[::2]), map(int, out[1::2])):
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _running(pid: int) -> bool:
    try:
        return "(zombie)" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _materializations(instance, asset: str) -> dict[str, dg.EventLogRecord]:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
    latest: dict[str, dg.EventLogRecord] = {}
    for record in records:  # newest first
        latest.setdefault(record.partition_key, record)
    return latest


def test_every_partition_is_materialised_with_metadata_and_passing_checks(graph):
    instance = dg.DagsterInstance.get()
    assert sorted(instance.get_dynamic_partitions("cell_model")) == sorted(CELLS)
    pairs = {f"{c}|{r}" for c in CELLS for r in ROTATIONS}
    assert set(_materializations(instance, "cell_model")) == set(CELLS)
    assert set(_materializations(instance, "spike_templates")) == set(CELLS)
    assert set(_materializations(instance, "eap_dataset")) == pairs
    assert set(_materializations(instance, "feature_table")) == pairs
    assert set(_materializations(instance, "training_table")) == set(ROTATIONS)
    assert set(_materializations(instance, "hold_out_cell_type")) == set(ROTATIONS)
    model_partitions = {f"{r}|{t}" for r in ROTATIONS for t in ("binary", "mtype")}
    for asset in ("cnn_model", "lgbm_model", "waveform_model", "evaluation"):
        assert set(_materializations(instance, asset)) == model_partitions
    assert set(_materializations(instance, "paper_comparison")) == {None}

    templates_md = _materializations(instance, "spike_templates")[SMALL].asset_materialization.metadata
    assert templates_md["kept spikes"].value == 3 and templates_md["current (nA)"].value > 0
    assert "data:image/png;base64" in templates_md["somatic spikes"].value
    eap_md = _materializations(instance, "eap_dataset")[f"{SMALL}|3drot"].asset_materialization.metadata
    assert eap_md["accepted"].value == N_EAPS and 0 < eap_md["acceptance rate"].value <= 1
    assert eap_md["tries"].value >= N_EAPS
    cell_md = _materializations(instance, "cell_model")[SMALL].asset_materialization.metadata
    assert cell_md["segments"].value == 158 and cell_md["E/I"].value == "I"
    cnn_md = _materializations(instance, "cnn_model")["3drot|mtype"].asset_materialization.metadata
    assert cnn_md["steps run"].value == 60 and cnn_md["alias"].value == "champion"
    assert cnn_md["registered model"].value == "paper_cnn_SqMEA-10-15_3drot_mtype"
    assert 0 <= cnn_md["test accuracy"].value <= 1

    evaluations = []
    for run in instance.get_runs():
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        evaluations += [r.event_log_entry.dagster_event.asset_check_evaluation_data for r in records]
    names = {e.check_name for e in evaluations}
    assert {"spike_templates_complete", "eap_dataset_finite", "eap_dataset_row_count", "eap_dataset_amplitude_rule",
            "feature_table_schema", "feature_table_finite", "feature_table_row_count",
            "feature_table_amplitude_rule", "feature_table_labels", "training_table_split",
            "training_table_cells"} <= names
    assert all(e.passed for e in evaluations)
    # each check ran once per partition of its asset
    assert sum(e.check_name == "feature_table_row_count" for e in evaluations) == len(pairs)


def test_artefacts_on_disk(graph):
    data = graph.data_path
    table = pd.read_parquet(data / "feature_table" / SMALL / "3drot.parquet")
    assert len(table) == N_EAPS and set(table["cell"]) == {SMALL} and table["peak_to_peak_uv"].min() >= 30
    eap_array = np.load(data / "eaps" / SMALL / "3drot" / "eaps.npy", mmap_mode="r")
    assert eap_array.shape == (N_EAPS, 100, 224) and eap_array.dtype == np.float32
    index = pd.read_parquet(data / "eaps" / SMALL / "3drot" / "index.parquet")
    assert list(index.columns[:3]) == ["eap_id", "candidate_index", "spike_index"] and len(index) == N_EAPS
    training = pd.read_parquet(data / "training_table" / "norot.parquet")
    assert len(training) == 2 * N_EAPS and set(training["cell"]) == set(CELLS)
    assert (training.groupby("cell")["split"].apply(lambda s: (s == "test").sum()) == 2).all()
    assert (data / "figures" / "amplitude_vs_width_norot.png").stat().st_size > 1000
    assert not list(data.rglob("*.tmp")) and not list(data.rglob(".*.tmp"))


def test_up_to_date_partitions_are_skipped_and_rematerialising_is_a_no_op(graph):
    instance = dg.DagsterInstance.get()
    data = graph.data_path
    files = [data / "templates" / f"{SMALL}.npz", data / "eaps" / SMALL / "norot" / "eaps.npy",
             data / "feature_table" / SMALL / "norot.parquet", data / "training_table" / "norot.parquet"]
    mtimes = [f.stat().st_mtime_ns for f in files]
    runs = len(instance.get_runs())

    report = materialize_graph(graph, list(CELLS), list(ROTATIONS), stages_=("cells", "eaps", "training", "models"),
                               workers=2, log=lambda m: None, training=TRAINING)
    assert {r.status for r in report.results} == {"skipped"} and len(report.results) == 2 + 4 + 2 + 4
    assert len(instance.get_runs()) == runs  # nothing launched

    # explicitly re-materialising an up-to-date partition through Dagster recomputes nothing
    result = execute_partition("eap_datasets_job", f"{SMALL}|norot", settings_run_config(graph))
    assert result.status == "done"
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    latest = _materializations(instance, "eap_dataset")[f"{SMALL}|norot"].asset_materialization.metadata
    assert latest["computed"].value is False


def test_changed_settings_recompute_what_they_change(graph):
    instance = dg.DagsterInstance.get()
    reseeded = SimulationSettings(**{**{f: getattr(graph, f) for f in SimulationSettings.model_fields}, "seed": 7})
    report = materialize_graph(reseeded, [SMALL], ["3drot"], stages_=("cells", "eaps"), workers=1,
                               log=lambda m: None)
    status = {(r.job, r.partition): r.status for r in report.results}
    assert status == {("cell_models_job", SMALL): "skipped", ("eap_datasets_job", f"{SMALL}|3drot"): "done"}
    key = _materializations(instance, "feature_table")[f"{SMALL}|3drot"].asset_materialization.metadata["key"].value
    assert stored_parquet_key(graph.data_path / "feature_table" / SMALL / "3drot.parquet") == key
    # the old-seed training table is now stale and refuses to build from the new features
    result = execute_partition("training_tables_job", "3drot", settings_run_config(graph))
    assert result.status == "failed" and "other settings" in result.error


def test_failed_partition_leaves_the_others_materialised(models, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    broken = tmp_path / "models" / "L5_SBC_broken_1"
    shutil.copytree(models[SMALL].path, broken, ignore=shutil.ignore_patterns("__pycache__"))
    next((broken / "morphology").glob("*.asc")).write_text("(garbage\n")
    settings = SimulationSettings(data_dir=str(tmp_path / "data"), preset="quick", n_eaps=10,
                                  model_folders=[str(broken.parent)])
    report = materialize_graph(settings, [SMALL, broken.name], ["zrot"], workers=2, log=lambda m: None)
    status = {(r.job, r.partition): r for r in report.results}
    assert status[("cell_models_job", SMALL)].status == "done"
    assert status[("eap_datasets_job", f"{SMALL}|zrot")].status == "done"
    failed = status[("cell_models_job", broken.name)]
    assert failed.status == "failed" and "L5_SBC_broken_1" in failed.error and "morphology" in failed.error
    training = status[("training_tables_job", "zrot")]
    assert training.status == "failed" and "L5_SBC_broken_1" in training.error
    with dg.DagsterInstance.get() as instance:
        assert set(_materializations(instance, "feature_table")) == {f"{SMALL}|zrot"}
    assert not (tmp_path / "data" / "templates" / f"{broken.name}.npz").exists()
    assert (tmp_path / "data" / "feature_table" / SMALL / "zrot.parquet").exists()


def test_new_cell_model_sensor_adds_partitions_only(models, tmp_path):
    """A new deployment gets the 13 BBP models; after that only the model folders that appear are added;
    no run is requested (the automation conditions take a new partition from there)."""
    from eap_assets.defs.sensors import new_cell_models

    folder = tmp_path / "models"
    shutil.copytree(models[INTERNEURON].path, folder / "L5_BP_bAC217_9", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(models[SMALL].path, folder / "L5_SBC_nobio_1", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "L5_SBC_nobio_1" / "biophysics.hoc").unlink()
    settings = SimulationSettings(model_folders=[str(folder)])
    resources = {"settings": settings}

    def tick(instance):
        return new_cell_models(dg.build_sensor_context(instance=instance, resources=resources))

    with dg.instance_for_test() as instance:
        result = tick(instance)
        added = result.dynamic_partitions_requests[0].partition_keys
        assert len(added) == 14 and "L5_BP_bAC217_9" in added and "L5_SBC_nobio_1" not in added
        assert not result.run_requests
        # it observes the files of each cell model it adds
        observed = {(e.asset_key.to_user_string(), e.partition) for e in result.asset_events}
        assert observed == {("cell_model_files", c) for c in added}
        instance.add_dynamic_partitions("cell_model", list(added))
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
        again = tick(instance)
        assert not again.dynamic_partitions_requests and "no new cell models" in again.skip_reason.skip_message
        # a changed file of a model is observed again (its dependents become stale); a changed setting is not
        resources["settings"] = SimulationSettings(model_folders=[str(folder)], seed=5)
        (folder / "L5_BP_bAC217_9" / "biophysics.hoc").write_text(
            (folder / "L5_BP_bAC217_9" / "biophysics.hoc").read_text() + "\n// edited\n")
        changed = tick(instance)
        assert {(e.asset_key.to_user_string(), e.partition) for e in changed.asset_events} == {
            ("cell_model_files", "L5_BP_bAC217_9")}
        assert not changed.dynamic_partitions_requests
    with dg.instance_for_test() as instance:  # a deployment of two BBP cells: the other 11 are not added
        instance.add_dynamic_partitions("cell_model", [SMALL, PYRAMID])
        result = tick(instance)
        assert list(result.dynamic_partitions_requests[0].partition_keys) == ["L5_BP_bAC217_9"]


def test_automation_conditions_follow_the_retraining_mode(monkeypatch):
    """Eager main graph; models eager, weekly (on_cron) or manual by $EAP_ASSETS_RETRAIN; opt-in stages manual;
    the automation sensor runs unless $EAP_ASSETS_AUTOMATION=off."""
    from eap_assets.defs import automation
    from eap_assets.definitions import STAGE_MODULES

    assets = dg.load_assets_from_modules(STAGE_MODULES)

    def labels(mode: str) -> dict[str, str | None]:
        mapped = automation.with_automation(assets, mode)
        return {key.to_user_string(): (getattr(a.automation_conditions_by_key.get(key), "label", None))
                for a in mapped for key in a.keys}

    eager, weekly, off = labels("eager"), labels("weekly"), labels("off")
    assert eager["cell_model"] == eager["training_table"] == eager["cnn_model"] == eager["unit_classifier"] == "eager"
    assert weekly["training_table"] == "eager" and weekly["cnn_model"] == weekly["evaluation"] == \
        f"weekly_if_changed({automation.WEEKLY_CRON})"
    assert off["feature_table"] == "eager" and off["lgbm_model"] is None
    assert eager["generalisation"] is eager["mearec_recording"] is eager["morphology_variants"] is None
    assert eager["recording_generalisation"] is None
    with pytest.raises(ValueError, match="EAP_ASSETS_RETRAIN='hourly': unknown retraining mode"):
        automation.with_automation(assets, "hourly")
    monkeypatch.setenv(automation.ENV_AUTOMATION, "off")
    assert automation.automation_sensor().default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(automation.ENV_AUTOMATION, "on")
    assert automation.automation_sensor().default_status == dg.DefaultSensorStatus.RUNNING


def test_weekly_retraining_only_when_the_training_table_changed(tmp_path, monkeypatch):
    """on_cron: after Monday 04:00 the models of a rotation x task are requested only once their training
    table was updated since that tick (evaluated by Dagster on a real instance with recorded materialisations)."""
    import datetime

    from eap_assets.definitions import build_definitions

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.setenv("EAP_ASSETS_RETRAIN", "weekly")
    defs = build_definitions()
    selection = dg.AssetSelection.assets("cnn_model", "lgbm_model", "waveform_model", "evaluation")
    monday = datetime.datetime(2026, 11, 30, 4, 0, tzinfo=datetime.timezone.utc)

    def requested(instance, when, cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                                   evaluation_time=when, cursor=cursor)
        keys = ("cnn_model", "lgbm_model", "waveform_model", "evaluation")
        found = {key: result.get_requested_partitions(dg.AssetKey(key)) for key in keys}
        return {key: partitions for key, partitions in found.items() if partitions}, result.cursor

    with dg.instance_for_test() as instance:
        sets, cursor = requested(instance, monday - datetime.timedelta(hours=2))
        instance.report_runless_asset_event(dg.AssetMaterialization("training_table", partition="norot"))
        sets, cursor = requested(instance, monday - datetime.timedelta(hours=1), cursor)
        assert not sets  # a changed table waits for the tick (eager would retrain now)
        sets, cursor = requested(instance, monday + datetime.timedelta(minutes=1), cursor)
        # the tick: the models of the changed table and, in the same tick (its models will update), their evaluation
        assert set(sets) == {"cnn_model", "lgbm_model", "waveform_model", "evaluation"}
        assert all(set(keys) == {"norot|binary", "norot|mtype"} for keys in sets.values())
        for key in sets:  # they ran
            for partition in ("norot|binary", "norot|mtype"):
                instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
        instance.report_runless_asset_event(dg.AssetMaterialization("training_table", partition="3drot"))
        sets, cursor = requested(instance, monday + datetime.timedelta(days=1), cursor)
        assert not sets
        sets, cursor = requested(instance, monday + datetime.timedelta(days=7, minutes=1), cursor)
        assert set(sets) == {"cnn_model", "lgbm_model", "waveform_model", "evaluation"}
        assert all(set(keys) == {"3drot|binary", "3drot|mtype"} for keys in sets.values())  # norot: unchanged
        sets, cursor = requested(instance, monday + datetime.timedelta(days=14, minutes=1), cursor)
        assert not sets  # requested last week: nothing changed since


def test_definitions_load_and_validate(tmp_path):
    from eap_assets.definitions import defs

    from eap_assets.defs.sources import SETTINGS_SOURCES

    graph_ = defs.resolve_asset_graph()
    sources = {k.to_user_string() for k in graph_.get_all_asset_keys() if graph_.get(k).is_external}
    assert sources == {"cell_model_files", *SETTINGS_SOURCES}  # no dependency on an undefined asset
    assert all(graph_.get(dg.AssetKey(s)).is_observable for s in sources)
    assert {k.to_user_string() for k in graph_.get_all_asset_keys()} - sources == {
        "cell_model", "spike_templates", "eap_dataset", "feature_table", "training_table", "hold_out_cell_type",
        "cnn_model", "lgbm_model", "waveform_model", "evaluation", "paper_comparison", "morphology_variants",
        "generalisation", "recording_generalisation", "generalisation_report", "recording_eap_dataset",
        "recording_training_set", "waveform_basis",
        "recording_cnn_model", "recording_lgbm_model", "recording_waveform_model", "unit_classifier",
        "mearec_templates", "mearec_recording", "crosscheck", "crosscheck_report"}
    parents = {k.to_user_string(): {p.to_user_string() for p in graph_.get(k).parent_keys}
               for k in graph_.get_all_asset_keys()}
    assert parents["cell_model"] == {"cell_model_files", "stimulus_settings"}  # (its data directory)
    assert parents["spike_templates"] == {"cell_model", "stimulus_settings"}
    assert parents["eap_dataset"] == {"spike_templates", "simulation_settings"}
    assert parents["feature_table"] == {"eap_dataset", "simulation_settings"}
    assert parents["training_table"] == {"feature_table", "simulation_settings"}
    assert parents["cnn_model"] == {"training_table", "cnn_recipe"}
    assert parents["lgbm_model"] == parents["hold_out_cell_type"] == {"training_table", "lgbm_recipe"}
    assert parents["evaluation"] == {"training_table", "cnn_model", "lgbm_model", "waveform_model"}
    assert parents["generalisation"] == {"training_table", "evaluation", "eap_dataset", "generalisation_settings",
                                         "variant_settings"}
    assert parents["generalisation_report"] == {"generalisation", "recording_generalisation"}
    assert parents["recording_generalisation"] == {"recording_eap_dataset", "generalisation_settings",
                                                   "variant_settings", "recording_settings"}
    assert parents["recording_eap_dataset"] == {"spike_templates", "simulation_settings", "recording_settings"}
    assert parents["recording_training_set"] == parents["waveform_basis"] == {
        "recording_eap_dataset", "simulation_settings", "recording_settings"}
    assert parents["unit_classifier"] == {"recording_training_set", "waveform_basis", "recording_cnn_model",
                                          "recording_lgbm_model", "recording_waveform_model", "recording_settings"}
    assert parents["crosscheck"] == {"mearec_recording", "unit_classifier", "crosscheck_settings"}
    eap_partitions = graph_.get(dg.AssetKey("eap_dataset")).partitions_def
    assert [d.name for d in eap_partitions.partitions_defs] == ["cell", "rotation"]
    assert len(graph_.asset_check_keys) == 14  # the EAP dataset checks for both families
    assert all(graph_.get_check_spec(key).blocking for key in graph_.asset_check_keys)
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w",
                           "workspace.yaml"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Validation successful" in done.stderr + done.stdout


def test_unknown_rotation_and_stage_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    settings = SimulationSettings(data_dir=str(tmp_path / "d"), preset="quick")
    with pytest.raises(ValueError, match="rotation\\(s\\) \\['spin'\\] are not partitions"):
        materialize_graph(settings, [SMALL], ["spin"], log=lambda m: None)
    with pytest.raises(ValueError, match="unknown stage"):
        materialize_graph(settings, [SMALL], stages_=("cells", "paint"), log=lambda m: None)
    with pytest.raises(stages.cells.CellModelError, match="unknown cell model\\(s\\) L5_XX"):
        materialize_graph(settings, ["L5_XX"], log=lambda m: None)


def test_ui_shows_the_graph_and_the_runs_and_stops_on_sigterm(graph, tmp_path):
    """`eap-assets ui` (what `make ui` runs) on the instance `make run` used: asset graph, runs and
    materialisations are there; SIGTERM stops webserver, daemon and code server."""
    port = free_port()
    home = Path(os.environ["DAGSTER_HOME"])
    env = {**os.environ, "EAP_ASSETS_DATA_DIR": str(graph.data_path), "EAP_ASSETS_PRESET": "quick"}
    ui = _start_ui(port, env, tmp_path / "ui.log")
    try:
        deadline, nodes = time.time() + 240, None
        while time.time() < deadline and ui.poll() is None:
            try:
                nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")["data"]["assetNodes"]
                break
            except (OSError, KeyError, TypeError):
                time.sleep(2)
        assert nodes is not None, f"UI did not answer on port {port}: {_tail(tmp_path / 'ui.log')}"
        assert {n["assetKey"]["path"][0] for n in nodes} >= {
            "cell_model", "spike_templates", "eap_dataset", "feature_table", "training_table", "cnn_model"}
        with socket.socket() as s:  # bound to loopback only
            host_ip = socket.gethostbyname(socket.gethostname())
            if host_ip != "127.0.0.1":
                assert s.connect_ex((host_ip, port)) != 0
        runs = _graphql(port, "{ runsOrError { ... on Runs { results { status assetSelection { path } "
                              "tags { key value } } } } }")["data"]["runsOrError"]["results"]
        backfill_runs = [r for r in runs if any(t["key"] == "dagster/backfill" for t in r["tags"])]
        materialised = {a["path"][0] for r in backfill_runs if r["status"] == "SUCCESS" for a in r["assetSelection"]}
        assert materialised >= {"cell_model", "spike_templates", "eap_dataset", "feature_table", "training_table",
                                "cnn_model", "lgbm_model", "waveform_model", "evaluation", "paper_comparison"}
        assert sum(r["status"] == "SUCCESS" for r in backfill_runs) >= 8
        backfills = _graphql(port, "{ partitionBackfillsOrError { ... on PartitionBackfills { results { status "
                                   "title } } } }")["data"]["partitionBackfillsOrError"]["results"]
        assert any(b["title"] == "make run" and b["status"] in ("COMPLETED", "COMPLETED_SUCCESS") for b in backfills)
        node = _graphql(port, '{ assetNodeOrError(assetKey: {path: ["feature_table"]}) { ... on AssetNode { '
                              'automationCondition { label } assetChecksOrError { ... on AssetChecks { checks { name '
                              '} } } } } }')["data"]["assetNodeOrError"]
        assert node["automationCondition"]["label"] == "eager"
        assert len(node["assetChecksOrError"]["checks"]) >= 3
        figure = _graphql(port, '{ assetNodeOrError(assetKey: {path: ["training_table"]}) { ... on AssetNode { '
                                'assetMaterializations(limit: 1, partitions: ["norot"]) { metadataEntries { label '
                                '__typename } } } } }')["data"]["assetNodeOrError"]["assetMaterializations"][0]
        assert any(e["__typename"] == "MarkdownMetadataEntry" for e in figure["metadataEntries"]), figure
        partitions = _graphql(port, '{ assetNodeOrError(assetKey: {path: ["eap_dataset"]}) '
                                    '{ ... on AssetNode { partitionStats { numMaterialized } } } }')
        assert partitions["data"]["assetNodeOrError"]["partitionStats"]["numMaterialized"] == 4
        assert (home / "dagster.yaml").exists()
        children = _descendants(ui.pid)
        assert children, "dagster dev should run webserver and daemon as children"
    finally:
        _stop(ui, strict=True)
    alive = children
    for _ in range(30):  # children exit with their parent; give them a moment
        alive = [pid for pid in alive if _running(pid)]
        if not alive:
            break
        time.sleep(1)
    assert not alive, f"processes left running after SIGTERM: {alive}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _test_rows(graph, rotation: str, task: str, kind: str):
    table = pd.read_parquet(graph.data_path / "training_table" / f"{rotation}.parquet")
    y, classes = models.task_labels(table, task)
    test = (table["split"] == "test").to_numpy()
    if registry.INPUTS[kind] == "eaps":  # the waveform model: the rows' raw EAPs from the EAP datasets
        from eap_assets.defs.training import eap_pool

        return registry.eap_input(eap_pool(graph, rotation, table), table), y, test, classes
    return registry.model_input(kind, table, graph.probe), y, test, classes


def test_champion_reproduces_the_logged_test_accuracy_exactly(graph):
    # norot: the waveform model re-reads its test EAPs, and test_changed_settings... re-made 3drot's with seed 7
    rotation = "norot"
    registry.configure(registry.default_tracking_uri(graph.data_path), "eap_assets")
    for kind in registry.KINDS:
        for task in ("binary", "mtype"):
            loaded = registry.load_registered(registry.model_name(kind, rotation, task))  # models:/<name>@champion
            x, y, test, classes = _test_rows(graph, rotation, task, kind)
            assert loaded.classes == classes
            accuracy = float((loaded.predict_proba(x[test]).argmax(axis=1) == y[test]).mean())
            assert accuracy == float(loaded.tags["test_accuracy"])
            record = json.loads((graph.data_path / "evaluation" / rotation / f"{task}.json").read_text())
            assert record["results"][kind]["accuracy"] == pytest.approx(100 * accuracy)
    binary = json.loads((graph.data_path / "evaluation" / rotation / "binary.json").read_text())
    assert set(binary["results"]) == {"cnn", "lgbm", "waveform", "width_rule"}
    assert set(binary["results"]["cnn"]["per_cell_type"]) == {"SBC", "UTPC"}


def test_promotion_gate_keeps_a_better_champion(tmp_path):
    import mlflow

    registry.configure(registry.default_tracking_uri(tmp_path), "gate")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 200)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    fit, test = slice(0, 300), slice(300, 400)
    config = models.LGBMConfig(n_estimators=50, early_stopping_rounds=None)
    good = models.train_lgbm(x[fit], y[fit], x[fit], y[fit], 2, config, seed=0)
    flipped = models.train_lgbm(x[fit], 1 - y[fit], x[fit], 1 - y[fit], 2, config, seed=0)  # deliberately worse
    accuracy = {m: float((t.predict(x[test]) == y[test]).mean()) for m, t in (("good", good), ("worse", flipped))}
    assert accuracy["worse"] < accuracy["good"]
    name = registry.model_name("lgbm", "gate", "binary")
    tags = {"kind": "lgbm", "classes": ["E", "I"], "probe": "SqMEA-10-15", "dt_ms": 2**-5, "n_samples": 224}
    with mlflow.start_run(run_name="gate"):
        champion = registry.log_model(good.model, "lgbm", name, x[:4], tags=tags)
        assert registry.promote(name, champion.version, accuracy["good"]) == registry.CHAMPION  # first: champion
        worse = registry.log_model(flipped.model, "lgbm", name, x[:4], tags=tags)
        assert registry.promote(name, worse.version, accuracy["worse"]) == registry.CHALLENGER
        assert registry.load_registered(name).version == str(champion.version)  # champion unchanged
        assert registry.load_registered(name, alias=registry.CHALLENGER).version == str(worse.version)
        same = registry.log_model(good.model, "lgbm", name, x[:4], tags=tags)
        assert registry.promote(name, same.version, accuracy["good"]) == registry.CHAMPION  # as good: promoted
    loaded = registry.load_registered(name)
    assert loaded.version == str(same.version)
    assert float((loaded.predict_proba(x[test]).argmax(axis=1) == y[test]).mean()) == accuracy["good"]


def test_classify_templates_with_a_paper_model(graph, tmp_path):
    """A paper-family model by name: its stored spec takes the 224-sample, unfiltered 32 kHz windows as they
    come; no calibration, no OOD reference (said in every answer)."""
    from eap_assets.core.recording import InputError

    eap_array = np.load(graph.data_path / "eaps" / PYRAMID / "3drot" / "eaps.npy")[:5]
    np.save(tmp_path / "units.npy", eap_array)
    out = tmp_path / "predictions.csv"
    name = registry.model_name("cnn", "3drot", "mtype", "SqMEA-10-15")
    code = cli.main(["classify", str(tmp_path / "units.npy"), "--model", name, "--probe", "SqMEA-10-15",
                     "--dt-ms", str(2**-5), "--unfiltered", "--data-dir", str(graph.data_path), "--out", str(out)])
    assert code == 0
    frame = pd.read_csv(out)
    assert len(frame) == 5 and set(frame["mtype_predicted"]) <= {"SBC", "UTPC"}
    assert np.allclose(frame[["mtype_p_SBC", "mtype_p_UTPC"]].sum(axis=1), 1.0, atol=1e-5)
    champion = registry.load_registered(name)
    assert (frame["mtype_version"].astype(str) == champion.version).all() and (frame["mtype_alias"] == "champion").all()
    proba = champion.predict_proba(features.feature_images(eap_array, 2**-5, "SqMEA-10-15"))
    assert np.allclose(frame[["mtype_p_SBC", "mtype_p_UTPC"]].to_numpy(), proba, atol=1e-5)
    assert frame["mtype_ood_reason"].str.startswith("not checked").all()
    with pytest.raises(InputError, match="waveforms have 200 samples at 32000 Hz; the model takes 224"):
        np.save(tmp_path / "short.npy", eap_array[:, :, :200])
        classify(tmp_path / "short.npy", model=name, probe="SqMEA-10-15", fs_hz=32000, filtered=False,
                 data_dir=graph.data_path)
    with pytest.raises(InputError, match="probe 'nope': not a probeinterface JSON file nor a MEAutility probe"):
        classify(tmp_path / "units.npy", model=name, probe="nope", fs_hz=32000, filtered=False,
                 data_dir=graph.data_path)
    with pytest.raises(registry.RegistryError, match="'paper_cnn_SqMEA-10-15_spin_mtype' has no alias 'champion'"):
        registry.load_registered("paper_cnn_SqMEA-10-15_spin_mtype")


def test_classify_a_mearec_templates_file_with_a_paper_model(graph, tmp_path):
    import MEArec

    from eap_assets.core.recording import InputError

    eap_array = np.load(graph.data_path / "eaps" / SMALL / "norot" / "eaps.npy")[:4]
    info = {"params": {"dt": 2**-5}, "electrodes": {"electrode_name": "SqMEA-10-15"}}
    units = {"templates": eap_array, "locations": np.zeros((4, 3)), "rotations": np.zeros((4, 3)),
             "celltypes": np.array(["x"] * 4)}
    MEArec.save_template_generator(MEArec.TemplateGenerator(temp_dict=units, info=info), str(tmp_path / "t.h5"),
                                   verbose=False)
    out = tmp_path / "p.parquet"
    name = registry.model_name("lgbm", "norot", "binary", "SqMEA-10-15")
    assert cli.main(["classify", str(tmp_path / "t.h5"), "--model", name, "--data-dir", str(graph.data_path),
                     "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 4 and set(frame["binary_predicted"]) <= {"E", "I"}
    assert {"binary_p_E", "binary_p_I"} <= set(frame.columns) and (frame["truth_cell"] == "x").all()
    info["params"]["dt"] = 1 / 32.0 * 2  # 16 kHz: resampled to 32 kHz, the window is then twice the model's
    MEArec.save_template_generator(MEArec.TemplateGenerator(temp_dict=units, info=info), str(tmp_path / "u.h5"),
                                   verbose=False)
    with pytest.raises(InputError, match="waveforms have 448 samples at 32000 Hz; the model takes 224"):
        classify(tmp_path / "u.h5", model=name, data_dir=graph.data_path)


def test_paper_comparison_report(graph):
    text = (graph.data_path / "reports" / "paper_comparison.md").read_text()
    assert "paper Table II" in text and "paper Table III" in text and "unseen cell type" in text
    assert "| UTPC |" in text and "60.95" in text  # the paper's UTPC 3drot binary accuracy beside ours
    csv = pd.read_csv(graph.data_path / "reports" / "paper_comparison.csv")
    assert set(csv["rotation"]) == set(ROTATIONS) and set(csv["model"]) == {"cnn", "lgbm", "waveform", "width_rule"}


def test_a_new_cell_model_folder_reaches_a_new_registered_model_by_automation_alone(graph, models, tmp_path):
    """The deployment of the graph above (2 cells, norot), its UI and daemon running: a BP model folder dropped
    into the model folder is added by the sensor, simulated, placed, added to the training table (a new m-type,
    a new class), and the models retrain and register a new version that knows it; no command is typed.
    (Last in this module: it retrains the norot models.)"""
    from eap_assets.defs.settings import deployment_resources, write_settings

    home = Path(os.environ["DAGSTER_HOME"])
    folder = tmp_path / "new_models"
    folder.mkdir()
    resources = deployment_resources(home)  # what the fixture's `make run` left
    write_settings({**resources, "settings": graph.model_copy(update={"model_folders": [str(folder)]}),
                    "training": TRAINING}, home)
    name = registry.model_name("lgbm", "norot", "mtype")
    registry.configure(registry.default_tracking_uri(graph.data_path), "eap_assets")
    versions_before = {v.version for v in _versions(name)}
    port = free_port()
    env = {**os.environ, "EAP_ASSETS_ROTATIONS": "norot", "EAP_ASSETS_AUTOMATION": "on", "EAP_ASSETS_RETRAIN": "eager"}
    ui = _start_ui(port, env, tmp_path / "ui.log")
    new = "L5_BP_bAC217_9"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and ui.poll() is None:
            try:
                _graphql(port, "{ version }")
                break
            except OSError:
                time.sleep(2)
        shutil.copytree(models[INTERNEURON].path, folder / new, ignore=shutil.ignore_patterns("__pycache__", "x86_64"))
        deadline, found = time.time() + 1500, None  # generous: the other xdist worker loads the machine
        while time.time() < deadline and ui.poll() is None and found is None:
            time.sleep(10)
            found = next((v for v in _versions(name) if v.version not in versions_before
                          and "BP" in json.loads(v.tags["classes"])), None)
        assert found is not None, (f"no new version of {name} with class BP: {_automation_runs()}\n"
                                   f"dagster dev said: {_tail(tmp_path / 'ui.log')}")
        assert json.loads(found.tags["classes"]) == ["BP", "SBC", "UTPC"]
        runs = _automation_runs()
        assert any(r["job"] == "__ASSET_JOB" and "cell_model" in r["assets"] for r in runs), runs
        assert not any(r["status"] == "FAILURE" and "norot" in r["partition"] for r in runs), runs
    finally:
        _stop(ui)
    table = pd.read_parquet(graph.data_path / "training_table" / "norot.parquet")
    assert set(table["cell"]) == {*CELLS, new}


def _start_ui(port: int, env: dict, log: Path) -> subprocess.Popen:
    """`eap-assets ui` (webserver, daemon, code server and its run workers) writing to ``log``: a pipe that nobody
    reads would block all of them once 64 KiB of log lines filled it (runs then hang in STARTED)."""
    with log.open("w") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "eap-assets"), "ui", "--port", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _stop(ui: subprocess.Popen, strict: bool = False) -> None:
    """SIGTERM, as `make ui` gets it; killed after 60 s (then an error if ``strict``)."""
    ui.send_signal(signal.SIGTERM)
    try:
        ui.wait(timeout=60)
    except subprocess.TimeoutExpired:
        ui.kill()
        if strict:
            raise


def _versions(name: str) -> list:
    from mlflow import MlflowClient

    return list(MlflowClient().search_model_versions(f"name = '{name}'"))


def _automation_runs() -> list[dict]:
    """Runs the automation sensor launched: job, assets, partition, status (and the last events of an
    unfinished run)."""
    with dg.DagsterInstance.get() as instance:
        return [{"job": r.job_name, "assets": sorted(k.to_user_string() for k in (r.asset_selection or [])),
                 "partition": r.tags.get("dagster/partition", ""), "status": r.status.value,
                 **({} if r.is_finished else {"last events": [
                     f"{e.step_key} {e.dagster_event_type} {(e.user_message or '')[:80]}"
                     for e in instance.all_logs(r.run_id)[-4:]]})}
                for r in instance.get_runs() if r.tags.get("dagster/from_automation_condition") == "true"
                or r.tags.get("dagster/sensor_name") == "automation"]


def test_settings_sources_cover_every_setting_and_survive_the_settings_file(tmp_path):
    """Each simulation setting is covered by a settings source (or decides no artefact's content), and the
    versions a `make run` reports equal those the code location computes from the settings file it wrote
    (else the sensor would see every setting as changed and the automation would redo everything)."""
    from eap_assets.defs import sources
    from eap_assets.defs.settings import deployment_resources, write_settings

    covered = {*sources.STIMULUS_FIELDS, *sources.SIMULATION_FIELDS, *sources.VARIANT_FIELDS, *sources.NOT_CONTENT}
    assert covered == set(SimulationSettings.model_fields)
    run = {**deployment_resources(tmp_path / "none"),
           "settings": SimulationSettings(data_dir=str(tmp_path / "data"), preset="quick", n_eaps=12, seed=3,
                                          noise_rms_uv=5.0, noise_band_hz=[300.0, 5000.0]),
           "training": TRAINING}
    write_settings(run, tmp_path / "home")
    assert sources.settings_versions(deployment_resources(tmp_path / "home")) == sources.settings_versions(run)
    # a setting changes exactly the sources that cover it
    before = sources.settings_versions(run)
    after = sources.settings_versions({**run, "training": TRAINING.model_copy(update={"cnn_steps": 7})})
    assert {k for k in before if before[k] != after[k]} == {"cnn_recipe"}
    after = sources.settings_versions({**run, "training": TRAINING.model_copy(update={"lgbm_n_estimators": 7})})
    assert {k for k in before if before[k] != after[k]} == {"lgbm_recipe", "waveform_recipe"}  # its classifier
    moved = sources.settings_versions({**run, "settings": run["settings"].model_copy(update={"data_dir": "elsewhere"})})
    assert all(moved[k] != before[k] for k in before)  # another data directory: nothing there is up to date
