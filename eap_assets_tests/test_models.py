"""Classifiers on synthetic separable data: real TensorFlow and LightGBM, tiny and fast."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from eap_assets.core import models
from eap_assets.core.features import feature_columns

#: Blob centre (row, col) of each class on the 10 x 10 grid.
CENTRES = [(2, 2), (7, 7), (2, 7)]
FAST = models.CNNConfig(steps=60, batch_size=64, eval_every=20, threads=1)


def blob_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy raw feature images (µV, ms); class k has a bright, narrow blob at CENTRES[k]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CENTRES), n)
    x = rng.normal(0.0, 1.0, (n, 10, 10, 2)).astype(np.float32)
    for i, k in enumerate(y):
        r, c = CENTRES[k]
        x[i, r - 1:r + 2, c - 1:c + 2, 0] += 4.0
        x[i, r - 1:r + 2, c - 1:c + 2, 1] -= 2.0
    x[..., 0] = 40.0 + 15.0 * x[..., 0]  # amplitude-like scale
    x[..., 1] = 2.0 + 0.3 * x[..., 1]  # width-like scale
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def data():
    return {"train": blob_images(480, 0), "val": blob_images(120, 1), "test": blob_images(240, 2)}


@pytest.fixture(scope="module")
def cnn(data):
    calls = []
    trained = models.train_cnn(*data["train"], *data["val"], 3, FAST, seed=7,
                               on_step=lambda step, metrics: calls.append((step, metrics)), classes=["a", "b", "c"])
    return trained, calls


def test_cnn_learns_separable_blobs(cnn, data):
    trained, calls = cnn
    x_test, y_test = data["test"]
    proba = trained.predict_proba(x_test)
    assert proba.shape == (len(y_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (trained.predict(x_test) == y_test).mean() > 0.9
    assert trained.kind == "cnn" and trained.classes == ["a", "b", "c"]
    assert trained.steps_run == 60 and trained.seconds > 0
    assert [s for s, _ in calls] == [20, 40, 60]
    assert set(calls[0][1]) >= {"loss", "train_accuracy", "val_accuracy"}
    assert list(trained.history["step"]) == [20, 40, 60]
    assert trained.history["val_accuracy"].iloc[-1] > 0.9


def test_cnn_architecture_and_raw_input_scaling(cnn, data):
    model = cnn[0].model
    names = [layer.name for layer in model.layers]
    assert names == ["standardise", "conv1", "pool1", "conv2", "pool2", "flatten", "dense", "dropout", "softmax"]
    assert model.get_layer("pool1").output.shape[1:] == (5, 5, 32)
    assert model.get_layer("pool2").output.shape[1:] == (3, 3, 64)
    assert model.get_layer("dropout").rate == pytest.approx(0.3)
    # the normalisation layer standardises each channel with the training statistics
    x_train = data["train"][0]
    mean = model.get_layer("standardise").mean.numpy().ravel()
    np.testing.assert_allclose(mean, x_train.reshape(-1, 2).mean(axis=0), rtol=1e-4)


def test_cnn_same_seed_same_predictions(cnn, data):
    again = models.train_cnn(*data["train"], *data["val"], 3, FAST, seed=7)
    x_test = data["test"][0]
    # one intra-op thread on CPU: bit-identical in practice; allow float noise for other builds
    np.testing.assert_allclose(again.predict_proba(x_test), cnn[0].predict_proba(x_test), atol=1e-6)
    assert np.array_equal(again.predict(x_test), cnn[0].predict(x_test))


def test_cnn_early_stopping_restores_best(data):
    config = models.CNNConfig(steps=2000, batch_size=64, eval_every=10, patience=2, threads=1)
    trained = models.train_cnn(*data["train"], *data["val"], 3, config, seed=3)
    assert trained.steps_run < config.steps
    assert trained.best_step == trained.history.loc[trained.history["val_accuracy"].idxmax(), "step"]
    x_val, y_val = data["val"]
    restored = (trained.predict(x_val) == y_val).mean()
    assert restored == pytest.approx(trained.history["val_accuracy"].max())


def test_cnn_learning_rate_halves_on_plateau_and_monitor_sees_the_model(data):
    """lr_decay_patience=1: every evaluation without a better validation accuracy halves the rate;
    ``monitor`` is called with the live model at every evaluation."""
    config = models.CNNConfig(steps=200, batch_size=64, eval_every=10, learning_rate=1e-3, lr_decay_patience=1,
                              threads=1)
    seen = []
    trained = models.train_cnn(*data["train"], *data["val"], 3, config, seed=3,
                               monitor=lambda step, model, metrics: seen.append((step, model.name, metrics)))
    history = trained.history
    assert [s for s, _, _ in seen] == list(history["step"]) and {name for _, name, _ in seen} == {"paper_cnn"}
    rate, best = 1e-3, -1.0
    for row in history.itertuples():
        assert row.learning_rate == pytest.approx(rate)  # the rate in force during the steps before this row
        if row.val_accuracy > best:
            best = row.val_accuracy
        else:
            rate /= 2
    assert history["learning_rate"].iloc[-1] < 1e-3  # the blobs reach a plateau within 200 steps
    with pytest.raises(ValueError, match="lr_decay_patience"):
        models.CNNConfig(lr_decay_patience=0)
    with pytest.raises(ValueError, match="lr_decay_factor"):
        models.CNNConfig(lr_decay_factor=1.0)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside keras' saving
def test_saved_cnn_takes_raw_images(cnn, data, tmp_path):
    import keras

    path = tmp_path / "cnn.keras"
    cnn[0].model.save(path)
    loaded = keras.models.load_model(path)
    x_test = data["test"][0][:50]
    np.testing.assert_allclose(np.asarray(loaded(x_test, training=False)), cnn[0].predict_proba(x_test), atol=1e-6)


def test_cnn_config_validation():
    with pytest.raises(ValueError, match="keep probability"):
        models.CNNConfig(dropout_rate=1.0)
    with pytest.raises(ValueError, match="steps"):
        models.CNNConfig(steps=0)
    with pytest.raises(ValueError, match="patience"):
        models.CNNConfig(patience=0)
    with pytest.raises(ValueError, match="learning_rate"):
        models.CNNConfig(learning_rate=-1.0)
    with pytest.raises(ValueError, match="validation"):
        x, y = blob_images(10, 0)
        models.train_cnn(x, y, None, None, 3, models.CNNConfig(steps=1, patience=1), seed=0)


def test_lgbm_learns_and_is_deterministic(data):
    flat = {k: (x.reshape(len(x), -1), y) for k, (x, y) in data.items()}
    config = models.LGBMConfig(n_estimators=200, learning_rate=0.1, early_stopping_rounds=10, threads=1)
    trained = models.train_lgbm(*flat["train"], *flat["val"], 3, config, seed=1)
    x_test, y_test = flat["test"]
    assert trained.kind == "lgbm"
    assert (trained.predict(x_test) == y_test).mean() > 0.9
    assert list(trained.history.columns) == ["iteration", "val_multi_logloss"]
    assert trained.steps_run == len(trained.history) and 1 <= trained.best_step <= trained.steps_run
    assert trained.steps_run < 200  # early stopping
    with pytest.raises(ValueError, match="single class"):
        models.train_lgbm(flat["train"][0], np.zeros_like(flat["train"][1]), *flat["val"], 3, config, seed=1)
    with pytest.raises(ValueError, match="max_bin"):
        models.LGBMConfig(max_bin=0)
    coarse = models.train_lgbm(*flat["train"], *flat["val"], 3, models.LGBMConfig(
        n_estimators=20, learning_rate=0.1, early_stopping_rounds=None, max_bin=3), seed=1)
    assert coarse.model.get_params()["max_bin"] == 3
    with pytest.raises(ValueError, match="feature_fraction"):
        models.LGBMConfig(feature_fraction=0.0)
    half = replace(config, feature_fraction=0.5)
    sampled = models.train_lgbm(*flat["train"], *flat["val"], 3, half, seed=1)
    assert sampled.model.get_params()["colsample_bytree"] == 0.5
    assert (sampled.predict(x_test) == y_test).mean() > 0.9
    again_half = models.train_lgbm(*flat["train"], *flat["val"], 3, half, seed=1)
    np.testing.assert_array_equal(again_half.predict_proba(x_test), sampled.predict_proba(x_test))  # seeded draw
    assert not np.array_equal(sampled.predict_proba(x_test), trained.predict_proba(x_test))
    again = models.train_lgbm(*flat["train"], *flat["val"], 3, config, seed=1)
    np.testing.assert_array_equal(again.predict_proba(x_test), trained.predict_proba(x_test))
    # binary objective
    keep = flat["train"][1] < 2
    keep_val = flat["val"][1] < 2
    binary = models.train_lgbm(flat["train"][0][keep], flat["train"][1][keep], flat["val"][0][keep_val],
                               flat["val"][1][keep_val], 2, config, seed=1, classes=["E", "I"])
    assert "val_binary_logloss" in binary.history.columns
    assert binary.predict_proba(x_test).shape == (len(x_test), 2)
    # a bare Booster (as some loaders return) gives the same probabilities
    for fitted in (trained, binary):
        bare = models.TrainedModel(model=fitted.model.booster_, history=pd.DataFrame(), best_step=0, steps_run=0,
                                   seconds=0.0)
        np.testing.assert_allclose(bare.predict_proba(x_test), fitted.predict_proba(x_test), atol=1e-12)


def test_width_rule_uses_training_data_only():
    rng = np.random.default_rng(0)
    narrow = rng.uniform(0.2, 0.4, 200)  # inhibitory
    broad = rng.uniform(0.7, 1.1, 100)  # excitatory
    width = np.concatenate([narrow, broad])
    excitatory = np.r_[np.zeros(200, bool), np.ones(100, bool)]
    rule = models.fit_width_rule(width, excitatory)
    assert narrow.max() < rule.threshold_ms < broad.min()
    assert rule.threshold_ms == pytest.approx((narrow.max() + broad.min()) / 2)
    assert np.array_equal(rule.predict(width), excitatory)
    # a different training set gives a different rule: nothing but the arguments is used
    other = models.fit_width_rule(width * 2, excitatory)
    assert other.threshold_ms == pytest.approx(2 * rule.threshold_ms)
    # balanced accuracy: a few broad inhibitory outliers do not move the threshold into the E bulk
    rule2 = models.fit_width_rule(np.r_[width, [0.9] * 5], np.r_[excitatory, np.zeros(5, bool)])
    assert narrow.max() < rule2.threshold_ms < broad.min()
    with pytest.raises(ValueError, match="both classes"):
        models.fit_width_rule(narrow, np.zeros(200, bool))


def tiny_table() -> pd.DataFrame:
    amp, width = feature_columns(100)
    rows = pd.DataFrame({"cell": ["c1", "c2", "c3", "c4", "c5"], "mtype": ["UTPC", "BP", "XYZ", "BP", "MC"],
                         "ei": ["E", "I", "I", "I", "I"]})
    feats = pd.DataFrame(np.arange(5 * 200, dtype=np.float32).reshape(5, 200), columns=width + amp)
    return pd.concat([rows, feats], axis=1)


def test_task_labels_and_feature_matrix():
    table = tiny_table()
    labels, classes = models.task_labels(table, "binary")
    assert classes == ["E", "I"] and labels.tolist() == [0, 1, 1, 1, 1]
    labels, classes = models.task_labels(table, "mtype")
    assert classes == ["BP", "MC", "UTPC", "XYZ"]
    assert labels.tolist() == [2, 0, 3, 0, 1]
    with pytest.raises(ValueError, match="'shape'"):
        models.task_labels(table, "shape")
    with pytest.raises(ValueError, match="ei"):
        models.task_labels(table.assign(ei=["E", "X", "I", "I", "I"]), "binary")
    matrix = models.feature_matrix(table)
    assert matrix.shape == (5, 200) and matrix.dtype == np.float32
    # amplitude columns first, whatever the table's column order
    np.testing.assert_array_equal(matrix[:, :100], table[feature_columns(100)[0]].to_numpy(np.float32))
    assert models.PAPER_MTYPES[0] == "BP" and models.PAPER_MTYPES[-1] == "UTPC" and len(models.PAPER_MTYPES) == 13


def test_lightgbm_trains_in_a_process_that_also_loaded_neuron():
    """NEURON imported before LightGBM makes LightGBM segfault; ``import eap_assets`` fixes the order."""
    import subprocess
    import sys

    script = ("import eap_assets, neuron, numpy as np\n"
              "from eap_assets.core import models\n"
              "x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)\n"
              "y = (x[:, 0] > 0).astype(int)\n"
              "models.train_lgbm(x[:200], y[:200], x[200:], y[200:], 2, models.LGBMConfig(n_estimators=20), seed=0)\n"
              "print('trained')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
