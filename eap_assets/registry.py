"""MLflow: tracking location, logging and registering trained classifiers, the promotion gate,
and classifying new EAP templates with a registered model. No Dagster here: the assets in
``eap_assets.defs.training`` and the ``eap-assets classify`` command both use these functions.

Kinds (:data:`KINDS`, from :data:`eap_assets.core.models.KINDS`): ``cnn`` (the paper CNN, MLflow's
keras flavour), ``lgbm`` (LightGBM, lightgbm flavour) and ``waveform`` (:mod:`eap_assets.core.waveform`:
PCA of the raw EAP waveforms + amplitude/width features -> LightGBM; a cloudpickled
:class:`~eap_assets.core.waveform.WaveformModel` in MLflow's sklearn flavour, loaded with
``mlflow.sklearn.load_model``; its class is imported from the installed ``eap_assets`` package,
which its requirements state).

Registered models are named ``eap_<kind>_<rotation>_<task>`` (e.g. ``eap_cnn_3drot_mtype``). Each
version carries tags: ``test_accuracy``, ``classes`` (JSON list, output order), ``input``
(``images`` (N, rows, cols, 2), ``features`` (N, 2 x contacts) or ``eaps``: raw EAPs (N, contacts,
samples) µV), ``probe``, ``dt_ms``, ``n_samples``, ``rotation``, ``task``, ``kind``. Alias
``champion`` marks the version to use; a new version takes it only if its test accuracy is at least
the champion's, otherwise it gets ``challenger``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from eap_assets.core import features
from eap_assets.core.models import KINDS
from eap_assets.core.probe import get_probe
from eap_assets.core.storage import file_lock

if TYPE_CHECKING:
    from eap_assets.core.noise import NoiseConfig
    from eap_assets.core.pool import EAPPool

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Model input of each kind: the paper's images, the flat 200-feature vector, or raw EAPs (N, contacts, samples) µV.
INPUTS = {"cnn": "images", "lgbm": "features", "waveform": "eaps"}
#: Packages a logged model of each kind needs (pinned to the installed versions).  The waveform
#: model is a cloudpickled :class:`~eap_assets.core.waveform.WaveformModel` pickled *by reference*:
#: loading it imports ``eap_assets.core.waveform``, so the package itself is a requirement (rather
#: than ``code_paths``: a logged copy of the package would be put first on ``sys.path`` by
#: ``load_model`` and shadow the installed one in the loading process).
REQUIREMENTS = {"cnn": ("tensorflow-cpu", "keras", "numpy"), "lgbm": ("lightgbm", "scikit-learn", "numpy"),
                "waveform": ("eap_assets", "lightgbm", "scikit-learn", "numpy", "cloudpickle")}
#: MLflow flavour (``mlflow.<flavour>``) each kind is logged and loaded with.
FLAVOURS = {"cnn": "keras", "lgbm": "lightgbm", "waveform": "sklearn"}


class RegistryError(RuntimeError):
    """A registered model or alias is missing, or a request does not match the model."""


def model_name(kind: str, rotation: str, task: str) -> str:
    """Registered-model name of a kind x rotation x task."""
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(KINDS)}")
    return f"eap_{kind}_{rotation}_{task}"


def default_tracking_uri(data_dir: str | Path) -> str:
    """A sqlite tracking + registry store under the data directory."""
    return f"sqlite:///{(Path(data_dir).resolve() / 'mlflow' / 'mlflow.db')}"


def configure(tracking_uri: str, experiment: str, artifact_root: str | Path | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (also the registry) and return the experiment id (created if needed).

    ``artifact_root`` is used for a new experiment (default: ``artifacts/`` beside a sqlite file).
    """
    import mlflow

    lock = contextlib.nullcontext()
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        if artifact_root is None:
            artifact_root = db.parent / "artifacts"
        # parallel runs on a new store would race creating its schema: one process at a time here
        lock = file_lock(db.parent / "configure")
    with lock:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        location = Path(artifact_root).resolve().as_uri() if artifact_root and "://" not in str(artifact_root) \
            else artifact_root
        return mlflow.create_experiment(experiment, artifact_location=location)


