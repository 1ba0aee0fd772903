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



# --- the waveform_model asset: trained, registered and evaluated like the other kinds -----------

#: Tiny training settings: a short CNN, few LightGBM rounds, 8 components fitted on at most 20 EAPs.
WAVEFORM_TRAINING = {"cnn_steps": 20, "cnn_batch_size": 16, "cnn_eval_every": 10, "lgbm_n_estimators": 40,
                     "waveform_components": 8, "waveform_max_fit_rows": 20}
ROTATION = "norot"


@pytest.fixture(scope="module")
def materialised(tmp_path_factory):
    """Cells -> EAPs -> training table -> every model kind + evaluation for 2 cells x norot x 30 EAPs,
    through a fresh Dagster instance (``materialize_graph``, as ``make run``)."""
    import os

    from eap_assets.defs.resources import SimulationSettings
    from eap_assets.defs.training import TrainingSettings
    from eap_assets.run import materialize_graph

    from .test_defs import CELLS

    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster_home"))
    try:
        settings = SimulationSettings(data_dir=str(tmp_path_factory.mktemp("data")), preset="quick", n_eaps=30)
        training = TrainingSettings(**WAVEFORM_TRAINING)
        report = materialize_graph(settings, list(CELLS), [ROTATION], stages_=("cells", "eaps", "training", "models"),
                                   workers=2, log=lambda m: None, training=training)
        assert {r.status for r in report.results} == {"done"}, [r.error for r in report.results if r.error]
        yield settings, training
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old


def _training_table(settings):
    import pandas as pd

    from eap_assets.defs.io import stored_parquet_key

    path = settings.data_path / "training_table" / f"{ROTATION}.parquet"
    return pd.read_parquet(path), stored_parquet_key(path)


def _champion(settings, task: str):
    from eap_assets import registry

    registry.configure(registry.default_tracking_uri(settings.data_path), "eap_assets")
    return registry.load_registered(registry.model_name("waveform", ROTATION, task))


def test_waveform_model_asset_is_registered_and_evaluated(materialised):
    import json

    import dagster as dg

    from eap_assets.defs.training import model_key

    from .test_defs import _materializations

    settings, training = materialised
    instance = dg.DagsterInstance.get()
    latest = _materializations(instance, "waveform_model")
    assert set(latest) == {f"{ROTATION}|binary", f"{ROTATION}|mtype"}
    table, table_key = _training_table(settings)
    for task in ("binary", "mtype"):
        md = {k: v.value for k, v in latest[f"{ROTATION}|{task}"].asset_materialization.metadata.items()}
        assert md["registered model"] == f"paper_waveform_SqMEA-10-15_{ROTATION}_{task}" and md["alias"] == "champion"
        assert md["key"] == model_key("waveform", table_key, training) and md["components"] == 8
        assert 0 <= md["test accuracy"] <= 1 and md["steps run"] >= 1 and "ms per round" in md
        loaded = _champion(settings, task)
        assert loaded.kind == "waveform" and loaded.tags["input"] == "eaps" and loaded.version == str(md["version"])
        assert isinstance(loaded.model, waveform.WaveformModel) and loaded.model.config == training.waveform_config()
        assert loaded.model.dt == settings.stimulus().dt and (loaded.model.n_contacts, loaded.model.n_samples) == (
            100, settings.stimulus().n_samples)
        record = json.loads((settings.data_path / "evaluation" / ROTATION / f"{task}.json").read_text())
        assert set(record["results"]) >= {"cnn", "lgbm", "waveform"}
        assert record["versions"]["waveform"] == loaded.version and record["train_seconds"]["waveform"] >= 0
        assert record["results"]["waveform"]["accuracy"] == pytest.approx(100 * float(loaded.tags["test_accuracy"]))
        assert record["results"]["waveform"]["n"] == int((table["split"] == "test").sum())
    evaluation_md = _materializations(instance, "evaluation")[f"{ROTATION}|binary"].asset_materialization.metadata
    assert "waveform accuracy" in evaluation_md


