"""Morphology variants of a BBP cell model: per-axis scaling and seeded branch jitter.

The Blue Brain Project made its "``_-_Scale_x1.000_y1.050_z1.000_-_Clone_17``" morphologies by
scaling the x, y and z coordinates of a reconstruction; this module does the same to a model's
Neurolucida ``.asc`` morphology and writes the result as a new model folder beside the others,
so the variant is discovered, loaded, simulated and labelled like any model.

Geometry (:func:`transform_asc`), on the ``(x y z d)`` tuples of the ``.asc`` text; everything
else in the file (comments, colours, tree structure) is kept byte for byte:

1. *Jitter* (optional, seeded): every branch (the points between two branch points) is rotated
   about its attachment point -- the last point of its parent branch; for a neurite's root
   branch, its own first point -- by an angle drawn uniformly in ``[0, jitter_deg]`` about an
   axis drawn uniformly on the sphere.  A branch carries its sub-tree along (rotations compose
   down the tree), so every child still starts where its parent ends: the tree stays
   connected, and branch lengths are unchanged.  The soma contour is not jittered.
2. *Scaling*: ``p' = c + diag(sx, sy, sz) (p - c)`` for every point (soma contour included),
   with ``c`` the centroid of the soma contour, so the soma stays in place.

**Diameters are kept unchanged**, as in BBP's scaled clones: the factors change the layout and
lengths of the tree, not the calibre of its branches.

A variant folder is a copy of the parent folder (hoc files, mechanisms, synapse files; copied,
not linked, so it stays valid if the parent moves) with

- the transformed morphology ``morphology/<parent stem><suffix>.asc``;
- the cell and morphology hoc templates renamed with a tag of the variant's name (NEURON
  cannot redefine a template, and the parent's morphology template opens the parent's file);
- ``variant.json``: parent name and model hash, factors, jitter, seed, code version.

Its name is ``<parent>_sx1.100_sy0.900_sz1.000_j2.0_s7`` (:meth:`VariantSpec.suffix`): the
layer / m-type / e-type fields of the parent's name come first, so the variant carries the
parent's labels, and :func:`eap_assets.core.cells.read_cell_model` reads the parent's name from
``variant.json`` into ``CellModel.parent``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from eap_assets.core import cells
from eap_assets.core.eaps import partition_seed
from eap_assets.core.storage import atomic_dir

#: Version of the variant code (in ``variant.json``, hence in the variant's model hash).
CODE_VERSION = "variants-1"
#: Default range of the scale factors drawn by :func:`draw_variant_specs`.
DEFAULT_FACTOR_RANGE: tuple[float, float] = (0.8, 1.2)
#: Largest accepted jitter angle, degrees ("a few degrees"; beyond this the shape is no longer the cell's).
MAX_JITTER_DEG = 30.0
#: Accepted range of a scale factor.
FACTOR_LIMITS: tuple[float, float] = (0.25, 4.0)
#: Neurolucida tree types whose branches are jittered.
NEURITE_TAGS: frozenset[str] = frozenset({"Axon", "Dendrite", "Apical"})

_TOKEN_RE = re.compile(r'(?P<comment>;[^\n]*)|(?P<string>"[^"]*")|(?P<lp>\()|(?P<rp>\))|(?P<bar>\|)'
                       r'|(?P<word>[^\s()|;",<>]+)|(?P<other>[,<>])|(?P<space>\s+)')
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class VariantSpec:
    """How a variant differs from its parent.

    Factors are rounded to 3 decimals and the jitter to 1 decimal (the precision of the
    variant's name, so the name states the geometry exactly).

    Attributes
    ----------
    sx, sy, sz : float
        Scale factors of the x, y, z coordinates about the soma centroid, in
        :data:`FACTOR_LIMITS`.
    jitter_deg : float
        Largest rotation of a branch about its attachment point, degrees (0: none).
    seed : int
        Seed of the jitter (>= 0); part of the name.
    """

    sx: float = 1.0
    sy: float = 1.0
    sz: float = 1.0
    jitter_deg: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = FACTOR_LIMITS
        for axis in ("sx", "sy", "sz"):
            value = getattr(self, axis)
            if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"VariantSpec.{axis} must be a scale factor in [{lo}, {hi}], got {value!r}")
            object.__setattr__(self, axis, round(float(value), 3))
        jitter = self.jitter_deg
        if not (isinstance(jitter, (int, float, np.number)) and math.isfinite(jitter)
                and 0 <= jitter <= MAX_JITTER_DEG):
            raise ValueError(f"VariantSpec.jitter_deg must be in [0, {MAX_JITTER_DEG}] degrees, got {jitter!r}")
        object.__setattr__(self, "jitter_deg", round(float(jitter), 1))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"VariantSpec.seed must be an integer >= 0, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def factors(self) -> tuple[float, float, float]:
        return (self.sx, self.sy, self.sz)

    def suffix(self) -> str:
        """Name suffix, e.g. ``_sx1.100_sy0.900_sz1.000_j0.0_s0``."""
        return f"_sx{self.sx:.3f}_sy{self.sy:.3f}_sz{self.sz:.3f}_j{self.jitter_deg:.1f}_s{self.seed}"

    def variant_name(self, parent: str) -> str:
        """Folder name of the variant of model ``parent``."""
        return parent + self.suffix()


# --- the .asc morphology -----------------------------------------------------------------------

@dataclass
class _Branch:
    parent: int           # index of the parent branch, -1 for none
    pivot: int            # point index the branch rotates about, -1: its own first point
    points: list[int]
    jitter: bool


@dataclass
class AscMorphology:
    """The point tuples of a Neurolucida ``.asc`` text and the branch tree they form.

    Attributes
    ----------
    spans : list of (int, int)
        Character span of each point tuple ``(x y z d ...)``.
    xyz : ndarray, shape (n_points, 3)
        Coordinates, µm.
    soma : ndarray of int
        Indices of the points of the soma contour(s) (``CellBody``).
    branches : list
        Branches in file order (a parent before its children).
    """

    spans: list[tuple[int, int]]
    xyz: np.ndarray
    soma: np.ndarray
    branches: list[_Branch]


def parse_asc(text: str, source: str = "morphology") -> AscMorphology:
    """Parse the point tuples and the branch structure of Neurolucida ASC text.

    A point is a parenthesised group of four numbers (x, y, z, diameter) with an optional
    trailing word; ``|`` separates sibling branches; a group opened after a branch's points
    holds its children.  Groups tagged ``CellBody`` are soma contours, groups tagged
    ``Axon`` / ``Dendrite`` / ``Apical`` neurites; points elsewhere (markers) are scaled
    but not jittered.

    Raises
    ------
    ValueError
        Naming ``source`` if the parentheses do not balance, or there is no soma contour.
    """
    tokens = [(m.lastgroup, m.group(), m.start(), m.end()) for m in _TOKEN_RE.finditer(text)
              if m.lastgroup not in ("space", "comment")]
    spans: list[tuple[int, int]] = []
    xyz: list[tuple[float, float, float]] = []
    branches: list[_Branch] = []
    stack: list[dict] = []        # open groups: tags, words, their branches and the current one
    top_groups: list[dict] = []
    i = 0
    while i < len(tokens):
        kind, value, start, _ = tokens[i]
        if kind == "lp":
            j = i + 1
            while j < len(tokens) and tokens[j][0] == "word" and j - i <= 5:
                j += 1
            words = [t[1] for t in tokens[i + 1:j]]
            n_numbers = sum(1 for w in words[:4] if _NUMBER_RE.match(w))
            if (j < len(tokens) and tokens[j][0] == "rp" and len(words) in (4, 5) and n_numbers == 4
                    and stack):
                group = stack[-1]
                branch = branches[group["branch"]]
                branch.points.append(len(xyz))
                xyz.append((float(words[0]), float(words[1]), float(words[2])))
                spans.append((start, tokens[j][3]))
                i = j + 1
                continue
            # a group: its branches hang from the current branch of the enclosing group, at its last point
            parent = stack[-1]["branch"] if stack else -1
            pivot = branches[parent].points[-1] if parent >= 0 and branches[parent].points else -1
            group = {"tags": set(), "words": [], "parent": parent, "pivot": pivot,
                     "branch": len(branches), "branches": [len(branches)]}
            branches.append(_Branch(parent=parent, pivot=pivot, points=[], jitter=False))
            if not stack:
                top_groups.append(group)
            stack.append(group)
        elif kind == "rp":
            if not stack:
                raise ValueError(f"{source}: unbalanced ')' at character {start}")
            group = stack.pop()
            # a one-word group without points, e.g. (Axon) or (CellBody), tags the enclosing group
            if stack and len(group["words"]) == 1 and not any(branches[b].points for b in group["branches"]):
                stack[-1]["tags"].add(group["words"][0])
        elif kind == "bar":
            if not stack:
                raise ValueError(f"{source}: '|' outside any group at character {start}")
            group = stack[-1]
            group["branch"] = len(branches)
            group["branches"].append(len(branches))
            branches.append(_Branch(parent=group["parent"], pivot=group["pivot"], points=[], jitter=False))
        elif kind in ("word", "string") and stack:
            stack[-1]["words"].append(value.strip('"'))
            if kind == "string":  # ("CellBody" ...)
                stack[-1]["tags"].add(value.strip('"'))
        i += 1
    if stack:
        raise ValueError(f"{source}: {len(stack)} unclosed '(' at the end of the file")
    # the tags of its top-level group decide what a branch is (parents come before children)
    owner = np.full(len(branches), -1)
    for g, group in enumerate(top_groups):
        owner[group["branches"]] = g
    for b, branch in enumerate(branches):
        if owner[b] < 0:
            owner[b] = owner[branch.parent]
    soma_points: list[int] = []
    for b, branch in enumerate(branches):
        tags = top_groups[owner[b]]["tags"]
        if "CellBody" in tags:
            soma_points += branch.points
        branch.jitter = bool(tags & NEURITE_TAGS)
    if not soma_points:
        raise ValueError(f"{source}: no soma contour (CellBody) found; cannot place the scaling centre")
    return AscMorphology(spans=spans, xyz=np.asarray(xyz, dtype=float).reshape(-1, 3),
                         soma=np.asarray(soma_points, dtype=int), branches=branches)


def jitter_points(morph: AscMorphology, jitter_deg: float, rng: np.random.Generator) -> np.ndarray:
    """Coordinates after rotating every neurite branch about its attachment point (module docstring).

    One rotation is drawn per branch with points, in file order: axis uniform on the sphere,
    angle uniform in ``[0, jitter_deg]``.

    Returns
    -------
    ndarray, shape (n_points, 3)
    """
    xyz = morph.xyz
    out = xyz.copy()
    jittered = [b for b, branch in enumerate(morph.branches) if branch.jitter and branch.points]
    if jitter_deg <= 0 or not jittered:
        return out
    axes = rng.normal(size=(len(jittered), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.deg2rad(rng.uniform(0.0, jitter_deg, len(jittered)))
    rotations = dict(zip(jittered, Rotation.from_rotvec(axes * angles[:, None]).as_matrix()))
    # affine map of each branch: p -> A p + t, composed from the root down (parents come first)
    affine: list[tuple[np.ndarray, np.ndarray]] = []
    for b, branch in enumerate(morph.branches):
        a_parent, t_parent = affine[branch.parent] if branch.parent >= 0 else (np.eye(3), np.zeros(3))
        if b in rotations:
            pivot = xyz[branch.pivot] if branch.pivot >= 0 else xyz[branch.points[0]]
            rot = rotations[b]
            a, t = a_parent @ rot, a_parent @ (pivot - rot @ pivot) + t_parent
        else:
            a, t = a_parent, t_parent
        affine.append((a, t))
        if branch.points:
            out[branch.points] = xyz[branch.points] @ a.T + t
    return out


def transform_asc(text: str, spec: VariantSpec, rng: np.random.Generator | None = None,
                  source: str = "morphology") -> tuple[str, np.ndarray]:
    """Apply a variant's jitter and scaling to ASC text (diameters unchanged).

    Parameters
    ----------
    text : str
        Neurolucida ASC text.
    spec : VariantSpec
        Factors and jitter.
    rng : numpy.random.Generator, optional
        Source of the jitter; required when ``spec.jitter_deg > 0``.
    source : str
        Name used in error messages.

    Returns
    -------
    (text, centre)
        The transformed text and the scaling centre (soma contour centroid), µm.
    """
    morph = parse_asc(text, source)
    centre = morph.xyz[morph.soma].mean(axis=0)
    if spec.jitter_deg > 0:
        if rng is None:
            raise ValueError("transform_asc: a jitter needs an rng")
        xyz = jitter_points(morph, spec.jitter_deg, rng)
    else:
        xyz = morph.xyz
    xyz = centre + (xyz - centre) * np.asarray(spec.factors)
    pieces, last = [], 0
    for (start, end), point in zip(morph.spans, xyz):
        inner = text[start + 1:end - 1].split()
        pieces += [text[last:start], "(" + " ".join([*(format(v, ".7g") for v in point), *inner[3:]]) + ")"]
        last = end
    pieces.append(text[last:])
    return "".join(pieces), centre


# --- variant folders ---------------------------------------------------------------------------

def _template_tag(name: str) -> str:
    return "v" + hashlib.sha256(name.encode()).hexdigest()[:10]


def _rename_in_folder(folder: Path, replacements: dict[str, str], plain: dict[str, str]) -> None:
    """Rename hoc identifiers (whole words) and plain strings in the folder's top-level text files."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, replacements)) + r")\b")
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix not in (".hoc", ".py", ".json", ".sh"):
            continue
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = pattern.sub(lambda m: replacements[m.group(1)], text)
        for old, repl in plain.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")


def _variant_record(parent: cells.CellModel, spec: VariantSpec, centre: np.ndarray | None = None) -> dict:
    record = {"parent": parent.name, "parent_hash": cells.model_hash(parent), **asdict(spec),
              "diameters": "unchanged", "code_version": CODE_VERSION}
    if centre is not None:
        record["scale_centre_um"] = [round(float(c), 4) for c in centre]
    return record


def _is_current(folder: Path, record: dict) -> bool:
    try:
        stored = json.loads((folder / cells.VARIANT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return all(stored.get(k) == v for k, v in record.items())


def make_variant(model: cells.CellModel, spec: VariantSpec, out_dir: str | os.PathLike[str]) -> cells.CellModel:
    """Write (or reuse) one variant folder of ``model`` in ``out_dir`` and return it as a model.

    A folder already there is reused if its ``variant.json`` records the same parent (and
    parent model hash), spec and code version; a stale variant folder is replaced.

    Raises
    ------
    ValueError
        If the model's morphology is not ``.asc``, or ``out_dir`` holds a folder of that name
        that is not a variant made by this module, or ``out_dir`` is the parent's own folder.
    cells.CellModelError
        If the parent's hoc files do not reference its morphology as expected.
    """
    out_dir = Path(out_dir)
    if model.morphology.suffix.lower() != ".asc":
        raise ValueError(f"cell model {model.name!r}: variants need a Neurolucida .asc morphology, "
                         f"got {model.morphology.name}")
    name = spec.variant_name(model.name)
    target = out_dir / name
    if out_dir.resolve() == model.path.resolve():
        raise ValueError(f"out_dir {out_dir} must not be the model folder of {model.name!r}")
    record = _variant_record(model, spec)
    if target.exists():
        if not (target / cells.VARIANT_FILE).is_file():
            raise ValueError(f"{target} exists and is not a variant folder (no {cells.VARIANT_FILE}); "
                             "remove it or choose another out_dir")
        if _is_current(target, record):
            return cells.read_cell_model(target)
    rng = np.random.default_rng(partition_seed(spec.seed, "variant", model.name, spec.suffix()))
    try:
        text, centre = transform_asc(model.morphology.read_text(errors="replace"), spec, rng,
                                     source=f"cell model {model.name!r}: {model.morphology.name}")
    except ValueError as err:
        raise cells.CellModelError(str(err)) from None
    if f"morphology/{model.morphology.name}" not in (model.path / "morphology.hoc").read_text(errors="replace"):
        raise cells.CellModelError(f"cell model {model.name!r}: morphology.hoc does not open "
                                   f"morphology/{model.morphology.name}; cannot make a variant")
    morph_template = cells._template_name(model.path / "morphology.hoc", model.name)
    tag = _template_tag(name)
    new_stem = model.morphology.stem + spec.suffix()
    with atomic_dir(target) as tmp:
        shutil.copytree(model.path, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "x86_64", "*.pyc", cells.VARIANT_FILE))
        (tmp / "morphology" / model.morphology.name).unlink()
        (tmp / "morphology" / f"{new_stem}.asc").write_text(text)
        _rename_in_folder(tmp, {model.template_name: f"{model.template_name}_{tag}",
                                morph_template: f"{morph_template}_{tag}"},
                          {model.morphology.stem: new_stem})
        (tmp / cells.VARIANT_FILE).write_text(json.dumps(_variant_record(model, spec, centre), indent=2) + "\n")
    return cells.read_cell_model(target)


def make_variants(model: cells.CellModel, factors: Sequence[tuple[float, float, float]], jitter_deg: float = 0.0,
                  seed: int = 0, *, out_dir: str | os.PathLike[str]) -> list[cells.CellModel]:
    """Variant folders of ``model``, one per ``(sx, sy, sz)`` in ``factors``, all with the same jitter and seed.

    Parameters
    ----------
    model : CellModel
        The parent (a BBP model with an ``.asc`` morphology).
    factors : sequence of (sx, sy, sz)
        Scale factors of each variant (rounded to 3 decimals).
    jitter_deg : float
        Largest branch rotation, degrees (0: scaling only).
    seed : int
        Seed of the jitter; each variant's jitter is drawn from ``(seed, parent name, variant suffix)``.
    out_dir : path
        Folder that receives the variant folders (a model folder of its own, e.g. for
        ``discover_cell_models([mearec_models_dir(), out_dir])``).

    Returns
    -------
    list of CellModel
        In the order of ``factors``.

    Raises
    ------
    ValueError
        If a factor triple is malformed or out of range, or two give the same variant.
    """
    specs = []
    for triple in factors:
        try:
            sx, sy, sz = triple
        except (TypeError, ValueError):
            raise ValueError(f"factors must be (sx, sy, sz) triples, got {triple!r}") from None
        specs.append(VariantSpec(sx, sy, sz, jitter_deg, seed))
    names = [s.variant_name(model.name) for s in specs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"factors give the same variant twice (after rounding to 3 decimals): {duplicated}")
    return [make_variant(model, spec, out_dir) for spec in specs]


def draw_variant_specs(model_name: str, n: int, factor_range: tuple[float, float] = DEFAULT_FACTOR_RANGE,
                       jitter_deg: float = 0.0, seed: int = 0) -> list[VariantSpec]:
    """``n`` variants of one model: each axis' factor uniform in ``factor_range``, independently.

    The draws come from ``partition_seed(seed, "variant-factors", model_name)``: each model gets
    its own factors, independent of the other models.  Variants are named with ``seed``.

    Raises
    ------
    ValueError
        If ``n`` < 1 or the range is not within :data:`FACTOR_LIMITS`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    lo, hi = (float(f) for f in factor_range)
    if not (FACTOR_LIMITS[0] <= lo <= hi <= FACTOR_LIMITS[1]):
        raise ValueError(f"factor_range must be (low, high) within {FACTOR_LIMITS}, got {factor_range!r}")
    rng = np.random.default_rng(partition_seed(seed, "variant-factors", model_name))
    specs: list[VariantSpec] = []
    names: set[str] = set()
    for _ in range(1000 * n):
        spec = VariantSpec(*rng.uniform(lo, hi, 3), jitter_deg=jitter_deg, seed=seed)
        if spec.suffix() not in names:
            names.add(spec.suffix())
            specs.append(spec)
        if len(specs) == n:
            return specs
    raise ValueError(f"factor_range {factor_range} holds fewer than {n} distinct variants at 3 decimals")


def make_random_variants(model: cells.CellModel, n: int, out_dir: str | os.PathLike[str],
                         factor_range: tuple[float, float] = DEFAULT_FACTOR_RANGE, jitter_deg: float = 0.0,
                         seed: int = 0) -> list[cells.CellModel]:
    """:func:`draw_variant_specs` then :func:`make_variant` for each: ``n`` seeded variants of ``model``."""
    return [make_variant(model, spec, out_dir)
            for spec in draw_variant_specs(model.name, n, factor_range, jitter_deg, seed)]
