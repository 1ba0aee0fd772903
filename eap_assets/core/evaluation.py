"""Test-set evaluation in the paper's terms: per-cell-type accuracy (Table II), its distribution
over cell types (Table III) and the confusion of cell types with predicted classes (Figs. 3, 4).

All accuracies and confusion entries are **percentages** (0-100), the paper's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from eap_assets.core.models import order_cell_types

#: Keys of :attr:`Evaluation.summary`, in the paper's Table III order.
SUMMARY_KEYS: tuple[str, ...] = ("mean", "median", "max", "min", "sd")


@dataclass
class Evaluation:
    """Test-set performance of one classifier.

    Attributes
    ----------
    accuracy : float
        Overall accuracy over all test rows, %.
    per_cell_type : DataFrame
        Index: cell type (m-type, Table I order); columns ``accuracy`` (% of that cell type's
        rows classified correctly: for the binary task, E/I correct; for the m-type task, the
        m-type correct = the confusion diagonal) and ``n`` (test rows).
    summary : dict
        ``mean, median, max, min, sd`` of the per-cell-type accuracies (%, Table III).  ``sd`` is
        the population standard deviation (``np.std``, ddof=0); the paper does not say which it
        used.
    confusion : DataFrame
        Rows: true cell type; columns: predicted class (task classes, in label order); entries:
        % of the row's test rows (rows sum to 100; Fig. 4 style, Fig. 3 for the binary task).
    n : int
        Test rows.
    classes : list of str
        Class names of the task, index = label.
    """

    accuracy: float
    per_cell_type: pd.DataFrame
    summary: dict[str, float]
    confusion: pd.DataFrame
    n: int = 0
    classes: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (plain floats, ints, strings, nested dicts)."""
        return {
            "accuracy": float(self.accuracy),
            "n": int(self.n),
            "classes": list(self.classes or self.confusion.columns.astype(str)),
            "per_cell_type": {str(ct): {"accuracy": float(row["accuracy"]), "n": int(row["n"])}
                              for ct, row in self.per_cell_type.iterrows()},
            "summary": {k: float(v) for k, v in self.summary.items()},
            "confusion": {str(ct): {str(c): float(v) for c, v in row.items()} for ct, row in self.confusion.iterrows()},
        }


