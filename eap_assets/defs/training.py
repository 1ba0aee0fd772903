"""Classifiers per rotation x task, their evaluation against the paper, the hold-one-cell-type-out
E/I test, and the paper comparison report; MLflow tracking and registry.

One asset per model kind (:data:`eap_assets.registry.KINDS`), all trained, logged, registered,
gated and evaluated by the same code (:func:`_fit_and_register`, :func:`evaluation`): ``cnn_model``
(the paper CNN on the amplitude/width images), ``lgbm_model`` (LightGBM on the 200 features) and
``waveform_model`` (:mod:`eap_assets.core.waveform`: PCA of the raw EAP waveforms + the features ->
LightGBM). The first two read their inputs from the training table; the waveform model reads the
raw EAPs of the table's rows from the cells' memory-mapped EAP datasets
(:class:`~eap_assets.core.pool.EAPPool`), one cell at a time, never the whole training set at once.
"""

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from eap_assets import registry
from eap_assets.core import evaluation as scoring
from eap_assets.core import keys, models, paper, plots, splits, waveform
from eap_assets.core.eaps import derived_seed
from eap_assets.core.pool import EAPPool
from eap_assets.core.storage import atomic_path, atomic_write_text, file_lock
from eap_assets.defs.metadata import figure_metadata, markdown_table
from eap_assets.defs.eaps import load_pool
from eap_assets.defs.partitions import rotation_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags

task_partitions = dg.StaticPartitionsDefinition(list(models.TASKS))
#: Keys look like ``3drot|mtype`` (dimensions in alphabetical order: rotation, task).
rotation_task_partitions = dg.MultiPartitionsDefinition({"rotation": rotation_partitions, "task": task_partitions})
BY_ROTATION = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="rotation")
#: Tracking URI of a deployment (e.g. ``http://mlflow:5000``) when the resource sets none.
ENV_MLFLOW_URI = "EAP_ASSETS_MLFLOW_URI"


