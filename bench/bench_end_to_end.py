"""Cold end-to-end run at paper scale: ``make run RUN_ARGS=...`` with a fresh DAGSTER_HOME and data
directory, per-stage wall time and peak RSS, and the accuracies it reached beside the paper's.

The run is the ordinary ``make run`` (``eap-assets run``: one Dagster backfill through the local
instance's daemon and run queue, one run per core). While it runs, this script samples the resident
set size of the whole process tree (make, the driver, the daemon, the code server and the run
processes) every 0.5 s from ``/proc``. Afterwards it reads the driver's per-partition log
(``<data>/summary.json``: start and duration of every run) to split the time into stages, and the
``evaluation`` asset's JSON files for the test accuracies.

A stage's *span* runs from its first run's start to its last run's end; stages overlap (a cell's
EAP runs start as soon as its templates exist). *Peak RSS (tree)*: the largest sum over all
processes sampled during the stage's span; *anonymous*: the same without shared pages (those of
memory-mapped files -- the EAP datasets are read through ``np.load(mmap_mode="r")`` and count in a
reader's RSS while mapped, as page cache that the kernel can drop -- and of shared libraries), the
memory the run really needs.

Usage::

    .venv/bin/python bench/bench_end_to_end.py                      # paper scale (~25 min)
    .venv/bin/python bench/bench_end_to_end.py --run-args "--quick"  # smoke test of the script
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from eap_assets.core import paper  # noqa: E402
from eap_assets.core.models import TASKS  # noqa: E402

#: driver job -> stage name in the report
STAGE_OF_JOB = {"cell_models_job": "cells (NEURON)", "eap_datasets_job": "EAPs + feature tables",
                "training_tables_job": "training tables + hold-out", "models_job": "models + evaluation",
                "report_job": "report", "recording_eaps_job": "EAPs for real recordings",
                "recording_training_job": "recording training sets",
                "recording_models_job": "models for real recordings",
                "crosscheck_templates_job": "MEArec templates", "crosscheck_recording_job": "MEArec recordings",
                "crosscheck_job": "cross-simulator check", "crosscheck_report_job": "cross-simulator report",
                "morphology_variants_job": "morphology variants", "generalisation_job": "generalisation",
                "generalisation_report_job": "generalisation report"}
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") / 1024


def tree_rss_mib(root: int) -> tuple[float, float]:
    """Resident set size summed over ``root`` and all its descendants, MiB (from /proc), and its anonymous part
    (resident minus shared pages: without the pages of memory-mapped files such as the EAP datasets, which are
    page cache that the kernel can drop)."""
    parents: dict[int, int] = {}
    rss: dict[int, tuple[float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)] = int(fields[1])
            resident, shared = (int(v) for v in (entry / "statm").read_text().split()[1:3])
            rss[int(entry.name)] = (resident * PAGE_KIB / 1024, (resident - shared) * PAGE_KIB / 1024)
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return (sum(rss.get(p, (0.0, 0.0))[0] for p in tree), sum(rss.get(p, (0.0, 0.0))[1] for p in tree))


class RssSampler(threading.Thread):
    """Samples :func:`tree_rss_mib` of a process every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), *tree_rss_mib(self.pid)))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _run_count(result: dict) -> int:
    """Dagster runs behind one stage partition's result (``run_id``: their ids, comma-separated)."""
    return len(result["run_id"].split(",")) if result.get("run_id") else 1


