"""The waveform model (PCA of the full EAPs + amplitude/width features -> LightGBM) on real EAPs."""

from __future__ import annotations

import numpy as np
import pytest

from eap_assets.core import models, waveform
from eap_assets.core.eaps import EAPConfig, simulate_eap_dataset
from eap_assets.core.features import amplitude_width

FAST = waveform.WaveformConfig(n_components=8, lgbm=models.LGBMConfig(n_estimators=60, learning_rate=0.2,
                                                                      early_stopping_rounds=10))


@pytest.fixture(scope="module")
def data(bp_templates, ttpc1_templates):
    """Real EAPs of a BP (I, label 1) and a TTPC1 (E, label 0) cell, split 60 / 20 / 20 per cell."""
    parts = {"train": [], "val": [], "test": []}
    for label, (templates, mtype) in enumerate(((ttpc1_templates, "TTPC1"), (bp_templates, "BP"))):
        ds = simulate_eap_dataset(templates, EAPConfig(n_eaps=50, rotation="3drot", seed=5), mtype=mtype)
        eaps = np.asarray(ds.eaps, dtype=np.float32)
        for name, rows in (("train", slice(0, 30)), ("val", slice(30, 40)), ("test", slice(40, 50))):
            parts[name].append((eaps[rows], np.full(len(eaps[rows]), label, np.int64)))
    out = {k: (np.concatenate([p[0] for p in v]), np.concatenate([p[1] for p in v])) for k, v in parts.items()}
    out["dt"] = ds.dt
    return out


@pytest.fixture(scope="module")
def trained(data):
    return waveform.train_waveform(*data["train"], *data["val"], 2, FAST, seed=3, classes=["E", "I"], dt=data["dt"])


def test_trains_and_predicts_real_eaps(trained, data):
    x_test, y_test = data["test"]
    assert isinstance(trained, models.TrainedModel) and trained.kind == "waveform"
    proba = trained.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (trained.predict(x_test) == y_test).mean() >= 0.9  # BP vs TTPC1 waveforms differ a lot
    assert trained.classes == ["E", "I"] == trained.model.classes
    assert list(trained.history.columns) == ["iteration", "val_binary_logloss"]
    assert 1 <= trained.best_step <= trained.steps_run and trained.seconds > 0
    # the model's first 200 inputs are exactly the feature tables' amplitude / width features
    amplitude, width = amplitude_width(x_test, data["dt"])
    features = trained.model.features(x_test)
    assert features.shape == (len(x_test), 200 + FAST.n_components)
    np.testing.assert_array_equal(features[:, :200], np.concatenate([amplitude, width], axis=1))


def test_same_seed_same_model(trained, data):
    again = waveform.train_waveform(*data["train"], *data["val"], 2, FAST, seed=3, classes=["E", "I"], dt=data["dt"])
    np.testing.assert_array_equal(again.model.components, trained.model.components)
    np.testing.assert_array_equal(again.predict_proba(data["test"][0]), trained.predict_proba(data["test"][0]))


def test_projection_is_fitted_on_training_rows_only(trained, data):
    x_val, y_val = data["val"]
    other_val = x_val[::-1] * 1.7 + 3.0  # other validation waveforms (labels kept): the basis must not move
    again = waveform.train_waveform(*data["train"], other_val, y_val, 2, FAST, seed=3, dt=data["dt"])
    np.testing.assert_array_equal(again.model.mean, trained.model.mean)
    np.testing.assert_array_equal(again.model.components, trained.model.components)
    # and it is the PCA of the (decimated, flattened) training waveforms
    flat = data["train"][0][:, :, ::FAST.decimate].reshape(len(data["train"][0]), -1)
    np.testing.assert_allclose(trained.model.mean, flat.mean(axis=0), rtol=1e-4, atol=1e-3)
    # components are orthonormal
    gram = trained.model.components @ trained.model.components.T
    np.testing.assert_allclose(gram, np.eye(FAST.n_components), atol=1e-4)


