"""MLflow: tracking location, logging and registering trained classifiers, the promotion gate, and
loading what is registered. No Dagster here: the assets in ``eap_assets.defs`` and the
``eap-assets classify`` command (:mod:`eap_assets.serving`) both use these functions.

Registered models (every name says its probe):

* ``paper_<kind>_<probe>_<rotation>_<task>`` -- the paper reproduction: trained on noise-free,
  unfiltered EAPs in an infinite medium (``cnn_model``, ``lgbm_model``, ``waveform_model``);
* ``recording_<kind>_<probe>_<rotation>_<task>`` -- the same kinds trained for real recordings
  (MEA-plane medium, band-passed, template noise, re-aligned; ``recording_<kind>_model``);
* ``unit_classifier_<probe>_<rotation>_<task>`` -- what ``eap-assets classify`` uses: the
  recording model of the kind that is best on the realistic validation split, with its input
  spec, calibration (temperature, abstention threshold) and out-of-distribution reference, as an
  MLflow ``pyfunc`` (:class:`ServedClassifier`; the fitted model inside in its own flavour).

Kinds (:data:`KINDS`): ``cnn`` (the paper CNN, MLflow's keras flavour), ``lgbm`` (LightGBM,
lightgbm flavour) and ``waveform`` (:mod:`eap_assets.core.waveform`: PCA of the raw EAP waveforms +
amplitude/width features -> LightGBM; a cloudpickled :class:`~eap_assets.core.waveform.WaveformModel`
in MLflow's sklearn flavour, loaded with ``mlflow.sklearn.load_model``; its class is imported from the
installed ``eap_assets`` package, which its requirements state).

Each version carries tags: ``kind``, ``task``, ``rotation``, ``probe``, ``classes`` (JSON list, output
order), ``input_spec`` (JSON :class:`~eap_assets.core.recording.RecordingSpec`: how waveforms are mapped
onto the model's input), ``input`` (``images`` / ``features`` / ``eaps``) and the score the gate uses.
Alias ``champion`` marks the version to use; a new version takes it only if its score is at least the
champion's, otherwise it gets ``challenger``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from eap_assets.core import features
from eap_assets.core.models import KINDS, MODEL_KINDS
from eap_assets.core.probe import get_probe, is_probe_file, probe_name
from eap_assets.core.recording import RecordingSpec
from eap_assets.core.storage import file_lock

if TYPE_CHECKING:
    from eap_assets.core.noise import NoiseConfig
    from eap_assets.core.pool import EAPPool

CHAMPION = "champion"
CHALLENGER = "challenger"
# Views of :data:`eap_assets.core.models.MODEL_KINDS` by kind name (the table lives there):
#: model input, packages a logged model needs, MLflow flavour (``mlflow.<flavour>``).
INPUTS = {name: kind.model_input for name, kind in MODEL_KINDS.items()}
REQUIREMENTS = {name: kind.requirements for name, kind in MODEL_KINDS.items()}
FLAVOURS = {name: kind.mlflow_flavour for name, kind in MODEL_KINDS.items()}


class RegistryError(RuntimeError):
    """A registered model or alias is missing, or a request does not match the model."""


#: Families of per-kind models: the paper reproduction and the models trained for real recordings.
FAMILIES: tuple[str, ...] = ("paper", "recording")
#: Prefix of the served classifiers' names.
CLASSIFIER_PREFIX = "unit_classifier"
#: Kind tag of a served classifier's versions.
CLASSIFIER_KIND = "classifier"


def model_name(kind: str, rotation: str, task: str, probe: str = "SqMEA-10-15", family: str = "paper") -> str:
    """Registered-model name of a family x kind x probe x rotation x task, e.g. ``paper_cnn_SqMEA-10-15_3drot_mtype``."""
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(KINDS)}")
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} unknown; choose one of {', '.join(FAMILIES)}")
    return f"{family}_{kind}_{probe_name(probe)}_{rotation}_{task}"


def classifier_name(probe: str, rotation: str, task: str) -> str:
    """Registered name of the served classifier of a probe x rotation x task (``unit_classifier_<probe>_<rotation>_<task>``)."""
    return f"{CLASSIFIER_PREFIX}_{probe_name(probe)}_{rotation}_{task}"


#: The paper models' input: 7 ms windows around the intracellular spike at 32 kHz, unfiltered, as simulated.
def paper_spec(probe: str, medium: str = "infinite") -> RecordingSpec:
    """Input spec of the paper family: unfiltered 224-sample windows (2 ms before, 5 ms after the
    somatic spike) at 32 kHz, taken as they come (no re-alignment)."""
    return RecordingSpec(fs_hz=32000.0, band_hz=None, ms_before=2.0, ms_after=5.0, align="none", medium=medium,
                         probe=probe)


def default_tracking_uri(data_dir: str | Path) -> str:
    """A sqlite tracking + registry store under the data directory."""
    return f"sqlite:///{(Path(data_dir).resolve() / 'mlflow' / 'mlflow.db')}"


def use_store(tracking_uri: str) -> None:
    """Point MLflow's tracking and registry at ``tracking_uri`` (reading only: no experiment is created)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


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
        use_store(tracking_uri)
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