def test_asset_model_is_train_waveform_on_the_same_rows_reading_one_cell_at_a_time(materialised, monkeypatch):
    """Re-fit in-process as the asset does: the largest raw-EAP array ever read is one cell's rows or the
    PCA's subsample (max_fit_rows), and the model is ``train_waveform``'s on the gathered arrays."""
    from eap_assets import registry
    from eap_assets.core.pool import EAPPool
    from eap_assets.defs import training as training_defs

    settings, training = materialised
    table, _ = _training_table(settings)
    y, classes = models.task_labels(table, "binary")
    split = table["split"].to_numpy()
    train, val = split == "train", split == "validation"
    inputs = training_defs.ModelInputs("waveform", settings, ROTATION, table)
    assert len(inputs.pool) == 60 and inputs.pool.shape == (100, settings.stimulus().n_samples)
    seed = training_defs._seed(settings, "waveform", ROTATION, "binary")
    config = training.waveform_config()
    reads = []
    original = EAPPool.map

    def counting(self, rows, fn, *args, **kwargs):
        reads.append(len(rows))
        return original(self, rows, lambda x: (reads.append(-len(x)), fn(x))[1], *args, **kwargs)

    monkeypatch.setattr(EAPPool, "map", counting)
    fitted = training_defs._fit_waveform(inputs, y, train, val, 2, config, seed, classes, log=print)
    monkeypatch.undo()
    per_cell = int(table.loc[train].groupby("cell").size().max())
    assert reads[0] == config.max_fit_rows < int(train.sum())  # the PCA's subsample: 20 of 48 training EAPs
    assert max(-r for r in reads if r < 0) <= max(config.max_fit_rows, per_cell)  # fn sees one cell at a time
    # the same model as train_waveform on the whole arrays in memory
    x = registry.eap_input(inputs.pool, table)
    assert x.shape == (60, 100, settings.stimulus().n_samples) and x.dtype == np.float32
    reference = waveform.train_waveform(x[train], y[train], x[val], y[val], 2, config, seed, classes,
                                        dt=settings.stimulus().dt)
    np.testing.assert_array_equal(fitted.model.components, reference.model.components)
    np.testing.assert_allclose(fitted.predict_proba(x), reference.predict_proba(x), rtol=1e-6, atol=1e-9)
    # and the registered champion is that model (fitted in a worker process: BLAS may round the
    # randomized SVD differently in the last float32 bits)
    loaded = _champion(settings, "binary")
    np.testing.assert_allclose(loaded.model.components, fitted.model.components, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loaded.predict_proba(x), fitted.predict_proba(x), rtol=0, atol=1e-4)


