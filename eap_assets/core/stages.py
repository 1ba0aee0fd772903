"""The stages of the dataset on disk, without an orchestrator: presets, where each artefact
lives, and "make it unless an up-to-date one exists" for spike templates and EAP datasets.

Layout under ``data_dir``::

    templates/<cell>.npz                       spike templates (SpikeTemplates.save)
    eaps/<cell>/<rotation>/eaps.npy            EAPs (N, contacts, samples), float32, µV
    eaps/<cell>/<rotation>/index.parquet       positions, rotations, spike index
    eaps/<cell>/<rotation>/meta.json           tries, acceptance, provenance

Every artefact carries a *key*: a hash of everything that determines its content (the cell
model's files, the settings, the code version, the key of its input).  An artefact is reused
only when its stored key equals the key the current settings give; a changed parameter, model
or code version therefore never silently reuses stale data.  The Dagster layer
(``eap_assets.defs``) calls these functions and records the keys as data versions.

Each artefact is written atomically (:mod:`eap_assets.core.storage`) and "reuse if up to date,
else compute and write" runs under a lock per artefact, so two runs of the same partition at
once compute it once: the second waits, then reuses what the first wrote.  An artefact that
has the right key but cannot be read (damaged on disk) is recomputed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from eap_assets.core import cells, eaps, features, intracellular
from eap_assets.core.eaps import EAPConfig, EAPDataset, simulate_eap_dataset
from eap_assets.core.intracellular import SpikeTemplates, StimulusConfig, simulate_spike_templates
from eap_assets.core.keys import settings_hash
from eap_assets.core.noise import NoiseConfig
from eap_assets.core.probe import probe_name
from eap_assets.core.storage import file_lock

Log = Callable[[str], None]

#: Quick preset: every cell and rotation, but 400 ms simulations, 3 kept spikes and 50 EAPs
#: per dataset (minutes instead of the paper scale's hour).
QUICK_STIMULUS = StimulusConfig(tstop=400.0, n_keep=3, max_spikes=12)
QUICK_N_EAPS = 50


class StaleInputError(RuntimeError):
    """An input artefact is missing or was made with other settings than the ones asked for."""


@dataclass(frozen=True)
class Preset:
    """A named scale: intracellular settings and accepted EAPs per cell and rotation."""

    stimulus: StimulusConfig
    n_eaps: int


#: ``paper``: 1.2 s simulations, 10 kept spikes, 1000 EAPs (Buccino et al. 2018); ``quick``: for trying things out.
PRESETS: dict[str, Preset] = {"paper": Preset(StimulusConfig(), 1000), "quick": Preset(QUICK_STIMULUS, QUICK_N_EAPS)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ValueError listing the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def templates_key(model: cells.CellModel, stimulus: StimulusConfig) -> str:
    """Key of a cell's spike templates: its model files, the stimulus settings, the code version."""
    return settings_hash(cells.model_hash(model), stimulus, intracellular.CODE_VERSION)


def eaps_key(config: EAPConfig, templates_key_: str) -> str:
    """Key of an EAP dataset: its settings, the code version and the key of its templates (a probe
    file counts by its contacts, :func:`eap_assets.core.probe.probe_name`, not its path)."""
    return settings_hash(replace(config, probe=probe_name(config.probe)), eaps.CODE_VERSION, templates_key_)


def features_key(eaps_key_: str, noise_key: str | None = None) -> str:
    """Key of a feature table: the feature code version, the key of its EAP dataset and, when
    recording noise is added before feature extraction, the noise's key (``NoiseConfig.key()``).

    Without noise (``noise_key`` None, or the key every disabled ``NoiseConfig`` has) the key is
    the noise-free one, unchanged from before noise existed: existing tables stay valid.
    """
    if noise_key is None or noise_key == NoiseConfig().key():
        return settings_hash(features.CODE_VERSION, eaps_key_)
    return settings_hash(features.CODE_VERSION, eaps_key_, noise_key)


def templates_path(data_dir: Path, cell: str) -> Path:
    """Where a cell's spike templates live."""
    return Path(data_dir) / "templates" / f"{cell}.npz"


#: Folder (under the data directory) of each family of EAP datasets: the paper's, and those simulated for
#: recordings (MEA-plane medium, the whole detectable range of positions).
EAP_ROOTS: dict[str, str] = {"paper": "eaps", "recording": "recording_eaps"}


def eaps_dir(data_dir: Path, cell: str, rotation: str, family: str = "paper") -> Path:
    """Folder of one cell x rotation EAP dataset of a family (:data:`EAP_ROOTS`)."""
    return Path(data_dir) / EAP_ROOTS[family] / cell / rotation


def stored_key(path: Path) -> str | None:
    """The key stored with an artefact (templates ``.npz`` or EAP folder), None if absent or unreadable."""
    try:
        if path.suffix == ".npz":
            return SpikeTemplates.load(path).provenance.get("settings_hash")
        return json.loads((path / "meta.json").read_text())["provenance"].get("settings_hash")
    except (OSError, ValueError, KeyError):
        return None