class TrainingSettings(dg.ConfigurableResource):
    """Training settings. The defaults are the pipeline's recipe, which reaches the paper's CNN
    accuracy in a fraction of its compute: the paper's CNN architecture, mini-batches of 128 at Adam
    1e-3, the learning rate halved after 4 evaluations (every 80 steps) without a better validation
    accuracy, stopping after 10 and keeping the best weights; LightGBM with 63 bins per feature at
    learning rate 0.1, each tree grown on a seeded half of the features. :data:`PAPER_CNN` holds the
    paper's own CNN schedule (5000 steps of 1000, Adam 5e-4, no early stopping)."""

    cnn_steps: int = Field(default=8000, description="Most CNN optimisation steps (paper: 5000 of 1000).")
    cnn_batch_size: int = Field(default=128, description="Samples per step (paper: 1000).")
    cnn_learning_rate: float = Field(default=1e-3, description="Initial Adam learning rate (paper code: 5e-4).")
    cnn_dropout_rate: float = Field(default=0.3, description="Drop rate (paper 'dropout 0.7' = keep-probability).")
    cnn_eval_every: int = Field(default=80, description="Steps between validation evaluations.")
    cnn_patience: int | None = Field(default=10, description="Early stopping after this many evaluations "
                                                             "without improvement; None = run all steps.")
    cnn_lr_decay_patience: int | None = Field(default=4, description="Halve the learning rate after this many "
                                                                     "evaluations without improvement; None = never.")
    lgbm_n_estimators: int = Field(default=1000, description="Boosting rounds (upper bound).")
    lgbm_learning_rate: float = 0.1
    lgbm_num_leaves: int = 31
    lgbm_max_bin: int = Field(default=63, description="Histogram bins per feature (LightGBM default 255).")
    lgbm_feature_fraction: float = Field(default=0.5, description="Share of the features each tree is grown on "
                                                                  "(LightGBM colsample_bytree; 1.0 = all).")
    lgbm_early_stopping_rounds: int | None = Field(default=20, description="On the validation split.")
    waveform_components: int = Field(default=100, description="Waveform model: principal components of the "
                                                              "flattened EAP waveforms (capped at the rows the "
                                                              "PCA is fitted on).")
    waveform_decimate: int = Field(default=2, description="Waveform model: keep every n-th sample (2: 16 kHz).")
    waveform_max_fit_rows: int | None = Field(default=4000, description="Waveform model: fit the PCA on at most "
                                                                        "this many training EAPs (seeded "
                                                                        "subsample); None = all.")
    threads: int = Field(default=1, description="Threads per training process (one process per core).")

    def cnn_config(self) -> models.CNNConfig:
        return models.CNNConfig(steps=self.cnn_steps, batch_size=self.cnn_batch_size,
                                learning_rate=self.cnn_learning_rate, dropout_rate=self.cnn_dropout_rate,
                                eval_every=self.cnn_eval_every, patience=self.cnn_patience, threads=self.threads,
                                lr_decay_patience=self.cnn_lr_decay_patience)

    def lgbm_config(self) -> models.LGBMConfig:
        return models.LGBMConfig(n_estimators=self.lgbm_n_estimators, learning_rate=self.lgbm_learning_rate,
                                 num_leaves=self.lgbm_num_leaves, early_stopping_rounds=self.lgbm_early_stopping_rounds,
                                 threads=self.threads, max_bin=self.lgbm_max_bin,
                                 feature_fraction=self.lgbm_feature_fraction)

    def waveform_config(self) -> waveform.WaveformConfig:
        """The waveform model's settings; its LightGBM is :meth:`lgbm_config`."""
        return waveform.WaveformConfig(n_components=self.waveform_components, decimate=self.waveform_decimate,
                                       max_fit_rows=self.waveform_max_fit_rows, lgbm=self.lgbm_config())

    def config_for(self, kind: str) -> models.CNNConfig | models.LGBMConfig | waveform.WaveformConfig:
        """The training settings of a model kind (:data:`eap_assets.registry.KINDS`)."""
        configs = {"cnn": self.cnn_config, "lgbm": self.lgbm_config, "waveform": self.waveform_config}
        if kind not in configs:
            raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(registry.KINDS)}")
        return configs[kind]()


#: The paper's CNN schedule (``TrainingSettings(**PAPER_CNN)``): 5000 steps of 1000, Adam 5e-4, no early stopping.
PAPER_CNN: dict[str, object] = {"cnn_steps": 5000, "cnn_batch_size": 1000, "cnn_learning_rate": 5e-4,
                                "cnn_eval_every": 100, "cnn_patience": None, "cnn_lr_decay_patience": None}


class MLflowTracking(dg.ConfigurableResource):
    """Where runs, artefacts and registered models go: ``tracking_uri`` (default ``$EAP_ASSETS_MLFLOW_URI``,
    else a sqlite file under the data directory; an ``http://host:5000`` server works the same) and
    the experiment name."""

    tracking_uri: str | None = Field(default=None, description="MLflow tracking + registry URI.")
    experiment: str = "eap_assets"

    def uri(self, settings: SimulationSettings) -> str:
        return (self.tracking_uri or os.environ.get(ENV_MLFLOW_URI)
                or registry.default_tracking_uri(settings.data_path))

    @contextmanager
    def run(self, context, settings: SimulationSettings, run_name: str) -> Iterator[object]:
        """An MLflow run tagged with the Dagster run id, asset key and partition."""
        import mlflow

        experiment_id = registry.configure(self.uri(settings), self.experiment)
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset": context.asset_key.to_user_string(),
                "dagster.partition": str(context.partition_key) if context.has_partition_key else ""}
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as active:
            yield active


#: Code versions of the training-side assets (part of their keys).
CODE_VERSIONS = {"cnn": "cnn-1", "lgbm": "lgbm-1", "waveform": "waveform-1", "evaluation": "evaluation-2",
                 "hold_out": "hold-out-2"}


