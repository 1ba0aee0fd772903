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
from eap_assets.core.calibration import ECE_BINS, ECE_RANGE_DRAWS
from eap_assets.core.models import MODEL_KINDS, PAPER_MTYPES

#: How tables name each model kind (and the paper's width rule).
KIND_NAMES = {**{name: kind.label for name, kind in MODEL_KINDS.items()}, "width_rule": "width rule"}


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


PROTOCOL_NAMES = {"in_distribution": "in distribution (registered, trained noise-free)",
                  "unseen_variants": "unseen morphology variants", "unseen_distances": "unseen distances (x > 40 µm)",
                  "hold_out_type": "unseen cell type, E/I (mean over types)"}


def generalisation_frame(results: dict[tuple[str, str], dict]) -> pd.DataFrame:
    """Long table of every generalisation record: rotation, task, protocol, kind, held_type, noise_uv, accuracy."""
    frames = [pd.DataFrame(record["rows"]).assign(rotation=rotation, task=task)
              for (rotation, task), record in sorted(results.items())]
    frame = pd.concat(frames, ignore_index=True)
    first = ["rotation", "task", "protocol", "kind", "held_type", "noise_uv", "accuracy"]
    return frame[first + [c for c in frame.columns if c not in first]]


def _level(v: float) -> str:
    return f"{v:g} µV"


def _breaks(curve: pd.Series, target: float) -> str:
    """The lowest noise level at which a curve (accuracy by level) falls below ``target`` ('–' if never)."""
    below = [level for level, acc in curve.items() if acc < target]
    return _level(min(below)) if below else "–"


def _held_out_types(part: pd.DataFrame, rotation: str, columns, name) -> list[str]:
    """The "E/I accuracy of each held-out cell type" table of a rotation's ``hold_out_type`` rows (types in the
    paper's order; ``columns`` pivoted into the columns, each named by ``name``), or nothing without such rows."""
    held = part[part.protocol == "hold_out_type"]
    if held.empty:
        return []
    per_type = held.pivot_table(index="held_type", columns=columns, values="accuracy")
    per_type.columns = [name(c) for c in per_type.columns]
    per_type = per_type.reindex([t for t in PAPER_MTYPES if t in per_type.index]
                                + sorted(set(per_type.index) - set(PAPER_MTYPES)))
    per_type.index.name = f"{rotation}: held-out type"
    return ["E/I accuracy of each held-out cell type:\n", _md(per_type)]