def model_input(kind: str, table: pd.DataFrame, probe: str) -> np.ndarray:
    """The input array a model kind takes, from a feature table (``cnn``: images, ``lgbm``: features).

    Raises
    ------
    ValueError
        For a kind whose input is raw EAPs (``waveform``): feature tables hold no waveforms; use
        :func:`eap_input` with an :class:`~eap_assets.core.pool.EAPPool` of the table's cells.
    """
    if kind not in INPUTS:
        raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(KINDS)}")
    if INPUTS[kind] == "eaps":
        raise ValueError(f"model kind {kind!r} takes raw EAPs (N, contacts, samples) in µV, and feature tables hold "
                         "no waveforms (only the per-contact amplitude / width features): read the EAPs of the "
                         "table's rows with registry.eap_input(pool, table) from an EAPPool of its cells' EAP datasets")
    if INPUTS[kind] == "images":
        return features.images_from_table(table, probe)
    amp, width = features.feature_columns(get_probe(probe).n_contacts)
    return table[amp + width].to_numpy(np.float32)


def eap_input(pool: "EAPPool", table: pd.DataFrame, noise: "NoiseConfig | None" = None) -> np.ndarray:
    """The raw EAPs (N, contacts, samples), float32 µV, of a feature table's rows: the ``waveform`` kind's input.

    Parameters
    ----------
    pool : EAPPool
        The EAP datasets of the table's cells (one rotation); rows are matched on ``cell`` and ``eap_id``.
    table : DataFrame
        Feature / training table rows (columns ``cell``, ``eap_id``), in the order wanted.
    noise : NoiseConfig, optional
        Recording noise of the feature tables (``SimulationSettings.noise_config()``); when enabled,
        each EAP gets the noise its feature-table row was computed with (same seed, cell, rotation,
        EAP id), so the waveform model sees the same recordings as the other kinds.

    Raises
    ------
    ValueError
        For a row whose (cell, EAP id) is not in the pool.
    """
    rows = pool.rows_of(table["cell"].to_numpy(), table["eap_id"].to_numpy())
    if noise is not None and noise.enabled:
        return pool.gather(rows, noise, noise.rms_uv)
    return pool.gather(rows)


def log_model(model, kind: str, name: str, example: np.ndarray, tags: dict[str, object]):
    """Log ``model`` in the active run with its flavour and signature and register it as ``name``.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion
    """
    import mlflow
    from mlflow.models import infer_signature

    signature = infer_signature(example, _predict_proba(model, kind, example))
    str_tags = {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in tags.items()}
    flavour = getattr(mlflow, FLAVOURS[kind])
    # the pinned versions, stated: MLflow would otherwise infer them by re-importing the model (slow)
    requirements = [f"{p}=={package_version(p)}" for p in REQUIREMENTS[kind]]
    # sklearn flavour: cloudpickle (skops refuses custom classes; the class is imported by reference)
    options = {"serialization_format": "cloudpickle"} if FLAVOURS[kind] == "sklearn" else {}
    info = flavour.log_model(model, name="model", signature=signature, registered_model_name=name, tags=str_tags,
                             pip_requirements=requirements, **options)
    client = mlflow.MlflowClient()
    version = client.get_model_version(name, str(info.registered_model_version))
    for key, value in str_tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    return client.get_model_version(name, version.version)


