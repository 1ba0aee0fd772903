"""Memory of the heaviest step of a paper-scale run: the recording training set of one rotation.

Builds the ``recording_training_set`` of ``--rotation`` from the recording EAPs of a paper-scale ``make run`` in
``--data-dir`` (the same core call as the asset: ``load_pool`` + ``build_recording_set`` with the run's default
settings) in a child process, and samples that process's ``/proc/<pid>/status`` every 0.2 s: ``VmRSS`` (what the
end-to-end benchmark sums over the process tree), ``RssAnon`` (memory only this process holds: arrays, the table)
and ``RssFile`` (pages of files mapped into it: the memory-mapped EAP datasets it has read, which stay counted in
its RSS while mapped but are page cache that the kernel can drop under pressure). Then it compares the table and
basis with the ones the run's asset stored in the data directory, column by column (one BLAS thread, as the runs).

Usage (after a paper-scale ``make run`` in the data directory)::

    .venv/bin/python bench/recording_set_memory.py --data-dir /path/to/data [--rotation 3drot]
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from queue import Empty as queue_empty  # noqa: E402

FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def status_mib(pid: int) -> dict[str, float]:
    """The memory fields of a process's ``/proc/<pid>/status``, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in FIELDS:
            out[name] = int(value.split()[0]) / 1024.0
    return out


def build(data_dir: str, rotation: str, queue) -> None:
    from eap_assets.core.recording_set import build_recording_set
    from eap_assets.defs.eaps import load_pool
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings

    settings = SimulationSettings(data_dir=data_dir)
    recording = RecordingSettings()
    cells = sorted(p.name for p in (Path(data_dir) / "recording_eaps").iterdir() if (p / rotation).is_dir())
    start = time.perf_counter()
    pool = load_pool(settings, rotation, cells, family="recording", recording=recording)
    table, basis, summary = build_recording_set(pool, recording.set_config(settings))
    queue.put({"cells": len(cells), "rows": len(table), "table_mib": round(table.memory_usage().sum() / 2**20, 1),
               "eaps": sum(summary["eaps"].values()), "seconds": round(time.perf_counter() - start, 1)})
    stored = Path(data_dir) / "recording_training_set" / f"{rotation}.parquet"  # what the run's asset wrote
    same = None
    if stored.exists():
        import numpy as np
        import pandas as pd

        old = pd.read_parquet(stored).reset_index(drop=True)
        with np.load(Path(data_dir) / "waveform_basis" / f"{rotation}.npz") as old_basis:
            same = {"columns": len(table.columns), "rows": len(old) == len(table),
                    "differing_columns": [c for c in table.columns if c not in old or not table[c].equals(old[c])],
                    "basis": bool(np.array_equal(old_basis["components"], basis.components)
                                  and np.array_equal(old_basis["mean"], basis.mean))}
    queue.put({"same_as_stored": same})


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=benchlib.DATA_DIR)
    parser.add_argument("--rotation", default="3drot")
    args = parser.parse_args(argv)
    eaps_on_disk = sum(f.stat().st_size for f in (args.data_dir / "recording_eaps").glob(f"*/{args.rotation}/eaps.npy"))
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=build, args=(str(args.data_dir.resolve()), args.rotation, queue))
    load_start = benchlib.loadavg()
    child.start()
    peaks: dict[str, float] = {}
    built = None  # the build's figures: the memory of the comparison after it is not sampled
    while built is None and child.is_alive():
        try:
            for name, value in status_mib(child.pid).items():
                peaks[name] = max(peaks.get(name, 0.0), value)
            built = queue.get(timeout=0.2)
        except (FileNotFoundError, ProcessLookupError):
            break
        except queue_empty:
            pass
    try:
        compared = queue.get(timeout=900) if built is not None else {}
    except queue_empty:  # the comparison died
        compared = {}
    child.join()
    if child.exitcode or built is None:
        raise SystemExit(f"the build failed (exit {child.exitcode})")
    result = {"rotation": args.rotation, "data_dir": str(args.data_dir), **built, **compared,
              "recording_eaps_on_disk_mib": round(eaps_on_disk / 2**20, 1),
              "peak_mib": {k: round(v, 1) for k, v in peaks.items()},
              "load_avg_start": load_start, "load_avg_end": benchlib.loadavg()}
    print(result, flush=True)
    print(f"written {benchlib.save_result('recording_set_memory', result)}")
    return result


if __name__ == "__main__":
    main()
