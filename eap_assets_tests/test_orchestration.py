"""`make run` is a Dagster backfill: Ctrl-C cancels it, and a rerun materialises only what is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
SMALL = "L5_SBC_bNAC219_1"
PYRAMID = "L5_UTPC_cADpyr232_1"


def _run(data: Path, home: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "eap-assets"), "run", "--quick", "--cells", f"{SMALL},{PYRAMID}",
         "--rotations", "norot,3drot", "--n-eaps", "10", "--data-dir", str(data), "--stages", "cells,eaps,training",
         *more],
        cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def test_a_killed_run_cancels_its_backfill_instead_of_leaving_it_to_the_next_daemon(tmp_path, monkeypatch):
    data, home = tmp_path / "data", tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    run = _run(data, home)
    lines = []
    for line in run.stdout:  # the backfill is launched: `kill` (SIGTERM), as a job scheduler or a user would
        lines.append(line)
        if line.startswith("backfill "):
            break
    run.send_signal(signal.SIGTERM)
    rest, _ = run.communicate(timeout=180)
    output = "".join(lines) + rest
    assert run.returncode == 130, output[-3000:]
    assert "cancelling backfill" in output, output[-3000:]
    with dg.DagsterInstance.get() as instance:
        backfills = instance.get_backfills()
        assert len(backfills) == 1 and backfills[0].status.value in ("CANCELED", "CANCELING"), backfills
        assert all(r.is_finished for r in instance.get_runs())


def test_an_interrupted_run_is_cancelled_and_a_rerun_materialises_only_what_is_missing(tmp_path, monkeypatch):
    data, home = tmp_path / "data", tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    first = _run(data, home)
    lines = []
    for line in first.stdout:  # wait until the first runs are done, then Ctrl-C
        lines.append(line)
        if "cell_models_job" in line and "done in" in line:
            break
    first.send_signal(signal.SIGINT)
    rest, _ = first.communicate(timeout=180)
    output = "".join(lines) + rest
    assert first.returncode == 130, output[-3000:]
    assert "cancelling backfill" in output and "cancelled" in output
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        backfill = {r.tags["dagster/backfill"] for r in runs}
        assert len(backfill) == 1 and all(r.is_finished for r in runs), [(r.run_id, r.status) for r in runs]
        done_before = {(r.tags.get("dagster/partition"), frozenset(k.to_user_string() for k in r.asset_selection))
                       for r in runs if r.status == dg.DagsterRunStatus.SUCCESS}
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))
    assert not (data / "training_table").exists()  # stopped before the end
    assert done_before

    second = _run(data, home)
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out[-3000:]
    summary = json.loads((data / "summary.json").read_text())
    assert len(summary) == len({(r["job"], r["partition"]) for r in summary})  # one line per stage partition
    ran = {(r["job"], r["partition"]) for r in summary if r["status"] == "done"}
    skipped = {(r["job"], r["partition"]) for r in summary if r["status"] == "skipped"}
    cells_done_before = {p for p, assets in done_before if "spike_templates" in assets}
    assert {("cell_models_job", c) for c in cells_done_before} <= skipped  # not simulated again
    assert not {("cell_models_job", c) for c in cells_done_before} & ran
    assert ("training_tables_job", "norot") in ran and ("training_tables_job", "3drot") in ran
    assert len(ran) + len(skipped) == 2 + 4 + 2
    with dg.DagsterInstance.get() as instance:
        assert len({r.tags["dagster/backfill"] for r in instance.get_runs()}) == 2  # one backfill per `make run`

    # Dagster's staleness decides: a new CNN recipe makes the CNNs stale (not LightGBM, not the waveform model),
    # and their evaluation follows in the same backfill
    models = ("--stages", "cells,eaps,training,models", "--rotations", "norot", "--cnn-steps", "20")
    third = _run(data, home, *models)
    out, _ = third.communicate(timeout=900)
    assert third.returncode == 0, out[-3000:]
    fourth = _run(data, home, *models[:-1], "30")
    out, _ = fourth.communicate(timeout=900)
    assert fourth.returncode == 0, out[-3000:]
    assert "sources changed: cnn_recipe" in out, out[-3000:]
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        backfills = {r.tags["dagster/backfill"] for r in runs}
        assert len(backfills) == 2 + 1 + 1, backfills  # one backfill per `make run`
        last = max(backfills, key=lambda b: max(instance.get_run_record_by_id(r.run_id).create_timestamp
                                                for r in runs if r.tags["dagster/backfill"] == b))
        targeted = sorted({(k.to_user_string(), r.tags["dagster/partition"]) for r in runs
                           if r.tags["dagster/backfill"] == last for k in r.asset_selection})
        assert targeted == [("cnn_model", "norot|binary"), ("cnn_model", "norot|mtype"),
                            ("evaluation", "norot|binary"), ("evaluation", "norot|mtype")], targeted
    summary = json.loads((data / "summary.json").read_text())
    assert {(r["job"], r["status"]) for r in summary if r["partition"] == "norot"} == {("training_tables_job", "skipped")}


def test_a_stage_partition_run_in_two_runs_is_one_result():
    """A cold paper-scale backfill ran 40 of the 52 EAP partitions as two runs (eap_dataset, then feature_table):
    summary.json listed them twice. The second run folds into the first result."""
    from eap_assets.run import TaskResult, _merge_into

    first = TaskResult("eap_datasets_job", "c|norot", "done", 2.0, "run-a", None, started=100.0, ended=102.0)
    _merge_into(first, TaskResult("eap_datasets_job", "c|norot", "done", 1.5, "run-b", None, started=130.0,
                                  ended=131.5))
    assert (first.status, first.seconds, first.run_id, first.started, first.ended) == (
        "done", 3.5, "run-a,run-b", 100.0, 131.5)
    _merge_into(first, TaskResult("eap_datasets_job", "c|norot", "failed", 0.5, "run-c", "feature_table: boom",
                                  started=140.0, ended=140.5))
    assert first.status == "failed" and first.error == "feature_table: boom" and first.run_id.count(",") == 2


def test_a_stage_partition_never_run_says_which_upstream_failure_stopped_it():
    """The summary names the failure upstream of a partition that the backfill never ran, per stage: a cell's
    failed recording EAPs of the same rotation stop the recording training set and the recording generalisation
    of that rotation (not of another); a failed training table stops that rotation's models."""
    from eap_assets.run import TaskResult, _why_not_run

    recording = [TaskResult("recording_eaps_job", "L5_BP_bAC217_1|3drot", "failed", error="boom")]
    assert _why_not_run("recording_generalisation_job", "3drot|binary", recording) == \
        "recording EAPs failed for L5_BP_bAC217_1"
    assert _why_not_run("recording_training_job", "3drot", recording) == "recording EAPs failed for L5_BP_bAC217_1"
    assert _why_not_run("recording_generalisation_job", "physrot|binary", recording).startswith(
        "not run: upstream failed (recording_eaps_job L5_BP_bAC217_1|3drot")
    cell = [TaskResult("cell_models_job", "L5_BP_bAC217_1", "failed", error="boom")]
    assert _why_not_run("eap_datasets_job", "L5_BP_bAC217_1|norot", cell) == "cell stage of L5_BP_bAC217_1 failed"
    assert _why_not_run("recording_generalisation_job", "physrot|mtype", cell) == \
        "recording EAPs failed for L5_BP_bAC217_1"  # a cell that failed fails every rotation
    table = [TaskResult("training_tables_job", "xrot", "failed", error="boom")]
    assert _why_not_run("models_job", "xrot|mtype", table) == "training table xrot failed"
    assert _why_not_run("models_job", "norot|mtype", table).startswith("not run: upstream failed")
