"""Honest generalisation (``eap_assets.core.generalisation``) per rotation x task, and the report
over all of them: every model kind under recording noise, on unseen morphology variants, unseen
soma distances and unseen cell types, with the issue's targets checked."""

import base64
import json
import warnings

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from eap_assets import registry
from eap_assets.core import generalisation as gen
from eap_assets.core import keys, models, plots
from eap_assets.core.report import generalisation_markdown, recording_generalisation_markdown
from eap_assets.core.storage import atomic_path
from eap_assets.defs.eaps import eap_dataset, load_pool, recording_eap_dataset
from eap_assets.defs.features import paper_cells
from eap_assets.defs.metadata import figure_metadata, markdown_table
from eap_assets.defs.partitions import recording_rotation_partitions, rotation_partitions
from eap_assets.defs.recording import recording_task_partitions
from eap_assets.defs.resources import RecordingSettings, SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags
from eap_assets.defs.training import (BY_ROTATION, MLflowTracking, TrainingSettings, evaluation,
                                      partition_rotation_task, rotation_task_partitions)

with warnings.catch_warnings():  # MultiPartitionMapping is "beta" in Dagster 1.13
    warnings.simplefilter("ignore")
    #: A rotation x task partition reads the EAP datasets of every cell of its rotation.
    ALL_CELLS_OF_ROTATION = dg.MultiPartitionMapping(
        {"rotation": dg.DimensionPartitionMapping("rotation", dg.IdentityPartitionMapping())})


class GeneralisationSettings(dg.ConfigurableResource):
    """Settings of the generalisation protocols (see :class:`eap_assets.core.generalisation.GeneralisationConfig`).
    The noise kind and band are the feature stage's (``settings.noise_kind`` / ``noise_band_hz``)."""

    noise_levels_uv: list[float] = Field(default=list(gen.NOISE_LEVELS_UV), description="Test noise levels, µV RMS.")
    train_copies: int = Field(default=2, description="Noisy copies of each training EAP (0: no augmentation).")
    train_noise_uv: list[float] = Field(default=[0.0, 20.0], description="Range of the augmentation noise, µV RMS.")
    variant_test_fraction: float = Field(default=0.25, description="Share of each m-type's morphologies held out.")
    kinds: list[str] = Field(default=list(models.KINDS), description="Kinds trained by the variant/distance protocols.")
    hold_out_kinds: list[str] = Field(default=["lgbm"], description="Kinds trained per held-out cell type.")
    target_noise_uv: float = Field(default=10.0, description="Noise level of the targets and confusions.")
    recording_protocols: list[str] = Field(default=list(gen.RECORDING_PROTOCOLS),
                                           description="Protocols of recording_generalisation: own_split, "
                                                       "unseen_variants (when variants exist), hold_out_type (E/I).")
    recording_kinds: list[str] = Field(default=list(gen.RecordingGeneralisationConfig.kinds),
                                       description="Kinds trained per protocol by recording_generalisation (the "
                                                   "models for real recordings).")
    recording_eaps_per_cell: int = Field(default=3000, description="recording_generalisation: each cell's first "
                                                                   "accepted recording EAPs used (every protocol and "
                                                                   "held-out type builds its own training set).")

    def config(self, settings: SimulationSettings) -> gen.GeneralisationConfig:
        return gen.GeneralisationConfig(
            noise_levels_uv=tuple(self.noise_levels_uv), noise_kind=settings.noise_kind,
            band_hz=tuple(settings.noise_band_hz), train_copies=self.train_copies,
            train_noise_uv=tuple(self.train_noise_uv), variant_test_fraction=self.variant_test_fraction,
            validation_fraction=settings.validation_fraction, kinds=tuple(self.kinds),
            hold_out_kinds=tuple(self.hold_out_kinds), target_noise_uv=self.target_noise_uv, seed=settings.seed)


    def recording_config(self, settings: SimulationSettings) -> gen.RecordingGeneralisationConfig:
        return gen.RecordingGeneralisationConfig(
            protocols=tuple(self.recording_protocols), kinds=tuple(self.recording_kinds), variant_test_fraction=self.variant_test_fraction,
            validation_fraction=settings.validation_fraction, max_eaps_per_cell=self.recording_eaps_per_cell,
            seed=settings.seed)