def promote(name: str, version: str | int, test_accuracy: float) -> str:
    """The promotion gate: ``champion`` moves to ``version`` only if its test accuracy is at least
    the current champion's; otherwise ``version`` becomes ``challenger``. Returns the alias given.

    The decision and its reason are stored as the version's ``promotion`` tag (shown in the MLflow
    UI); a refused promotion is also logged as a warning naming both versions and accuracies.
    """
    import mlflow

    client = mlflow.MlflowClient()
    version = str(version)
    client.set_model_version_tag(name, version, "test_accuracy", repr(float(test_accuracy)))
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and str(current.version) != version:
        best = float(current.tags.get("test_accuracy", "-inf"))
        if float(test_accuracy) < best:
            reason = (f"{name} v{version} not promoted to {CHAMPION}: its test accuracy {float(test_accuracy):.4f} is "
                      f"below {CHAMPION} v{current.version}'s {best:.4f}; aliased {CHALLENGER}, {CHAMPION} unchanged")
            client.set_registered_model_alias(name, CHALLENGER, version)
            client.set_model_version_tag(name, version, "promotion", reason)
            logging.getLogger(__name__).warning(reason)
            return CHALLENGER
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", f"{name} v{version} is {CHAMPION} (test accuracy "
                                                             f"{float(test_accuracy):.4f})")
    return CHAMPION


@dataclass
class RegisteredModel:
    """A loaded registered model version and what it expects."""

    name: str
    version: str
    kind: str
    model: object
    classes: list[str]
    probe: str
    dt_ms: float
    n_samples: int
    tags: dict[str, str]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _predict_proba(self.model, self.kind, x)


def load_registered(name: str, alias: str = CHAMPION, version: str | None = None) -> RegisteredModel:
    """Load ``models:/<name>@<alias>`` (or a given version) with its native flavour.

    Raises
    ------
    RegistryError
        If the model, alias or version does not exist (naming them and the known ones).
    """
    import mlflow

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        what = f"version {version!r}" if version else f"alias {alias!r}"
        raise RegistryError(f"registered model {name!r} has no {what} (registered models: {', '.join(known) or 'none'})"
                            ) from exc
    kind = mv.tags.get("kind", "cnn")
    uri = f"models:/{name}/{mv.version}"
    if kind not in FLAVOURS:
        raise RegistryError(f"{name} v{mv.version} has kind {kind!r}; this code knows {', '.join(KINDS)}")
    model = getattr(mlflow, FLAVOURS[kind]).load_model(uri)
    return RegisteredModel(name=name, version=str(mv.version), kind=kind, model=model,
                           classes=json.loads(mv.tags["classes"]), probe=mv.tags["probe"],
                           dt_ms=float(mv.tags["dt_ms"]), n_samples=int(mv.tags["n_samples"]), tags=dict(mv.tags))


def _predict_proba(model, kind: str, x: np.ndarray) -> np.ndarray:
    """Probabilities exactly as at training time (one home: ``models.TrainedModel.predict_proba``)."""
    from eap_assets.core.models import TrainedModel

    return TrainedModel(model=model, history=pd.DataFrame(), best_step=0, steps_run=0, seconds=0.0).predict_proba(x)


