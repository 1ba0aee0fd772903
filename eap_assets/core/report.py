"""The paper comparison report: our test results for every rotation x task next to Buccino et al.
(2018), as Markdown and as a long CSV table.

Inputs are the JSON-able records the evaluation stage writes: per rotation x task
``{"versions": {...}, "results": {kind: Evaluation.to_dict()}}`` and per rotation the
hold-one-cell-type-out record ``{"rows": [{"cell type", "E/I", "n", "accuracy"}], "mean"}``
(accuracies in %).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eap_assets.core import paper
from eap_assets.core.models import PAPER_MTYPES

KIND_NAMES = {"cnn": "CNN", "lgbm": "LightGBM", "width_rule": "width rule"}


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}f}"


def _md(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([frame.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for index, *values in frame.itertuples(name=None):  # keeps each column's type (ints stay ints)
        cells = [v if isinstance(v, str) else _fmt(v) for v in values]
        lines.append("| " + " | ".join([str(index)] + cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_frame(evaluations: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """Long table: rotation, task, model, row (cell type or statistic), ours %, paper %."""
    rows = []
    for (rotation, task), record in sorted(evaluations.items()):
        for kind, result in record["results"].items():
            for cell_type, values in result["per_cell_type"].items():
                expected = paper.PAPER_BINARY.get(rotation, {}).get(cell_type) if task == "binary" else None
                rows.append({"rotation": rotation, "task": task, "model": kind, "row": cell_type,
                             "ours": values["accuracy"], "paper": expected, "n": values["n"]})
            summary_paper = paper.paper_mtype_summary(rotation) if task == "mtype" and rotation in paper.ROTATIONS \
                else {}
            for stat, value in result["summary"].items():
                rows.append({"rotation": rotation, "task": task, "model": kind, "row": f"[{stat}]",
                             "ours": value, "paper": summary_paper.get(stat), "n": None})
            overall_paper = paper.PAPER_BINARY.get(rotation, {}).get("Average") if task == "binary" else None
            rows.append({"rotation": rotation, "task": task, "model": kind, "row": "[overall]",
                         "ours": result["accuracy"], "paper": overall_paper, "n": result["n"]})
    return pd.DataFrame(rows)


def comparison_markdown(evaluations: dict[tuple[str, str], dict], hold_outs: dict[str, dict],
                        stage_times: pd.DataFrame | None = None, header: str = "",
                        histories: dict[tuple[str, str], list[dict]] | None = None) -> str:
    """The report: binary per cell type (Table II), m-type summary (Table III) and per cell type,
    hold-one-cell-type-out E/I, CNN training settings compared (from ``histories``: every
    evaluation, the latest per CNN setting), wall time per stage."""
    rotations = [r for r in paper.ROTATIONS if any(k[0] == r for k in evaluations)] + sorted(
        {k[0] for k in evaluations} - set(paper.ROTATIONS))
    out = [header]
    out.append("## Binary (E/I) accuracy per cell type, % — paper Table II\n")
    out.append("Test set: 10 % of each cell's EAPs. *Average*: the paper's printed average; ours: accuracy over "
               "all test EAPs.\n")
    for rotation in rotations:
        record = evaluations.get((rotation, "binary"))
        if record is None:
            continue
        kinds = list(record["results"])
        types = [t for t in PAPER_MTYPES if t in record["results"][kinds[0]]["per_cell_type"]] + sorted(
            set(record["results"][kinds[0]]["per_cell_type"]) - set(PAPER_MTYPES))
        frame = pd.DataFrame(index=pd.Index(types + ["Average"], name=f"{rotation}: cell type"))
        frame["paper"] = [paper.PAPER_BINARY.get(rotation, {}).get(t, np.nan) for t in frame.index]
        for kind in kinds:
            result = record["results"][kind]
            frame[KIND_NAMES.get(kind, kind)] = [result["per_cell_type"].get(t, {}).get("accuracy", np.nan)
                                                 for t in types] + [result["accuracy"]]
        out.append(f"**{rotation}** (model versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())};"
                   f" CNN {record.get('cnn_training', '')})\n")
        out.append(_md(frame))
    out.append("## M-type accuracy over the 13 cell types, % — paper Table III\n")
    out.append("Paper min/max in the sensible order (the printed table swaps them); sd over cell types, ddof 0.\n")
    summary_rows = []
    for rotation in rotations:
        record = evaluations.get((rotation, "mtype"))
        if record is None:
            continue
        if rotation in paper.ROTATIONS:
            summary_rows.append({"rotation / model": f"{rotation} paper", **paper.paper_mtype_summary(rotation),
                                 "overall": np.nan})
        for kind, result in record["results"].items():
            summary_rows.append({"rotation / model": f"{rotation} {KIND_NAMES.get(kind, kind)}", **result["summary"],
                                 "overall": result["accuracy"]})
    if summary_rows:
        out.append(_md(pd.DataFrame(summary_rows).set_index("rotation / model")))
    per_type = {}
    for rotation in rotations:
        record = evaluations.get((rotation, "mtype"))
        for kind, result in (record or {}).get("results", {}).items():
            per_type[f"{rotation} {KIND_NAMES.get(kind, kind)}"] = {t: v["accuracy"]
                                                                     for t, v in result["per_cell_type"].items()}
    if per_type:
        out.append("### M-type accuracy per cell type, %\n")
        out.append("The paper gives these only for 3drot in its text: SBC 38.78, BP 71.03, MC 50.55, BTC 56.99.\n")
        frame = pd.DataFrame(per_type)
        frame.index.name = "cell type"
        out.append(_md(frame.reindex([t for t in PAPER_MTYPES if t in frame.index]
                                     + sorted(set(frame.index) - set(PAPER_MTYPES)))))
    if hold_outs:
        out.append("## E/I of an unseen cell type (LightGBM trained on all the other types), %\n")
        frame = pd.DataFrame({rotation: {row["cell type"]: row["accuracy"] for row in record["rows"]}
                              for rotation, record in hold_outs.items()})
        frame.index.name = "held-out cell type"
        frame = frame.reindex([t for t in PAPER_MTYPES if t in frame.index] + sorted(set(frame.index) - set(PAPER_MTYPES)))
        frame.loc["mean"] = [hold_outs[r]["mean"] for r in frame.columns]
        out.append(_md(frame))
    compared = []
    for (rotation, task), records in sorted((histories or {}).items()):
        latest = {}
        for record in records:
            latest[record.get("cnn_training", "")] = record
        if len(latest) < 2:
            continue
        for label, record in latest.items():
            cnn = record["results"]["cnn"]
            compared.append({"rotation, task": f"{rotation} {task}", "CNN training": label,
                             "accuracy": cnn["accuracy"], "mean over types": cnn["summary"]["mean"],
                             "train s": record.get("train_seconds", {}).get("cnn", np.nan)})
    if compared:
        out.append("## CNN training settings compared (same data and split)\n")
        out.append(_md(pd.DataFrame(compared).set_index("rotation, task")))
    if stage_times is not None and len(stage_times):
        out.append("## Wall time per stage\n")
        out.append(_md(stage_times))
    return "\n".join(out)