def model_key(kind: str, training_table_key: str, training: TrainingSettings) -> str:
    """Key of a model / evaluation / hold-out result: its training table, the training settings, the code.

    A model kind's key holds its own settings; the evaluation's those of every kind; the hold-out
    test's LightGBM's.
    """
    if kind == "evaluation":
        parts = [asdict(training.config_for(k)) for k in registry.KINDS]
    else:
        parts = [asdict(training.config_for("lgbm" if kind == "hold_out" else kind))]
    return keys.settings_hash(training_table_key, kind, CODE_VERSIONS[kind], *parts)


def rotation_task_key(rotation: str, task: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"rotation": rotation, "task": task})


def partition_rotation_task(context) -> tuple[str, str]:
    keys = rotation_task_partitions.get_partition_key_from_str(str(context.partition_key)).keys_by_dimension
    return keys["rotation"], keys["task"]


def _seed(settings: SimulationSettings, *keys: str) -> int:
    return derived_seed(settings.seed, *keys, int31=True)


def eap_pool(settings: SimulationSettings, rotation: str, table: pd.DataFrame) -> EAPPool:
    """An :class:`EAPPool` of the current (memory-mapped) EAP datasets of the cells of ``table`` (a training
    table of ``rotation``), in table order, labelled from their models (:func:`eap_assets.defs.eaps.load_pool`).

    Raises
    ------
    StaleInputError
        If a cell's EAP dataset is missing or was made with other settings.
    """
    return load_pool(settings, rotation, pd.unique(table["cell"]))


class ModelInputs:
    """What a model kind takes for any subset of a training table's rows.

    ``cnn`` / ``lgbm``: the images / features of the table (:func:`registry.model_input`).
    ``waveform``: the raw EAPs of the rows, read from an :class:`EAPPool` of the table's cells one
    cell at a time (with the feature tables' recording noise, if any), so that only the rows asked
    for, and with :meth:`map` only one cell's, are ever in memory.
    """

    def __init__(self, kind: str, settings: SimulationSettings, rotation: str, table: pd.DataFrame):
        self.kind = kind
        self.pool: EAPPool | None = None
        if registry.INPUTS[kind] == "eaps":
            self.pool = eap_pool(settings, rotation, table)
            self.rows = self.pool.rows_of(table["cell"].to_numpy(), table["eap_id"].to_numpy())
            noise = settings.noise_config()
            self.noise, self.levels = (noise, noise.rms_uv) if noise.enabled else (None, 0.0)
        else:
            self.x = registry.model_input(kind, table, settings.probe)

    def map(self, select, fn=None) -> np.ndarray:
        """``fn`` (default: none) applied to the inputs of the rows ``select`` (boolean mask, indices
        or slice of the table's rows); raw EAPs are read, and ``fn`` applied, one cell at a time."""
        if self.pool is None:
            x = self.x[select]
            return x if fn is None else fn(x)
        return self.pool.map(self.rows[select], fn or _identity, self.noise, self.levels)


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _fit_waveform(inputs: ModelInputs, y: np.ndarray, train: np.ndarray, val: np.ndarray, n_classes: int,
                  config: waveform.WaveformConfig, seed: int, classes: list[str], log) -> models.TrainedModel:
    """The waveform model from the pool, cell by cell: the PCA on a seeded subsample of at most
    ``config.max_fit_rows`` training EAPs (the only raw EAPs held at once; the same draw as
    :func:`eap_assets.core.waveform.fit_projection`, so the model is :func:`~eap_assets.core.waveform.train_waveform`'s
    on the same rows), then the features of the train / validation rows one cell at a time, then LightGBM.

    ``n_components`` is capped at what the PCA can give (the rows it is fitted on, the flattened
    waveform length), with a warning: a small table (e.g. a quick run) still trains.
    """
    start = time.perf_counter()
    train_rows = np.flatnonzero(train)
    fit_rows = train_rows[waveform.projection_rows(len(train_rows), config, seed)]
    config, capped = waveform.cap_components(config, len(fit_rows), *inputs.pool.shape)
    if capped:
        log(capped)
    model = waveform.fit_waveform_projection(inputs.map(fit_rows), config, seed, inputs.pool.dt)
    trained = waveform.fit_waveform_classifier(model, inputs.map(train, model.features), y[train],
                                               inputs.map(val, model.features), y[val], n_classes, seed, classes)
    trained.seconds = time.perf_counter() - start
    return trained


