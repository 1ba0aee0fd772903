"""The core pipeline without an orchestrator: for each cell, spike templates -> EAP datasets per
rotation -> feature images, written under a data directory, cells in parallel processes.

Layout under ``data_dir``::

    templates/<cell>.npz                       spike templates (SpikeTemplates.save)
    eaps/<cell>/<rotation>/eaps.npy            EAPs (N, contacts, samples), float32, µV
    eaps/<cell>/<rotation>/index.parquet       positions, rotations, spike index
    eaps/<cell>/<rotation>/meta.json           tries, acceptance, provenance
    features/<cell>/<rotation>.npy             images (N, rows, cols, 2): amplitude µV, width ms

An output is reused only when it was produced with the same settings (a hash of them is
stored beside it); otherwise it is recomputed.  The Dagster layer wraps the same functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from eap_assets.core import cells, eaps, intracellular
from eap_assets.core.eaps import EAPConfig, EAPDataset, simulate_eap_dataset
from eap_assets.core.features import feature_images
from eap_assets.core.intracellular import SpikeTemplates, StimulusConfig, simulate_spike_templates
from eap_assets.core.rotations import PAPER_ROTATIONS
from eap_assets.core.storage import atomic_save_npy

Log = Callable[[str], None]

#: Quick preset: every cell and rotation, but 400 ms simulations, 3 kept spikes and 50 EAPs
#: per dataset (minutes instead of the paper scale's hour).
QUICK_STIMULUS = StimulusConfig(tstop=400.0, n_keep=3, max_spikes=12)
QUICK_N_EAPS = 50


@dataclass(frozen=True)
class PipelineConfig:
    """What to compute and where.

    Attributes
    ----------
    data_dir : Path
        Output root.
    cells : tuple of str, optional
        Model names; default all found.
    model_folders : tuple of Path
        Extra folders of NMC-portal models (besides those in MEArec).
    rotations : tuple of str
        Rotation modes.
    stimulus : StimulusConfig
        Intracellular settings.
    eap : EAPConfig
        EAP settings (its ``rotation`` is replaced per dataset).
    workers : int
        Parallel processes (NEURON is single-threaded).
    force : bool
        Recompute even when outputs with the same settings exist.
    """

    data_dir: Path = Path("data")
    cells: tuple[str, ...] | None = None
    model_folders: tuple[Path, ...] = ()
    rotations: tuple[str, ...] = PAPER_ROTATIONS
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    eap: EAPConfig = field(default_factory=EAPConfig)
    workers: int = 2
    force: bool = False


def settings_hash(*parts: object) -> str:
    """Short stable hash of JSON-able settings (dataclasses allowed)."""
    payload = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def templates_path(data_dir: Path, cell: str) -> Path:
    return Path(data_dir) / "templates" / f"{cell}.npz"


def eaps_dir(data_dir: Path, cell: str, rotation: str) -> Path:
    return Path(data_dir) / "eaps" / cell / rotation


def features_path(data_dir: Path, cell: str, rotation: str) -> Path:
    return Path(data_dir) / "features" / cell / f"{rotation}.npy"


def ensure_templates(model: cells.CellModel, stimulus: StimulusConfig, data_dir: Path, force: bool = False,
                     log: Log | None = None) -> tuple[SpikeTemplates, bool]:
    """Load the cell's templates if made with ``stimulus``, else simulate and save them.

    Returns
    -------
    (templates, computed) : computed is False when reused from disk.
    """
    path = templates_path(data_dir, model.name)
    key = settings_hash(stimulus, intracellular.CODE_VERSION)
    if path.exists() and not force:
        templates = SpikeTemplates.load(path)
        if templates.provenance.get("settings_hash") == key:
            return templates, False
    start = time.perf_counter()
    templates = simulate_spike_templates(model, stimulus, log=log)
    templates.provenance.update(settings_hash=key, total_simulation_s=round(time.perf_counter() - start, 2),
                                n_segments=templates.n_segments)
    templates.save(path)
    return templates, True


def ensure_eaps(templates: SpikeTemplates, model: cells.CellModel, config: EAPConfig, data_dir: Path,
                force: bool = False, log: Log | None = None) -> tuple[EAPDataset, bool]:
    """Load the EAP dataset if made with these templates and ``config``, else simulate and save it."""
    folder = eaps_dir(data_dir, model.name, config.rotation)
    key = settings_hash(config, eaps.CODE_VERSION, templates.provenance.get("settings_hash"))
    if (folder / "meta.json").exists() and not force:
        dataset = EAPDataset.load(folder)
        if dataset.provenance.get("settings_hash") == key:
            return dataset, False
    dataset = simulate_eap_dataset(templates, config, mtype=model.mtype, log=log)
    dataset.provenance["settings_hash"] = key
    dataset.save(folder)
    return dataset, True


def run_cell(model: cells.CellModel, config: PipelineConfig, log: Log | None = None) -> list[dict]:
    """All stages for one cell; returns one summary row per rotation."""
    templates, _ = ensure_templates(model, config.stimulus, config.data_dir, config.force, log)
    rows = []
    for rotation in config.rotations:
        start = time.perf_counter()
        dataset, computed = ensure_eaps(templates, model, replace(config.eap, rotation=rotation), config.data_dir,
                                        config.force)
        images_path = features_path(config.data_dir, model.name, rotation)
        if computed or not images_path.exists():  # features follow their EAPs; reused EAPs keep theirs
            atomic_save_npy(images_path, feature_images(np.asarray(dataset.eaps), dataset.dt, dataset.probe))
        rows.append({"cell": model.name, "mtype": model.mtype, "ei": model.ei_label, "rotation": rotation,
                     "accepted": dataset.accepted, "tries": dataset.tries,
                     "acceptance_rate": round(dataset.acceptance_rate, 4), "computed": computed,
                     "seconds": round(time.perf_counter() - start, 2)})
        if log is not None:
            log(f"{model.name} {rotation}: {dataset.accepted} EAPs, acceptance {dataset.acceptance_rate:.1%}"
                f"{'' if computed else ' (up to date, reused)'} in {rows[-1]['seconds']} s")
    return rows


def _worker(model: cells.CellModel, config: PipelineConfig) -> list[dict]:
    return run_cell(model, config, log=lambda msg: print(msg, flush=True))


def select_models(config: PipelineConfig) -> list[cells.CellModel]:
    """The models to run, largest first (so the slowest cells start early)."""
    folders = [cells.mearec_models_dir(), *config.model_folders]
    found = cells.discover_cell_models(folders)
    names = config.cells or tuple(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise cells.CellModelError(f"unknown cell model(s) {', '.join(unknown)}; known: {', '.join(found)}")
    return sorted((found[n] for n in names), key=lambda m: -m.morphology.stat().st_size)


def run_pipeline(config: PipelineConfig, log: Log = print) -> tuple[list[dict], dict[str, str]]:
    """Run every selected cell, ``config.workers`` at a time; one failing cell does not stop the others.

    Returns
    -------
    (rows, failures) : summary rows of the finished datasets, and cell -> error message.
    """
    models = select_models(config)
    # compile the shared mechanism library once, before the workers start
    cells.ensure_mechanisms(models[0])
    log(f"{len(models)} cells x {len(config.rotations)} rotations x {config.eap.n_eaps} EAPs -> {config.data_dir}")
    rows: list[dict] = []
    failures: dict[str, str] = {}
    if config.workers <= 1:
        for model in models:
            try:
                rows += run_cell(model, config, log)
            except Exception as exc:  # one cell's failure is reported, the rest continue
                failures[model.name] = f"{type(exc).__name__}: {exc}"
                log(f"FAILED {model.name}: {failures[model.name]}")
        return rows, failures
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per worker process
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_worker, model, config): model.name for model in models}
        for done, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            try:
                rows += future.result()
                log(f"[{done}/{len(models)}] {name} done")
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
                log(f"[{done}/{len(models)}] FAILED {name}: {failures[name]}")
                log("".join(traceback.format_exception(exc)[-3:]))
    return sorted(rows, key=lambda r: (r["cell"], r["rotation"])), failures


def cells_table(templates: Sequence[SpikeTemplates], models: dict[str, cells.CellModel]) -> str:
    """Markdown table of the intracellular stage: segments, current, spikes, simulation times."""
    lines = ["| cell | m-type | E/I | segments | current (nA) | spikes in window | simulations | "
             "final simulation with i_mem (s) | all simulations (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for tp in templates:
        m, p = models[tp.cell_name], tp.provenance
        lines.append(f"| {tp.cell_name} | {m.mtype} | {m.ei_label} | {tp.n_segments} | {tp.amplitude:.4f} | "
                     f"{tp.spike_count} | {p['simulations']} | {p['final_simulation_s']:.1f} | "
                     f"{p.get('total_simulation_s', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"
