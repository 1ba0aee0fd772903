"""Cross-check data that this project did not simulate itself: MEArec templates, a MEArec
recording made from them and a SpikeInterface ``SortingAnalyzer`` of its ground-truth units.

Our classifiers are trained on EAPs from our own engine (:mod:`eap_assets.core.eaps`); this module
produces the same kind of data with **MEArec's own code path** (MEArec 1.11), so that a model can
be checked on data whose every step -- current search, spike cutting, positions, rotations, LFPy
electrodes, the x2 method of images for MEAs, the amplitude / shape check, centring, recording
synthesis, band-pass filtering, spike sorting tools' averaging -- is someone else's code:

* :func:`mearec_templates` runs ``MEArec.simulate_cells.simulate_templates_one_cell`` per cell
  model (each in a fresh ``spawn`` subprocess: MEArec calls ``sys.exit()`` when its current search
  fails and NEURON keeps global state) and saves the result in MEArec's own template format
  (``MEArec.save_template_generator``).  MEArec's own BBP loader (``return_bbp_cell``) cannot run on
  NEURON 9 (two BBP synapse ``.mod`` files do not compile there), so the cells are loaded through
  MEArec's official extension point ``custom_return_cell_function`` with this project's loader
  (:func:`eap_assets.core.cells.load_lfpy_cell`, which stands in for the synapse code).
* :func:`mearec_recording` selects, per cell model, the first ``per_cell`` templates of the file
  whose amplitude lies in ``[min_amp, max_amp]`` and makes a recording from exactly those with
  ``MEArec.gen_recordings`` (``MEArec.save_recording_generator``).
* :func:`ground_truth` and :func:`build_analyzer` read the recording with SpikeInterface
  (``read_mearec``) and build a ``SortingAnalyzer`` of the ground-truth units, with a table that
  maps each unit id to its cell model, m-type, E/I label, soma position and amplitude.

Units: templates and recordings in µV; MEArec templates at 32 kHz (dt = 2**-5 ms), 224 samples
(2 ms before, 5 ms after the intracellular spike peak), doubled by MEArec for an MEA (method of
images for the non-conducting plane).  Every artefact is written atomically.

Notes (MEArec 1.11, SpikeInterface 0.105, measured here)
--------------------------------------------------------
* MEArec's default ``ncontacts`` is 10: each contact's potential is the mean over 10 random points
  on its 5 µm square, which makes an EAP ~9x dearer than a point contact for a small cell
  (BP: 0.38 vs 0.04 s per LFPy matrix).  It is kept (MEArec's default).
* MEArec accepts a template when ``|min| >= min_amp`` (30 µV by default here), so many interneuron
  templates are below a recording's usual 50 µV floor (BP: median 43 µV, 3 of 12 in
  [50, 300] µV; pyramidal cells reach 500-750 µV): simulate about twice ``per_cell`` templates,
  or pass ``min_amp=50`` to :func:`mearec_templates`, to fill a recording with 50-300 µV units.
* MEArec's ``get_default_*_params()`` copy its defaults to ``~/.config/mearec/<version>`` (editable
  by the user); the defaults are read here from the wheel itself.
* SpikeInterface names MEArec's unit ``i`` ``"#i"`` (strings); MEArec puts the excitatory units first.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from eap_assets.core import cells as cells_mod
from eap_assets.core.eaps import contact_peak_to_peak
from eap_assets.core.storage import atomic_dir, atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from spikeinterface import SortingAnalyzer

Log = Callable[[str], Any]

#: MEArec's time step for templates (ms): 2**-5 ms, i.e. templates at 32 kHz.
MEAREC_DT_MS: float = 2**-5
#: MEArec's cut-out around the intracellular spike peak (ms before, ms after): 64 + 160 = 224 samples.
MEAREC_CUT_OUT_MS: tuple[float, float] = (2.0, 5.0)
#: Rotation modes MEArec offers for a custom cell function (``physrot`` needs its ``bbp`` model type).
ROTATIONS: tuple[str, ...] = ("norot", "xrot", "yrot", "zrot", "3drot")
#: Version of this module's recipe, stored with every artefact.
CODE_VERSION = "crosscheck-1"
_LOG_TAIL_LINES = 25


class CrosscheckError(RuntimeError):
    """MEArec could not produce what was asked (names the cell model and the cause)."""


# --------------------------------------------------------------------------------------------
# Parameters and seeds
# --------------------------------------------------------------------------------------------

def _mearec_default_params(kind: str) -> dict:
    """MEArec's packaged default parameters (``templates`` or ``recordings``), read from the wheel.

    ``MEArec.get_default_templates_params()`` returns the copy in ``~/.config/mearec/<version>``
    (created on first use, and editable by the user); the wheel's own yaml is what MEArec ships.
    """
    import MEArec
    from MEArec.tools import safe_yaml_load

    path = Path(MEArec.__file__).parent / "default_params" / f"{kind}_params.yaml"
    return safe_yaml_load(path)


def mearec_template_params(
    probe: str = "SqMEA-10-15",
    rotation: str = "3drot",
    n_per_cell: int = 50,
    seed: int = 0,
    sim_time_s: float = 1.0,
    xlim: Sequence[float] = (10, 80),
    min_amp: float = 30.0,
) -> dict:
    """MEArec's default template parameters with this module's settings.

    Parameters
    ----------
    probe : str
        MEAutility probe name.
    rotation : str
        One of :data:`ROTATIONS`.
    n_per_cell : int
        Templates per cell model (MEArec's ``n``).
    seed : int
        Base seed (each cell uses :func:`cell_seed`).
    sim_time_s : float
        Length of MEArec's intracellular simulations (s).
    xlim : (float, float)
        Soma distance from the probe plane (µm).
    min_amp : float
        MEArec's acceptance threshold: ``|min|`` of the EAP over all contacts (µV).

    Returns
    -------
    dict
        Parameters as ``simulate_templates_one_cell`` takes them (``dt`` = 2**-5 ms,
        ``cut_out`` = [2, 5] ms; every other key keeps MEArec's default, e.g. ``ncontacts`` 10,
        ``check_eap_shape`` True, ``ylim``/``zlim`` from the probe plus 30 µm ``overhang``).
    """
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation {rotation!r} is not available with MEArec's custom cell function; "
                         f"choose one of {ROTATIONS} (MEArec's 'physrot' needs its own BBP loader)")
    if int(n_per_cell) < 1:
        raise ValueError(f"n_per_cell must be >= 1, got {n_per_cell}")
    if len(xlim) != 2 or not xlim[0] < xlim[1]:
        raise ValueError(f"xlim must be (low, high) with low < high, got {xlim}")
    params = _mearec_default_params("templates")
    params.update(
        probe=str(probe), rot=str(rotation), n=int(n_per_cell), seed=int(seed), xlim=[float(x) for x in xlim],
        min_amp=float(min_amp), sim_time=float(sim_time_s), dt=MEAREC_DT_MS, cut_out=list(MEAREC_CUT_OUT_MS),
    )
    return params


def cell_seed(seed: int, cell: str) -> int:
    """Stable per-cell seed for MEArec (``np.random.seed``) from the base ``seed`` and the cell name."""
    from eap_assets.core.eaps import derived_seed

    return derived_seed(int(seed), "mearec-templates", cell, int31=True)


def _intracellular_key(model: cells_mod.CellModel, params: dict) -> str:
    """Key of MEArec's intracellular simulation of a model (it reuses files it finds in its folder)."""
    keys = ("sim_time", "dt", "delay", "weights", "target_spikes", "cut_out")
    payload = json.dumps({"model": cells_mod.model_hash(model), **{k: params[k] for k in keys},
                          "code": CODE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Templates: MEArec's per-cell code path, one spawn subprocess per cell
# --------------------------------------------------------------------------------------------

def return_cell(cell_model_folder, end_T: float, dt: float, start_T: float = 0.0, bbp_alignment: bool = True):
    """MEArec ``custom_return_cell_function``: load a model with this project's loader.

    Parameters
    ----------
    cell_model_folder : path
        The model folder (NMC-portal layout).
    end_T, dt, start_T : float
        As MEArec passes them (ms); the cell starts at 0.
    bbp_alignment : bool
        Rotate the loaded cell by +pi/2 about x (about its soma), the offset MEArec's own BBP
        path (model type ``bbp``) adds to every rotation mode so that the apical axis (y in the
        BBP morphologies) points along z.  With a custom function MEArec adds no offset.

    Returns
    -------
    LFPy.TemplateCell
    """
    model = cells_mod.read_cell_model(cell_model_folder)
    cell = cells_mod.load_lfpy_cell(model, tstop=float(end_T), dt=float(dt))
    if bbp_alignment:
        cell.set_rotation(x=np.pi / 2.0)
    return cell


def _redirect_output(log_file: Path) -> None:
    """Send this process's stdout / stderr (Python and NEURON's C output) to ``log_file``."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _simulate_cell(folder: str, intra_dir: str, params: dict, bbp_alignment: bool, log_file: str) -> dict:
    """Run MEArec's ``simulate_templates_one_cell`` for one cell (in a spawn subprocess).

    Every failure is re-raised as :class:`CrosscheckError` naming the cell (a ``SystemExit`` from
    MEArec's current search included), so that it crosses the process boundary intact.
    """
    name = Path(folder).name
    start = time.perf_counter()
    _redirect_output(Path(log_file))
    os.chdir(intra_dir)  # MEArec and NEURON may write / auto-load relative to the CWD: keep them here
    try:
        from MEArec.simulate_cells import simulate_templates_one_cell

        function = functools.partial(return_cell, bbp_alignment=bbp_alignment)
        eaps, locs, rots = simulate_templates_one_cell(folder, intra_dir, params, 1,
                                                      custom_return_cell_function=function)
    except SystemExit:
        raise CrosscheckError(
            f"cell model {name!r}: MEArec's current search (run_cell_model) found no stimulus giving "
            f"{params['target_spikes'][0]} < spikes <= {params['target_spikes'][1]} within "
            f"{params['sim_time']} s in 10 tries and called sys.exit()") from None
    except BaseException as exc:  # noqa: BLE001 -- anything MEArec, LFPy or NEURON raises, by name
        raise CrosscheckError(f"cell model {name!r}: MEArec failed ({type(exc).__name__}: {exc})") from None
    imem = sorted(Path(intra_dir).glob(f"imem_*_{name}.npy"))
    n_spikes = int(re.match(r"imem_(\d+)_", imem[0].name).group(1)) if imem else -1
    return {"eaps": np.asarray(eaps, dtype=np.float32), "locations": np.asarray(locs, dtype=float),
            "rotations": np.asarray(rots, dtype=float), "intracellular_spikes": n_spikes,
            "seconds": time.perf_counter() - start}


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def _search_summary(log_file: Path) -> list[str]:
    """MEArec's current-search lines (``Input weight: ... - Num Spikes: ...``) from a cell's log."""
    try:
        return re.findall(r"Input weight: [^\n]*", log_file.read_text(errors="replace"))
    except OSError:
        return []


@contextlib.contextmanager
def _atomic_h5(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a ``.h5`` path to write; rename it onto ``path`` if the block succeeds.

    MEArec's savers insist on an ``.h5`` suffix, so the file is written in a scratch folder whose
    name :func:`eap_assets.core.storage.remove_stale_temporaries` recognises (a killed writer's
    leftover is removed by the next write) and moved onto the temporary of :func:`atomic_path`.
    """
    with atomic_path(path) as tmp:
        scratch = Path(tempfile.mkdtemp(prefix=tmp.name[: -len(".tmp")] + ".", suffix=".tmp", dir=tmp.parent))
        try:
            h5 = scratch / "data.h5"
            yield h5
            os.replace(h5, tmp)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def mearec_templates(
    models: Sequence[cells_mod.CellModel],
    out_path: str | os.PathLike[str],
    n_per_cell: int,
    probe: str = "SqMEA-10-15",
    rotation: str = "3drot",
    seed: int = 0,
    sim_time_s: float = 1.0,
    xlim: Sequence[float] = (10, 80),
    min_amp: float = 30.0,
    work_dir: str | os.PathLike[str] | None = None,
    log: Log = print,
    *,
    n_jobs: int = 1,
    bbp_alignment: bool = True,
) -> Path:
    """Simulate MEArec templates of cell models with MEArec's own per-cell code path.

    For each model, ``MEArec.simulate_cells.simulate_templates_one_cell`` runs MEArec's current
    search and spike cutting (``run_cell_model``) and its extracellular step
    (``calc_extracellular``: random positions and rotations, LFPy electrodes with ``ncontacts``
    points per contact, x2 for MEAs, ``min_amp`` and shape check, centring), in a fresh ``spawn``
    subprocess per cell (MEArec calls ``sys.exit()`` when its search fails; the caller's working
    directory and NEURON state are never touched).  The cells are loaded by :func:`return_cell`
    (MEArec's ``custom_return_cell_function`` extension point).

    Parameters
    ----------
    models : sequence of CellModel
        The cell models, in the order of the output.
    out_path : path
        The ``.h5`` file to write (MEArec's template format), atomically.
    n_per_cell : int
        Templates per cell model.
    probe : str
        MEAutility probe name.
    rotation : str
        MEArec rotation mode, one of :data:`ROTATIONS` (``3drot``: uniformly random).
    seed : int
        Base seed; cell ``c`` uses :func:`cell_seed` (seed, c), so a cell's templates do not depend
        on the other models of the call.
    sim_time_s : float
        MEArec's intracellular simulation length (s); its search wants 3 < spikes <= 50.
    xlim : (float, float)
        Soma distance from the probe plane (µm).
    min_amp : float
        MEArec's acceptance threshold (µV, ``|min|`` over contacts and time).
    work_dir : path, optional
        Where MEArec's intracellular simulations (``imem_*.npy``, ``vmem_*.npy``) and the per-cell
        logs are kept (one sub-folder per model and intracellular setting, which MEArec reuses on
        the next call); default a temporary folder removed afterwards.
    log : callable
        Progress messages.
    n_jobs : int
        Cells simulated at once (one process each; a pyramidal cell needs ~1.5 GB).
    bbp_alignment : bool
        Add MEArec's BBP rotation offset (+pi/2 about x) that its custom-model path leaves out,
        so every rotation mode means what it means for MEArec's own BBP cells (``norot``: apical
        axis along z).  The stored ``rotations`` are then MEArec's BBP angles (offset included).

    Returns
    -------
    Path
        ``out_path``.  It holds ``templates`` (n, n_contacts, 224) float32 µV at 32 kHz,
        ``locations`` (n, 3) µm, ``rotations`` (n, 3) rad (LFPy ``set_rotation`` x, y, z angles
        applied to the morphology as loaded), ``celltypes`` (the model names) and ``info``
        (``params``: the parameters used; ``electrodes``: the probe; ``eap_assets``: per-cell
        seeds, intracellular spike counts, MEArec's current-search steps, loader).

    Raises
    ------
    CrosscheckError
        Naming the cell, if MEArec fails for it or finds fewer than ``n_per_cell`` templates.
    """
    import MEArec
    import MEAutility

    models = list(models)
    if not models:
        raise ValueError("mearec_templates: no cell models given")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"mearec_templates: cell model names must be unique, got {names}")
    out_path = Path(out_path)
    if out_path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"{out_path}: MEArec template files end in .h5 or .hdf5")
    params = mearec_template_params(probe, rotation, n_per_cell, seed, sim_time_s, xlim, min_amp)
    electrodes = MEAutility.return_mea_info(probe)
    seeds = {m.name: cell_seed(seed, m.name) for m in models}

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mearec-templates-")))
        else:
            root = Path(work_dir)
            root.mkdir(parents=True, exist_ok=True)
        jobs = {}
        for model in models:
            intra = root / f"{model.name}-{_intracellular_key(model, params)}"
            intra.mkdir(parents=True, exist_ok=True)
            log_file = intra / f"mearec-{seeds[model.name]}-{rotation}-{n_per_cell}.log"
            log_file.unlink(missing_ok=True)
            jobs[model.name] = (model, intra, {**params, "seed": seeds[model.name]}, log_file)
        results = _run_cells(jobs, max(1, int(n_jobs)), bbp_alignment, log, keep_logs=work_dir is not None)

    templates, locations, rotations, celltypes = [], [], [], []
    for name in names:
        res = results[name]
        eaps = res["eaps"]
        if eaps.ndim != 3 or eaps.shape[0] < int(n_per_cell):
            found = eaps.shape[0] if eaps.ndim == 3 else 0
            raise CrosscheckError(
                f"cell model {name!r}: MEArec found only {found} of {n_per_cell} templates with |min| >= "
                f"{min_amp} µV (and negative peak larger than positive) in its {params['max_iterations']} "
                f"x n tries; lower min_amp or widen xlim")
        rots = res["rotations"].copy()
        if bbp_alignment:
            rots[:, 0] += np.pi / 2.0
        templates.append(eaps[: int(n_per_cell)])
        locations.append(res["locations"][: int(n_per_cell)])
        rotations.append(rots[: int(n_per_cell)])
        celltypes += [name] * int(n_per_cell)
    temp_dict = {"templates": np.concatenate(templates).astype(np.float32),
                 "locations": np.concatenate(locations), "rotations": np.concatenate(rotations),
                 "celltypes": np.array(celltypes)}
    extra = {
        "code_version": CODE_VERSION, "mearec_version": MEArec.__version__, "seed": int(seed),
        "cell_seeds": {k: int(v) for k, v in seeds.items()},
        "intracellular_spikes": {n: int(results[n]["intracellular_spikes"]) for n in names},
        "current_search": {n: "; ".join(results[n]["search"]) for n in names},
        "cell_models": {m.name: str(m.path) for m in models},
        "model_hashes": {m.name: cells_mod.model_hash(m) for m in models},
        "custom_return_cell_function": "eap_assets.core.crosscheck.return_cell "
                                       "(eap_assets.core.cells.load_lfpy_cell)",
        "bbp_alignment": bool(bbp_alignment),
    }
    info = {"params": {**params, "seed": int(seed)}, "electrodes": electrodes, "eap_assets": extra}
    tempgen = MEArec.TemplateGenerator(temp_dict=temp_dict, info=info)
    with _atomic_h5(out_path) as h5:
        MEArec.save_template_generator(tempgen, filename=h5, verbose=False)
    log(f"mearec_templates: {len(celltypes)} templates of {len(names)} cell models -> {out_path}")
    return out_path


def _run_cells(jobs: dict, n_jobs: int, bbp_alignment: bool, log: Log, keep_logs: bool) -> dict[str, dict]:
    """Run :func:`_simulate_cell` per job in fresh spawn subprocesses; raise on the first failure."""
    ctx = multiprocessing.get_context("spawn")
    results: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {}
        for name, (model, intra, params, log_file) in jobs.items():
            futures[name] = pool.submit(_simulate_cell, str(model.path), str(intra), params, bbp_alignment,
                                        str(log_file))
        try:
            for name, future in futures.items():
                log_file = jobs[name][3]
                where = f" ({log_file})" if keep_logs else ""
                try:
                    res = future.result()
                except CrosscheckError as exc:
                    tail = _tail(log_file)
                    note = f"\n--- end of MEArec's log{where} ---\n{tail}" if tail else ""
                    raise CrosscheckError(f"{exc}{note}") from None
                except BrokenProcessPool as exc:
                    raise CrosscheckError(f"cell model {name!r}: the MEArec subprocess died ({exc})\n"
                                          f"--- end of MEArec's log{where} ---\n{_tail(log_file)}") from None
                res["search"] = _search_summary(log_file)
                results[name] = res
                log(f"mearec_templates: {name}: {res['eaps'].shape[0] if res['eaps'].ndim == 3 else 0} templates, "
                    f"{res['intracellular_spikes']} intracellular spikes ({'; '.join(res['search'])}), "
                    f"{res['seconds']:.1f} s")
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def template_amplitudes(templates: np.ndarray) -> np.ndarray:
    """MEArec's template amplitude: ``max |min|`` over contacts and time (µV), one per template."""
    t = np.asarray(templates)
    return np.abs(t.reshape(t.shape[0], -1).min(axis=1))


def load_templates(path: str | os.PathLike[str]):
    """Load a MEArec template file (``MEArec.load_templates``, arrays in memory)."""
    import MEArec

    return MEArec.load_templates(path, return_h5_objects=False, verbose=False)


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------

def _ei_of(name: str) -> str:
    """Our E/I label of a cell model name (``E`` for the excitatory m-types)."""
    return "E" if cells_mod.parse_name(name)[1] in cells_mod.EXCITATORY_MTYPES else "I"


def select_units(
    celltypes: Sequence[str],
    locations: np.ndarray,
    amplitudes: np.ndarray,
    per_cell: int | None,
    min_amp: float = 50.0,
    max_amp: float = 300.0,
    min_dist: float = 10.0,
) -> np.ndarray:
    """Pick, per cell model, the first ``per_cell`` templates of the file for a recording.

    A template qualifies when its amplitude lies in ``[min_amp, max_amp]`` and its soma is at
    least ``min_dist`` µm from every template picked before (cells in file order): MEArec's
    ``select_templates`` rules, applied deterministically and per cell model.

    Returns
    -------
    ndarray of int
        Indices into the file, excitatory templates first (MEArec gives its first ``n_exc``
        spike trains the excitatory rates), file order within each class.

    Raises
    ------
    CrosscheckError
        Naming each cell model that has fewer than ``per_cell`` qualifying templates.
    """
    celltypes = np.asarray([str(c) for c in celltypes])
    locations = np.asarray(locations, dtype=float)
    amplitudes = np.asarray(amplitudes, dtype=float)
    order = list(dict.fromkeys(celltypes.tolist()))
    picked: list[int] = []
    short: list[str] = []
    for cell in order:
        idx = np.flatnonzero(celltypes == cell)
        in_range = idx[(amplitudes[idx] >= min_amp) & (amplitudes[idx] <= max_amp)]
        want = len(idx) if per_cell is None else int(per_cell)
        mine: list[int] = []
        for i in in_range:
            if len(mine) == want:
                break
            if picked or mine:
                dist = np.linalg.norm(locations[picked + mine] - locations[i], axis=1)
                if np.any(dist < min_dist):
                    continue
            mine.append(int(i))
        if per_cell is None:
            if not mine:
                short.append(f"{cell}: none of {len(idx)} templates has an amplitude in [{min_amp}, {max_amp}] µV")
        elif len(mine) < want:
            short.append(f"{cell}: {len(in_range)} of {len(idx)} templates have an amplitude in "
                         f"[{min_amp}, {max_amp}] µV, {len(mine)} of them at least {min_dist} µm from the "
                         f"units picked before; {want} needed")
        picked += mine
    if short:
        raise CrosscheckError("not enough templates for the recording -- " + "; ".join(short))
    picked_arr = np.array(picked, dtype=int)
    is_exc = np.array([_ei_of(c) == "E" for c in celltypes[picked_arr]], dtype=bool)
    return np.concatenate([picked_arr[is_exc], picked_arr[~is_exc]])


def _seed_ints(seed: int, n: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence([int(seed), 0x4D454172]).generate_state(n) % (2**31 - 1)]


def mearec_recording(
    templates_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    fs_hz: float | None = None,
    duration_s: float = 60.0,
    noise_uv: float = 10.0,
    seed: int = 0,
    per_cell: int | None = None,
    min_amp: float = 50.0,
    max_amp: float = 300.0,
    min_dist: float = 10.0,
    log: Log = print,
) -> Path:
    """Make a MEArec recording that holds ``per_cell`` units of every cell model of a template file.

    MEArec's own ``select_templates`` draws E and I templates at random; instead,
    :func:`select_units` picks the units here and they are handed to ``MEArec.gen_recordings``
    through its ``template_ids`` route (MEArec's selection bypassed; MEArec derives ``n_exc`` /
    ``n_inh`` from its ``cell_types`` categories, set here to our E/I m-types and checked).  The
    rest is MEArec's recipe with its defaults: Poisson spike trains (E 5 Hz, I 15 Hz), padding,
    jitter, per-electrode amplitude modulation, uncorrelated Gaussian noise, zero-phase Butterworth
    band-pass 300-6000 Hz of order 3.  Spike traces are not stored (they are n_units x n_samples).

    Parameters
    ----------
    templates_path : path
        A MEArec template file (e.g. from :func:`mearec_templates`).
    out_path : path
        The ``.h5`` recording to write, atomically.
    fs_hz : float, optional
        Sampling rate; None keeps the templates' 32 kHz; another rate (e.g. 30000) makes MEArec
        resample the templates.
    duration_s : float
        Recording length (s).
    noise_uv : float
        Noise standard deviation (µV).
    seed : int
        Seeds MEArec's spike trains, template jitter / modulation and noise.
    per_cell : int, optional
        Units per cell model (None: every template in the amplitude range).
    min_amp, max_amp : float
        Amplitude range of the units (µV, MEArec's measure :func:`template_amplitudes`).
    min_dist : float
        Minimum distance between the somata of two units (µm).
    log : callable
        Progress messages.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    CrosscheckError
        If a cell model has fewer than ``per_cell`` qualifying templates (naming it), or the
        recording does not hold exactly the selected units.
    """
    import MEArec
    from MEArec.tools import get_binary_cat

    templates_path = Path(templates_path)
    out_path = Path(out_path)
    if out_path.suffix not in (".h5", ".hdf5"):
        raise ValueError(f"{out_path}: MEArec recording files end in .h5 or .hdf5")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    tempgen = load_templates(templates_path)
    celltypes = np.array([str(c) for c in tempgen.celltypes])
    if tempgen.templates.ndim != 3:
        raise CrosscheckError(f"{templates_path}: drifting templates are not supported "
                              f"(templates of shape {tempgen.templates.shape})")
    amplitudes = template_amplitudes(tempgen.templates)
    ids = select_units(celltypes, tempgen.locations, amplitudes, per_cell, min_amp, max_amp, min_dist)
    ours = np.array([_ei_of(c) for c in celltypes])
    mtypes = sorted({cells_mod.parse_name(c)[1] for c in celltypes[ids]})
    cell_types = {"excitatory": [m for m in mtypes if m in cells_mod.EXCITATORY_MTYPES],
                  "inhibitory": [m for m in mtypes if m not in cells_mod.EXCITATORY_MTYPES]}
    theirs = get_binary_cat(celltypes, cell_types["excitatory"], cell_types["inhibitory"])
    if not np.array_equal(theirs[ids], ours[ids]):
        bad = sorted({c for c, a, b in zip(celltypes[ids], theirs[ids], ours[ids]) if a != b})
        raise CrosscheckError(f"MEArec's E/I categories {cell_types} disagree with ours for {bad}")
    n_exc, n_inh = int(np.sum(ours[ids] == "E")), int(np.sum(ours[ids] == "I"))

    params = _mearec_default_params("recordings")
    s_spikes, s_templates, s_conv, s_noise = _seed_ints(seed, 4)
    params["spiketrains"].update(n_exc=n_exc, n_inh=n_inh, duration=float(duration_s))
    params["cell_types"] = cell_types
    params["seeds"] = {"spiketrains": s_spikes, "templates": s_templates, "convolution": s_conv, "noise": s_noise}
    # MEArec's selection is bypassed by template_ids; its rules are recorded as they were applied here.
    params["templates"].update(min_amp=float(min_amp), max_amp=float(max_amp), min_dist=float(min_dist))
    params["recordings"].update(fs=None if fs_hz is None else float(fs_hz), noise_level=float(noise_uv),
                                noise_mode="uncorrelated", filter=True, filter_cutoff=[300, 6000], filter_order=3)
    t0 = time.perf_counter()
    with _atomic_h5(out_path) as h5:
        scratch = h5.parent / "mearec-tmp"
        with contextlib.redirect_stdout(io.StringIO()):  # MEArec prints even with verbose=False
            recgen = MEArec.gen_recordings(templates=str(templates_path), params=params, template_ids=ids,
                                           verbose=False, tmp_mode="memmap", tmp_folder=str(scratch))
        got = np.asarray(recgen.template_ids, dtype=int)
        got_cells = np.array([str(c) for c in recgen.template_celltypes])
        if len(recgen.spiketrains) != len(ids) or sorted(got.tolist()) != sorted(ids.tolist()) \
                or not np.array_equal(got_cells, celltypes[got]):
            raise CrosscheckError(f"MEArec's recording holds templates {got.tolist()} ({got_cells.tolist()}), "
                                  f"not the selected {ids.tolist()}")
        MEArec.save_recording_generator(recgen, filename=h5, verbose=False, include_spike_traces=False)
        del recgen
    counts = {str(c): int(np.sum(celltypes[ids] == c)) for c in dict.fromkeys(celltypes[ids])}
    log(f"mearec_recording: {len(ids)} units ({n_exc} E, {n_inh} I; per cell {counts}), "
        f"{duration_s} s at {'32000 (templates)' if fs_hz is None else fs_hz} Hz, noise {noise_uv} µV, "
        f"{time.perf_counter() - t0:.1f} s -> {out_path}")
    return out_path


# --------------------------------------------------------------------------------------------
# Ground truth and SortingAnalyzer
# --------------------------------------------------------------------------------------------

def ground_truth(recording_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Per-unit ground truth of a MEArec recording, keyed by SpikeInterface's unit ids.

    SpikeInterface's ``read_mearec`` names unit ``i`` (MEArec's spike train ``i``) ``"#i"``; the
    mapping is checked against MEArec's own file (spike counts and spike frames of every unit).

    Returns
    -------
    pandas.DataFrame
        One row per unit, in ``sorting.unit_ids`` order: ``unit_id`` (str), ``cell`` (model name),
        ``mtype``, ``ei`` (ours: ``E`` for the excitatory m-types), ``mearec_bintype`` (MEArec's
        annotation), ``soma_x``, ``soma_y``, ``soma_z`` (µm; x = distance from an MEA plane),
        ``n_spikes``, ``rate_hz``, ``template_index`` (index in the template file, -1 if unknown),
        ``amplitude_uv`` (MEArec's measure, ``max |min|`` of the unit's template as in the template file:
        unfiltered, noise-free, 32 kHz; from MEArec's ``voltage_peaks``) and ``peak_channel`` (its
        contact).

    Raises
    ------
    CrosscheckError
        If MEArec's file and SpikeInterface's sorting disagree.
    """
    import h5py
    import MEArec
    from spikeinterface.extractors import read_mearec

    path = Path(recording_path)
    # h5 objects: MEArec's in-memory mode leaves ``template_ids`` as a dataset of a closed file.
    recgen = MEArec.load_recordings(path, return_h5_objects=True, verbose=False, load_waveforms=False,
                                    load=["spiketrains", "voltage_peaks", "templates", "template_ids"])
    datasets = [recgen.template_locations, recgen.voltage_peaks, recgen.template_ids]
    try:
        locations = np.array(recgen.template_locations, dtype=float)
        peaks = np.array(recgen.voltage_peaks, dtype=float) if len(recgen.voltage_peaks) else None
        template_ids = np.array(recgen.template_ids, dtype=int) if recgen.template_ids is not None else None
    finally:
        for handle in {d.file for d in datasets if isinstance(d, h5py.Dataset)}:
            handle.close()
    spiketrains = recgen.spiketrains
    celltypes = [str(c) for c in recgen.template_celltypes]
    _, sorting = read_mearec(path)
    unit_ids = list(sorting.unit_ids)
    if not (len(unit_ids) == len(spiketrains) == len(celltypes) == len(locations)):
        raise CrosscheckError(f"{path}: {len(unit_ids)} SpikeInterface units, {len(spiketrains)} MEArec spike "
                              f"trains, {len(celltypes)} template cell types, {len(locations)} locations")
    fs = float(sorting.sampling_frequency)
    duration = float(recgen.info["recordings"]["duration"])
    rows = []
    for k, uid in enumerate(unit_ids):
        match = re.fullmatch(r"#(\d+)", str(uid))
        i = int(match.group(1)) if match else k
        st = spiketrains[i]
        frames = sorting.get_unit_spike_train(unit_id=uid)
        times = np.asarray(st.times.rescale("s").magnitude, dtype=float)
        if len(frames) != len(times) or (len(frames) and np.max(np.abs(frames - np.round(times * fs))) > 1):
            raise CrosscheckError(f"{path}: unit {uid!r} has {len(frames)} spikes in SpikeInterface but MEArec's "
                                  f"spike train {i} has {len(times)} (or other times): the unit mapping is wrong")
        cell = celltypes[i]
        annotated = str(st.annotations.get("mtype", cell))
        soma = np.asarray(st.annotations.get("soma_position", locations[i]), dtype=float)
        if annotated != cell or not np.allclose(soma, locations[i]):
            raise CrosscheckError(f"{path}: spike train {i} is annotated {annotated!r} at {soma} but template {i} "
                                  f"is {cell!r} at {locations[i]}")
        try:
            _, mtype, _ = cells_mod.parse_name(cell)
            ei = "E" if mtype in cells_mod.EXCITATORY_MTYPES else "I"
        except cells_mod.CellModelError:
            mtype, ei = "", str(st.annotations.get("bintype", "U"))
        loc = locations[i]
        rows.append({
            "unit_id": str(uid), "cell": cell, "mtype": mtype, "ei": ei,
            "mearec_bintype": str(st.annotations.get("bintype", "U")),
            "soma_x": float(loc[0]), "soma_y": float(loc[1]), "soma_z": float(loc[2]),
            "n_spikes": int(len(frames)), "rate_hz": len(frames) / duration if duration > 0 else np.nan,
            "template_index": int(template_ids[i]) if template_ids is not None else -1,
            "amplitude_uv": float(np.max(peaks[i])) if peaks is not None else np.nan,
            "peak_channel": int(np.argmax(peaks[i])) if peaks is not None else -1,
        })
    return pd.DataFrame(rows)


def build_analyzer(
    recording_path: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    ms_before: float = 1.0,
    ms_after: float = 2.0,
    max_spikes_per_unit: int = 500,
    seed: int = 0,
) -> tuple[SortingAnalyzer, pd.DataFrame]:
    """A SpikeInterface ``SortingAnalyzer`` of a MEArec recording's ground-truth units.

    Built as a sorted recording would be (``create_sorting_analyzer(sorting, recording,
    format="binary_folder", sparse=False)``, extensions ``random_spikes``, ``templates``,
    ``noise_levels``), in a temporary folder beside ``folder`` that is renamed onto it when done.

    Parameters
    ----------
    recording_path : path
        A MEArec recording (``.h5``).
    folder : path
        The analyzer folder (replaced if it exists).
    ms_before, ms_after : float
        Template window around each spike (ms).
    max_spikes_per_unit : int
        Spikes averaged per unit (``random_spikes``).
    seed : int
        Seed of the spike and noise-chunk draws.

    Returns
    -------
    (SortingAnalyzer, pandas.DataFrame)
        The analyzer loaded from ``folder`` and :func:`ground_truth` plus ``analyzer_amplitude_uv``
        (``max |min|`` of the unit's analyzer template, band-passed, noisy), ``analyzer_ptp_uv``
        and ``analyzer_peak_channel`` (the contact of its largest ``|min|``).
    """
    import spikeinterface as si
    from spikeinterface.extractors import read_mearec

    folder = Path(folder)
    table = ground_truth(recording_path)
    recording, sorting = read_mearec(recording_path)
    with atomic_dir(folder) as tmp:
        analyzer = si.create_sorting_analyzer(sorting, recording, format="binary_folder", folder=tmp,
                                              sparse=False, overwrite=True, seed=int(seed),
                                              job_kwargs={"progress_bar": False})
        analyzer.compute("random_spikes", method="uniform", max_spikes_per_unit=int(max_spikes_per_unit),
                         seed=int(seed))
        analyzer.compute("templates", ms_before=float(ms_before), ms_after=float(ms_after), operators=["average"],
                         progress_bar=False)
        analyzer.compute("noise_levels", random_slices_kwargs={"seed": int(seed)}, progress_bar=False)
        del analyzer
    analyzer = si.load_sorting_analyzer(folder)
    templates = analyzer.get_extension("templates").get_data()  # (units, samples, channels)
    index = {str(u): k for k, u in enumerate(analyzer.unit_ids)}
    order = [index[u] for u in table["unit_id"]]
    t = templates[order]
    table["analyzer_amplitude_uv"] = np.abs(t.min(axis=(1, 2)))
    table["analyzer_ptp_uv"] = contact_peak_to_peak(t, time_axis=1).max(axis=1)
    table["analyzer_peak_channel"] = t.min(axis=1).argmin(axis=1)
    return analyzer, table