def _fit_and_register(kind: str, context: dg.AssetExecutionContext, settings: SimulationSettings,
                      training: TrainingSettings, tracking: MLflowTracking, table: pd.DataFrame) -> dg.MaterializeResult:
    """Train one model kind on a rotation's training table, log it to MLflow, register it and apply the gate."""
    import mlflow

    rotation, task = partition_rotation_task(context)
    y, classes = models.task_labels(table, task)
    inputs = ModelInputs(kind, settings, rotation, table)
    split = table["split"].to_numpy()
    train, val, test = (split == "train"), (split == "validation"), (split == "test")
    name = registry.model_name(kind, rotation, task, settings.probe)
    seed = _seed(settings, kind, rotation, task)
    config = training.config_for(kind)
    with tracking.run(context, settings, f"{kind} {rotation} {task}") as run:
        mlflow.log_params({**_flat_params(asdict(config)), "kind": kind, "rotation": rotation, "task": task,
                           "seed": seed, "n_train": int(train.sum()), "n_validation": int(val.sum()),
                           "n_test": int(test.sum()), "classes": len(classes),
                           "training_table_key": table.attrs.get("key")})
        if kind == "cnn":  # metrics logged as it trains
            trained = models.train_cnn(inputs.map(train), y[train], inputs.map(val), y[val], len(classes), config, seed,
                                       on_step=lambda step, metrics: mlflow.log_metrics(metrics, step=step))
        elif kind == "lgbm":
            trained = models.train_lgbm(inputs.map(train), y[train], inputs.map(val), y[val], len(classes), config,
                                        seed)
        else:
            trained = _fit_waveform(inputs, y, train, val, len(classes), config, seed, classes, context.log.warning)
            if trained.model.config != config:  # n_components capped on a small table
                mlflow.log_param("effective_n_components", trained.model.config.n_components)
        if "iteration" in trained.history.columns:  # boosting (lgbm, waveform): validation metrics per round
            for row in trained.history.itertuples(index=False):
                mlflow.log_metrics({k: float(v) for k, v in row._asdict().items() if k != "iteration"},
                                   step=int(row.iteration))
        test_accuracy = float((inputs.map(test, trained.predict_proba).argmax(axis=1) == y[test]).mean())
        mlflow.log_metrics({"test_accuracy": test_accuracy, "train_seconds": trained.seconds,
                            "steps_run": trained.steps_run, "best_step": trained.best_step})
        version = registry.log_model(trained.model, kind, name, inputs.map(slice(0, 8)), tags={
            "kind": kind, "family": "paper", "rotation": rotation, "task": task, "classes": list(classes),
            "input": registry.INPUTS[kind], "probe": settings.probe,
            "input_spec": registry.paper_spec(settings.probe, settings.medium).to_json(),
            "test_accuracy": repr(test_accuracy), "training_table_key": table.attrs.get("key"),
            "dagster_run_id": context.run.run_id})
        alias = registry.promote(name, version.version, test_accuracy)
        curve = plots.training_curve_figure(trained.history, f"{name} v{version.version}")
        run_id = run.info.run_id
    per_step = trained.seconds / max(trained.steps_run, 1)
    folder = settings.data_path / "models" / kind / rotation
    extra = {"components": trained.model.config.n_components} if kind == "waveform" else {}
    return dg.MaterializeResult(metadata={"key": model_key(kind, table.attrs.get("key"), training),
        "test accuracy": test_accuracy, "registered model": name, "version": int(version.version), "alias": alias,
        "mlflow run id": run_id, "steps run": trained.steps_run, "best step": trained.best_step,
        "train seconds": round(trained.seconds, 1),
        ("ms per step" if kind == "cnn" else "ms per round"): round(1000 * per_step, 2),
        "classes": len(classes), **extra, **figure_metadata(curve, folder / f"{task}_curve.png", "training curve")})