def trainers(training: TrainingSettings) -> gen.Trainers:
    return gen.Trainers(cnn=training.cnn_config(), lgbm=training.lgbm_config(), waveform=training.waveform_config())


def generalisation_key(training_table_key: str, pool_keys: dict[str, str], config: gen.GeneralisationConfig,
                       training: TrainingSettings) -> str:
    """Key of a generalisation result: the EAP datasets, the paper table, the protocol and training settings."""
    return keys.settings_hash(gen.CODE_VERSION, training_table_key, sorted(pool_keys.items()), config,
                                trainers(training))


def pool_cells(settings: SimulationSettings, parents) -> list[str]:
    """The cells of a generalisation pool: the paper training table's models (``parents``) and the
    morphology variants of each that the current settings ask for (:meth:`SimulationSettings.variant_names`)."""
    parents = sorted(set(parents))
    return parents + [v for p in parents for v in settings.variant_names(p)]


def result_path(settings: SimulationSettings, rotation: str, task: str, family: str = "paper"):
    """Where the generalisation result of a rotation x task of ``family`` (``paper`` / ``recording``) is."""
    folder = settings.data_path / "generalisation"
    return (folder if family == "paper" else folder / family) / rotation / f"{task}.json"


def generalisation_result_key(settings: SimulationSettings, rotation: str, task: str) -> str | None:
    """The key stored in a rotation x task's result file (None if there is none or it is unreadable)."""
    try:
        return json.loads(result_path(settings, rotation, task).read_text()).get("key")
    except (OSError, ValueError):
        return None


@dg.asset(
    partitions_def=rotation_task_partitions, group_name="generalisation", kinds={"lightgbm", "tensorflow", "mlflow"},
    code_version=gen.CODE_VERSION, op_tags=k8s_op_tags("generalisation"), retry_policy=TRANSIENT_RETRY,
    ins={"training_table": dg.AssetIn(partition_mapping=BY_ROTATION)},
    deps=[evaluation, dg.AssetDep(eap_dataset, partition_mapping=ALL_CELLS_OF_ROTATION), "generalisation_settings",
          "variant_settings"],
)
@fail_fast
def generalisation(context: dg.AssetExecutionContext, settings: SimulationSettings, training: TrainingSettings,
                   generalisation_settings: GeneralisationSettings, mlflow_tracking: MLflowTracking,
                   training_table: pd.DataFrame) -> dg.MaterializeResult:
    """One rotation x task: the registered champions of every kind on their test rows at each noise
    level (in distribution), then models of every kind trained with noise augmentation on some
    morphology variants / near somata / all but one cell type and tested on the unseen ones, at
    each noise level. Results: ``generalisation/<rotation>/<task>.json``, a plot, an MLflow run."""
    import mlflow

    rotation, task = partition_rotation_task(context)
    config = generalisation_settings.config(settings)
    pool = load_pool(settings, rotation, pool_cells(settings, training_table["cell"]))
    _, classes = models.task_labels(pool.index, task)
    registry.configure(mlflow_tracking.uri(settings), mlflow_tracking.experiment)
    registered, versions = {}, {}
    for kind in registry.KINDS:
        loaded = registry.load_registered(registry.model_name(kind, rotation, task, settings.probe))
        if loaded.classes != classes:
            raise registry.RegistryError(f"{loaded.name} v{loaded.version} predicts classes {loaded.classes}, the "
                                         f"{rotation} pool has {classes}; retrain it (models_job)")
        registered[kind], versions[kind] = loaded.model, loaded.version
    test = training_table[training_table["split"] == "test"]
    test_rows = pool.rows_of(test["cell"], test["eap_id"])
    result = gen.run_generalisation(pool, task, config, trainers(training), registered, test_rows, context.log.info)
    keys = {name: d.provenance["settings_hash"] for name, d in pool.datasets.items()}
    key = generalisation_key(training_table.attrs.get("key"), keys, config, training)
    record = {**result.to_dict(), "key": key, "cells": len(pool.datasets),
              "variants": int((pool.index.drop_duplicates("cell")["cell"] != pool.index.drop_duplicates("cell")["parent"]).sum()),
              "registered_versions": versions}
    path = result_path(settings, rotation, task)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float))
    summary = result.summary()
    figure = plots.accuracy_vs_noise(summary, f"{rotation}, {task}: accuracy vs recording noise",
                                     gen.TARGETS.get(task))
    figures = figure_metadata(figure, path.with_suffix(".png"), "accuracy vs noise")
    with mlflow_tracking.run(context, settings, f"generalisation {rotation} {task}"):
        mlflow.log_dict(record, "generalisation.json")
        mlflow.log_artifact(str(path.with_suffix(".png")))
        for (protocol, kind), row in summary.iterrows():
            mlflow.log_metrics({f"{protocol}_{kind}_{gen.level_name(level)}": float(v)
                                for level, v in row.items() if np.isfinite(v)})
    table = summary.round(2).reset_index()
    table.columns = [str(c) if not isinstance(c, float) else f"{c:g} µV" for c in table.columns]
    return dg.MaterializeResult(metadata={
        "key": key, "cells": len(pool.datasets), "EAPs": len(pool), "variants": record["variants"],
        "accuracy (%) by noise RMS": markdown_table(table), "path": dg.MetadataValue.path(str(path)), **figures})


