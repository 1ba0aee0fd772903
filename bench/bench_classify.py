"""``eap_assets.classify`` on 1000 units of a SortingAnalyzer: wall time in a fresh process, model loading included.

The analyzer is built once (not timed) from the cross-check's MEArec recording at 30 kHz (so resampling is part of
the work): 1000 units, each a random half of the spikes of one of the recording's ground-truth units (cycling
through them), ``random_spikes`` + ``templates`` (1 ms before, 2 ms after), saved as a binary folder. Then, ``--runs``
times, a fresh Python process runs ``eap_assets.classify(folder, out=..., write_properties=True)`` (both tasks: the
binary and the m-type champions are loaded) and prints the answers' summary when it returns: the time from process
start to that line (imports, registry lookup, model loading, mapping, prediction, writing: the figure compared with
the target), the time until the process has ended (Python's shutdown of ~3400 modules adds ~1.3 s), and the time of
each step.

Usage (after ``make run`` and ``make crosscheck`` in ``--data-dir``)::

    .venv/bin/python bench/bench_classify.py [--data-dir data] [--units 1000] [--runs 3] [--rate 30000]
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

TARGET_S = 10.0

CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
import eap_assets
from eap_assets import serving
t_import = time.perf_counter() - t0
steps = {}
log = lambda m: steps.setdefault(m, round(time.perf_counter() - t0, 3))
frame = eap_assets.classify(sys.argv[1], data_dir=sys.argv[2], out=sys.argv[3], write_properties=True, log=log)
print(json.dumps({"import_s": t_import, "total_s": time.perf_counter() - t0, "units": len(frame),
                  "classified": int((frame["error"] == "").sum()), "steps": steps}), flush=True)
"""


def build_analyzer(recording: Path, folder: Path, n_units: int, seed: int = 0) -> tuple[float, int]:
    """Build the analyzer; returns the seconds it took and the recording's ground-truth units it cycled through."""
    import numpy as np
    import spikeinterface.full as si

    start = time.perf_counter()
    rec, sorting = si.read_mearec(recording)
    rng = np.random.default_rng(seed)
    trains = {}
    for i in range(n_units):
        unit = sorting.unit_ids[i % len(sorting.unit_ids)]
        spikes = sorting.get_unit_spike_train(unit)
        trains[f"u{i:04d}"] = np.sort(rng.choice(spikes, size=max(1, len(spikes) // 2), replace=False))
    big = si.NumpySorting.from_unit_dict([trains], sampling_frequency=sorting.sampling_frequency)
    analyzer = si.create_sorting_analyzer(big, rec, format="binary_folder", folder=folder, sparse=False,
                                          overwrite=True)
    analyzer.compute("random_spikes", max_spikes_per_unit=200, seed=seed)
    analyzer.compute("templates", ms_before=1.0, ms_after=2.0)
    return time.perf_counter() - start, len(sorting.unit_ids)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(benchlib.DATA_DIR))
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", default="30000")
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    recording = data / "crosscheck" / args.rate / "recording.h5"
    if not recording.exists():
        raise SystemExit(f"{recording} missing: run `make crosscheck` (with --data-dir {data}) first")
    folder = data / "bench" / f"classify_{args.units}_units"
    setup_s, recording_units = build_analyzer(recording, folder, args.units)
    print(f"analyzer of {args.units} units (from {recording_units} ground-truth units) built in {setup_s:.0f} s: "
          f"{folder}", flush=True)
    runs = []
    for i in range(args.runs):
        load, reference = benchlib.loadavg(), benchlib.reference_loop_s()
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(data),
                                  str(folder.parent / "answers.csv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=benchlib.REPO)
        line = child.stdout.readline()  # the answers, printed when classify returned
        answer = time.perf_counter() - start
        _, err = child.communicate()
        wall = time.perf_counter() - start
        if child.returncode != 0 or not line.strip():
            raise SystemExit(f"classify failed (exit {child.returncode}):\n{err[-3000:]}")
        record = json.loads(line)
        record.update(answer_s=round(answer, 2), process_wall_s=round(wall, 2), loadavg=load, reference_loop_s=reference)
        runs.append(record)
        print(f"run {i + 1}: answers after {answer:.2f} s, process ended after {wall:.2f} s, {record['units']} units "
              f"(imports {record['import_s']:.2f} s); load {load}, reference loop {reference} s", flush=True)
    result = {"units": args.units, "recording_units": recording_units, "rate_hz": float(args.rate),
              "setup_s": round(setup_s, 1), "runs": runs,
              "median_s": benchlib.median([r["answer_s"] for r in runs]),
              "median_process_s": benchlib.median([r["process_wall_s"] for r in runs]), "target_s": TARGET_S}
    print(f"median {result['median_s']:.2f} s from process start to the answers (target <= {TARGET_S:g} s), "
          f"{result['median_process_s']:.2f} s to the end of the process (interpreter shutdown included); "
          f"written {benchlib.save_result('classify', result)}")
    return result


if __name__ == "__main__":
    main()