def _flat_params(config: dict[str, object], prefix: str = "") -> dict[str, object]:
    """A config's ``asdict`` with nested settings flattened (``lgbm.num_leaves``): one MLflow param each."""
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_MODEL_INS = {"training_table": dg.AssetIn(partition_mapping=BY_ROTATION)}


#: Per model kind: Dagster "kinds" tags, kind of work (Kubernetes resources) and description.
_MODEL_ASSETS = {
    "cnn": ({"tensorflow", "mlflow"}, "tensorflow",
            "The paper's CNN on the amplitude/width images, trained on the rotation's train split (validation "
            "split for monitoring / early stopping), logged and registered in MLflow."),
    "lgbm": ({"lightgbm", "mlflow"}, "tables",
             "LightGBM on the same 200 amplitude/width features and the same split, logged and registered."),
    "waveform": ({"lightgbm", "mlflow"}, "tables",
                 "The waveform model (PCA of the raw EAP waveforms + the 200 features -> LightGBM) on the same "
                 "split, its EAPs read from the cells' EAP datasets one cell at a time; logged and registered."),
}


def model_asset(kind: str) -> dg.AssetsDefinition:
    """The ``<kind>_model`` asset: one rotation x task's model of ``kind`` trained, logged, registered and
    gated by :func:`_fit_and_register` (the model kind is configuration, not a copy of the training code)."""
    tags, work, description = _MODEL_ASSETS[kind]

    @dg.asset(name=f"{kind}_model", partitions_def=rotation_task_partitions, ins=_MODEL_INS, group_name="models",
              deps=[f"{kind}_recipe"],
              kinds=tags, code_version=CODE_VERSIONS[kind], pool="training", op_tags=k8s_op_tags(work),
              retry_policy=TRANSIENT_RETRY, description=description)
    @fail_fast
    def _model(context: dg.AssetExecutionContext, settings: SimulationSettings, training: TrainingSettings,
               mlflow_tracking: MLflowTracking, training_table: pd.DataFrame) -> dg.MaterializeResult:
        return _fit_and_register(kind, context, settings, training, mlflow_tracking, training_table)

    return _model


cnn_model, lgbm_model, waveform_model = (model_asset(kind) for kind in ("cnn", "lgbm", "waveform"))
if tuple(_MODEL_ASSETS) != models.KINDS:  # a new kind needs its entry here (evaluation loops over KINDS)
    raise RuntimeError(f"model assets {tuple(_MODEL_ASSETS)} do not match models.KINDS {models.KINDS}")


def _latest_metadata(context: dg.AssetExecutionContext, asset: str, partition: str | None = None) -> dict[str, object]:
    """Metadata values of the latest materialisation of ``asset`` for ``partition`` (default: this run's)."""
    partition = str(context.partition_key if partition is None else partition)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1).records
    if not records:
        raise registry.RegistryError(f"{asset} {partition} has not been materialised")
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def cnn_label(training: "TrainingSettings", steps_run: int) -> str:
    """How the CNN was trained, in words (report headings)."""
    stop = "no early stopping" if training.cnn_patience is None else \
        f"early stopping (patience {training.cnn_patience} x {training.cnn_eval_every} steps)"
    decay = "" if training.cnn_lr_decay_patience is None else \
        f", learning rate halved after {training.cnn_lr_decay_patience} evaluations without improvement"
    return (f"{training.cnn_steps} steps of {training.cnn_batch_size} at Adam {training.cnn_learning_rate:g}{decay}, "
            f"{stop}: ran {steps_run}")


