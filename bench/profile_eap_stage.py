"""Where the EAP stage's time goes, on one core.

1. Per cell, one draw chunk of candidates (3drot): time of the engine's set-up, of the
   line-source log terms (element-wise stage, :meth:`SegmentGeometry.log_term`), of the
   products with the low-rank currents, and of :meth:`EAPEngine.compute` as a whole; per
   candidate and per (contact x segment) element.  Best of ``--repeats``.
2. A cProfile of :func:`simulate_eap_dataset` over every cell (serially, 3drot,
   ``--n-eaps`` each): the functions with the most own time.  numpy's ufuncs and matrix
   products are not Python functions: their time counts as the calling function's own time
   (``log_ratio``: the fused numba pass of the element-wise stage; ``log_term``: numpy's log
   over it; ``compute_by_spike``: low-rank products; ``max_peak_to_peak``: the amplitude rule).

Usage::

    .venv/bin/python bench/profile_eap_stage.py [--n-eaps 200] [--repeats 5]
"""

from __future__ import annotations

import benchlib  # noqa: F401  (first: limits BLAS threads)

import argparse  # noqa: E402
import cProfile  # noqa: E402
import io  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from eap_assets.core import rotations  # noqa: E402
from eap_assets.core.eaps import DRAW_CHUNK, EAPConfig, EAPEngine, simulate_eap_dataset  # noqa: E402
from eap_assets.core.intracellular import SpikeTemplates  # noqa: E402

BOX = (np.array([10.0, -75.0, -75.0]), np.array([60.0, 75.0, 75.0]))


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def breakdown(templates: SpikeTemplates, repeats: int, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    engine = EAPEngine(templates)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    rots = rotations.full_rotations("3drot", DRAW_CHUNK, rng)
    pos = rng.uniform(*BOX, size=(DRAW_CHUNK, 3))
    spikes = rng.integers(0, templates.n_spikes, size=DRAW_CHUNK)
    local = engine.geometry.to_local(engine.contacts, rots, pos).reshape(-1, 3)
    terms = engine.geometry.log_term(local)

    def products():
        for lo in range(0, len(terms), engine.batch * len(engine.contacts)):
            product = terms[lo:lo + engine.batch * len(engine.contacts)]
            for factor in engine.factors[0]:
                product = product @ factor

    t_terms = best_time(lambda: engine.geometry.log_term(local, out=terms), repeats)
    t_products = best_time(products, repeats)
    t_compute = best_time(lambda: engine.compute(rots, pos, spikes), repeats)
    elements = terms.size
    return {"cell": templates.cell_name, "segments": templates.n_segments,
            "ranks": [int(f[0].shape[1]) if len(f) == 2 else templates.n_samples for f in engine.factors],
            "setup_s": setup, "candidate_ms": 1e3 * t_compute / DRAW_CHUNK,
            "log_terms_ns_per_element": 1e9 * t_terms / elements,
            "products_ns_per_element": 1e9 * t_products / elements,
            "compute_ns_per_element": 1e9 * t_compute / elements}


def _short(name: str) -> str:
    """A profiled function's file relative to the repository or to site-packages."""
    return name.replace(f"{benchlib.REPO}/", "").split("site-packages/")[-1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-eaps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    all_templates = [SpikeTemplates.load(p) for p in benchlib.template_paths()]
    load_start = benchlib.loadavg()
    rows = []
    for templates in all_templates:
        row = breakdown(templates, args.repeats)
        rows.append(row)
        print(f"{row['cell']:24s} S={row['segments']:5d} ranks {min(row['ranks'])}-{max(row['ranks'])} "
              f"set-up {row['setup_s']:.2f} s  {row['candidate_ms']:.3f} ms/candidate  per element: log terms "
              f"{row['log_terms_ns_per_element']:.1f} ns, products {row['products_ns_per_element']:.1f} ns, "
              f"compute {row['compute_ns_per_element']:.1f} ns")
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for templates in all_templates:
        simulate_eap_dataset(templates, EAPConfig(n_eaps=args.n_eaps, rotation="3drot"),
                             mtype=templates.cell_name.split("_")[1])
    profiler.disable()
    profiled_s = time.perf_counter() - t0
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).sort_stats("tottime")
    stats.print_stats(args.top)
    table = [{"function": _short(pstats.func_std_string(func)), "calls": nc, "tottime_s": tt, "cumtime_s": ct}
             for func, (_, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]]
    total_tt = sum(v[2] for v in stats.stats.values())
    for entry in table:
        entry["share"] = entry["tottime_s"] / total_tt
        print(f"{entry['share']:6.1%} {entry['tottime_s']:7.2f} s  {entry['calls']:7d} calls  {entry['function']}")
    result = {"chunk": DRAW_CHUNK, "breakdown": rows, "profile_n_eaps": args.n_eaps, "profiled_s": profiled_s,
              "profile": table, "loadavg_start": load_start, "loadavg_end": benchlib.loadavg()}
    print(f"written {benchlib.save_result('profile', result)}")
    return result


if __name__ == "__main__":
    main()