def stage_rows(results: list[dict], samples: list[tuple[float, float, float]], t0: float) -> list[dict]:
    """Per stage: runs, span, summed run time, peak RSS and its anonymous part (tree, sampled)."""
    rows = []
    for job, stage in STAGE_OF_JOB.items():
        runs = [r for r in results if r["job"] == job and r["status"] == "done" and r.get("started")]
        if not runs:
            continue
        start = min(r["started"] for r in runs)
        end = max(r.get("ended") or r["started"] + r["seconds"] for r in runs)
        inside = [(rss, anon) for t, rss, anon in samples if start <= t <= end]
        rows.append({"stage": stage, "job": job, "runs": sum(_run_count(r) for r in runs),
                     "start_s": round(start - t0, 1),
                     "end_s": round(end - t0, 1), "span_s": round(end - start, 1),
                     "run_seconds_sum": round(sum(r["seconds"] for r in runs), 1),
                     "longest_run_s": max(r["seconds"] for r in runs),
                     "peak_rss_tree_mib": round(max(r for r, _ in inside), 0) if inside else None,
                     "peak_anon_tree_mib": round(max(a for _, a in inside), 0) if inside else None})
    return rows


def dagster_profile(home: Path, until: float | None = None) -> dict:
    """Where the time of the runs went, from the Dagster instance in ``home`` (runs created by ``until``, a Unix
    time, if given): per asset (or check), the steps and their summed seconds; per run, the start-up (launched to
    first step: the run worker's process start and code load) and the queue wait (created to launched); the
    longest run's steps in the order they ran."""
    import collections

    os.environ["DAGSTER_HOME"] = str(home)
    import dagster as dg

    from eap_assets.definitions import defs

    checks = {f"{k.asset_key.to_python_identifier()}_{k.name}" for k in defs.resolve_asset_graph().asset_check_keys}
    steps: dict[str, list[float]] = collections.defaultdict(list)
    startup, queued, runs = [], [], 0
    longest: dict = {"seconds": -1.0}
    kinds = {dg.DagsterEventType.PIPELINE_STARTING, dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
             dg.DagsterEventType.STEP_FAILURE}
    with dg.DagsterInstance.get() as instance:
        for record in instance.get_run_records():
            if until is not None and record.create_timestamp.timestamp() > until:
                continue
            runs += 1
            begun: dict[str, float] = {}
            mine: list[dict] = []
            launched = None
            for event in instance.all_logs(record.dagster_run.run_id, of_type=kinds):
                kind = event.dagster_event.event_type_value
                if kind == "PIPELINE_STARTING":
                    launched = event.timestamp
                elif kind == "STEP_START":
                    begun[event.step_key] = event.timestamp
                elif event.step_key in begun:
                    name = "asset checks" if event.step_key in checks else event.step_key
                    steps[name].append(event.timestamp - begun[event.step_key])
                    mine.append({"step": name, "seconds": round(event.timestamp - begun[event.step_key], 1)})
            if record.start_time and record.end_time and record.end_time - record.start_time > longest["seconds"]:
                longest = {"seconds": round(record.end_time - record.start_time, 1), "steps": mine,
                           "partition": record.dagster_run.tags.get("dagster/partition")}
            if launched is not None and begun:
                queued.append(launched - record.create_timestamp.timestamp())
                startup.append(min(begun.values()) - launched)
    rows = sorted(({"step": name, "count": len(values), "seconds": round(sum(values), 1)}
                   for name, values in steps.items()), key=lambda row: -row["seconds"])
    return {"runs": runs, "steps": rows, "step_seconds": round(sum(r["seconds"] for r in rows), 1),
            "startup_seconds": round(sum(startup), 1), "startup_median_s": round(benchlib.median(startup), 2)
            if startup else None, "queued_median_s": round(benchlib.median(queued), 1) if queued else None,
            "longest_run": longest if longest["seconds"] >= 0 else None}