def promote(name: str, version: str | int, test_accuracy: float, metric: str = "test_accuracy") -> str:
    """The promotion gate: ``champion`` moves to ``version`` only if its score (``metric``, by default
    the test accuracy) is at least the current champion's; otherwise ``version`` becomes
    ``challenger``. Returns the alias given.

    The decision and its reason are stored as the version's ``promotion`` tag (shown in the MLflow
    UI); a refused promotion is also logged as a warning naming both versions and scores.
    """
    import mlflow

    client = mlflow.MlflowClient()
    version = str(version)
    words = metric.replace("_", " ")
    client.set_model_version_tag(name, version, metric, repr(float(test_accuracy)))
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        current = None
    if current is not None and str(current.version) != version:
        best = float(current.tags.get(metric, "-inf"))
        if float(test_accuracy) < best:
            reason = (f"{name} v{version} not promoted to {CHAMPION}: its {words} {float(test_accuracy):.4f} is "
                      f"below {CHAMPION} v{current.version}'s {best:.4f}; aliased {CHALLENGER}, {CHAMPION} unchanged")
            client.set_registered_model_alias(name, CHALLENGER, version)
            client.set_model_version_tag(name, version, "promotion", reason)
            logging.getLogger(__name__).warning(reason)
            return CHALLENGER
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "promotion", f"{name} v{version} is {CHAMPION} ({words} "
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
    spec: RecordingSpec
    tags: dict[str, str]
    alias: str | None = None

    @property
    def probe(self) -> str:
        return self.spec.probe

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return _predict_proba(self.model, self.kind, x)


def _model_version(name: str, alias: str = CHAMPION, version: str | None = None):
    """The ``ModelVersion`` of ``name`` at ``version`` or ``alias`` (RegistryError naming the known ones)."""
    import mlflow

    client = mlflow.MlflowClient()
    try:
        return client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        what = f"version {version!r}" if version else f"alias {alias!r}"
        raise RegistryError(f"registered model {name!r} has no {what} (registered models: {', '.join(known) or 'none'})"
                            ) from exc


def classifier_report(name: str, version: str) -> dict:
    """The ``unit_classifier`` report (kind, calibration, realistic test split, OOD reference) logged with a
    served classifier's version, read from the MLflow run that registered it: the figures of *that*
    version, whichever data directory or run made it (a data directory's own report may describe a
    challenger, or another directory's run may have registered the champion)."""
    import mlflow

    mv = _model_version(name, version=str(version))
    return mlflow.artifacts.load_dict(f"runs:/{mv.run_id}/unit_classifier.json")


def version_spec(tags: dict[str, str]) -> RecordingSpec:
    """The input spec a version's tags state (versions logged before specs existed: the paper's)."""
    if "input_spec" in tags:
        return RecordingSpec.from_json(tags["input_spec"])
    return paper_spec(tags.get("probe", "SqMEA-10-15"))


def load_registered(name: str, alias: str = CHAMPION, version: str | None = None) -> RegisteredModel:
    """Load a per-kind model ``models:/<name>@<alias>`` (or a given version) with its native flavour.

    Raises
    ------
    RegistryError
        If the model, alias or version does not exist (naming them and the known ones), or the
        version is a served classifier (use :func:`load_classifier`).
    """
    import mlflow

    mv = _model_version(name, alias, version)
    kind = mv.tags.get("kind", "cnn")
    if kind not in FLAVOURS:
        raise RegistryError(f"{name} v{mv.version} has kind {kind!r}; this code loads {', '.join(KINDS)} here "
                            "(served classifiers: load_classifier)")
    model = getattr(mlflow, FLAVOURS[kind]).load_model(f"models:/{name}/{mv.version}")
    return RegisteredModel(name=name, version=str(mv.version), kind=kind, model=model,
                           classes=json.loads(mv.tags["classes"]), spec=version_spec(mv.tags), tags=dict(mv.tags),
                           alias=None if version else alias)


def _predict_proba(model, kind: str, x: np.ndarray) -> np.ndarray:
    """Probabilities exactly as at training time (one home: :func:`eap_assets.core.classifier.predict_proba`)."""
    from eap_assets.core.classifier import predict_proba

    return predict_proba(model, kind, x, [])


# ------------------------------------------------------------------------------------------------
# served classifiers: a UnitClassifier as an MLflow pyfunc (eap_assets.served.ServedClassifier)