def summarise(accuracies) -> dict[str, float]:
    """Mean, median, max, min and population sd (ddof=0) of per-cell-type accuracies."""
    values = np.asarray(accuracies, dtype=np.float64)
    if values.size == 0:
        return {k: float("nan") for k in SUMMARY_KEYS}
    return {"mean": float(values.mean()), "median": float(np.median(values)), "max": float(values.max()),
            "min": float(values.min()), "sd": float(values.std(ddof=0))}


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], cell_types: np.ndarray) -> Evaluation:
    """Score predictions against the truth, per cell type.

    Parameters
    ----------
    y_true, y_pred : ndarrays of int, shape (N,)
        True and predicted labels (indices into ``classes``).
    classes : list of str
        Class names of the task (``["E", "I"]`` or the m-types).
    cell_types : ndarray of str, shape (N,)
        Cell type (m-type) of each row; the unit of Table II / III.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        On length mismatches, an empty test set or labels outside ``range(len(classes))``.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    cell_types = np.asarray(cell_types).astype(str)
    classes = [str(c) for c in classes]
    if not (y_true.shape == y_pred.shape == cell_types.shape) or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape}, y_pred {y_pred.shape} and cell_types {cell_types.shape} "
                         "must be 1-D of the same length")
    if y_true.size == 0:
        raise ValueError("cannot evaluate an empty test set")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(classes):
            raise ValueError(f"{name} must hold integer labels in [0, {len(classes)}) for classes {classes}")

    correct = y_true == y_pred
    order = order_cell_types(cell_types)
    frame = pd.DataFrame({"cell_type": cell_types, "correct": correct, "pred": np.asarray(classes)[y_pred]})
    grouped = frame.groupby("cell_type")["correct"]
    per_cell_type = pd.DataFrame({"accuracy": grouped.mean() * 100.0, "n": grouped.size()}).reindex(order)
    per_cell_type.index.name = "cell_type"
    per_cell_type["n"] = per_cell_type["n"].astype(np.int64)

    counts = pd.crosstab(frame["cell_type"], frame["pred"]).reindex(index=order, columns=classes, fill_value=0)
    confusion = counts.div(counts.sum(axis=1), axis=0) * 100.0
    confusion.index.name = "true"
    confusion.columns.name = "predicted"

    return Evaluation(accuracy=float(accuracy_score(y_true, y_pred) * 100.0), per_cell_type=per_cell_type,
                      summary=summarise(per_cell_type["accuracy"].to_numpy()), confusion=confusion.astype(np.float64),
                      n=int(y_true.size), classes=classes)


def _share(flags: np.ndarray) -> float:
    """Share of True in ``flags`` (NaN when empty)."""
    return float(flags.mean()) if flags.size else float("nan")


def score_answers(answers: pd.DataFrame, task: str, truth_mtype: np.ndarray, ei_of: dict[str, str]) -> dict[str, Any]:
    """Score a classifier's per-unit answers (``eap_assets.classify`` columns ``<task>_*``) against the truth.

    Parameters
    ----------
    answers : DataFrame
        One row per unit with ``<task>_predicted``, ``<task>_p_<class>`` (calibrated probabilities),
        ``<task>_abstained``, ``<task>_ood`` and ``error`` (units that were not classified have one).
    task : str
        ``binary`` or ``mtype``.
    truth_mtype : ndarray of str
        The true m-type of each unit.
    ei_of : dict
        m-type -> ``"E"`` / ``"I"``.

    Returns
    -------
    dict
        ``evaluation`` (:meth:`Evaluation.to_dict`: accuracy, per cell type, Table III summary,
        confusion; all units that were classified), ``ece`` and ``reliability`` (records) of the
        calibrated confidence, ``ece_if_calibrated`` (the 95 % range of the ECE that a perfectly calibrated
        classifier with these confidences would show on these units: :func:`calibrated_ece_range`),
        ``coverage`` and ``accuracy_kept`` (units not abstained on), ``ood_rate``, ``accuracy_in_distribution``
        and ``accuracy_ood`` (of the units without and with an out-of-distribution flag; NaN if none),
        ``units`` and ``not_classified``.
    """
    from eap_assets.core.calibration import calibrated_ece_range, expected_calibration_error, reliability

    prefix = f"{task}_"
    classes = [c[len(prefix) + 2:] for c in answers.columns if c.startswith(f"{prefix}p_")]
    classified = (answers["error"].fillna("") == "").to_numpy() & answers[f"{prefix}predicted"].notna().to_numpy()
    truth_mtype = np.asarray(truth_mtype).astype(str)
    truth = np.array([ei_of[m] for m in truth_mtype]) if task == "binary" else truth_mtype
    known = np.isin(truth, classes)
    rows = classified & known
    index = {c: i for i, c in enumerate(classes)}
    y_true = np.array([index[t] for t in truth[rows]], dtype=np.int64)
    y_pred = np.array([index[p] for p in answers.loc[rows, f"{prefix}predicted"]], dtype=np.int64)
    proba = answers.loc[rows, [f"{prefix}p_{c}" for c in classes]].to_numpy(np.float64)
    kept = ~answers.loc[rows, f"{prefix}abstained"].astype(bool).to_numpy()
    correct = y_true == y_pred
    ood = answers.loc[rows, f"{prefix}ood"].astype(bool).to_numpy()
    result = evaluate(y_true, y_pred, classes, truth_mtype[rows])
    return {"evaluation": result.to_dict(), "ece": expected_calibration_error(proba, y_true),
            "ece_if_calibrated": list(calibrated_ece_range(proba)) if len(proba) else [float("nan")] * 2,
            "reliability": reliability(proba, y_true).to_dict(orient="records"),
            "coverage": _share(kept), "accuracy_kept": _share(correct[kept]),
            "ood_rate": _share(ood), "accuracy_in_distribution": _share(correct[~ood]),
            "accuracy_ood": _share(correct[ood]), "units": int(rows.sum()),
            "not_classified": int((~classified).sum()), "unknown_truth": int((classified & ~known).sum())}
