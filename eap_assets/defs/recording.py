"""The models for real recordings: training set, one model per kind, and the served unit classifier.

``recording_eap_dataset`` (cell x rotation, :mod:`eap_assets.defs.eaps`) simulates EAPs as an MEA
records them (MEA-plane medium, the whole detectable range of positions); then, per rotation of
``$EAP_ASSETS_RECORDING_ROTATIONS`` (default ``3drot``):

* ``recording_training_set`` + ``waveform_basis`` (one step, :func:`eap_assets.core.recording_set.build_recording_set`):
  every EAP band-passed, re-aligned on its negative peak, in augmented copies (template noise,
  noise correlation, filter order, alignment jitter), the detection rule, the split over EAPs,
  the amplitude / width features and the waveform projections (Parquet), and the principal
  components of the training rows' waveforms (``.npz``);
* ``recording_<kind>_model`` (rotation x task) for the CNN, LightGBM and the waveform model, trained on
  the training set's ``train`` rows, early stopping on ``validation``, registered as
  ``recording_<kind>_<probe>_<rotation>_<task>`` with the input spec (gate: validation accuracy);
* ``unit_classifier`` (rotation x task): the candidate with the best validation accuracy (each kind's
  model; for E/I also each kind's m-type model, its probabilities summed per E/I class), its
  temperature and abstention threshold fitted on ``validation``, its out-of-distribution
  reference, scored on ``test`` (accuracy per cell type, expected calibration error, reliability
  diagram), registered as the pyfunc ``unit_classifier_<probe>_<rotation>_<task>``: the champion
  ``eap-assets classify`` uses.
"""


import json
from dataclasses import asdict

import dagster as dg
import numpy as np
import pandas as pd

from eap_assets import registry
from eap_assets.core import calibration as cal
from eap_assets.core import evaluation as scoring
from eap_assets.core import keys, models, plots
from eap_assets.core.classifier import UnitClassifier, merge_proba
from eap_assets.core.probe import edge_contacts
from eap_assets.core.recording_set import (CODE_VERSION, build_recording_set, table_input, table_proba,
                                          train_on_table)
from eap_assets.core.storage import atomic_path
from eap_assets.core.waveform import WaveformConfig, WaveformModel
from eap_assets.defs.eaps import load_pool, recording_eap_dataset
from eap_assets.defs.features import paper_cells
from eap_assets.defs.metadata import figure_metadata, key_metadata, markdown_table
from eap_assets.defs.partitions import recording_rotation_partitions
from eap_assets.defs.resources import RecordingSettings, SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags
from eap_assets.defs.training import (MLflowTracking, TrainingSettings, _flat_params, _latest_metadata, _seed,
                                      task_partitions)

#: Keys look like ``3drot|mtype``.
recording_task_partitions = dg.MultiPartitionsDefinition({"rotation": recording_rotation_partitions,
                                                          "task": task_partitions})
#: A rotation's training set reads every cell's recording EAP dataset of that rotation.
EVERY_CELL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="rotation")
#: A rotation x task partition reads its rotation's training set.
OF_ROTATION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="rotation")
#: A rotation x task's unit classifier reads the models of its partition and, for E/I, the m-type models
#: too: the E/I marginal of an m-type model's probabilities is a candidate of the binary classifier.
WITH_MTYPE_MODELS = dg.MultiPartitionMapping({
    "rotation": dg.DimensionPartitionMapping("rotation", dg.IdentityPartitionMapping()),
    "task": dg.DimensionPartitionMapping("task", dg.StaticPartitionMapping({"binary": "binary",
                                                                              "mtype": ["mtype", "binary"]}))})
#: The binary classifier's candidates that sum an m-type model's probabilities per E/I class.
MARGINAL = "m-type marginal"
#: Code versions (part of the keys).
CODE_VERSIONS = {"cnn": "recording-cnn-1", "lgbm": "recording-lgbm-1", "waveform": "recording-waveform-1",
                 "classifier": "unit-classifier-2"}


