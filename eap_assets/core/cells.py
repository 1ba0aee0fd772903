"""Cell models in the NMC-portal (Blue Brain Project) layout: discovery, labels, loading.

A model folder (e.g. ``L5_TTPC1_cADpyr232_1``) holds ``template.hoc``, ``biophysics.hoc``,
``morphology.hoc``, ``constants.hoc``, ``synapses/``, ``mechanisms/*.mod`` and
``morphology/*.asc``.  The 13 layer-5 models of Buccino et al. (2018) ship inside the
``MEArec`` wheel, which is used here as a data source only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eap_assets.core import mechanisms as mech

#: Excitatory (pyramidal / spiny) m-types of the BBP neocortical microcircuit.
EXCITATORY_MTYPES: frozenset[str] = frozenset(
    {"STPC", "TTPC1", "TTPC2", "UTPC", "PC", "SS", "SP", "TPC", "TPC_L1", "TPC_L4", "UPC", "BPC", "IPC", "HPC"}
)
#: Inhibitory (interneuron) m-types of the BBP neocortical microcircuit.
INHIBITORY_MTYPES: frozenset[str] = frozenset(
    {"BP", "BTC", "ChC", "DBC", "LBC", "MC", "NBC", "NGC", "SBC", "DAC", "HAC", "SLAC", "NGC-DA", "NGC-SA"}
)
#: The 13 models of the paper (Table I), in its order.
PAPER_CELLS: tuple[str, ...] = (
    "L5_BP_bAC217_1", "L5_BTC_bAC217_1", "L5_ChC_cACint209_1", "L5_DBC_bAC217_1", "L5_LBC_bAC217_1",
    "L5_MC_bAC217_1", "L5_NBC_bAC217_1", "L5_NGC_bNAC219_1", "L5_SBC_bNAC219_1", "L5_STPC_cADpyr232_1",
    "L5_TTPC1_cADpyr232_1", "L5_TTPC2_cADpyr232_1", "L5_UTPC_cADpyr232_1",
)

REQUIRED_FILES: tuple[str, ...] = ("template.hoc", "biophysics.hoc", "morphology.hoc")
_TEMPLATE_RE = re.compile(r"^\s*begintemplate\s+(\w+)", re.MULTILINE)
_INSERT_RE = re.compile(r"^\s*insert\s+(\w+)", re.MULTILINE)
_LOAD_FILE_RE = re.compile(r"^\s*(?:\{\s*)?load_file\(\s*\"(?:morphology|biophysics|synapses/synapses)\.hoc\"\s*\)\s*\}?\s*$",
                           re.MULTILINE)
_MORPHOLOGY_SUFFIXES = (".asc", ".swc")
#: Sidecar of a morphology variant folder (``eap_assets.core.variants``): parent model, factors, seed.
VARIANT_FILE = "variant.json"


class CellModelError(ValueError):
    """A cell model folder is missing parts, has unknown labels, or fails to load."""


@dataclass(frozen=True)
class CellModel:
    """One cell model folder in NMC-portal layout.

    Attributes
    ----------
    name : str
        Folder name, e.g. ``L5_TTPC1_cADpyr232_1``.
    path : Path
        The folder.
    layer, mtype, etype : str
        Fields of the name: layer, morphological type, electrical type.
    excitatory : bool
        True for pyramidal / spiny m-types.
    morphology : Path
        The single morphology file in ``morphology/``.
    mod_files : tuple of Path
        The model's ``mechanisms/*.mod``.
    template_name : str
        Name after ``begintemplate`` in ``template.hoc``.
    parent : str or None
        For a morphology variant (a folder with ``variant.json``, see
        :mod:`eap_assets.core.variants`), the name of the model it was derived from; None otherwise.
    """

    name: str
    path: Path
    layer: str
    mtype: str
    etype: str
    excitatory: bool
    morphology: Path
    mod_files: tuple[Path, ...] = field(repr=False)
    template_name: str = ""
    parent: str | None = None

    @property
    def ei_label(self) -> str:
        """``"E"`` for excitatory, ``"I"`` for inhibitory."""
        return "E" if self.excitatory else "I"


def parse_name(name: str) -> tuple[str, str, str]:
    """Split a model folder name into (layer, m-type, e-type).

    The m-type is the second ``_``-separated field (``L5_TTPC1_cADpyr232_1`` -> ``TTPC1``).

    Raises
    ------
    CellModelError
        If the name has fewer than three fields or an m-type of unknown class.
    """
    parts = name.split("_")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        raise CellModelError(
            f"cell model {name!r}: name must look like <layer>_<mtype>_<etype>[_<id>], e.g. L5_TTPC1_cADpyr232_1"
        )
    layer, mtype, etype = parts[0], parts[1], parts[2]
    if mtype not in EXCITATORY_MTYPES and mtype not in INHIBITORY_MTYPES:
        raise CellModelError(
            f"cell model {name!r}: m-type {mtype!r} is neither a known excitatory "
            f"({sorted(EXCITATORY_MTYPES)}) nor inhibitory ({sorted(INHIBITORY_MTYPES)}) type"
        )
    return layer, mtype, etype


def _template_name(path: Path, model: str) -> str:
    names = _TEMPLATE_RE.findall(path.read_text(errors="replace"))
    if not names:
        raise CellModelError(f"cell model {model!r}: {path.name} defines no template (no 'begintemplate')")
    return names[-1]


def read_cell_model(folder: str | os.PathLike[str]) -> CellModel:
    """Read and validate one model folder (no NEURON needed).

    Checks that the hoc files, exactly one morphology and the mechanisms are there, and that
    every mechanism ``biophysics.hoc`` inserts is defined by one of the model's .mod files.

    Raises
    ------
    CellModelError
        Naming the model and what is wrong.
    """
    path = Path(folder)
    name = path.name
    if not path.is_dir():
        raise CellModelError(f"cell model {name!r}: {path} is not a directory")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if not (path / "morphology").is_dir():
        missing.append("morphology/")
    if not (path / "mechanisms").is_dir():
        missing.append("mechanisms/")
    if missing:
        raise CellModelError(f"cell model {name!r} at {path}: not a cell model folder, missing {', '.join(missing)}")
    layer, mtype, etype = parse_name(name)
    morphs = sorted(p for p in (path / "morphology").iterdir() if p.suffix.lower() in _MORPHOLOGY_SUFFIXES)
    if len(morphs) != 1:
        raise CellModelError(
            f"cell model {name!r}: expected exactly one .asc/.swc file in morphology/, found {len(morphs)}"
        )
    mod_files = tuple(sorted((path / "mechanisms").glob("*.mod")))
    defined: set[str] = set()
    for mod in mod_files:
        try:
            defined.add(mech.mechanism_name(mod))
        except mech.MechanismError as exc:
            raise CellModelError(f"cell model {name!r}: {exc}") from None
    inserted = set(_INSERT_RE.findall((path / "biophysics.hoc").read_text(errors="replace")))
    undefined = sorted(inserted - defined - mech.BUILTIN_MECHANISMS)
    if undefined:
        raise CellModelError(
            f"cell model {name!r}: biophysics.hoc inserts {', '.join(undefined)} but mechanisms/ has no .mod "
            f"file defining {'it' if len(undefined) == 1 else 'them'} (missing {', '.join(u + '.mod' for u in undefined)}?)"
        )
    return CellModel(
        name=name, path=path, layer=layer, mtype=mtype, etype=etype, excitatory=mtype in EXCITATORY_MTYPES,
        morphology=morphs[0], mod_files=mod_files, template_name=_template_name(path / "template.hoc", name),
        parent=_variant_parent(path, (layer, mtype, etype)),
    )


def _variant_parent(path: Path, labels: tuple[str, str, str]) -> str | None:
    """The parent named in a variant folder's ``variant.json`` (None without one); its labels must match."""
    sidecar = path / VARIANT_FILE
    if not sidecar.exists():
        return None
    try:
        parent = json.loads(sidecar.read_text())["parent"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CellModelError(f"cell model {path.name!r}: unreadable {VARIANT_FILE} "
                             f"({type(exc).__name__}: {exc})") from None
    if not isinstance(parent, str) or parse_name(parent) != labels:
        raise CellModelError(f"cell model {path.name!r}: {VARIANT_FILE} names parent {parent!r}, whose "
                             f"layer / m-type / e-type differ from the variant's {labels}")
    return parent


def model_hash(model: CellModel) -> str:
    """Hash of every file of the model folder (names and contents): changes when the model does.

    The contents are read once per process for a given set of (file, size, mtime); up-to-date
    checks call this for every cell, rotation and task.
    """
    files = sorted(p for p in model.path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and "x86_64" not in p.parts)
    return _hash_files(model.path, tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=256)
def _hash_files(root: Path, signature: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in signature:
        path = Path(name)
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def segment_geometry(cell) -> dict[str, np.ndarray]:
    """Segment end points and diameters of an instantiated ``LFPy`` cell.

    Returns
    -------
    dict
        ``seg_start``, ``seg_end`` (n_seg, 3) µm and ``seg_diam`` (n_seg,) µm, in the
        morphology's own frame; segment 0 is in the soma.
    """
    diam = cell.d.mean(axis=-1) if cell.d.ndim == 2 else cell.d
    return {"seg_start": np.column_stack([cell.x[:, 0], cell.y[:, 0], cell.z[:, 0]]),
            "seg_end": np.column_stack([cell.x[:, -1], cell.y[:, -1], cell.z[:, -1]]),
            "seg_diam": np.asarray(diam, dtype=float)}


def mearec_models_dir() -> Path:
    """Folder of the BBP models shipped in the installed MEArec wheel (data only, no MEArec code runs)."""
    import importlib.util

    spec = importlib.util.find_spec("MEArec")
    if spec is None or not spec.submodule_search_locations:
        raise CellModelError("the MEArec package (source of the 13 BBP models) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "cell_models" / "bbp"
    if not folder.is_dir():
        raise CellModelError(f"MEArec is installed but has no cell models at {folder}")
    return folder


def scan_cell_models(folders: Iterable[str | os.PathLike[str]]) -> tuple[dict[str, CellModel], dict[str, str]]:
    """Read every model folder (a sub-folder with a ``template.hoc``) of ``folders``, tolerating bad ones.

    Returns
    -------
    (models, problems)
        Valid models by name (sorted), and folder path -> error message for the sub-folders that
        are not valid models (including a name found twice).
    """
    found: dict[str, CellModel] = {}
    problems: dict[str, str] = {}
    for root in (Path(f) for f in folders):
        if not root.is_dir():
            problems[str(root)] = f"cell model folder {root} does not exist"
            continue
        for sub in sorted(p for p in root.iterdir()
                          if p.is_dir() and not p.name.startswith(".") and (p / "template.hoc").exists()):
            try:
                model = read_cell_model(sub)
            except CellModelError as exc:
                problems[str(sub)] = str(exc)
                continue
            if model.name in found:
                problems[str(sub)] = f"cell model {model.name!r} found twice: {found[model.name].path} and {sub}"
                continue
            found[model.name] = model
    return dict(sorted(found.items())), problems


def discover_cell_models(folders: Iterable[str | os.PathLike[str]] | None = None) -> dict[str, CellModel]:
    """Find every model folder in the given folders (default: the 13 models in MEArec).

    Every sub-folder that contains a ``template.hoc`` is read and validated; the first invalid
    one (or a name present in two folders) raises.

    Returns
    -------
    dict
        Model name -> :class:`CellModel`, sorted by name.
    """
    found, problems = scan_cell_models(folders if folders is not None else [mearec_models_dir()])
    if problems:
        raise CellModelError(next(iter(problems.values())))
    return found


def get_cell_model(name: str, folders: Iterable[str | os.PathLike[str]] | None = None) -> CellModel:
    """Return one model by name from :func:`discover_cell_models`."""
    models = discover_cell_models(folders)
    if name not in models:
        raise CellModelError(f"cell model {name!r} not found; known: {', '.join(models)}")
    return models[name]


def prepare_mechanisms(models: Sequence[CellModel], cache_dir: Path | None = None) -> Path:
    """Compile (once, cached by content hash) and load the union of the models' mechanisms.

    Returns
    -------
    Path
        The build directory of the compiled library.
    """
    return mech.build_and_load({m.name: m.mod_files for m in models}, cache_dir=cache_dir)


def ensure_mechanisms(model: CellModel, cache_dir: Path | None = None) -> None:
    """Make sure this process has the model's mechanisms loaded.

    NEURON loads one mechanism library per process, so the first call compiles (cached) and
    loads the union of the mechanisms of the MEArec models and of every model beside ``model``
    in its folder; later calls for any of those models do nothing. If that union cannot be
    built (a neighbour's .mod fails to compile or clashes), the MEArec models' and this model's
    own mechanisms are built instead, so a broken neighbour fails alone.
    """
    needed = {mech.mechanism_name(p) for p in model.mod_files if p.stem not in mech.SYNAPSE_MECHANISMS}
    if needed <= mech.loaded_mechanisms():
        return
    own: dict[str, list[Path]] = {}
    with contextlib.suppress(CellModelError):
        own = _mod_files_by_model(mearec_models_dir())
    own[model.name] = list(model.mod_files)
    sources = {**_mod_files_by_model(model.path.parent), **own}
    try:
        mech.build_and_load(sources, cache_dir=cache_dir)
    except mech.MechanismError:
        if sources == own:
            raise
        mech.build_and_load(own, cache_dir=cache_dir)


def _mod_files_by_model(folder: Path) -> dict[str, list[Path]]:
    """The ``.mod`` files of every model folder in ``folder`` (not hidden temporary ones), by model name."""
    sources: dict[str, list[Path]] = {}
    for mod in sorted(folder.glob("*/mechanisms/*.mod")):
        if not mod.parent.parent.name.startswith("."):
            sources.setdefault(mod.parent.parent.name, []).append(mod)
    return sources


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """The BBP hoc files open ``morphology/<file>.asc`` relative to the model folder."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _define_template(model: CellModel) -> None:
    """Define the model's hoc templates in NEURON without its synapse code."""
    from neuron import h

    h.load_file("stdrun.hoc")
    h.load_file("import3d.hoc")
    if (model.path / "constants.hoc").exists():  # celsius = 34 for the BBP models
        h.load_file(1, str(model.path / "constants.hoc"))
    for hoc in ("morphology.hoc", "biophysics.hoc"):
        tname = _template_name(model.path / hoc, model.name)
        if not hasattr(h, tname):
            if not h.load_file(1, str(model.path / hoc)):
                raise CellModelError(f"cell model {model.name!r}: NEURON failed to load {hoc}")
    synapses = model.path / "synapses" / "synapses.hoc"
    if synapses.exists():
        syn_name = _template_name(synapses, model.name)
        if not hasattr(h, syn_name):
            # Stand-in for the synapse template: the cell is never built with synapses
            # (templateargs=0), so only the name must exist for template.hoc to parse.
            h(f"begintemplate {syn_name}\npublic load_synapses\nproc load_synapses() {{\n"
              f"execerror(\"{model.name}: synapses are not supported by eap_assets\")\n}}\nendtemplate {syn_name}\n")
    if not hasattr(h, model.template_name):
        text = _LOAD_FILE_RE.sub("", (model.path / "template.hoc").read_text(errors="replace"))
        with tempfile.NamedTemporaryFile("w", suffix=".hoc", prefix=f"{model.name}-", delete=False) as tmp:
            tmp.write(text)
        try:
            if not h.load_file(1, tmp.name):
                raise CellModelError(f"cell model {model.name!r}: NEURON failed to load template.hoc")
        finally:
            os.unlink(tmp.name)


def load_lfpy_cell(
    model: CellModel,
    tstop: float = 1200.0,
    dt: float = 2**-5,
    v_init: float = -70.0,
    cache_dir: Path | None = None,
):
    """Instantiate a model as an ``LFPy.TemplateCell`` the way the NMC portal intends.

    Compiles/loads the mechanisms (cached), loads ``constants.hoc`` (celsius = 34 °C),
    the morphology and biophysics templates and the cell template (without synapses),
    and builds the cell with ``templateargs=0``, ``pt3d=True``, ``delete_sections=True``.

    Parameters
    ----------
    model : CellModel
        The model to load.
    tstop, dt : float
        Simulation length and time step in ms.
    v_init : float
        Initial membrane potential in mV.
    cache_dir : Path, optional
        Mechanism cache root.

    Returns
    -------
    LFPy.TemplateCell

    Raises
    ------
    CellModelError
        If the morphology or template cannot be instantiated (names the model and the cause).
    """
    import LFPy

    ensure_mechanisms(model, cache_dir=cache_dir)
    try:
        with _working_directory(model.path):
            _define_template(model)
            cell = LFPy.TemplateCell(
                morphology=str(model.morphology), templatefile=str(model.path / "template.hoc"),
                templatename=model.template_name, templateargs=0, v_init=v_init, pt3d=True,
                delete_sections=True, dt=dt, tstart=0.0, tstop=tstop, verbose=False,
            )
    except CellModelError:
        raise
    except Exception as exc:  # hoc errors surface as RuntimeError/Exception from NEURON
        raise CellModelError(
            f"cell model {model.name!r}: could not instantiate the cell (morphology {model.morphology.name}): {exc}"
        ) from exc
    if cell.totnsegs < 2 or not any("soma" in name for name in cell.allsecnames):
        raise CellModelError(
            f"cell model {model.name!r}: morphology {model.morphology.name} produced {cell.totnsegs} segments "
            "and no soma; the morphology file is broken"
        )
    return cell
