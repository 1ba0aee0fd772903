"""Seeded train / validation / test assignment.

- :func:`assign_split`: rows of every group in the same proportions (paper: 10 % of each cell
  type held out);
- group splits for generalisation tests, which never put a group on both sides (validation is
  always drawn from the train side, stratified, seeded):

  - :func:`variant_split`: some morphology variants of each m-type are held out for testing;
  - :func:`distance_split`: near somata (x in [10, 40] µm from the probe plane) for training,
    far ones (x in (40, 60] µm) for testing;
  - :func:`leave_one_type_out`: one fold per cell type, that type held out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from eap_assets.core.eaps import derived_seed, partition_seed

SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Label of the rows :func:`distance_split` leaves out (outside both distance bands).
EXCLUDED = "excluded"


def assign_split(strata: np.ndarray, test_fraction: float = 0.1, validation_fraction: float = 0.1,
                 seed: int = 0) -> np.ndarray:
    """Assign each row to ``train``, ``validation`` or ``test``, stratified by ``strata``.

    Parameters
    ----------
    strata : array of labels, shape (N,)
        Group of each row (e.g. the cell model); every group is split in the same proportions.
    test_fraction : float
        Share of each group held out for testing (paper: 0.1).
    validation_fraction : float
        Share of the *remaining* rows of each group kept for validation (early stopping,
        model selection); 0 for none.
    seed : int
        Seed of the shuffles; same seed and strata -> same assignment.

    Returns
    -------
    ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        If a fraction is outside [0, 1) or a group is too small to be split.
    """
    strata = np.asarray(strata)
    _check_fraction("test_fraction", test_fraction)
    _check_fraction("validation_fraction", validation_fraction)
    _check_share(strata, test_fraction, "test", "rows")
    split = np.full(strata.shape, "train", dtype=object)
    rows = np.arange(strata.size)
    rest = rows
    if test_fraction > 0:
        rest, test = train_test_split(rows, test_size=test_fraction, stratify=strata, random_state=seed)
        split[test] = "test"
    if validation_fraction > 0:
        _, val = train_test_split(rest, test_size=validation_fraction, stratify=strata[rest], random_state=seed + 1)
        split[val] = "validation"
    return split.astype(str)


def _check_fraction(name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def _check_share(strata: np.ndarray, fraction: float, share: str, what: str) -> None:
    """ValueError naming the smallest group if it has too few rows to give ``fraction`` of them (>= 1 row)."""
    labels, counts = np.unique(strata, return_counts=True)
    if fraction > 0 and counts.size and counts.min() * fraction < 1:
        raise ValueError(f"group {str(labels[counts.argmin()])!r} has {counts.min()} {what}: too few for a "
                         f"{fraction:.0%} {share} share")


def _labels(values, name: str, n_rows: int | None = None) -> np.ndarray:
    """A 1-D label array; ValueError naming ``name`` if it is not one or its length differs from ``n_rows``."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one label per row (1-D), got shape {values.shape}")
    if n_rows is not None and values.size != n_rows:
        raise ValueError(f"{name} has {values.size} rows, expected {n_rows} (one per row)")
    return values


def draw_validation(split: np.ndarray, strata: np.ndarray, validation_fraction: float, seed: int) -> np.ndarray:
    """Relabel a seeded, stratified share of the ``train`` rows as ``validation``.

    Parameters
    ----------
    split : ndarray of str, shape (N,)
        Labels with ``train`` rows (not modified).
    strata : ndarray, shape (N,)
        Stratum of each row (e.g. the cell model or the class): each stratum of the train side
        gives the same share.
    validation_fraction : float
        Share of the train rows of each stratum, in [0, 1).
    seed : int
        Seed of the draw.

    Returns
    -------
    ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        If the fraction is outside [0, 1) or a stratum has too few train rows for it.
    """
    _check_fraction("validation_fraction", validation_fraction)
    split = np.asarray(split).astype(object)
    strata = _labels(strata, "strata", split.size)
    rows = np.flatnonzero(split == "train")
    if validation_fraction == 0 or rows.size == 0:
        return split.astype(str)
    _check_share(strata[rows], validation_fraction, "validation", "train rows")
    _, val = train_test_split(rows, test_size=validation_fraction, stratify=strata[rows],
                              random_state=derived_seed(seed, "validation"))
    split[val] = "validation"
    return split.astype(str)


def variant_split(variants, classes, test_fraction: float = 0.2, validation_fraction: float = 0.1,
                  seed: int = 0, strata=None) -> np.ndarray:
    """Hold out whole morphology variants: test on variants of each class never seen in training.

    For every class (e.g. m-type), ``test_fraction * n_variants`` of its variants (rounded half
    up; at least one, and at least one left for training) are drawn for the test side; a class with a
    single variant stays entirely on the train side.  Each class draws from its own seeded
    generator (``partition_seed(seed, "variant-split", class)``), so adding a class changes no
    other class's choice.

    Parameters
    ----------
    variants : array, shape (N,)
        Variant (cell model name) of each row; the unit kept on one side.
    classes : array, shape (N,)
        Class of each row (e.g. the m-type); every variant belongs to exactly one class.
    test_fraction : float
        Share of each class's variants held out, in [0, 1).
    validation_fraction : float
        Share of the train rows relabelled ``validation``, stratified by ``strata``.
    seed : int
        Root seed.
    strata : array, shape (N,), optional
        Strata of the validation draw; default ``variants``.

    Returns
    -------
    ndarray of str, shape (N,)
        ``train`` / ``validation`` / ``test``; every variant's rows are all ``test`` or all
        ``train`` / ``validation``.

    Raises
    ------
    ValueError
        If a variant has rows of several classes, a fraction is out of range, or the arrays
        differ in length.
    """
    variants = _labels(variants, "variants")
    classes = _labels(classes, "classes", variants.size)
    _check_fraction("test_fraction", test_fraction)
    pairs = np.unique(np.column_stack([variants.astype(str), classes.astype(str)]), axis=0)
    names, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        bad = names[counts > 1][0]
        raise ValueError(f"variant {bad!r} has rows of several classes: "
                         f"{sorted(pairs[pairs[:, 0] == bad, 1].tolist())}")
    held: list[str] = []
    for label in np.unique(pairs[:, 1]):
        members = np.sort(pairs[pairs[:, 1] == label, 0])
        if members.size < 2 or test_fraction == 0:
            continue
        k = min(max(1, math.floor(test_fraction * members.size + 0.5)), members.size - 1)
        rng = np.random.default_rng(partition_seed(seed, "variant-split", str(label)))
        held += rng.choice(members, size=k, replace=False).tolist()
    split = np.where(np.isin(variants.astype(str), held), "test", "train").astype(object)
    return draw_validation(split, variants if strata is None else strata, validation_fraction, seed)


