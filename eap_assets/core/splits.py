"""Seeded, stratified train / validation / test assignment (paper: 10 % of each cell type held out)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

SPLITS: tuple[str, ...] = ("train", "validation", "test")


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
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    labels, counts = np.unique(strata, return_counts=True)
    if test_fraction > 0 and counts.min() * test_fraction < 1:
        raise ValueError(f"group {str(labels[counts.argmin()])!r} has {counts.min()} rows: too few for a "
                         f"{test_fraction:.0%} test share")
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
