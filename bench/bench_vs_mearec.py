"""EAP engine vs MEArec, side by side: same cell, probe, spike templates and placements.

MEArec's per-EAP work is ``MEArec.simulate_cells.return_extracellular_spike`` (called once per
candidate position by ``calc_extracellular``): it draws the rotation, moves and rotates the
LFPy cell, asks LFPy/lfpykit for the (contacts x segments) line-source matrix of the placed
cell, multiplies it with the spike's currents and rotates the cell back.  It is called here
unchanged, on an LFPy cell built as MEArec builds it (``LFPy.TemplateCell`` with the
portal's arguments, via :func:`eap_assets.core.cells.load_lfpy_cell`, which compiles the
mechanisms for NEURON 9) and with ``cell.imem`` set to our spike templates, so only the
extracellular stage is compared.  The EAP engine then computes the same placements
(MEArec's rotation angles converted to matrices, same positions, same spikes); the script
checks both agree and times each, one core each (``OPENBLAS_NUM_THREADS=1``).

Usage::

    .venv/bin/python bench/bench_vs_mearec.py [--cells L5_TTPC1_cADpyr232_1 L5_BP_bAC217_1]
        [--modes norot zrot xrot 3drot] [--placements 10] [--runs 3]
"""

from __future__ import annotations

import benchlib  # noqa: F401  (first: limits BLAS threads)

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from eap_assets.core import cells, rotations  # noqa: E402
from eap_assets.core.eaps import DRAW_CHUNK, EAPEngine  # noqa: E402
from eap_assets.core.intracellular import SpikeTemplates  # noqa: E402
from eap_assets.core.probe import get_probe  # noqa: E402

PROBE = "SqMEA-10-15"
BOX = (np.array([10.0, -75.0, -75.0]), np.array([60.0, 75.0, 75.0]))


def mearec_peer(model: cells.CellModel, templates: SpikeTemplates):
    """A function computing one EAP the MEArec way: (mode, position, spike) -> (EAP µV, angles)."""
    import LFPy
    import MEAutility as mu
    from MEArec.simulate_cells import return_extracellular_spike

    cell = cells.load_lfpy_cell(model, tstop=1.0)
    if cell.totnsegs != templates.n_segments:
        raise RuntimeError(f"{model.name}: LFPy cell has {cell.totnsegs} segments, templates {templates.n_segments}")
    electrodes = LFPy.RecExtElectrode(cell, probe=mu.return_mea(PROBE))  # MEArec's ncontacts = 1: point contacts
    limits = [list(pair) for pair in zip(*BOX)]

    def one_eap(mode: str, position: np.ndarray, spike: int) -> tuple[np.ndarray, np.ndarray]:
        cell.imem = templates.imem[spike]
        eap, _, angles, found = return_extracellular_spike(
            cell=cell, cell_name=model.name, model_type="bbp", electrodes=electrodes, limits=limits, rotation=mode,
            saved_pos=[], pos=list(position))
        assert found
        return eap, np.asarray(angles, dtype=float)

    return one_eap


def bench_cell(model: cells.CellModel, modes: list[str], n_placements: int, runs: int, seed: int, log=print) -> list:
    templates = SpikeTemplates.load(benchlib.template_paths([model.name])[0])
    t0 = time.perf_counter()
    peer = mearec_peer(model, templates)
    peer_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = EAPEngine(templates, PROBE)
    engine_setup = time.perf_counter() - t0
    rows = []
    for mode in modes:
        rng = np.random.default_rng([seed, rotations.ROTATION_MODES.index(mode)])
        positions = rng.uniform(*BOX, size=(n_placements, 3))
        spikes = rng.integers(0, templates.n_spikes, size=n_placements)
        load_start = benchlib.loadavg()
        peer_times, peer_eaps, angles = [], None, None
        for _ in range(runs):
            np.random.seed(seed)  # MEArec draws its rotations from numpy's global generator: same ones every run
            t0 = time.perf_counter()
            results = [peer(mode, positions[i], int(spikes[i])) for i in range(n_placements)]
            peer_times.append((time.perf_counter() - t0) / n_placements)
            peer_eaps, angles = np.stack([r[0] for r in results]), np.stack([r[1] for r in results])
        matrices = Rotation.from_euler("xyz", angles).as_matrix()  # LFPy's set_rotation(x, y, z): x, then y, then z
        engine.compute(matrices, positions, spikes)  # warm-up
        engine_times = []
        for _ in range(max(runs, 5)):
            t0 = time.perf_counter()
            ours = engine.compute(matrices, positions, spikes)
            engine_times.append((time.perf_counter() - t0) / n_placements)
        peaks = np.abs(peer_eaps).max(axis=(1, 2))
        agreement = float((np.abs(ours - peer_eaps).max(axis=(1, 2)) / peaks).max())
        # the engine as the EAP stage uses it: one draw chunk of candidates, this rotation mode
        chunk_rots = rotations.full_rotations(mode, DRAW_CHUNK, rng, mtype=model.mtype)
        chunk_pos = rng.uniform(*BOX, size=(DRAW_CHUNK, 3))
        chunk_spikes = rng.integers(0, templates.n_spikes, size=DRAW_CHUNK)
        chunk_times = []
        for _ in range(max(runs, 5)):
            t0 = time.perf_counter()
            engine.compute(chunk_rots, chunk_pos, chunk_spikes)
            chunk_times.append((time.perf_counter() - t0) / DRAW_CHUNK)
        row = {
            "cell": model.name, "mtype": model.mtype, "segments": templates.n_segments, "mode": mode,
            "placements": n_placements, "runs": runs,
            "mearec_s_per_eap": benchlib.median(peer_times), "mearec_runs_s_per_eap": peer_times,
            "engine_s_per_eap": benchlib.median(engine_times), "engine_runs_s_per_eap": engine_times,
            "engine_chunk_s_per_eap": benchlib.median(chunk_times), "chunk": DRAW_CHUNK,
            "max_abs_diff_over_peak": agreement,
            "mearec_setup_s": peer_setup, "engine_setup_s": engine_setup,
            "loadavg_start": load_start, "loadavg_end": benchlib.loadavg(),
        }
        row["ratio"] = row["mearec_s_per_eap"] / row["engine_s_per_eap"]
        rows.append(row)
        log(f"{model.mtype:6s} {mode:6s} MEArec {1e3 * row['mearec_s_per_eap']:8.1f} ms/EAP  engine "
            f"{1e3 * row['engine_s_per_eap']:6.3f} ms/EAP (chunk of {DRAW_CHUNK}: "
            f"{1e3 * row['engine_chunk_s_per_eap']:6.3f})  ratio {row['ratio']:6.0f}x  "
            f"max|diff|/peak {agreement:.1e}  load {row['loadavg_start']} -> {row['loadavg_end']}")
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(benchlib.PEER_CELLS))
    parser.add_argument("--modes", nargs="+", default=list(rotations.PAPER_ROTATIONS))
    parser.add_argument("--placements", type=int, default=10, help="placements per cell and mode (same for both)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    models = cells.discover_cell_models()
    rows = [row for name in args.cells for row in bench_cell(models[name], args.modes, args.placements, args.runs,
                                                               args.seed)]
    result = {"probe": PROBE, "contacts": int(get_probe(PROBE).n_contacts), "rows": rows}
    print(f"written {benchlib.save_result('vs_mearec', result)}")
    return result


if __name__ == "__main__":
    main()