def evaluation_path(settings: SimulationSettings, rotation: str, task: str):
    return settings.data_path / "evaluation" / rotation / f"{task}.json"


@dg.asset(partitions_def=rotation_task_partitions, deps=[cnn_model, lgbm_model, waveform_model], ins=_MODEL_INS,
          group_name="models", kinds={"mlflow"}, code_version=CODE_VERSIONS["evaluation"],
          op_tags=k8s_op_tags("tensorflow"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def evaluation(context: dg.AssetExecutionContext, settings: SimulationSettings, training: TrainingSettings,
               mlflow_tracking: MLflowTracking, training_table: pd.DataFrame) -> dg.MaterializeResult:
    """Held-out test set: per-cell-type accuracy (Table II), summary over cell types (Table III),
    confusion matrices (Fig. 4) of the versions of every model kind just trained (CNN, LightGBM,
    waveform model: its test EAPs read from the EAP datasets), the classic narrow/broad width rule
    (binary task; threshold tuned on the train split), the paper beside ours."""
    import mlflow

    rotation, task = partition_rotation_task(context)
    registry.configure(mlflow_tracking.uri(settings), mlflow_tracking.experiment)
    y, classes = models.task_labels(training_table, task)
    split = training_table["split"].to_numpy()
    test = split == "test"
    cell_types = training_table["mtype"].to_numpy()
    results: dict[str, scoring.Evaluation] = {}
    versions = {}
    trained = {kind: _latest_metadata(context, f"{kind}_model") for kind in registry.KINDS}
    for kind in registry.KINDS:
        name = registry.model_name(kind, rotation, task, settings.probe)
        loaded = registry.load_registered(name, version=str(trained[kind]["version"]))
        versions[kind] = loaded.version
        inputs = ModelInputs(kind, settings, rotation, training_table[test])
        pred = inputs.map(slice(None), loaded.predict_proba).argmax(axis=1)
        results[kind] = scoring.evaluate(y[test], pred, classes, cell_types[test])
    if task == "binary":
        rule = models.fit_width_rule(training_table.loc[split == "train", "width_at_max_ms"].to_numpy(),
                                     training_table.loc[split == "train", "excitatory"].to_numpy())
        excitatory = rule.predict(training_table.loc[test, "width_at_max_ms"].to_numpy())
        pred = np.where(excitatory, classes.index("E"), classes.index("I"))
        results["width_rule"] = scoring.evaluate(y[test], pred, classes, cell_types[test])
        versions["width_rule"] = f"threshold {rule.threshold_ms:.3f} ms"
    per_type = pd.DataFrame({kind: ev.per_cell_type["accuracy"] for kind, ev in results.items()})
    comparison = paper.paper_comparison_frame(task, rotation, results["cnn"]) if rotation in paper.ROTATIONS \
        else pd.DataFrame({"ours": [results["cnn"].accuracy]}, index=pd.Index(["overall"], name="row"))
    record = {"rotation": rotation, "task": task, "versions": versions,
              "cnn_training": cnn_label(training, int(trained["cnn"]["steps run"])),
              "train_seconds": {kind: trained[kind]["train seconds"] for kind in registry.KINDS},
              "results": {kind: ev.to_dict() for kind, ev in results.items()}}
    path = evaluation_path(settings, rotation, task)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float))
    history = path.with_suffix(".history.jsonl")  # every evaluation, for comparing training settings
    with file_lock(history):  # two evaluations of this partition at once must not lose a line
        previous = history.read_text() if history.exists() else ""
        atomic_write_text(history, previous + json.dumps(record, default=float) + "\n")
    figures = {}
    with mlflow_tracking.run(context, settings, f"evaluation {rotation} {task}"):
        mlflow.log_dict(record, "evaluation.json")
        mlflow.log_text(per_type.to_csv(), "per_cell_type.csv")
        mlflow.log_text(comparison.to_csv(), "paper_comparison.csv")
        for kind, ev in results.items():
            mlflow.log_metrics({f"{kind}_accuracy": ev.accuracy,
                                **{f"{kind}_{stat}": float(v) for stat, v in ev.summary.items()}})
            fig = plots.confusion_matrix_figure(ev.confusion, f"{kind}, {rotation}, {task}: test set")
            png = path.parent / f"{task}_{kind}_confusion.png"
            figures.update(figure_metadata(fig, png, f"confusion {kind}"))
            mlflow.log_artifact(str(png))
    summary = pd.DataFrame({kind: ev.summary for kind, ev in results.items()}).T.round(4).reset_index(names="model")
    return dg.MaterializeResult(metadata={
        "key": model_key("evaluation", training_table.attrs.get("key"), training),
        **{f"{kind} accuracy": round(ev.accuracy, 4) for kind, ev in results.items()},
        "per cell type (Table II)": markdown_table(per_type.round(4).reset_index(names="cell type")),
        "summary over cell types (Table III)": markdown_table(summary),
        "paper vs ours": markdown_table(comparison.round(2).reset_index()),
        "versions": json.dumps(versions), **figures})