def test_registered_waveform_model_loads_in_a_fresh_process(materialised, tmp_path):
    import subprocess
    import sys

    from eap_assets import registry
    from eap_assets.defs import training as training_defs

    settings, _ = materialised
    table, _ = _training_table(settings)
    loaded = _champion(settings, "mtype")
    x = registry.eap_input(training_defs.eap_pool(settings, ROTATION, table), table)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, mlflow, mlflow.sklearn, numpy as np\n"
        "mlflow.set_tracking_uri(sys.argv[1]); mlflow.set_registry_uri(sys.argv[1])\n"
        "model = mlflow.sklearn.load_model(sys.argv[2])\n"
        "np.save(sys.argv[4], model.predict_proba(np.load(sys.argv[3])))\n"
        "print(type(model).__module__, type(model).__name__)\n")
    done = subprocess.run([sys.executable, "-c", script, registry.default_tracking_uri(settings.data_path),
                           f"models:/{loaded.name}/{loaded.version}", str(tmp_path / "x.npy"), str(tmp_path / "p.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["eap_assets.core.waveform", "WaveformModel"]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), loaded.predict_proba(x))


def test_classify_raw_templates_with_a_waveform_model(materialised, tmp_path):
    import pandas as pd

    from eap_assets import cli, registry
    from eap_assets.core.recording import InputError
    from eap_assets.defs import training as training_defs
    from eap_assets.serving import classify

    settings, _ = materialised
    table, _ = _training_table(settings)
    test_rows = table[table["split"] == "test"]
    champion = _champion(settings, "binary")
    templates = registry.eap_input(training_defs.eap_pool(settings, ROTATION, table), test_rows)
    proba = champion.predict_proba(templates)
    np.save(tmp_path / "units.npy", templates)
    out = tmp_path / "p.csv"
    assert cli.main(["classify", str(tmp_path / "units.npy"), "--model", champion.name, "--probe", settings.probe,
                     "--dt-ms", str(settings.stimulus().dt), "--unfiltered", "--data-dir", str(settings.data_path),
                     "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == len(test_rows)
    assert list(frame["binary_predicted"]) == list(np.asarray(["E", "I"])[proba.argmax(1)])
    np.testing.assert_allclose(frame[["binary_p_E", "binary_p_I"]].to_numpy(), proba, rtol=1e-6)
    accuracy = float((frame["binary_predicted"].to_numpy() == test_rows["ei"].to_numpy()).mean())
    assert accuracy == float(champion.tags["test_accuracy"])  # the test set, classified as templates
    # the model's own stored input shape is what counts: a shorter window is refused, naming both
    np.save(tmp_path / "short.npy", templates[:, :, :200])
    with pytest.raises(InputError, match="waveforms have 200 samples at 32000 Hz; the model takes 224"):
        classify(tmp_path / "short.npy", model=champion.name, probe=settings.probe, fs_hz=32000, filtered=False,
                 data_dir=settings.data_path)
    bad = templates.copy()
    bad[0, 3, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    frame = classify(tmp_path / "bad.npy", model=champion.name, probe=settings.probe, fs_hz=32000, filtered=False,
                     data_dir=settings.data_path)
    assert frame.loc[0, "error"] == "its template contains NaN or inf" and frame["binary_predicted"].iloc[1:].notna().all()


def test_feature_tables_hold_no_waveforms(materialised):
    from eap_assets import registry

    settings, _ = materialised
    table, _ = _training_table(settings)
    with pytest.raises(ValueError, match=r"model kind 'waveform' takes raw EAPs \(N, contacts, samples\) in µV, and "
                                         r"feature tables hold no waveforms .*registry.eap_input\(pool, table\)"):
        registry.model_input("waveform", table, settings.probe)
    with pytest.raises(ValueError, match="model kind 'svm' unknown; choose one of cnn, lgbm, waveform"):
        registry.model_input("svm", table, settings.probe)
    assert registry.KINDS is models.KINDS and set(registry.INPUTS) == set(registry.REQUIREMENTS) == set(models.KINDS)


def test_waveform_inputs_carry_the_feature_tables_noise(materialised):
    """With recording noise on, the waveform model reads each EAP with the noise its feature-table row has."""
    from eap_assets.core import noise, stages
    from eap_assets.defs import training as training_defs

    from .test_defs import SMALL

    from eap_assets.defs.resources import SimulationSettings

    settings, _ = materialised
    noisy = SimulationSettings(**{**{f: getattr(settings, f) for f in SimulationSettings.model_fields},
                                  "noise_rms_uv": 7.0})
    table, _ = _training_table(settings)
    rows = table[table["cell"] == SMALL]
    x = training_defs.ModelInputs("waveform", noisy, ROTATION, rows).map(slice(None))
    dataset = stages.load_current_eaps(settings.cell_model(SMALL), settings.eap_config(ROTATION), settings.stimulus(),
                                       settings.data_path)
    expected = noise.noisy_dataset(dataset, noisy.noise_config()).eaps[rows["eap_id"].to_numpy()]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-3)
    assert not np.allclose(x, np.asarray(dataset.eaps)[rows["eap_id"].to_numpy()], atol=1.0)