def _rotation_task(context) -> tuple[str, str]:
    rotation, task = str(context.partition_key).split("|")
    return rotation, task


def training_set_key(config_key: str, eap_keys: dict[str, str]) -> str:
    """Key of a rotation's recording training set: its settings and its cells' EAP datasets."""
    return keys.settings_hash(CODE_VERSION, config_key, sorted(eap_keys.items()))


def recording_model_key(kind: str, set_key: str, training: TrainingSettings) -> str:
    """Key of a recording-family model (or of the unit classifier: every kind's settings)."""
    kinds = registry.KINDS if kind == "classifier" else (kind,)
    return keys.settings_hash(set_key, kind, CODE_VERSIONS[kind], *[asdict(training.config_for(k)) for k in kinds])


@dg.multi_asset(
    outs={"recording_training_set": dg.AssetOut(io_manager_key="parquet_io_manager", kinds={"parquet"},
                                                code_version=CODE_VERSION,
                                                description="The augmented, split, featurised training set of the "
                                                            "models for real recordings (one rotation)."),
          "waveform_basis": dg.AssetOut(io_manager_key="npz_io_manager", kinds={"numpy"}, code_version=CODE_VERSION,
                                        description="Principal components of the training rows' waveforms (the "
                                                    "waveform model's basis and the out-of-distribution reference).")},
    partitions_def=recording_rotation_partitions, group_name="recording", can_subset=False,
    deps=[dg.AssetDep(recording_eap_dataset, partition_mapping=EVERY_CELL), "simulation_settings", "recording_settings"], op_tags=k8s_op_tags("tables"),
    retry_policy=TRANSIENT_RETRY, name="recording_training_set_step")
@fail_fast
def recording_training_set(context: dg.AssetExecutionContext, settings: SimulationSettings,
                           recording: RecordingSettings):
    """Every cell's recording EAPs of the rotation as a sorted recording shows them (band-passed, re-aligned,
    template noise, the detection rule), split per cell over EAPs, with features and waveform projections."""
    rotation = context.partition_key
    cells_ = paper_cells(settings, context.instance.get_dynamic_partitions("cell_model"))
    if len(cells_) < 2:
        raise ValueError(f"recording_training_set {rotation!r}: {len(cells_)} cell model(s); a classifier needs two "
                         "or more (add cell_model partitions)")
    pool = load_pool(settings, rotation, cells_, family="recording", recording=recording)
    config = recording.set_config(settings)
    table, basis, summary = build_recording_set(pool, config, context.log.info)
    key = training_set_key(config.key(), {n: d.provenance["settings_hash"] for n, d in pool.datasets.items()})
    table.attrs["key"] = key
    per_cell = pd.DataFrame({"cell": list(summary["eaps"]), "EAPs": list(summary["eaps"].values()),
                             "detected": list(summary["detected"].values())})
    figure = plots.amplitude_vs_width(table.filter(like="amp_c").max(axis=1), _width_at_max(table), table["ei"],
                                      f"{rotation}, band-passed: {len(table)} rows of {len(cells_)} cells")
    spec = config.spec
    basis_arrays = {"mean": basis.mean, "components": basis.components, "dt": np.asarray(basis.dt),
                    "n_contacts": np.asarray(basis.n_contacts), "n_samples": np.asarray(basis.n_samples),
                    "config": np.asarray(json.dumps(asdict(basis.config), default=str)),
                    "key": np.asarray(key)}
    metadata = {"dagster/row_count": len(table), "cells": len(cells_), **{f"{s} rows": n for s, n in summary["rows"].items()},
                "EAPs and detected per cell": markdown_table(per_cell), "input spec": spec.to_json(),
                "seconds": summary["seconds"], **key_metadata(key, True),
                **figure_metadata(figure, settings.data_path / "figures" / f"recording_amplitude_vs_width_{rotation}.png",
                                  "amplitude vs width, band-passed")}
    yield dg.Output(table, output_name="recording_training_set", data_version=dg.DataVersion(key), metadata=metadata)
    yield dg.Output(basis_arrays, output_name="waveform_basis", data_version=dg.DataVersion(key),
                    metadata={"components": int(len(basis.components)), "features": int(basis.components.shape[1]),
                              **key_metadata(key, True)})