@dg.asset(
    partitions_def=recording_task_partitions, group_name="generalisation", kinds={"lightgbm", "mlflow"},
    code_version=gen.RECORDING_CODE_VERSION, op_tags=k8s_op_tags("generalisation"), retry_policy=TRANSIENT_RETRY,
    deps=[dg.AssetDep(recording_eap_dataset, partition_mapping=ALL_CELLS_OF_ROTATION), "generalisation_settings",
          "variant_settings", "recording_settings"],
)
@fail_fast
def recording_generalisation(context: dg.AssetExecutionContext, settings: SimulationSettings,
                             recording: RecordingSettings, training: TrainingSettings,
                             generalisation_settings: GeneralisationSettings,
                             mlflow_tracking: MLflowTracking) -> dg.MaterializeResult:
    """The recipe of the models for real recordings (``recording_<kind>_model``: the same training set
    settings and training settings) on one rotation x task, under protocols that hold out what a user's
    units are not: its own per-cell split over EAPs (the reference), unseen morphology variants (when
    the settings make variants: their recording EAPs are then simulated too) and, for E/I, each cell type
    held out in turn. Each protocol builds its own training set (basis fitted on its training rows) from
    each cell's first ``recording_eaps_per_cell`` EAPs. Result:
    ``generalisation/recording/<rotation>/<task>.json``, an MLflow run."""
    import mlflow

    rotation, task = str(context.partition_key).split("|")
    config = generalisation_settings.recording_config(settings)
    cells_ = pool_cells(settings, paper_cells(settings, context.instance.get_dynamic_partitions("cell_model")))
    pool = load_pool(settings, rotation, cells_, family="recording", recording=recording)
    set_config = recording.set_config(settings)
    result = gen.run_recording_generalisation(pool, task, set_config, config, training.cnn_config(),
                                              training.lgbm_config(), context.log.info)
    pool_keys = {name: d.provenance["settings_hash"] for name, d in pool.datasets.items()}
    key = keys.settings_hash(gen.RECORDING_CODE_VERSION, set_config.key(), sorted(pool_keys.items()), config,
                             training.cnn_config(), training.lgbm_config())
    index = pool.index.drop_duplicates("cell")
    record = {**result, "key": key, "cells": len(pool.datasets),
              "variants": int((index["cell"] != index["parent"]).sum())}
    path = result_path(settings, rotation, task, "recording")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=float))
    rows = pd.DataFrame(result["rows"])
    summary = rows.groupby(["protocol", "kind"])["accuracy"].mean().unstack("kind") if len(rows) else pd.DataFrame()
    with mlflow_tracking.run(context, settings, f"recording generalisation {rotation} {task}"):
        mlflow.log_dict(record, "recording_generalisation.json")
        mlflow.log_metrics({f"{protocol}_{kind}": float(v) for (protocol, kind), v in summary.stack().items()})
    return dg.MaterializeResult(metadata={
        "key": key, "cells": len(pool.datasets), "variants": record["variants"],
        "accuracy (%) by protocol (hold_out_type: mean over types)": markdown_table(summary.round(2).reset_index()),
        "path": dg.MetadataValue.path(str(path))})


