"""The cross-check report's intervals: how sure its few units make a met or missed target."""

from __future__ import annotations

import pytest

from eap_assets.core import report


def _per_type(counts: dict[str, tuple[int, int]]) -> dict[str, dict]:
    return {t: {"accuracy": 100 * k / n, "n": n} for t, (k, n) in counts.items()}


def test_wilson_interval_of_an_accuracy():
    low, high = report.accuracy_interval(100 * 153 / 156, 156)  # 98.08 %: 12 units x 13 types, 3 wrong
    assert low == pytest.approx(94.5, abs=0.1) and high == pytest.approx(99.3, abs=0.1)
    from scipy.stats import binomtest  # the same interval as SciPy's

    ci = binomtest(153, 156).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((100 * ci.low, 100 * ci.high))
    low, high = report.accuracy_interval(100.0, 12)  # 100 % still has a lower bound below it
    assert high == pytest.approx(100) and low < 80
    with pytest.raises(ValueError, match="n=0"):
        report.accuracy_interval(50.0, 0)
    with pytest.raises(ValueError, match="0-100"):
        report.accuracy_interval(101.0, 10)


def test_mean_over_types_interval_pools_equal_types_and_shrinks_with_units():
    few = _per_type({"a": (11, 12), "b": (12, 12), "c": (8, 12)})
    many = _per_type({"a": (110, 120), "b": (120, 120), "c": (80, 120)})
    assert report.mean_accuracy_interval(few) == pytest.approx(report.accuracy_interval(100 * 31 / 36, 36))
    low, high = report.mean_accuracy_interval(few)
    low_many, high_many = report.mean_accuracy_interval(many)
    assert low < low_many < 100 * 31 / 36 < high_many < high
    uneven = _per_type({"a": (11, 12), "b": (60, 60)})  # effective units 4 / (1/12 + 1/60) = 40, not 72
    assert report.mean_accuracy_interval(uneven) == pytest.approx(
        report.accuracy_interval(100 * (11 / 12 + 1) / 2, 40))
    with pytest.raises(ValueError, match="at least one cell type"):
        report.mean_accuracy_interval({})


def _record(mtype: dict[str, tuple[int, int]], own_mean: float) -> dict:
    per_type = _per_type(mtype)
    accuracies = [v["accuracy"] for v in per_type.values()]
    mean = sum(accuracies) / len(accuracies)
    evaluation = {"accuracy": mean, "per_cell_type": per_type,
                  "summary": {"mean": mean, "median": mean, "max": max(accuracies), "min": min(accuracies), "sd": 0.0},
                  "confusion": {t: {t: 100.0} for t in per_type}}
    own = {"accuracy": own_mean, "summary": {"mean": own_mean}, "ece": 0.01, "kind": "waveform"}
    score = {"evaluation": evaluation, "ece": 0.02, "ece_if_calibrated": [0.01, 0.06], "coverage": 1.0,
             "accuracy_kept": 1.0, "ood_rate": 0.5, "accuracy_in_distribution": 0.95, "accuracy_ood": 0.8,
             "units": sum(n for _, n in mtype.values()), "not_classified": 0, "model": "m", "version": "1",
             "own_test": own}
    return {"units": score["units"], "results": {"mtype": score}}


SETTINGS = {"rotation": "3drot", "seed": 2018, "units_per_cell": 12, "duration_s": 60.0, "noise_uv": 10.0,
            "min_amp_uv": 50.0, "max_amp_uv": 300.0}


def _target(markdown: str, starts: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith(f"| {starts}"))


def test_targets_say_when_the_units_cannot_tell_met_from_missed():
    """88 % over 12 units a type is below 90 % but its interval reaches above it; over 1200 it is a clear miss."""
    few = {t: (k, 12) for t, k in zip("abcd", (11, 10, 11, 10))}  # mean 87.5 %
    text, _ = report.crosscheck_markdown({"32000": _record(few, own_mean=84.0)}, SETTINGS)
    row = _target(text, "m-type mean over cell types ≥ 90")
    assert "87.50 [" in row and row.endswith("missed (within the interval) |")
    gap = _target(text, "m-type mean over cell types: gap")
    assert "3.50 [" in gap and "(within the interval)" in gap
    assert "| 32 kHz mtype | 48 | 0.02 | [0.010, 0.060] |" in text  # the ECE a calibrated model would show
    assert "| 50.00 | 95.00 | 80.00 |" in text  # OOD flagged %, accuracy of the units without and with a flag
    many = {t: (k * 100, 1200) for t, (k, _) in few.items()}
    text, _ = report.crosscheck_markdown({"32000": _record(many, own_mean=84.0)}, SETTINGS)
    assert _target(text, "m-type mean over cell types ≥ 90").endswith("| missed |")
    assert "95% Wilson intervals" in text


def test_generalisation_reports_show_each_held_out_type_in_the_paper_order():
    """Both families' reports: the held-out types' E/I table, types in the paper's order, one column per kind
    (and noise level for the paper family)."""
    from eap_assets.core.report import generalisation_markdown, recording_generalisation_markdown

    paper_rows = [{"protocol": "hold_out_type", "kind": "lgbm", "held_type": t, "noise_uv": v, "accuracy": a,
                   "n_test": 5, "n_train": 50} for t, a in (("UTPC", 10.0), ("BP", 99.0)) for v in (0.0, 10.0)]
    config = {"noise_kind": "white", "train_copies": 2, "train_noise_uv": [0, 20], "variant_test_fraction": 0.25,
              "distance_train_um": [10, 40], "distance_test_um": [40, 60], "seed": 0, "target_noise_uv": 10.0,
              "noise_levels_uv": [0.0, 10.0]}
    paper, _ = generalisation_markdown({("3drot", "binary"): {"rows": paper_rows, "details": {}, "config": config}})
    assert "| 3drot: held-out type | LightGBM 0 µV | LightGBM 10 µV |\n|---|---|---|\n| BP | 99" in paper
    recording_rows = [{"protocol": "hold_out_type", "kind": k, "held_type": t, "accuracy": a, "n_train": 50,
                       "n_test": 5} for t, a in (("UTPC", 7.0), ("BP", 99.0)) for k in ("lgbm", "waveform")]
    recording, frame = recording_generalisation_markdown({("3drot", "binary"): {
        "rows": recording_rows, "details": {}, "config": {"variant_test_fraction": 0.25, "max_eaps_per_cell": 3000,
                                                          "seed": 0}}})
    assert "| 3drot: held-out type | LightGBM | waveform |\n|---|---|---|\n| BP | 99" in recording
    assert "| 3drot hold-cell-type-out E/I, mean of 2 types, recording templates | 90" in recording
    assert "| 3drot mtype, unseen variants, recording templates | 90" in recording and "not measured" in recording
    assert len(frame) == 4