def _width_at_max(table: pd.DataFrame) -> pd.Series:
    amp = table.filter(like="amp_c").to_numpy()
    width = table.filter(like="width_c").to_numpy()
    return pd.Series(width[np.arange(len(table)), amp.argmax(axis=1)])


def basis_model(arrays: dict[str, np.ndarray]) -> WaveformModel:
    """The :class:`WaveformModel` (no classifier yet) stored by ``waveform_basis``."""
    config = json.loads(str(arrays["config"]))
    lgbm = models.LGBMConfig(**config.pop("lgbm"))
    if config.get("window") is not None:
        config["window"] = tuple(config["window"])
    return WaveformModel(WaveformConfig(**config, lgbm=lgbm), float(arrays["dt"]), int(arrays["n_contacts"]),
                         int(arrays["n_samples"]), arrays["mean"], arrays["components"])


def _accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    return float((proba.argmax(axis=1) == y).mean()) if len(y) else float("nan")


#: Per kind: Dagster "kinds" tags, kind of work (Kubernetes resources), description.
_MODEL_ASSETS = {
    "cnn": ({"tensorflow", "mlflow"}, "tensorflow", "The paper's CNN on the amplitude/width images of the recording "
                                                    "training set."),
    "lgbm": ({"lightgbm", "mlflow"}, "tables", "LightGBM on the amplitude/width features of the recording training "
                                               "set."),
    "waveform": ({"lightgbm", "mlflow"}, "tables", "The waveform model (projections on the waveform basis + "
                                                   "amplitude/width features -> LightGBM) on the recording training set."),
}