def generalisation_markdown(results: dict[tuple[str, str], dict]) -> tuple[str, pd.DataFrame]:
    """The generalisation report: the targets, then per rotation x task the accuracy of every
    protocol x model kind at every noise level, per-type hold-out E/I, and training details.

    Parameters
    ----------
    results : dict
        (rotation, task) -> the record the ``generalisation`` asset writes
        (:meth:`eap_assets.core.generalisation.GeneralisationResult.to_dict` plus ``cells``,
        ``variants``, ``registered_versions``).

    Returns
    -------
    markdown : str
    frame : DataFrame
        :func:`generalisation_frame`.
    """
    from eap_assets.core.generalisation import HOLD_OUT_TARGET, TARGET_ROTATION, TARGETS

    frame = generalisation_frame(results)
    first = next(iter(results.values()))
    config = first["config"]
    target_level = float(config["target_noise_uv"])
    levels = [float(v) for v in config["noise_levels_uv"]]
    out = ["## Honest generalisation: noise, unseen morphologies, distances and cell types\n",
           "Generated by the `generalisation_report` asset (`make generalisation`). Per rotation x task: the "
           "registered models (trained on noise-free EAPs, paper split) on their test rows with recording noise "
           f"added ({config['noise_kind']}, RMS per EAP and contact), and models of every kind trained with noise "
           f"augmentation ({config['train_copies']} noisy copy(ies) of each training EAP, RMS uniform in "
           f"{config['train_noise_uv'][0]:g}–{config['train_noise_uv'][1]:g} µV) on: some morphologies of each "
           f"m-type, tested on the held-out ones ({config['variant_test_fraction']:.0%} of each m-type's "
           f"morphologies; split by morphology, never by EAP); somata at x in [{config['distance_train_um'][0]:g}, "
           f"{config['distance_train_um'][1]:g}] µm, tested at ({config['distance_test_um'][0]:g}, "
           f"{config['distance_test_um'][1]:g}] µm (original models); all cell types but one, tested on E/I of the "
           f"held-out type. Seed {config['seed']}. Accuracies in %.\n"]
    # ---- targets
    rows = []
    for task, target in TARGETS.items():
        record = results.get((TARGET_ROTATION, task))
        if record is None:
            rows.append({"target": f"{TARGET_ROTATION} {task}, unseen variants, {_level(target_level)}",
                         "required": target, "best": "not measured", "met": "–", "by": "–", "limited by": "–"})
            continue
        part = frame[(frame.rotation == TARGET_ROTATION) & (frame.task == task)
                     & (frame.protocol == "unseen_variants") & (frame.noise_uv == target_level)]
        if part.empty:
            rows.append({"target": f"{TARGET_ROTATION} {task}, unseen variants, {_level(target_level)}",
                         "required": target, "best": "no variants", "met": "–", "by": "–", "limited by": "–"})
            continue
        best = part.loc[part["accuracy"].idxmax()]
        confusions = record["details"]["unseen_variants"][best["kind"]].get("confusions_at_target", [])
        rows.append({"target": f"{TARGET_ROTATION} {task}, unseen variants, {_level(target_level)}",
                     "required": target, "best": f"{best['accuracy']:.2f} ({best['kind']})",
                     "met": "yes" if best["accuracy"] >= target else "**no**",
                     "by": f"{best['accuracy'] - target:+.2f} pp",
                     "limited by": ", ".join(f"{c['true']}→{c['predicted']} {100 * c['share']:.1f} %"
                                             for c in confusions) or "–"})
    hold = frame[(frame.rotation == TARGET_ROTATION) & (frame.protocol == "hold_out_type")
                 & (frame.noise_uv == target_level)]
    if not hold.empty:
        means = hold.groupby("kind")["accuracy"].mean()
        kind = means.idxmax()
        worst = hold[hold.kind == kind].nsmallest(3, "accuracy")
        rows.append({"target": f"{TARGET_ROTATION} hold-cell-type-out E/I, mean of {hold['held_type'].nunique()} "
                               f"types, {_level(target_level)}",
                     "required": HOLD_OUT_TARGET, "best": f"{means.max():.2f} ({kind})",
                     "met": "yes" if means.max() >= HOLD_OUT_TARGET else "**no**",
                     "by": f"{means.max() - HOLD_OUT_TARGET:+.2f} pp",
                     "limited by": ", ".join(f"{r.held_type} {r.accuracy:.1f} %" for r in worst.itertuples())})
    out.append("### Targets\n")
    out.append("*limited by*: the most frequent confusions (true → predicted, share of the true class's test EAPs) "
               "of the best model; for hold-out, the worst held-out types.\n")
    out.append(_md(pd.DataFrame(rows).set_index("target")))
    # ---- per rotation x task
    for (rotation, task), record in sorted(results.items()):
        part = frame[(frame.rotation == rotation) & (frame.task == task)]
        table = part.groupby(["protocol", "kind", "noise_uv"])["accuracy"].mean().unstack("noise_uv")
        table = table.reindex(columns=levels)
        order = [p for p in PROTOCOL_NAMES if p in table.index.get_level_values(0)]
        table = table.reindex(pd.MultiIndex.from_tuples(
            [(p, k) for p in order for k in KIND_NAMES if (p, k) in table.index]))
        target = TARGETS.get(task, 90.0)
        shown = pd.DataFrame({_level(v): table[v].to_numpy() for v in levels},
                             index=pd.Index([f"{PROTOCOL_NAMES[p]}: {KIND_NAMES.get(k, k)}" for p, k in table.index],
                                            name=f"{rotation} {task}"))
        shown[f"below {target:g} % from"] = [_breaks(table.loc[i], target) for i in table.index]
        out.append(f"### {rotation}, {task}\n")
        out.append(f"{record.get('cells', '?')} cell models ({record.get('variants', 0)} of them morphology variants); "
                   f"registered versions {record.get('registered_versions', {})}.\n")
        out.append(_md(shown))
        details = [{"protocol, kind": f"{p}: {KIND_NAMES.get(k, k)}", "train EAPs (with copies)": d.get("n_train"),
                    "test EAPs": d.get("n_test"), "test cells": len(d.get("test_cells", [])),
                    "train s": d.get("train_seconds"), "steps / rounds": d.get("steps_run")}
                   for p, kinds in record["details"].items() if p in ("unseen_variants", "unseen_distances")
                   for k, d in kinds.items() if isinstance(d, dict)]
        if details:
            out.append(_md(pd.DataFrame(details).set_index("protocol, kind")))
        skipped = {p: kinds["skipped"] for p, kinds in record["details"].items() if "skipped" in kinds}
        if skipped:
            out.append("Not measured: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()) + ".\n")
        out += _held_out_types(part, rotation, ["kind", "noise_uv"],
                               lambda c: f"{KIND_NAMES.get(c[0], c[0])} {_level(c[1])}")
    return "\n".join(out), frame


#: Targets of the cross-simulator check (issue 14): accuracy %, the gap to the classifier's own test split (pp), ECE.
CROSSCHECK_TARGETS = {"binary": 98.0, "mtype": 90.0, "gap_pp": 3.0, "ece": 0.05}


#: Coverage of the intervals in the cross-check's targets table.
INTERVAL_LEVEL = 0.95


def accuracy_interval(accuracy: float, n: float, level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson score interval of an accuracy (%) measured on ``n`` units, in %.

    Unlike the normal approximation it stays inside 0–100 % and is not empty at 0 or 100 %."""
    from scipy.stats import norm

    if not n > 0:
        raise ValueError(f"an accuracy interval needs units: n={n}")
    if not 0 <= accuracy <= 100:
        raise ValueError(f"an accuracy is a percentage in 0-100: {accuracy}")
    p, z = accuracy / 100, float(norm.ppf((1 + level) / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * max(centre - half, 0.0), 100 * min(centre + half, 1.0)


def mean_accuracy_interval(per_type: dict[str, dict], level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Wilson interval of the mean over cell types of per-type accuracies, in %.

    The mean of T accuracies on n_t units each has the variance of one accuracy on T² / Σ 1/n_t units
    (for a common accuracy): that effective count goes into :func:`accuracy_interval`. With the same units
    in every type it is the pooled count, and the interval that of the accuracy over all units.

    Parameters
    ----------
    per_type : dict
        Cell type -> ``{"accuracy": %, "n": units}``.
    """
    if not per_type:
        raise ValueError("a mean-accuracy interval needs at least one cell type")
    n = np.array([v["n"] for v in per_type.values()], dtype=float)
    if (n <= 0).any():
        raise ValueError(f"every cell type of a mean-accuracy interval needs units: {per_type}")
    mean = float(np.mean([v["accuracy"] for v in per_type.values()]))
    return accuracy_interval(mean, len(n) ** 2 / float(np.sum(1 / n)), level)


def _gap_interval(own: float, interval: tuple[float, float]) -> tuple[float, float]:
    """The range of |own - a| for an accuracy ``a`` in ``interval``."""
    low, high = interval
    far = max(abs(own - low), abs(own - high))
    return (0.0, far) if low <= own <= high else (min(abs(own - low), abs(own - high)), far)


def _target_row(label: str, values: list[float | None], ok,
                intervals: list[tuple[float, float] | None] | None = None) -> list[str]:
    shown = [_fmt(v, 4 if "ECE" in label else 2) for v in values]
    if intervals is not None:
        shown = [s if ci is None else f"{s} [{ci[0]:.1f}, {ci[1]:.1f}]" for s, ci in zip(shown, intervals)]
    met = [ok(v) for v in values if v is not None and not np.isnan(v)]
    verdict = "met" if met and all(met) else ("missed" if met else "–")
    if intervals is not None and met and all(ci is not None for ci in intervals):
        inside = [ok(ci[0]) == ok(ci[1]) for ci in intervals]  # the whole interval on one side of the target
        verdict += "" if all(inside) else " (within the interval)"
    return [label, *shown, verdict]


def _task_interval(evaluation: dict, task: str) -> tuple[float, float]:
    """95 % interval of a cross-check task's target statistic: binary accuracy over units, m-type mean over types."""
    if task == "mtype":
        return mean_accuracy_interval(evaluation["per_cell_type"])
    return accuracy_interval(evaluation["accuracy"], evaluation["n"])


def crosscheck_markdown(results: dict[str, dict], settings: dict) -> tuple[str, pd.DataFrame]:
    """The cross-simulator check as Markdown and a long CSV table.

    Parameters
    ----------
    results : dict
        Sampling rate (str, Hz) -> the ``crosscheck`` asset's record: ``{"units", "results": {task: {
        "evaluation", "ece", "coverage", "accuracy_kept", "ood_rate", "units", "not_classified", "model",
        "version", "own_test": {"accuracy", "summary", "ece", "kind"}}}}``.
    settings : dict
        The cross-check settings (units per cell, duration, noise, seed, rotation).
    """
    rates = sorted(results, key=float, reverse=True)
    t = CROSSCHECK_TARGETS
    lines = [
        "# Cross-simulator check: MEArec recordings classified by the registered champions\n",
        "Generated by the `crosscheck_report` asset (`make crosscheck`). MEArec 1.11 simulated templates of the BBP cell "
        "models through its own code path (its current search and spike cutting, random positions x ∈ [10, 80] µm, "
        f"{settings['rotation']} rotations, LFPy electrodes with 10 points per contact, the ×2 of the MEA plane, its "
        f"amplitude ≥ 30 µV and shape checks) with its own seed ({settings['seed']}); then a recording of "
        f"{settings['units_per_cell']} units of every cell model ({settings['duration_s']:g} s, "
        f"{settings['noise_uv']:g} µV RMS noise, template amplitudes {settings['min_amp_uv']:g}–{settings['max_amp_uv']:g} µV, "
        "Poisson spike trains, band-pass 300–6000 Hz Butterworth order 3) at each sampling rate (30 kHz: MEArec's own "
        "resampling). SpikeInterface read every recording (`read_mearec`) and built a `SortingAnalyzer` of the "
        "ground-truth units (`templates`: average of ≤ 500 random spikes, 1 ms before / 2 ms after). "
        "`eap_assets.classify` classified every unit of the analyzer with the champions "
        "(`unit_classifier_<probe>_<rotation>_<task>@champion`). Accuracies in %.\n",
        f"In brackets: {INTERVAL_LEVEL:.0%} Wilson intervals of the cross-check's figure from its units alone (the "
        "m-type mean over cell types as an accuracy on T² / Σ 1/n_t units, the pooled count when every type has "
        "as many units; a gap: its range over that interval, the own test split taken as exact). '(within the "
        "interval)': the interval reaches both sides of the target, so these units cannot tell met from missed.\n"]
    lines.append("## Targets\n")
    header = ["target", *(f"{float(r) / 1000:g} kHz" for r in rates), "verdict"]
    rows = []
    for task, goal, stat in (("binary", t["binary"], None), ("mtype", t["mtype"], "mean")):
        name = "binary accuracy" if task == "binary" else "m-type mean over cell types"
        values = [(results[r]["results"][task]["evaluation"]["summary"]["mean"] if stat else
                   results[r]["results"][task]["evaluation"]["accuracy"]) if task in results[r]["results"] else None
                  for r in rates]
        intervals = [_task_interval(results[r]["results"][task]["evaluation"], task)
                     if task in results[r]["results"] else None for r in rates]
        rows.append(_target_row(f"{name} ≥ {goal:g}", values, lambda v, g=goal: v >= g, intervals))
        own = [(results[r]["results"][task]["own_test"]["summary"]["mean"] if stat else
                results[r]["results"][task]["own_test"]["accuracy"]) if task in results[r]["results"] else None
               for r in rates]
        gaps = [None if v is None or o is None else abs(o - v) for v, o in zip(values, own)]
        gap_intervals = [None if o is None or ci is None else _gap_interval(o, ci) for o, ci in zip(own, intervals)]
        rows.append(_target_row(f"{name}: gap to its own noisy test split (either way) ≤ {t['gap_pp']:g} pp", gaps,
                                lambda v: v <= t["gap_pp"], gap_intervals))
        eces = [results[r]["results"][task]["ece"] if task in results[r]["results"] else None for r in rates]
        rows.append(_target_row(f"{task} expected calibration error ≤ {t['ece']:g}", eces, lambda v: v <= t["ece"]))
    lines.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
                 + "".join("| " + " | ".join(r) + " |\n" for r in rows))
    records = []
    for task in ("binary", "mtype"):
        per_type: dict[str, dict[str, float]] = {}
        for r in rates:
            score = results[r]["results"].get(task)
            if score is None:
                continue
            for cell_type, v in score["evaluation"]["per_cell_type"].items():
                per_type.setdefault(cell_type, {})[f"{float(r) / 1000:g} kHz"] = v["accuracy"]
                per_type[cell_type]["units"] = v["n"]
                records.append({"rate_hz": float(r), "task": task, "cell_type": cell_type, "accuracy": v["accuracy"],
                                "n": v["n"]})
            own = score["own_test"]
        if not per_type:
            continue
        frame = pd.DataFrame(per_type).T.reindex([m for m in PAPER_MTYPES if m in per_type]
                                                 + sorted(set(per_type) - set(PAPER_MTYPES)))
        frame.index.name = "cell type"
        frame["units"] = frame["units"].astype(int)
        title = "E/I (binary)" if task == "binary" else "m-type"
        lines.append(f"\n## {title} per cell type\n\nChampion: `{score['model']}` v{score['version']} ({own['kind']}); "
                     f"on its own test split (simulated, noisy): {own['accuracy']:.2f} % overall, "
                     f"{own['summary']['mean']:.2f} % mean over cell types, ECE {own['ece']:.4f}.\n")
        lines.append(_md(frame))
        summary = {f"{float(r) / 1000:g} kHz": results[r]["results"][task]["evaluation"]["summary"]
                   for r in rates if task in results[r]["results"]}
        lines.append("\n" + _md(pd.DataFrame(summary).rename_axis("over cell types")))
    lines.append("\n## Calibration, abstention, out-of-distribution flags\n")
    lines.append("'ECE if calibrated': the range of the ECE that a perfectly calibrated classifier with the same "
                 "confidences would show on these units (each unit correct with probability its confidence, "
                 f"{ECE_RANGE_DRAWS} seeded draws, the same {ECE_BINS} bins): over a few hundred units ECE is biased "
                 "upwards, and an ECE inside this range is no evidence of miscalibration. 'Accuracy, not flagged' / "
                 "'flagged': of the units without / with an out-of-distribution flag (amplitude outside the training "
                 "range, largest on an edge contact of the probe, waveform far from the training waveforms).\n")
    calib = {}
    for r in rates:
        for task, score in results[r]["results"].items():
            calib[f"{float(r) / 1000:g} kHz {task}"] = {
                "units": score["units"], "ECE": score["ece"],
                "ECE if calibrated, 95 % range": "[{:.3f}, {:.3f}]".format(*score["ece_if_calibrated"])
                if "ece_if_calibrated" in score else "–",
                "coverage (not abstained) %": 100 * score["coverage"],
                "accuracy of retained units %": 100 * score["accuracy_kept"], "OOD flagged %": 100 * score["ood_rate"],
                "accuracy, not flagged %": 100 * score.get("accuracy_in_distribution", float("nan")),
                "accuracy, flagged %": 100 * score.get("accuracy_ood", float("nan")),
                "not classified": score["not_classified"]}
    calib_frame = pd.DataFrame(calib).T
    calib_frame.index.name = "recording, task"
    for column in ("units", "not classified"):
        calib_frame[column] = calib_frame[column].astype(int)
    lines.append(_md(calib_frame))
    if "mtype" in results[rates[0]]["results"]:
        confusion = pd.DataFrame(results[rates[0]]["results"]["mtype"]["evaluation"]["confusion"]).T
        confusion.index.name = "true \\ predicted"
        lines.append(f"\n## m-type confusion at {float(rates[0]) / 1000:g} kHz (% of each true type)\n")
        lines.append(_md(confusion.round(1)))
    return "\n".join(lines), pd.DataFrame(records)


def probe_comparison_markdown(runs: list[dict]) -> tuple[str, pd.DataFrame]:
    """The per-probe table: how well cell types are told apart on each probe, and how many contacts see a unit.

    Parameters
    ----------
    runs : list of dict
        One per probe (:func:`probe_run_record`): ``probe``, ``contacts``, ``kind``, ``image``,
        ``rotation`` (of the paper family), ``recording_rotation`` (of the models for recordings; default
        ``rotation``), ``n_eaps``, ``contacts_30uv`` / ``contacts_10uv`` (median over the paper family's
        EAPs of the contacts with that peak-to-peak), ``paper`` ({task: {kind: accuracy %}}) and
        ``classifier`` ({task: {"kind", "accuracy", "ece", "kinds"}}: the served unit classifier on its
        realistic test split, calibrated; ``registered``: its version and alias; ``kinds``: {kind: test accuracy %} of every model kind trained
        for recordings, the candidates it was chosen from on validation; ``by_rotation``: {rotation: test accuracy %}
        of the unit classifier of every rotation set trained for the probe) and optionally ``made`` (when the
        data were made).

    Returns
    -------
    (markdown, frame)
    """
    rows = []
    for run in runs:
        row = {"probe": run["probe"], "contacts": run["contacts"], "kind": run["kind"], "CNN image": run["image"],
               "rotation (noise-free)": run["rotation"],
               "rotation (realistic)": run.get("recording_rotation", run["rotation"]), "EAPs per cell": run["n_eaps"], "data made": run.get("made", "–"),
               "contacts ≥ 30 µV": f"{run['contacts_30uv']:g}", "contacts ≥ 10 µV": f"{run['contacts_10uv']:g}"}
        for task in ("binary", "mtype"):
            for kind, accuracy in sorted(run["paper"].get(task, {}).items()):
                row[f"{task}: {KIND_NAMES.get(kind, kind)} (noise-free) %"] = accuracy
            served = run["classifier"].get(task)
            if served:
                for kind, accuracy in sorted(served.get("kinds", {}).items()):
                    row[f"{task}: {KIND_NAMES.get(kind, kind)} (realistic) %"] = accuracy
                row[f"{task}: unit classifier (realistic) %"] = served["accuracy"]
                row[f"{task}: unit classifier kind"] = served["kind"]
                row[f"{task}: unit classifier version"] = served.get("registered", "–")  # champion or challenger
                row[f"{task}: unit classifier ECE"] = f"{served['ece']:.3f}"
                for rotation, accuracy in sorted(served.get("by_rotation", {}).items()):
                    row[f"{task}: unit classifier on {rotation} (realistic) %"] = accuracy
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("probe")
    # each task's rows together (a row only some probes have, e.g. physrot, would otherwise come last)
    frame = frame[sorted(frame.columns, key=lambda c: {"binary": 1, "mtype": 2}.get(c.split(":")[0], 0))]
    text = _md(frame.T.rename_axis("probe"))
    return text, frame


#: Names of the recording generalisation protocols in the report.
RECORDING_PROTOCOL_NAMES = {"own_split": "own split (EAPs of the same cells)",
                            "unseen_variants": "unseen morphology variants",
                            "hold_out_type": "unseen cell type, E/I (mean over types)"}


def recording_generalisation_markdown(results: dict[tuple[str, str], dict]) -> tuple[str, pd.DataFrame]:
    """The generalisation section of the models for real recordings: the targets (unseen variants, m-type
    >= 90 % and binary >= 98 %; hold-cell-type-out E/I >= 90 %) on their recipe, then per rotation x task the
    accuracy of every protocol x kind, each held-out type's E/I, and the training sets' sizes.

    Parameters
    ----------
    results : dict
        (rotation, task) -> the record the ``recording_generalisation`` asset writes
        (:func:`eap_assets.core.generalisation.run_recording_generalisation` plus ``cells``, ``variants``).

    Returns
    -------
    markdown : str
    frame : DataFrame
        One row per rotation, task, protocol, kind (and held-out type): accuracy (%), n_train, n_test.
    """
    from eap_assets.core.generalisation import HOLD_OUT_TARGET, TARGET_ROTATION, TARGETS

    frame = pd.concat([pd.DataFrame(record["rows"], columns=["protocol", "kind", "held_type", "accuracy", "n_train",
                                                             "n_test"]).assign(rotation=rotation, task=task)
                       for (rotation, task), record in sorted(results.items())], ignore_index=True)
    config = next(iter(results.values()))["config"]
    cap = config.get("max_eaps_per_cell")
    source = f"each cell's first {cap} accepted EAPs" if cap else "every EAP"
    out = ["## The models for real recordings: unseen morphology variants and cell types\n",
           ("Generated by the `recording_generalisation` assets (`eap-assets run --stages recording_generalisation`). "
           "The recipe of the served unit classifiers' models (`recording_<kind>_model`: the same training-set and "
           "training settings) under protocols that hold out what a user's units are not: its own per-cell split "
           "over EAPs (the reference), whole morphology variants of each m-type "
           f"({config['variant_test_fraction']:.0%} held out), and each cell type in turn (E/I by a model trained "
           "on the other types). Every protocol builds its own training set (band-pass, MEA-plane EAPs over the "
           "whole detectable range, augmented template copies, waveform basis fitted on that protocol's training "
           f"rows) from {source}; "
           "test rows are templates as the champions' own test split has them (recording noise, spikes per "
           f"template, correlation, filter and jitter drawn as in training). Seed {config['seed']}. Accuracies in %.\n")]
    rows = []
    for task, target in TARGETS.items():
        label = f"{TARGET_ROTATION} {task}, unseen variants, recording templates"
        part = frame[(frame.rotation == TARGET_ROTATION) & (frame.task == task) & (frame.protocol == "unseen_variants")]
        if part.empty:
            why = "not measured" if (TARGET_ROTATION, task) not in results else "no variants"
            rows.append({"target": label, "required": target, "best": why, "met": "–", "by": "–", "limited by": "–"})
            continue
        best = part.loc[part["accuracy"].idxmax()]
        confusions = results[(TARGET_ROTATION, task)]["details"]["unseen_variants"][best["kind"]]["confusions"]
        rows.append({"target": label, "required": target, "best": f"{best['accuracy']:.2f} ({best['kind']})",
                     "met": "yes" if best["accuracy"] >= target else "**no**",
                     "by": f"{best['accuracy'] - target:+.2f} pp",
                     "limited by": ", ".join(f"{c['true']}→{c['predicted']} {100 * c['share']:.1f} %"
                                             for c in confusions) or "–"})
    hold = frame[(frame.rotation == TARGET_ROTATION) & (frame.protocol == "hold_out_type")]
    if not hold.empty:
        means = hold.groupby("kind")["accuracy"].mean()
        kind = means.idxmax()
        worst = hold[hold.kind == kind].nsmallest(3, "accuracy")
        rows.append({"target": f"{TARGET_ROTATION} hold-cell-type-out E/I, mean of {hold['held_type'].nunique()} "
                               "types, recording templates",
                     "required": HOLD_OUT_TARGET, "best": f"{means.max():.2f} ({kind})",
                     "met": "yes" if means.max() >= HOLD_OUT_TARGET else "**no**",
                     "by": f"{means.max() - HOLD_OUT_TARGET:+.2f} pp",
                     "limited by": ", ".join(f"{r.held_type} {r.accuracy:.1f} %" for r in worst.itertuples())})
    out.append("### Targets (models for real recordings)\n")
    out.append(_md(pd.DataFrame(rows).set_index("target")))
    for (rotation, task), record in sorted(results.items()):
        part = frame[(frame.rotation == rotation) & (frame.task == task)]
        out.append(f"### Models for real recordings: {rotation}, {task}\n")
        out.append(f"{record.get('cells', '?')} cell models ({record.get('variants', 0)} of them morphology "
                   "variants).\n")
        if not part.empty:
            table = part.groupby(["protocol", "kind"])["accuracy"].mean().unstack("kind")
            table = table.reindex([p for p in RECORDING_PROTOCOL_NAMES if p in table.index])
            table.index = [RECORDING_PROTOCOL_NAMES[p] for p in table.index]
            table.columns = [KIND_NAMES.get(k, k) for k in table.columns]
            table.index.name = f"{rotation} {task}"
            out.append(_md(table))
        sets = pd.DataFrame([{"protocol": p, **{f"{s} rows": n for s, n in v["rows"].items()}, "build s": v["seconds"],
                              "train s": sum(d.get("train_seconds", 0) for d in record["details"].get(p, {}).values()
                                             if isinstance(d, dict))}
                             for p, v in record.get("sets", {}).items()])
        if not sets.empty:
            out.append(_md(sets.set_index("protocol")))
        skipped = {p: d["skipped"] for p, d in record["details"].items() if "skipped" in d}
        if skipped:
            out.append("Not measured: " + "; ".join(f"{p} ({why})" for p, why in skipped.items()) + ".\n")
        out += _held_out_types(part, rotation, "kind", lambda c: KIND_NAMES.get(c, c))
    return "\n".join(out), frame