def distance_split(x, train_range: tuple[float, float] = (10.0, 40.0), test_range: tuple[float, float] = (40.0, 60.0),
                   strata=None, validation_fraction: float = 0.1, seed: int = 0,
                   outside: str = "raise") -> np.ndarray:
    """Train on somata in one distance band from the probe plane, test on another.

    Rows with ``train_range[0] <= x <= train_range[1]`` are the train side, rows with
    ``test_range[0] < x <= test_range[1]`` the test side (the paper's soma box x in [10, 60] µm
    splits into [10, 40] and (40, 60]).  ``x`` is the soma's distance from the probe plane, the
    ``x`` column of an EAP index / feature table, µm.

    Parameters
    ----------
    x : array, shape (N,)
        Soma distance of each row, µm.
    train_range, test_range : (float, float)
        Bands (low, high) µm; they must not overlap (touching at one end is fine).
    strata : array, shape (N,), optional
        Strata of the validation draw (e.g. the cell); default: one stratum.
    validation_fraction : float
        Share of the train rows relabelled ``validation``.
    seed : int
        Seed of the validation draw.
    outside : {"raise", "exclude"}
        Rows in neither band: ValueError, or labelled :data:`EXCLUDED`.

    Returns
    -------
    ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        If a band is malformed, the bands overlap, ``x`` is not finite, or a row lies outside
        both bands with ``outside="raise"``.
    """
    x = _labels(x, "x").astype(float)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x holds NaN or inf in rows {np.flatnonzero(~np.isfinite(x))[:10].tolist()}")
    for name, (lo, hi) in (("train_range", train_range), ("test_range", test_range)):
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{name} must be (low, high) with low < high µm, got {(lo, hi)}")
    if not (test_range[0] >= train_range[1] or test_range[1] < train_range[0]):
        raise ValueError(f"train_range {tuple(train_range)} and test_range {tuple(test_range)} overlap")
    if outside not in ("raise", "exclude"):
        raise ValueError(f"outside must be 'raise' or 'exclude', got {outside!r}")
    train = (x >= train_range[0]) & (x <= train_range[1])
    test = (x > test_range[0]) & (x <= test_range[1])
    split = np.where(train, "train", np.where(test, "test", EXCLUDED)).astype(object)
    if outside == "raise" and (split == EXCLUDED).any():
        rows = np.flatnonzero(split == EXCLUDED)
        raise ValueError(f"{rows.size} rows have x outside train_range {tuple(train_range)} and test_range "
                         f"{tuple(test_range)} (e.g. row {rows[0]}: x = {x[rows[0]]:g} µm); pass outside='exclude'")
    strata = np.zeros(x.size, dtype=int) if strata is None else strata
    return draw_validation(split, strata, validation_fraction, seed)


def leave_one_type_out(types, validation_fraction: float = 0.1, seed: int = 0,
                       strata=None, held_out: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Folds that each hold one cell type out: its rows are ``test``, the others train / validation.

    Parameters
    ----------
    types : array, shape (N,)
        Cell type (m-type) of each row.
    validation_fraction : float
        Share of each fold's train rows relabelled ``validation``, stratified by ``strata``.
    seed : int
        Root seed; the fold of type ``t`` draws its validation from ``(seed, t)``.
    strata : array, shape (N,), optional
        Strata of the validation draw; default ``types``.
    held_out : sequence of str, optional
        The types to make folds for; default every type, sorted.

    Returns
    -------
    dict
        Held-out type -> labels, ndarray of str, shape (N,).

    Raises
    ------
    ValueError
        If fewer than two types are present, or ``held_out`` names a type not in ``types``.
    """
    types = _labels(types, "types")
    present = np.unique(types.astype(str))
    if present.size < 2:
        raise ValueError(f"leave-one-type-out needs at least two cell types, got {present.tolist()}")
    wanted = present.tolist() if held_out is None else [str(t) for t in held_out]
    unknown = sorted(set(wanted) - set(present.tolist()))
    if unknown:
        raise ValueError(f"held_out names types not in the data: {unknown}; present: {present.tolist()}")
    strata = types if strata is None else strata
    folds = {}
    for held in wanted:
        split = np.where(types.astype(str) == held, "test", "train").astype(object)
        seed_of_fold = derived_seed(seed, "leave-one-type-out", held)
        folds[held] = draw_validation(split, strata, validation_fraction, seed_of_fold)
    return folds