def read_templates(path: str | Path, probe: str | None = None, dt_ms: float | None = None
                   ) -> tuple[np.ndarray, str, float]:
    """EAP templates to classify: ``.npy`` (n, contacts, samples) with ``probe`` and ``dt_ms`` given,
    or a MEArec templates ``.h5`` (probe name and sampling step read from the file).

    Returns
    -------
    (templates, probe, dt_ms)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"templates file {path} does not exist")
    if path.suffix == ".npy":
        if probe is None or dt_ms is None:
            raise ValueError(f"{path}: a .npy file needs --probe and --dt-ms (sampling step in ms)")
        return np.load(path), probe, float(dt_ms)
    if path.suffix in (".h5", ".hdf5"):
        import MEArec

        gen = MEArec.load_templates(str(path), return_h5_objects=False, verbose=False)
        info = gen.info
        file_probe = info["electrodes"]["electrode_name"]
        file_dt = float(info["params"]["dt"])
        data = np.asarray(gen.templates)
        while data.ndim > 3:  # drifting / jittered templates: use the first position / jitter
            data = data[:, 0]
        return data, probe or file_probe, float(dt_ms) if dt_ms is not None else file_dt
    raise ValueError(f"{path}: templates must be a .npy or a MEArec .h5 file, got {path.suffix!r}")


def classify(templates: np.ndarray, probe: str, dt_ms: float, model: RegisteredModel) -> pd.DataFrame:
    """Predicted type and class probabilities of each template, with the model version used.

    The ``cnn`` and ``lgbm`` kinds take the amplitude/width features computed here from the
    templates; a ``waveform`` model takes the raw templates themselves (it computes its features).

    Parameters
    ----------
    templates : ndarray, shape (n, contacts, samples)
        Extracellular waveforms in µV, one per unit.
    probe : str
        MEAutility name of the probe they were recorded with (must be the model's).
    dt_ms : float
        Sampling step in ms (must be the model's).
    model : RegisteredModel

    Raises
    ------
    ValueError
        Wrong shape, another probe than the model's, another sampling step or window length.
    """
    templates = np.asarray(templates, dtype=np.float64)
    n_contacts = get_probe(probe).n_contacts  # ProbeError for an unknown probe
    if templates.ndim != 3 or not len(templates):
        raise ValueError(f"templates must have shape (n_units, contacts, samples), n_units >= 1; got {templates.shape}")
    if templates.shape[1] != n_contacts:
        raise ValueError(f"templates have {templates.shape[1]} contacts but probe {probe!r} has {n_contacts}")
    if probe != model.probe:
        raise ValueError(f"model {model.name} v{model.version} was trained on probe {model.probe!r} "
                         f"({get_probe(model.probe).n_contacts} contacts), not {probe!r} ({n_contacts} contacts)")
    if not np.isclose(dt_ms, model.dt_ms, rtol=1e-6):
        raise ValueError(f"sampling step {dt_ms} ms ({1 / dt_ms:.1f} kHz) does not match the model's "
                         f"{model.dt_ms} ms ({1 / model.dt_ms:.1f} kHz): resample the templates first")
    if templates.shape[2] != model.n_samples:
        raise ValueError(f"templates have {templates.shape[2]} samples per waveform; the model expects "
                         f"{model.n_samples} ({model.n_samples * model.dt_ms:g} ms)")
    if INPUTS.get(model.kind) == "eaps":
        x = _waveform_templates(templates, dt_ms, model)
    elif model.kind == "cnn":
        x = features.feature_images(templates, dt_ms, probe)
    else:
        amplitude, width = features.amplitude_width(templates, dt_ms)
        x = np.concatenate([amplitude, width], axis=1).astype(np.float32)
    proba = model.predict_proba(x)
    frame = pd.DataFrame({"unit": np.arange(len(templates)),
                          "predicted": np.asarray(model.classes)[proba.argmax(axis=1)],
                          "probability": proba.max(axis=1)})
    for i, label in enumerate(model.classes):
        frame[f"p_{label}"] = proba[:, i]
    frame["model"] = model.name
    frame["version"] = model.version
    return frame


def _waveform_templates(templates: np.ndarray, dt_ms: float, model: RegisteredModel) -> np.ndarray:
    """Templates as the raw-EAP input of a waveform model (float32), checked against what the model
    itself stores (contacts, samples, sampling step): ValueError naming the mismatch."""
    fitted = model.model
    expected = (getattr(fitted, "n_contacts", templates.shape[1]), getattr(fitted, "n_samples", templates.shape[2]))
    if templates.shape[1:] != expected:
        raise ValueError(f"templates have shape (n_units, {templates.shape[1]} contacts, {templates.shape[2]} "
                         f"samples); the waveform model {model.name} v{model.version} takes raw EAPs of {expected[0]} contacts "
                         f"x {expected[1]} samples")
    fitted_dt = getattr(fitted, "dt", None)
    if fitted_dt is not None and not np.isclose(dt_ms, fitted_dt, rtol=1e-6):
        raise ValueError(f"sampling step {dt_ms} ms does not match the {fitted_dt} ms the waveform model "
                         f"{model.name} v{model.version} was fitted at: resample the templates first")
    if not np.all(np.isfinite(templates)):
        raise ValueError("templates contain NaN or inf")
    return templates.astype(np.float32)