def ensure_templates(model: cells.CellModel, stimulus: StimulusConfig, data_dir: Path, force: bool = False,
                     log: Log | None = None) -> tuple[SpikeTemplates, bool]:
    """Load the cell's templates if made with ``stimulus``, else simulate and save them.

    Returns
    -------
    (templates, computed) : computed is False when reused from disk.
    """
    path = templates_path(data_dir, model.name)
    key = templates_key(model, stimulus)
    with file_lock(path):
        if not force and stored_key(path) == key:
            return SpikeTemplates.load(path), False
        start = time.perf_counter()
        templates = simulate_spike_templates(model, stimulus, log=log)
        templates.provenance.update(settings_hash=key, total_simulation_s=round(time.perf_counter() - start, 2),
                                    n_segments=templates.n_segments)
        templates.save(path)
    return templates, True


def ensure_eaps(templates: SpikeTemplates, model: cells.CellModel, config: EAPConfig, data_dir: Path,
                force: bool = False, log: Log | None = None, family: str = "paper") -> tuple[EAPDataset, bool]:
    """Load the EAP dataset of ``family`` if made with these templates and ``config``, else simulate and save it."""
    folder = eaps_dir(data_dir, model.name, config.rotation, family)
    key = eaps_key(config, templates.provenance["settings_hash"])
    with file_lock(folder):
        if not force and stored_key(folder) == key:
            try:
                return EAPDataset.load(folder), False
            except ValueError as exc:  # right key, damaged files: make it again
                if log is not None:
                    log(f"{exc}; recomputing")
        dataset = simulate_eap_dataset(templates, config, mtype=model.mtype, log=log)
        dataset.provenance["settings_hash"] = key
        dataset.save(folder)
    return dataset, True


def load_current_templates(model: cells.CellModel, stimulus: StimulusConfig, data_dir: Path) -> SpikeTemplates:
    """The cell's stored templates, provided they were made from this model with ``stimulus``.

    Raises
    ------
    StaleInputError
        If they are missing or were made with other settings (naming the cell and both keys).
    """
    path, key = templates_path(data_dir, model.name), templates_key(model, stimulus)
    with file_lock(path, shared=True):
        found = stored_key(path)
        if found != key:
            state = ("do not exist or are unreadable" if found is None
                     else f"were made with other settings or model files (key {found})")
            raise StaleInputError(f"spike templates of {model.name!r} at {path} {state}; the current settings need "
                                  f"key {key}: materialise spike_templates for {model.name!r} first")
        return SpikeTemplates.load(path)


def load_current_eaps(model: cells.CellModel, config: EAPConfig, stimulus: StimulusConfig,
                      data_dir: Path, family: str = "paper") -> EAPDataset:
    """The stored EAP dataset of ``model`` x ``config.rotation`` of ``family``, provided it is up to date.

    Raises
    ------
    StaleInputError
        If it is missing or its key differs from the one the current settings give.
    """
    folder = eaps_dir(data_dir, model.name, config.rotation, family)
    key = eaps_key(config, templates_key(model, stimulus))
    with file_lock(folder, shared=True):
        found = stored_key(folder)
        if found != key:
            state = "does not exist" if found is None else f"was made with other settings (key {found})"
            asset = "eap_dataset" if family == "paper" else f"{family}_eap_dataset"
            raise StaleInputError(f"EAP dataset {model.name!r} x {config.rotation!r} at {folder} {state}; the "
                                  f"current settings need key {key}: materialise {asset} for it first")
        return EAPDataset.load(folder)


def scan_models(model_folders: Sequence[Path] = (), names: Sequence[str] | None = None
                ) -> tuple[list[cells.CellModel], dict[str, str]]:
    """The valid models in MEArec and ``model_folders`` (or only ``names``), largest morphology
    first, and name -> problem for the model folders among them that are not valid models.

    Raises
    ------
    CellModelError
        For a name found nowhere, a model folder that does not exist or a name found twice.
    """
    found, problems = cells.scan_cell_models([cells.mearec_models_dir(), *model_folders])
    invalid = {Path(folder).name: problem for folder, problem in problems.items()}
    fatal = [problem for folder, problem in problems.items()
             if not Path(folder).is_dir() or Path(folder).name in found]  # missing root folder, name twice
    if fatal:
        raise cells.CellModelError(fatal[0])
    names = list(names or [*found, *invalid])
    unknown = [n for n in names if n not in found and n not in invalid]
    if unknown:
        raise cells.CellModelError(f"unknown cell model(s) {', '.join(unknown)}; known: {', '.join(found)}")
    models = sorted((found[n] for n in names if n in found), key=lambda m: -m.morphology.stat().st_size)
    return models, {n: invalid[n] for n in names if n in invalid}


def cells_table(templates: Sequence[SpikeTemplates], models: dict[str, cells.CellModel]) -> str:
    """Markdown table of the intracellular stage: segments, current, spikes, simulation times."""
    lines = ["| cell | m-type | E/I | segments | current (nA) | spikes in window | simulations | "
             "accepted simulation (s) | all simulations (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for tp in templates:
        m, p = models[tp.cell_name], tp.provenance
        lines.append(f"| {tp.cell_name} | {m.mtype} | {m.ei_label} | {tp.n_segments} | {tp.amplitude:.4f} | "
                     f"{tp.spike_count} | {p['simulations']} | {p['final_simulation_s']:.1f} | "
                     f"{p.get('total_simulation_s', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"