def test_wrong_shapes_and_values_are_refused(trained, data):
    x_train, y_train = data["train"]
    x_val, y_val = data["val"]
    model = trained.model
    with pytest.raises(ValueError, match=r"shape \(N, 100 contacts, 224 samples\)"):
        model.predict_proba(x_train[:, :50])
    with pytest.raises(ValueError, match="224 samples"):
        model.predict_proba(x_train[:, :, :200])
    with pytest.raises(ValueError, match="shape"):
        model.predict_proba(x_train[0])
    bad = x_train[:3].copy()
    bad[1, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in EAP rows \[1\]"):
        model.predict_proba(bad)
    with pytest.raises(ValueError, match="x_train must be raw EAPs"):
        waveform.train_waveform(x_train.reshape(len(x_train), -1), y_train, x_val, y_val, 2, FAST, seed=0)
    with pytest.raises(ValueError, match="contacts, samples must match"):
        waveform.train_waveform(x_train, y_train, x_val[:, :, :100], y_val, 2, FAST, seed=0)
    with pytest.raises(ValueError, match="y_train"):
        waveform.train_waveform(x_train, y_train[:-1], x_val, y_val, 2, FAST, seed=0)
    with pytest.raises(ValueError, match="n_components=500 exceeds"):
        waveform.train_waveform(x_train, y_train, x_val, y_val, 2,
                                waveform.WaveformConfig(n_components=500, lgbm=FAST.lgbm), seed=0)
    with pytest.raises(ValueError, match="window"):
        waveform.train_waveform(x_train, y_train, x_val, y_val, 2,
                                waveform.WaveformConfig(window=(0, 300), lgbm=FAST.lgbm), seed=0)


def test_config_validation():
    with pytest.raises(ValueError, match="n_components"):
        waveform.WaveformConfig(n_components=0)
    with pytest.raises(ValueError, match="decimate"):
        waveform.WaveformConfig(decimate=0)
    with pytest.raises(ValueError, match="window"):
        waveform.WaveformConfig(window=(50, 10))
    with pytest.raises(ValueError, match="normalise"):
        waveform.WaveformConfig(normalise="zscore")
    with pytest.raises(ValueError, match="lgbm"):
        waveform.WaveformConfig(lgbm={"n_estimators": 10})
    assert waveform.WaveformConfig(window=(10, 20), decimate=3).samples(224) == slice(10, 20, 3)


def test_window_and_peak_normalisation(data):
    config = waveform.WaveformConfig(n_components=5, window=(40, 160), decimate=4, normalise="peak", lgbm=FAST.lgbm)
    fitted = waveform.train_waveform(*data["train"], *data["val"], 2, config, seed=1, dt=data["dt"])
    assert fitted.model.components.shape == (5, 100 * 30)
    x_test = data["test"][0]
    # peak normalisation: the projection ignores the scale of an EAP
    np.testing.assert_allclose(fitted.model.features(x_test * 3.0)[:, 200:], fitted.model.features(x_test)[:, 200:],
                               rtol=1e-4, atol=1e-4)


def test_mlflow_round_trip_gives_identical_probabilities(trained, data, tmp_path):
    import mlflow

    from eap_assets import registry

    experiment = registry.configure(registry.default_tracking_uri(tmp_path), "waveform")
    x_test = data["test"][0]
    with mlflow.start_run(experiment_id=experiment):
        # cloudpickle: the class is imported from the installed package at load time (skops refuses custom types)
        info = mlflow.sklearn.log_model(trained.model, name="model", registered_model_name="eap_waveform_t_binary",
                                        serialization_format="cloudpickle",
                                        pip_requirements=["lightgbm", "scikit-learn", "numpy"])
    loaded = mlflow.sklearn.load_model(f"models:/eap_waveform_t_binary/{info.registered_model_version}")
    assert isinstance(loaded, waveform.WaveformModel)
    np.testing.assert_array_equal(loaded.predict_proba(x_test), trained.predict_proba(x_test))
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)  # the generic flavour predicts labels
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(x_test)), trained.predict(x_test))
