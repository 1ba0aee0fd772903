"""The NEURON stage at paper settings: spike templates of the 13 BBP cells, simulated now.

Every cell is simulated from scratch (``stages.ensure_templates(force=True)``: the current search,
each simulation 1.2 s at dt 2**-5 ms recording the soma potential and every segment's membrane
current; the templates are cut from the simulation that hits 11-15 spikes) into a temporary data
directory, ``--workers`` processes at a time (one cell per task, largest cells first, as a run of
the ``spike_templates`` partitions would), with a fresh process per cell. Reported: the stage's
span (first start to last end), per cell the simulations of the search, the wall time of the
accepted one and of all, and each worker's peak RSS.

Usage::

    .venv/bin/python bench/bench_neuron.py [--workers 2] [--cells L5_BP_bAC217_1,...]
"""

from __future__ import annotations

import benchlib

import argparse  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402


def _simulate(name: str, data_dir: str) -> dict:
    from eap_assets.core import cells, stages
    from eap_assets.core.intracellular import StimulusConfig

    start = time.time()
    model = cells.get_cell_model(name)
    templates, _ = stages.ensure_templates(model, StimulusConfig(), Path(data_dir), force=True)
    p = templates.provenance
    return {"cell": name, "segments": templates.n_segments, "simulations": p["simulations"],
            "search": p["search"], "final_simulation_s": p["final_simulation_s"],
            "total_simulation_s": p["total_simulation_s"], "start": start, "end": time.time(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "neuron": p.get("neuron"), "lfpy": p.get("lfpy")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cells", default="", help="comma-separated cell names (default: the 13 BBP models)")
    args = parser.parse_args(argv)
    from eap_assets.core import cells

    names = [c for c in args.cells.split(",") if c] or sorted(cells.discover_cell_models())
    sizes = {}
    for name in names:  # largest first (segments of the MEArec morphology files are not known before loading)
        sizes[name] = cells.get_cell_model(name).morphology.stat().st_size
    names.sort(key=lambda n: -sizes[n])
    load = benchlib.loadavg()
    with tempfile.TemporaryDirectory(prefix="bench_neuron_") as data_dir:
        ctx = multiprocessing.get_context("spawn")
        start = time.time()
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx, max_tasks_per_child=1) as pool:
            rows = list(pool.map(_simulate, names, [data_dir] * len(names)))
        span = time.time() - start
    for r in rows:
        print(f"{r['cell']:24s} {r['segments']:5d} segments  {r['simulations']} simulations  accepted "
              f"{r['final_simulation_s']} s  all {r['total_simulation_s']} s  peak RSS {r['peak_rss_mib']} MiB")
    total = sum(r["total_simulation_s"] for r in rows)
    result = {"workers": args.workers, "rows": rows, "span_s": round(span, 1), "total_simulation_s": round(total, 1),
              "loadavg_start": load, "loadavg_end": benchlib.loadavg()}
    print(f"{len(rows)} cells: span {span:.0f} s on {args.workers} workers, {total:.0f} s of simulation; "
          f"written {benchlib.save_result('neuron', result)}")
    return result


if __name__ == "__main__":
    main()
