"""NEURON stage timings, as recorded by the run that produced the cached spike templates.

Every ``data/templates/<cell>.npz`` carries its provenance: the number of simulations of the
current search, the wall time of the final simulation (1.2 s with every segment's membrane
current recorded) and of all simulations.  This script collects them; it does not
simulate (``make cells-doc`` / ``eap-assets cells-table`` does, see docs/cells.md).

Usage::

    .venv/bin/python bench/bench_neuron.py
"""

from __future__ import annotations

import benchlib

from eap_assets.core.intracellular import SpikeTemplates


def main() -> dict:
    rows = []
    for path in benchlib.template_paths():
        t = SpikeTemplates.load(path)
        p = t.provenance
        rows.append({"cell": t.cell_name, "segments": t.n_segments, "simulations": p.get("simulations"),
                     "final_simulation_s": p.get("final_simulation_s"),
                     "total_simulation_s": p.get("total_simulation_s"), "tstop_ms": p.get("tstop"),
                     "neuron": p.get("neuron"), "lfpy": p.get("lfpy")})
        print(f"{t.cell_name:24s} {t.n_segments:5d} segments  {p.get('simulations')} simulations  final "
              f"{p.get('final_simulation_s')} s  all {p.get('total_simulation_s')} s")
    total = sum(r["total_simulation_s"] or 0.0 for r in rows)
    result = {"source": "provenance of data/templates/*.npz", "rows": rows, "total_simulation_s": total}
    print(f"all cells: {total:.0f} s of simulation; written {benchlib.save_result('neuron', result)}")
    return result


if __name__ == "__main__":
    main()