def log_classifier(classifier, name: str, example: np.ndarray, tags: dict[str, object]):
    """Log a :class:`~eap_assets.core.classifier.UnitClassifier` in the active run as a pyfunc
    (:class:`ServedClassifier`) and register it as ``name``; returns the ``ModelVersion``."""
    import tempfile

    import mlflow
    from mlflow.models import infer_signature

    from eap_assets.served import ServedClassifier

    flavour = getattr(mlflow, FLAVOURS[classifier.kind])
    with tempfile.TemporaryDirectory() as tmp:
        native = Path(tmp) / "native"
        options = {"serialization_format": "cloudpickle"} if FLAVOURS[classifier.kind] == "sklearn" else {}
        flavour.save_model(classifier.model, str(native), **options)
        serving = Path(tmp) / "serving.json"
        serving.write_text(json.dumps({"kind": classifier.kind, "task": classifier.task, "classes": classifier.classes,
                                       "spec": classifier.spec.to_json(),
                                       "calibration": classifier.calibration.to_dict(),
                                       "model_classes": classifier.model_classes, "groups": classifier.groups},
                                      default=float))
        ood = Path(tmp) / "ood.npz"
        np.savez(ood, **classifier.ood.to_arrays())
        artifacts = {"native": str(native), "serving": str(serving), "ood": str(ood)}
        if is_probe_file(classifier.spec.probe):  # the model carries its probe: serving must not need the file
            artifacts["probe"] = str(Path(tmp) / "probe" / Path(classifier.spec.probe).name)
            Path(artifacts["probe"]).parent.mkdir()
            shutil.copyfile(classifier.spec.probe, artifacts["probe"])
        signature = infer_signature(example.astype(np.float32), classifier.predict(example))
        requirements = [f"{p}=={package_version(p)}" for p in
                        sorted(set(REQUIREMENTS[classifier.kind]) | {"eap_assets", "mlflow", "pandas"})]
        str_tags = {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in tags.items()}
        info = mlflow.pyfunc.log_model(name="model", python_model=ServedClassifier(), signature=signature,
                                       artifacts=artifacts,
                                       registered_model_name=name, pip_requirements=requirements, tags=str_tags)
    client = mlflow.MlflowClient()
    version = client.get_model_version(name, str(info.registered_model_version))
    for key, value in str_tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    return client.get_model_version(name, version.version)


@dataclass
class LoadedClassifier:
    """A registered version as a :class:`~eap_assets.core.classifier.UnitClassifier`, with where it came from."""

    name: str
    version: str
    alias: str | None
    classifier: object  # UnitClassifier
    tags: dict[str, str]


def load_classifier(name: str, alias: str = CHAMPION, version: str | None = None) -> LoadedClassifier:
    """Any registered version as a classifier of units: a served classifier (pyfunc) as logged, a
    per-kind model (paper or recording family) wrapped with its input spec, no calibration
    (temperature 1, no abstention) and no out-of-distribution reference.

    Raises
    ------
    RegistryError
        Unknown model, alias or version (naming the registered models).
    """
    import mlflow

    from eap_assets.core.classifier import UnitClassifier

    mv = _model_version(name, alias, version)
    alias_given = None if version else alias
    if mv.tags.get("kind") == CLASSIFIER_KIND:
        # the requirements check (pip metadata of every package: ~1 s) is for models from elsewhere; these
        # were logged by this environment, whose versions pyproject.toml pins
        served = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}", suppress_warnings=True).unwrap_python_model()
        return LoadedClassifier(name, str(mv.version), alias_given, served.classifier, dict(mv.tags))
    loaded = load_registered(name, version=str(mv.version))
    task = mv.tags.get("task", "mtype")
    return LoadedClassifier(name, loaded.version, alias_given,
                            UnitClassifier(kind=loaded.kind, task=task, model=loaded.model, classes=loaded.classes,
                                           spec=loaded.spec), dict(mv.tags))


def registered_classifiers(rotation: str | None = None, task: str | None = None) -> pd.DataFrame:
    """The served classifiers in the registry with a champion: name, probe, rotation, task (one row each)."""
    import mlflow

    client = mlflow.MlflowClient()
    rows = []
    for model in client.search_registered_models(filter_string=f"name LIKE '{CLASSIFIER_PREFIX}_%'"):
        if CHAMPION not in (model.aliases or {}):
            continue
        mv = client.get_model_version_by_alias(model.name, CHAMPION)
        row = {"name": model.name, "probe": mv.tags.get("probe"), "rotation": mv.tags.get("rotation"),
               "task": mv.tags.get("task"), "version": str(mv.version)}
        if (rotation is None or row["rotation"] == rotation) and (task is None or row["task"] == task):
            rows.append(row)
    return pd.DataFrame(rows, columns=["name", "probe", "rotation", "task", "version"])
