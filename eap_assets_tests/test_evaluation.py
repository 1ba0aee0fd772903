"""Evaluation in the paper's terms, the paper's numbers, comparison frames and figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eap_assets.core import paper, plots
from eap_assets.core.evaluation import evaluate, summarise

# binary task, 8 test rows: BP 3/4 correct, UTPC 1/2, MC 2/2
CELL_TYPES = np.array(["BP"] * 4 + ["UTPC"] * 2 + ["MC"] * 2)
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 1, 1])
Y_PRED = np.array([1, 1, 1, 0, 0, 1, 1, 1])


def test_evaluate_binary_hand_example():
    result = evaluate(Y_TRUE, Y_PRED, ["E", "I"], CELL_TYPES)
    assert result.accuracy == pytest.approx(75.0)
    assert result.n == 8
    assert list(result.per_cell_type.index) == ["BP", "MC", "UTPC"]  # paper Table I order
    assert result.per_cell_type["accuracy"].tolist() == pytest.approx([75.0, 100.0, 50.0])
    assert result.per_cell_type["n"].tolist() == [4, 2, 2]
    assert result.summary == pytest.approx({"mean": 75.0, "median": 75.0, "max": 100.0, "min": 50.0,
                                            "sd": np.sqrt(1250.0 / 3.0)})  # population sd
    expected = pd.DataFrame({"E": [25.0, 0.0, 50.0], "I": [75.0, 100.0, 50.0]}, index=["BP", "MC", "UTPC"])
    np.testing.assert_allclose(result.confusion.to_numpy(), expected.to_numpy())
    assert list(result.confusion.columns) == ["E", "I"]
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["per_cell_type"]["UTPC"] == {"accuracy": 50.0, "n": 2}
    assert as_dict["confusion"]["BP"]["E"] == 25.0


def test_evaluate_mtype_diagonal_is_per_type_accuracy():
    classes = ["BP", "BTC", "TTPC1"]
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 1, 2, 2, 0, 2])
    result = evaluate(y_true, y_pred, classes, np.asarray(classes)[y_true])
    diagonal = np.diag(result.confusion.loc[classes, classes].to_numpy())
    np.testing.assert_allclose(diagonal, result.per_cell_type["accuracy"].to_numpy())
    np.testing.assert_allclose(result.confusion.sum(axis=1), 100.0)
    assert result.per_cell_type.loc["BP", "accuracy"] == pytest.approx(100 / 3)
    assert result.confusion.loc["TTPC1", "BP"] == pytest.approx(25.0)


def test_evaluate_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        evaluate(Y_TRUE, Y_PRED[:-1], ["E", "I"], CELL_TYPES)
    with pytest.raises(ValueError, match="labels in"):
        evaluate(Y_TRUE, Y_PRED + 1, ["E", "I"], CELL_TYPES)
    assert np.isnan(summarise([])["mean"])


def test_paper_tables():
    assert paper.PAPER_BINARY["norot"]["BP"] == 100.0
    assert paper.PAPER_BINARY["3drot"]["UTPC"] == 60.95
    assert [paper.PAPER_BINARY[r]["Average"] for r in paper.ROTATIONS] == [99.69, 98.54, 95.92, 92.15]
    assert len(paper.PAPER_BINARY["xrot"]) == 14
    assert [paper.PAPER_MTYPE_SUMMARY[r]["mean"] for r in paper.ROTATIONS] == [99.62, 93.31, 87.56, 57.49]
    assert paper.PAPER_MTYPE_MEAN_TEXT["norot"] == 98.96
    # printed with max/min swapped; the helper restores the order
    assert paper.PAPER_MTYPE_SUMMARY["3drot"]["max"] == 38.78
    fixed = paper.paper_mtype_summary("3drot")
    assert (fixed["min"], fixed["max"]) == (38.78, 82.86)
    for rotation in paper.ROTATIONS:
        s = paper.paper_mtype_summary(rotation)
        assert s["min"] <= s["median"] <= s["max"] and s["min"] <= s["mean"] <= s["max"]
    assert paper.paper_binary_frame().loc["LBC", "zrot"] == 96.875
    with pytest.raises(ValueError, match="rotation"):
        paper.paper_mtype_summary("yrot")


def test_paper_comparison_frames():
    binary = evaluate(Y_TRUE, Y_PRED, ["E", "I"], CELL_TYPES)
    frame = paper.paper_comparison_frame("binary", "3drot", binary)
    assert len(frame) == 14 and frame.index[-1] == "Average"
    assert frame.loc["UTPC", "ours"] == 50.0 and frame.loc["UTPC", "paper"] == 60.95
    assert frame.loc["UTPC", "difference"] == pytest.approx(50.0 - 60.95)
    assert frame.loc["Average", "ours"] == 75.0 and frame.loc["Average", "n"] == 8
    assert np.isnan(frame.loc["TTPC1", "ours"]) and frame.loc["TTPC1", "paper"] == 90.38
    mtype = paper.paper_comparison_frame("mtype", "norot", binary)
    assert list(mtype.index) == ["mean", "median", "max", "min", "sd", "overall"]
    assert mtype.loc["max", "paper"] == 100.0 and mtype.loc["min", "paper"] == 98.96
    assert mtype.loc["sd", "ours"] == pytest.approx(np.sqrt(1250.0 / 3.0))
    with pytest.raises(ValueError, match="task"):
        paper.paper_comparison_frame("shape", "norot", binary)


def test_figures_render():
    result = evaluate(Y_TRUE, Y_PRED, ["E", "I"], CELL_TYPES)
    fig = plots.confusion_matrix_figure(result.confusion, "binary, norot")
    ax = fig.axes[0]
    colours = {t.get_text(): t.get_color() for t in ax.get_yticklabels()}
    assert colours["UTPC"] == plots.EI_COLORS["E"] and colours["BP"] == plots.EI_COLORS["I"]
    assert plots.png_bytes(fig).startswith(b"\x89PNG")
    cnn_history = pd.DataFrame({"step": [10, 20], "loss": [1.0, 0.5], "train_accuracy": [0.5, 0.8],
                                "val_loss": [0.9, 0.6], "val_accuracy": [0.6, 0.7]})
    lgbm_history = pd.DataFrame({"iteration": [1, 2, 3], "val_multi_logloss": [1.0, 0.7, 0.6]})
    for history in (cnn_history, lgbm_history):
        assert plots.png_bytes(plots.training_curve_figure(history, "curve")).startswith(b"\x89PNG")