@dg.asset(deps=[generalisation, recording_generalisation], group_name="reports", kinds={"markdown"},
          code_version="generalisation-report-2",
          op_tags=k8s_op_tags("tables"), retry_policy=TRANSIENT_RETRY)
@fail_fast
def generalisation_report(context: dg.AssetExecutionContext, settings: SimulationSettings,
                          mlflow_tracking: MLflowTracking) -> dg.MaterializeResult:
    """Every rotation x task's generalisation result: accuracy per model kind and protocol at each
    noise level, the hold-cell-type-out E/I, and the targets (3drot, 10 µV, unseen variants: m-type
    >= 90 %, binary >= 98 %; hold-out E/I >= 90 %) met or missed by how much and why; then the same for
    the models for real recordings (``recording_generalisation``): ``reports/generalisation.md`` + ``.csv`` + plots."""
    import mlflow

    results, recording_results = {}, {}
    for task in models.TASKS:
        for rotation in rotation_partitions.get_partition_keys():
            if (path := result_path(settings, rotation, task)).exists():
                results[(rotation, task)] = json.loads(path.read_text())
        for rotation in recording_rotation_partitions.get_partition_keys():
            if (path := result_path(settings, rotation, task, "recording")).exists():
                recording_results[(rotation, task)] = json.loads(path.read_text())
    if not results and not recording_results:
        raise FileNotFoundError(f"no generalisation results under {settings.data_path / 'generalisation'}; "
                                "materialise `generalisation` or `recording_generalisation` first")
    sections, frames = [], []
    if results:
        markdown, frame = generalisation_markdown(results)
        sections.append(markdown)
        frames.append(frame.assign(family="paper"))
    if recording_results:
        markdown, frame = recording_generalisation_markdown(recording_results)
        sections.append(markdown)
        frames.append(frame.assign(family="recording"))
    markdown, frame = "\n".join(sections), pd.concat(frames, ignore_index=True)
    folder = settings.data_path / "reports"
    with atomic_path(folder / "generalisation.md") as tmp:
        tmp.write_text(markdown)
    with atomic_path(folder / "generalisation.csv") as tmp:
        frame.to_csv(tmp, index=False)
    with mlflow_tracking.run(context, settings, "generalisation report"):
        mlflow.log_text(markdown, "generalisation.md")
        mlflow.log_text(frame.to_csv(index=False), "generalisation.csv")
        for (rotation, task) in results:
            png = result_path(settings, rotation, task).with_suffix(".png")
            if png.exists():
                mlflow.log_artifact(str(png), f"plots/{rotation}")
    plots_md = {f"accuracy vs noise, {rotation} {task}": dg.MetadataValue.md(
        f"![{rotation} {task}](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})")
        for (rotation, task) in results
        if (png := result_path(settings, rotation, task).with_suffix(".png")).exists()}
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.md(markdown), "path": dg.MetadataValue.path(str(folder / "generalisation.md")),
        "results": len(results) + len(recording_results), **plots_md})