@dg.asset(partitions_def=rotation_partitions, ins={"training_table": dg.AssetIn()}, deps=["lgbm_recipe"],
          group_name="models", kinds={"lightgbm", "mlflow"}, code_version=CODE_VERSIONS["hold_out"],
          op_tags=k8s_op_tags("tables"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def hold_out_cell_type(context: dg.AssetExecutionContext, settings: SimulationSettings, training: TrainingSettings,
                       mlflow_tracking: MLflowTracking, training_table: pd.DataFrame) -> dg.MaterializeResult:
    """E/I generalisation: for each cell type, LightGBM trained on the other types classifies every
    EAP of the unseen type. The folds are the generalisation report's
    (:func:`eap_assets.core.splits.leave_one_type_out`: the other types' rows train, a stratified
    share of them validates for early stopping), so both places score the same rule."""
    import mlflow

    rotation = context.partition_key
    x = registry.model_input("lgbm", training_table, settings.probe)
    y, classes = models.task_labels(training_table, "binary")
    types = training_table["mtype"].to_numpy()
    folds = {}
    if pd.unique(types).size < 2:
        context.log.warning(f"hold-out: the training table has one cell type ({types[0]}); nothing to hold out")
    else:
        folds = splits.leave_one_type_out(types, settings.validation_fraction, _seed(settings, "hold-out", rotation),
                                          strata=training_table["cell"].to_numpy())
    rows = []
    start = time.perf_counter()
    for held, split in folds.items():
        fit, val, test = split == "train", split == "validation", split == "test"
        row = {"cell type": held, "E/I": classes[int(y[test][0])], "n": int(test.sum()), "accuracy": np.nan}
        if np.unique(y[fit]).size < 2:  # the other types are all E or all I: nothing to learn E/I from
            context.log.warning(f"hold-out {held}: the remaining cell types are all one class; skipped")
        else:
            trained = models.train_lgbm(x[fit], y[fit], x[val], y[val], len(classes), training.lgbm_config(),
                                        _seed(settings, "hold-out", rotation, str(held)))
            row["accuracy"] = 100.0 * float((trained.predict(x[test]) == y[test]).mean())
        rows.append(row)
    table = pd.DataFrame(rows, columns=["cell type", "E/I", "n", "accuracy"])
    record = {"rotation": rotation, "rows": rows, "mean": float(table["accuracy"].mean())}
    path = settings.data_path / "evaluation" / rotation / "hold_out.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    with mlflow_tracking.run(context, settings, f"hold-out {rotation}"):
        mlflow.log_dict(record, "hold_out.json")
        mlflow.log_metric("mean_accuracy", record["mean"])
    return dg.MaterializeResult(metadata={"key": model_key("hold_out", training_table.attrs.get("key"), training),
                                          "mean accuracy": round(record["mean"], 4),
                                          "seconds": round(time.perf_counter() - start, 1),
                                          "per held-out type": markdown_table(table.round(4))})