def recording_model_asset(kind: str) -> dg.AssetsDefinition:
    """``recording_<kind>_model``: one rotation x task's model of ``kind`` for real recordings, trained on the
    recording training set, logged, registered with its input spec and gated on validation accuracy."""
    tags, work, description = _MODEL_ASSETS[kind]

    @dg.asset(name=f"recording_{kind}_model", partitions_def=recording_task_partitions, group_name="recording",
              deps=[f"{kind}_recipe"],
              ins={"recording_training_set": dg.AssetIn(partition_mapping=OF_ROTATION),
                   "waveform_basis": dg.AssetIn(partition_mapping=OF_ROTATION)},
              kinds=tags, code_version=CODE_VERSIONS[kind], pool="training", op_tags=k8s_op_tags(work),
              retry_policy=TRANSIENT_RETRY, description=description)
    @fail_fast
    def _model(context: dg.AssetExecutionContext, settings: SimulationSettings, recording: RecordingSettings,
               training: TrainingSettings, mlflow_tracking: MLflowTracking, recording_training_set: pd.DataFrame,
               waveform_basis: dict) -> dg.MaterializeResult:
        import mlflow

        rotation, task = _rotation_task(context)
        table = recording_training_set
        spec = recording.spec(settings)
        name = registry.model_name(kind, rotation, task, settings.probe, family="recording")
        seed = _seed(settings, "recording", kind, rotation, task)
        split = table["split"].to_numpy()
        with mlflow_tracking.run(context, settings, f"recording {kind} {rotation} {task}") as run:
            mlflow.log_params({**_flat_params(asdict(training.config_for(kind))), "kind": kind, "family": "recording",
                               "rotation": rotation, "task": task, "seed": seed, "input_spec": spec.to_json(),
                               **{f"n_{s}": int((split == s).sum()) for s in ("train", "validation", "test")},
                               "training_set_key": table.attrs.get("key")})
            trained, classes = train_on_table(kind, table, basis_model(waveform_basis), task, spec,
                                              training.cnn_config(), training.lgbm_config(), seed,
                                              lambda step, metrics: mlflow.log_metrics(metrics, step=step))
            if "iteration" in trained.history.columns:
                for row in trained.history.itertuples(index=False):
                    mlflow.log_metrics({k: float(v) for k, v in row._asdict().items() if k != "iteration"},
                                       step=int(row.iteration))
            y, _ = models.task_labels(table, task)
            scores = {s: _accuracy(table_proba(kind, trained.model, table[split == s], spec, classes), y[split == s])
                      for s in ("validation", "test")}
            mlflow.log_metrics({"validation_accuracy": scores["validation"], "test_accuracy": scores["test"],
                                "train_seconds": trained.seconds, "steps_run": trained.steps_run})
            example = (np.zeros((2, int(waveform_basis["n_contacts"]), spec.n_samples), np.float32)
                       if kind == "waveform" else table_input(kind, table.iloc[:4], spec))
            version = registry.log_model(trained.model, kind, name, example, tags={
                "kind": kind, "family": "recording", "rotation": rotation, "task": task, "classes": list(classes),
                "input": registry.INPUTS[kind], "probe": settings.probe, "input_spec": spec.to_json(),
                "validation_accuracy": repr(scores["validation"]), "test_accuracy": repr(scores["test"]),
                "training_set_key": table.attrs.get("key"), "dagster_run_id": context.run.run_id})
            alias = registry.promote(name, version.version, scores["validation"], metric="validation_accuracy")
            curve = plots.training_curve_figure(trained.history, f"{name} v{version.version}")
            run_id = run.info.run_id
        folder = settings.data_path / "models" / f"recording_{kind}" / rotation
        return dg.MaterializeResult(metadata={
            "key": recording_model_key(kind, table.attrs.get("key"), training),
            "validation accuracy": scores["validation"], "test accuracy": scores["test"], "registered model": name,
            "version": int(version.version), "alias": alias, "mlflow run id": run_id, "steps run": trained.steps_run,
            "train seconds": round(trained.seconds, 1), "classes": len(classes),
            **figure_metadata(curve, folder / f"{task}_curve.png", "training curve")})

    return _model


recording_cnn_model, recording_lgbm_model, recording_waveform_model = (recording_model_asset(k) for k in registry.KINDS)
RECORDING_MODELS = (recording_cnn_model, recording_lgbm_model, recording_waveform_model)


def classifier_path(settings: SimulationSettings, rotation: str, task: str):
    return settings.data_path / "unit_classifier" / rotation / f"{task}.json"


def _candidates(context: dg.AssetExecutionContext, settings: SimulationSettings, spec, table: pd.DataFrame,
                rotation: str, task: str, classes: list[str]) -> dict[str, dict]:
    """The unit classifier's candidates: per kind, the latest recording model of this rotation x task
    and, for the binary task, the E/I marginal of the kind's m-type model (the m-type probabilities
    summed per E/I class of the training set); each with its validation and test probabilities."""
    split = table["split"].to_numpy()
    groups = {str(m): str(e) for m, e in table[["mtype", "ei"]].drop_duplicates().itertuples(index=False)}
    out = {}
    for source in [task] + (["mtype"] if task == "binary" else []):
        expected = models.task_labels(table, source)[1]
        partition = dg.MultiPartitionKey({"rotation": rotation, "task": source})
        for kind in registry.KINDS:
            trained = _latest_metadata(context, f"recording_{kind}_model", partition)
            loaded = registry.load_registered(registry.model_name(kind, rotation, source, settings.probe, "recording"),
                                              version=str(trained["version"]))
            if loaded.classes != expected:
                raise registry.RegistryError(f"{loaded.name} v{loaded.version} predicts {loaded.classes}, the training "
                                             f"set has {expected}; re-materialise recording_{kind}_model {partition}")
            proba = {s: table_proba(kind, loaded.model, table[split == s], spec, expected)
                     for s in ("validation", "test")}
            if source == task:
                out[kind] = {"kind": kind, "loaded": loaded, "proba": proba}
            else:
                out[f"{kind} ({MARGINAL})"] = {
                    "kind": kind, "loaded": loaded, "model_classes": expected, "groups": groups,
                    "proba": {s: merge_proba(p, expected, groups, classes) for s, p in proba.items()}}
    return out