def accuracy_rows(data_dir: Path) -> list[dict]:
    """Test accuracy of every evaluated (rotation, task, kind) beside the paper's CNN, %."""
    rows = []
    paths = [p for task in TASKS for p in sorted(data_dir.glob(f"evaluation/*/{task}.json"))]
    for path in paths:
        evaluation = json.loads(path.read_text())
        rotation, task = evaluation["rotation"], evaluation["task"]
        if task == "binary":
            reference, measure = paper.PAPER_BINARY[rotation]["Average"], "accuracy over test EAPs"
        else:
            reference, measure = paper.paper_mtype_summary(rotation)["mean"], "mean over cell types"
        for kind in evaluation["results"]:
            result = evaluation["results"][kind]
            ours = result["accuracy"] if task == "binary" else result["summary"]["mean"]
            rows.append({"rotation": rotation, "task": task, "kind": kind, "measure": measure,
                         "ours": round(ours, 2), "paper_cnn": reference, "difference_pp": round(ours - reference, 2),
                         "within_3pp_or_better": bool(ours >= reference - 3.0),
                         "train_seconds": evaluation.get("train_seconds", {}).get(kind),
                         "cnn_training": evaluation.get("cnn_training") if kind == "cnn" else None})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=benchlib.REPO / ".bench_e2e",
                        help="fresh DAGSTER_HOME and data directory go here (deleted first)")
    parser.add_argument("--run-args", default="", help="extra arguments of `eap-assets run` (RUN_ARGS)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    parser.add_argument("--reprofile", action="store_true",
                        help="no run: recompute the profile of bench/results/end_to_end.json from the instance that "
                             "its run left in --workdir (kept with --keep; runs created after the result are ignored)")
    args = parser.parse_args(argv)
    if args.reprofile:
        return reprofile(args.workdir.resolve())

    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    data_dir, home = workdir / "data", workdir / "dagster_home"
    home.mkdir(parents=True)
    run_args = f"--data-dir {shlex.quote(str(data_dir))} {args.run_args}".strip()
    command = ["make", "run", f"RUN_ARGS={run_args}"]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    load_start = benchlib.loadavg()
    print(f"cold run: {' '.join(command)} with DAGSTER_HOME={home}", flush=True)
    t0 = time.time()
    process = subprocess.Popen(command, cwd=benchlib.REPO, env=env)
    sampler = RssSampler(process.pid)
    sampler.start()
    code = process.wait()
    wall = time.time() - t0
    sampler.stop()
    summary = json.loads((data_dir / "summary.json").read_text()) if (data_dir / "summary.json").exists() else []
    failed = [r for r in summary if r["status"] == "failed"]
    result = {
        "command": f"make run RUN_ARGS=\"--data-dir <fresh> {args.run_args}\" with DAGSTER_HOME=<fresh>",
        "bench_command": benchlib.command_line(),
        "run_args": args.run_args, "exit_code": code, "wall_s": round(wall, 1),
        "runs": sum(_run_count(r) for r in summary if r["status"] == "done"), "failed": len(failed),
        "failures": [f"{r['job']} {r['partition']}: {r['error']}" for r in failed][:10],
        "peak_rss_tree_mib": round(max((rss for _, rss, _ in sampler.samples), default=0.0), 0),
        "peak_anon_tree_mib": round(max((anon for _, _, anon in sampler.samples), default=0.0), 0),
        "stages": stage_rows(summary, sampler.samples, t0), "accuracy": accuracy_rows(data_dir),
        "profile": dagster_profile(home),
        "load_avg_start": load_start, "load_avg_end": benchlib.loadavg(),
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("stages", "accuracy")}, indent=1))
    for row in result["stages"]:
        print(row)
    for row in result["accuracy"]:
        print(row)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    name = "end_to_end" if not args.run_args else "end_to_end_custom"
    print(f"written {benchlib.save_result(name, result)}")
    return result


def reprofile(workdir: Path) -> dict:
    """The profile of the last end-to-end result recomputed from its kept instance (the code of today)."""
    import calendar

    from eap_assets.core.storage import atomic_write_text

    result = benchlib.load_result("end_to_end")
    written = calendar.timegm(time.strptime(result["date"], "%Y-%m-%d %H:%M:%S %Z"))
    result["profile"] = dagster_profile(workdir / "dagster_home", until=written)
    result["profile_command"] = benchlib.command_line()
    atomic_write_text(benchlib.RESULTS_DIR / "end_to_end.json", json.dumps(result, indent=2))
    print(json.dumps(result["profile"]["longest_run"]))
    return result


if __name__ == "__main__":
    main()
