"""The full EAP stage: every cell x rotation mode x N accepted EAPs, in parallel worker processes.

Each partition is :func:`eap_assets.core.eaps.simulate_eap_dataset` at the paper's settings
(SqMEA-10-15, position box x 10-60 / y, z ±75 µm, 30 µV rule, infinite medium, default
float32 engine) on the cached spike templates in ``data/templates``; one worker process per
core, one BLAS thread each, largest partitions first.  The datasets are computed in full
and dropped (not written to disk).  Reported per run: wall time of the stage (first task
start to last task end, and including the workers' start-up), EAPs and candidates per
second, and the peak RSS of each process.

Usage::

    .venv/bin/python bench/bench_eap_stage.py [--workers 2] [--runs 3] [--n-eaps 1000]
        [--cells ...] [--rotations norot zrot xrot 3drot]
"""

from __future__ import annotations

import benchlib  # first: limits BLAS threads (inherited by the spawned workers)

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from functools import lru_cache  # noqa: E402
from pathlib import Path  # noqa: E402

from eap_assets.core import rotations  # noqa: E402


@lru_cache(maxsize=None)
def _templates(path: str):
    from eap_assets.core.intracellular import SpikeTemplates

    return SpikeTemplates.load(path)


def run_partition(task: tuple[str, str, int, int]) -> dict:
    """One (cell, rotation) partition in a worker; returns counts, times and this process's peak RSS."""
    from eap_assets.core.eaps import EAPConfig, simulate_eap_dataset

    path, rotation, n_eaps, seed = task
    start, cpu_start = time.time(), time.process_time()
    templates = _templates(path)
    dataset = simulate_eap_dataset(templates, EAPConfig(n_eaps=n_eaps, rotation=rotation, seed=seed),
                                   mtype=templates.cell_name.split("_")[1])
    end = time.time()
    return {"cell": templates.cell_name, "rotation": rotation, "segments": templates.n_segments,
            "accepted": dataset.accepted, "tries": dataset.tries, "start": start, "end": end, "seconds": end - start,
            "cpu_s": time.process_time() - cpu_start,
            "pid": os.getpid(), "peak_rss_mib": benchlib.peak_rss_mib()}


def _warm_up() -> None:
    import eap_assets.core.eaps  # noqa: F401


def run_stage(paths: list[Path], rotation_modes: list[str], n_eaps: int, workers: int, seed: int) -> dict:
    """One run of the stage in a fresh pool of worker processes."""
    tasks = [(str(p), r, n_eaps, seed) for p in paths for r in rotation_modes]
    tasks.sort(key=lambda t: Path(t[0]).stat().st_size, reverse=True)  # big cells first (file size ~ segments)
    load_start = benchlib.loadavg()
    t0 = time.time()
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_warm_up) as pool:
        parts = list(pool.imap_unordered(run_partition, tasks, chunksize=1))
    total = time.time() - t0
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    per_worker = {}
    for p in parts:
        per_worker[p["pid"]] = max(per_worker.get(p["pid"], 0.0), p["peak_rss_mib"])
    accepted, tries = sum(p["accepted"] for p in parts), sum(p["tries"] for p in parts)
    cpu = sum(p["cpu_s"] for p in parts)
    return {"wall_s": wall, "wall_with_startup_s": total, "cpu_s": cpu, "cpu_per_worker_s": cpu / workers,
            "eaps": accepted, "candidates": tries,
            "eaps_per_s": accepted / wall, "candidates_per_s": tries / wall,
            "worker_peak_rss_mib": sorted(per_worker.values()), "parent_peak_rss_mib": benchlib.peak_rss_mib(),
            "total_peak_rss_mib": sum(per_worker.values()) + benchlib.peak_rss_mib(),
            "loadavg_start": load_start, "loadavg_end": benchlib.loadavg(),
            "partitions": sorted(parts, key=lambda p: (p["cell"], p["rotation"]))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n-eaps", type=int, default=1000)
    parser.add_argument("--cells", nargs="+", default=None, help="cell names (default: every file in data/templates)")
    parser.add_argument("--rotations", nargs="+", default=list(rotations.PAPER_ROTATIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="eap_stage", help="result name (bench/results/<name>.json)")
    args = parser.parse_args(argv)
    paths = benchlib.template_paths(args.cells)
    runs = []
    for i in range(args.runs):
        run = run_stage(paths, args.rotations, args.n_eaps, args.workers, args.seed)
        runs.append(run)
        print(f"run {i + 1}/{args.runs}: {run['eaps']} EAPs ({run['candidates']} candidates) in {run['wall_s']:.1f} s "
              f"({run['wall_with_startup_s']:.1f} s with start-up; {run['cpu_s']:.1f} CPU s in partitions): "
              f"{run['eaps_per_s']:.0f} EAPs/s, "
              f"{run['candidates_per_s']:.0f} candidates/s; peak RSS per worker {run['worker_peak_rss_mib']} MiB, "
              f"total {run['total_peak_rss_mib']:.0f} MiB; load {run['loadavg_start']} -> {run['loadavg_end']}")
    summary = {key: benchlib.median([r[key] for r in runs])
               for key in ("wall_s", "wall_with_startup_s", "cpu_s", "cpu_per_worker_s", "eaps_per_s", "candidates_per_s",
                           "total_peak_rss_mib")}
    summary["max_worker_peak_rss_mib"] = max(max(r["worker_peak_rss_mib"]) for r in runs)
    result = {"cells": len(paths), "rotations": args.rotations, "n_eaps": args.n_eaps, "workers": args.workers,
              "runs": runs, "median": summary}
    print("median: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.items()))
    print(f"written {benchlib.save_result(args.name, result)}")
    return result


if __name__ == "__main__":
    main()
