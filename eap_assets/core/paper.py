"""The published results of Buccino et al. (2018) as data, and side-by-side comparison frames.

All values are percentages as printed.  Rotation keys: ``norot, zrot, xrot, 3drot``.

Known inconsistencies of the paper, kept as printed:

* Table III's ``max`` and ``min`` columns are swapped (e.g. Norot max 98.96 < mean 99.62,
  min 100); :func:`paper_mtype_summary` returns them in the sensible order.
* Table III's Norot mean is 99.62 % while the text says "mean accuracy of 98.96%" (98.96 is the
  printed Norot "max", i.e. the true minimum); the text's means are in :data:`PAPER_MTYPE_MEAN_TEXT`.
* Table II's "Average" row is not the plain mean of the 13 rows (e.g. Zrot: mean of rows 98.52,
  printed 98.54); it is presumably the accuracy over all test EAPs (weighted by the per-type test
  counts), so :func:`paper_comparison_frame` sets our overall accuracy beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eap_assets.core.evaluation import SUMMARY_KEYS, Evaluation
from eap_assets.core.models import PAPER_MTYPES, TASKS

#: Rotation datasets of the paper, in its order.
ROTATIONS: tuple[str, ...] = ("norot", "zrot", "xrot", "3drot")

_TABLE_II = {  # cell type: (Norot, Zrot, Xrot, 3drot), %
    "BP": (100.0, 100.0, 100.0, 100.0),
    "BTC": (100.0, 98.25, 97.85, 97.85),
    "ChC": (100.0, 98.99, 98.99, 81.82),
    "DBC": (100.0, 99.04, 95.19, 85.58),
    "LBC": (98.96, 96.875, 100.0, 94.79),
    "MC": (100.0, 100.0, 100.0, 100.0),
    "NBC": (100.0, 100.0, 100.0, 99.1),
    "NGC": (100.0, 99.06, 100.0, 99.06),
    "SBC": (100.0, 100.0, 100.0, 100.0),
    "STPC": (100.0, 100.0, 100.0, 94.25),
    "TTPC1": (100.0, 100.0, 100.0, 90.38),
    "TTPC2": (100.0, 98.99, 98.99, 95.96),
    "UTPC": (97.14, 89.52, 68.57, 60.95),
    "Average": (99.69, 98.54, 95.92, 92.15),
}
#: Table II, binary (E/I) accuracy per cell type and rotation, %: ``PAPER_BINARY[rotation][cell_type]``
#: (cell types in Table I order, then ``"Average"``).
PAPER_BINARY: dict[str, dict[str, float]] = {
    rotation: {cell_type: values[i] for cell_type, values in _TABLE_II.items()} for i, rotation in enumerate(ROTATIONS)
}

#: Table III, m-type accuracy over the 13 cell types, %, **as printed** (``max``/``min`` swapped):
#: ``PAPER_MTYPE_SUMMARY[rotation][statistic]``.
PAPER_MTYPE_SUMMARY: dict[str, dict[str, float]] = {
    "norot": {"mean": 99.62, "median": 100.0, "max": 98.96, "min": 100.0, "sd": 0.48},
    "zrot": {"mean": 93.31, "median": 93.75, "max": 86.02, "min": 99.05, "sd": 4.41},
    "xrot": {"mean": 87.56, "median": 84.85, "max": 73.74, "min": 98.85, "sd": 7.34},
    "3drot": {"mean": 57.49, "median": 54.81, "max": 38.78, "min": 82.86, "sd": 12.88},
}
#: Mean m-type accuracy as stated in the text (§III-B), % (Norot differs from Table III's 99.62).
PAPER_MTYPE_MEAN_TEXT: dict[str, float] = {"norot": 98.96, "zrot": 93.31, "xrot": 87.56, "3drot": 57.49}
#: Per-cell-type m-type accuracies quoted in the text for 3drot (§III-B), %.
PAPER_MTYPE_3DROT_TEXT: dict[str, float] = {"SBC": 38.78, "BP": 71.03, "MC": 50.55, "BTC": 56.99}


def _check_rotation(rotation: str) -> None:
    if rotation not in ROTATIONS:
        raise ValueError(f"unknown rotation {rotation!r}; the paper has {list(ROTATIONS)}")


def paper_mtype_summary(rotation: str) -> dict[str, float]:
    """Table III for one rotation with ``min`` <= ``max`` restored (the printed columns are swapped)."""
    _check_rotation(rotation)
    printed = PAPER_MTYPE_SUMMARY[rotation]
    low, high = sorted((printed["max"], printed["min"]))
    return {"mean": printed["mean"], "median": printed["median"], "max": high, "min": low, "sd": printed["sd"]}


def paper_binary_frame() -> pd.DataFrame:
    """Table II as a frame: index cell type (+ ``Average``), columns rotations, %."""
    return pd.DataFrame(PAPER_BINARY).reindex(columns=list(ROTATIONS))


def paper_comparison_frame(task: str, rotation: str, evaluation: Evaluation) -> pd.DataFrame:
    """Our test results next to the paper's.

    Parameters
    ----------
    task : str
        ``"binary"``: one row per cell type (paper's 13, then any others of ours) plus
        ``Average`` (ours: overall accuracy).  ``"mtype"``: rows ``mean, median, max, min, sd``
        (Table III, paper min/max in the sensible order) plus ``overall`` (ours only).
    rotation : str
        ``norot``, ``zrot``, ``xrot`` or ``3drot``.
    evaluation : Evaluation
        Our result for that task and rotation.

    Returns
    -------
    DataFrame
        Columns ``ours`` (%), ``paper`` (%), ``difference`` (ours - paper, percentage points) and,
        for ``binary``, ``n`` (our test rows).  Missing values are NaN.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    _check_rotation(rotation)
    if task == "binary":
        paper = PAPER_BINARY[rotation]
        ours = evaluation.per_cell_type
        index = list(PAPER_MTYPES) + [c for c in ours.index if c not in PAPER_MTYPES] + ["Average"]
        frame = pd.DataFrame(index=pd.Index(index, name="cell_type"))
        frame["ours"] = ours["accuracy"].reindex(index).astype(np.float64)
        frame.loc["Average", "ours"] = evaluation.accuracy
        frame["paper"] = pd.Series(paper, dtype=np.float64).reindex(index)
        frame["difference"] = frame["ours"] - frame["paper"]
        n = ours["n"].reindex(index)
        n.loc["Average"] = evaluation.n
        frame["n"] = n.astype("Int64")
        return frame
    paper = paper_mtype_summary(rotation)
    index = list(SUMMARY_KEYS) + ["overall"]
    frame = pd.DataFrame(index=pd.Index(index, name="statistic"))
    frame["ours"] = [evaluation.summary.get(k, np.nan) for k in SUMMARY_KEYS] + [evaluation.accuracy]
    frame["paper"] = [paper[k] for k in SUMMARY_KEYS] + [np.nan]
    frame["difference"] = frame["ours"] - frame["paper"]
    return frame