@dg.asset(partitions_def=recording_task_partitions, group_name="recording",
          deps=[*(dg.AssetDep(model, partition_mapping=WITH_MTYPE_MODELS) for model in RECORDING_MODELS),
                "recording_settings"],
          ins={"recording_training_set": dg.AssetIn(partition_mapping=OF_ROTATION),
               "waveform_basis": dg.AssetIn(partition_mapping=OF_ROTATION)},
          kinds={"mlflow"}, code_version=CODE_VERSIONS["classifier"], op_tags=k8s_op_tags("tensorflow"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def unit_classifier(context: dg.AssetExecutionContext, settings: SimulationSettings, recording: RecordingSettings,
                    training: TrainingSettings, mlflow_tracking: MLflowTracking, recording_training_set: pd.DataFrame,
                    waveform_basis: dict) -> dg.MaterializeResult:
    """The classifier ``eap-assets classify`` uses for one rotation x task: the candidate with the best
    validation accuracy (the recording model of each kind; for E/I also the E/I marginal of each kind's
    m-type model), its temperature and abstention threshold fitted on validation,
    its out-of-distribution reference (training amplitudes, validation waveform residuals, the probe's
    edge), scored on test (per cell type, expected calibration error, reliability diagram) and
    registered as the pyfunc ``unit_classifier_<probe>_<rotation>_<task>`` (champion if its validation
    accuracy is at least the current champion's)."""
    import mlflow

    rotation, task = _rotation_task(context)
    table = recording_training_set
    spec = recording.spec(settings)
    registry.configure(mlflow_tracking.uri(settings), mlflow_tracking.experiment)
    y, classes = models.task_labels(table, task)
    split = table["split"].to_numpy()
    val, test = split == "validation", split == "test"
    candidates = _candidates(context, settings, spec, table, rotation, task, classes)
    rows = [{"kind": label, "version": c["loaded"].version, "source_model": f"{c['loaded'].name}/{c['loaded'].version}",
             "validation accuracy": _accuracy(c["proba"]["validation"], y[val]),
             "test accuracy": _accuracy(c["proba"]["test"], y[test])} for label, c in candidates.items()]
    kinds = pd.DataFrame(rows)
    best = str(kinds.sort_values("validation accuracy", ascending=False, kind="stable").iloc[0]["kind"])
    loaded, proba = candidates[best]["loaded"], candidates[best]["proba"]
    calibration = cal.Calibration.fit(proba["validation"], y[val], recording.abstain_accuracy(task))
    train = split == "train"
    basis = basis_model(waveform_basis)
    ood = cal.OODReference.fit(table.loc[train, "peak_to_peak_uv"], table.loc[val, "residual"],
                               edge_contacts(spec.probe), basis.mean, basis.components, basis.config.decimate)
    calibrated = calibration.calibrate(proba["test"])
    confidence = calibrated.max(axis=1)
    kept = confidence >= calibration.threshold
    correct = calibrated.argmax(axis=1) == y[test]
    evaluation = scoring.evaluate(y[test], calibrated.argmax(axis=1), classes, table.loc[test, "mtype"].to_numpy())
    report = {"rotation": rotation, "task": task, "kind": best, "source_model": f"{loaded.name}/{loaded.version}",
              "kinds": rows, "calibration": calibration.to_dict(),
              "test": {"rows": int(test.sum()), "accuracy": float(correct.mean()),
                       "ece_before": cal.expected_calibration_error(proba["test"], y[test]),
                       "ece_after": cal.expected_calibration_error(calibrated, y[test]),
                       "coverage": float(kept.mean()),
                       "accuracy_kept": float(correct[kept].mean()) if kept.any() else float("nan"),
                       "per_cell_type": evaluation.to_dict()["per_cell_type"], "summary": evaluation.summary},
              "ood": {"amplitude_range_uv": ood.amplitude_range_uv, "residual_threshold": ood.residual_threshold,
                      "edge_contacts": int(ood.edge.sum())}}
    chosen = candidates[best]
    classifier = UnitClassifier(kind=chosen["kind"], task=task, model=loaded.model, classes=classes, spec=spec,
                                calibration=calibration, ood=ood, model_classes=chosen.get("model_classes"),
                                groups=chosen.get("groups"))
    name = registry.classifier_name(settings.probe, rotation, task)
    reliability = {"uncalibrated": cal.reliability(proba["test"], y[test]),
                   "calibrated": cal.reliability(calibrated, y[test])}
    figure = plots.reliability_figure(reliability, f"{name}: test split ({best})")
    folder = classifier_path(settings, rotation, task).parent
    figures = figure_metadata(figure, folder / f"{task}_reliability.png", "reliability diagram")
    with mlflow_tracking.run(context, settings, f"unit classifier {rotation} {task}"):
        mlflow.log_params({"kind": best, "source_model": report["source_model"], "input_spec": spec.to_json(),
                           "temperature": calibration.temperature, "threshold": calibration.threshold})
        mlflow.log_metrics({"validation_accuracy": float(kinds.set_index("kind").at[best, "validation accuracy"]),
                            "test_accuracy": report["test"]["accuracy"], "ece_before": report["test"]["ece_before"],
                            "ece_after": report["test"]["ece_after"], "coverage": report["test"]["coverage"]})
        mlflow.log_artifact(str(folder / f"{task}_reliability.png"))
        mlflow.log_dict(report, "unit_classifier.json")
        n_contacts = len(ood.edge)
        version = registry.log_classifier(classifier, name, np.zeros((2, n_contacts, spec.n_samples), np.float32), tags={
            "kind": registry.CLASSIFIER_KIND, "model_kind": classifier.kind, "candidate": best, "family": "recording",
            "rotation": rotation, "task": task, "classes": list(classes), "probe": settings.probe,
            "input_spec": spec.to_json(),
            "source_model": report["source_model"], "test_accuracy": repr(report["test"]["accuracy"]),
            "ece_test": repr(report["test"]["ece_after"]), "dagster_run_id": context.run.run_id,
            "training_set_key": table.attrs.get("key")})
        validation_accuracy = float(kinds.set_index("kind").at[best, "validation accuracy"])
        alias = registry.promote(name, version.version, validation_accuracy, metric="validation_accuracy")
    report.update(registered=name, version=str(version.version), alias=alias,
                  key=recording_model_key("classifier", table.attrs.get("key"), training))
    with atomic_path(classifier_path(settings, rotation, task)) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=float))
    per_type = evaluation.per_cell_type.round(2).reset_index(names="cell type")
    return dg.MaterializeResult(metadata={
        "key": report["key"], "kind": best, "registered model": name, "version": int(version.version), "alias": alias,
        "validation accuracy": validation_accuracy, "test accuracy": report["test"]["accuracy"],
        "ECE test (uncalibrated)": report["test"]["ece_before"], "ECE test (calibrated)": report["test"]["ece_after"],
        "temperature": calibration.temperature, "abstain below confidence": calibration.threshold,
        "test coverage": report["test"]["coverage"], "test accuracy of retained units": report["test"]["accuracy_kept"],
        "kinds": markdown_table(kinds.round(4)), "per cell type (test)": markdown_table(per_type),
        "path": dg.MetadataValue.path(str(classifier_path(settings, rotation, task))), **figures})
