"""``make run``: materialise the whole asset graph in dependency order through the local Dagster
instance, partitions in parallel worker processes, skipping partitions that are up to date.

With ``settings.variants_per_cell`` > 0, first ``morphology_variants_job`` (the variants of every
BBP model, added as cell partitions). Per cell: ``cell_models_job`` (cell_model, spike_templates);
as soon as it is done, per rotation ``eap_datasets_job`` (eap_dataset, feature_table); once every
cell of a rotation is done, ``training_tables_job`` (training_table and what hangs off it).
Morphology variants go through the cell and EAP stages only: the training tables are the BBP
models'. With the ``generalisation`` stage, each rotation x task's ``generalisation_job`` runs once
its models and every cell's (variants included) EAP datasets are done, then
``generalisation_report_job``. Every run is an ordinary Dagster run recorded in the instance, so it shows in the UI
with its logs, metadata and checks.

A partition is skipped when the instance's latest materialisation of its last asset carries the
key that the current settings give *and* the artefact on disk still has that key; ``force``
runs everything (and makes the assets recompute).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import dagster as dg
from upath import UPath

from eap_assets.core import cells, stages
from eap_assets.core.mechanisms import MechanismError
from eap_assets.core.models import KINDS, TASKS
from eap_assets.defs.features import expected_features_key, training_key
from eap_assets.defs.eaps import pool_models
from eap_assets.defs.generalisation import (GeneralisationSettings, generalisation_key, generalisation_result_key,
                                            pool_cells)
from eap_assets.defs.io import stored_parquet_key
from eap_assets.defs.partitions import (cell_partitions, cell_rotation_key, recording_rotation_partitions,
                                        rotation_partitions)
from eap_assets.defs.crosscheck import CrosscheckSettings, rate_partitions, recording_paths, stored_key
from eap_assets.defs.recording import recording_model_key, training_set_key
from eap_assets.defs.resources import RecordingSettings, SimulationSettings
from eap_assets.defs.training import TrainingSettings, model_key, rotation_task_key, rotation_task_partitions
from eap_assets.local import ensure_dagster_home

STAGES: tuple[str, ...] = ("variants", "cells", "eaps", "training", "models", "recording", "generalisation", "crosscheck",
                           "report")
#: What ``eap-assets run`` / ``make run`` do unless told otherwise: everything but the generalisation and
#: cross-simulator stages (``make generalisation`` / ``make crosscheck`` add them).
DEFAULT_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s not in ("generalisation", "crosscheck"))
Log = Callable[[str], None]


@dataclass
class TaskResult:
    """Outcome of one partition run (or of its skip)."""

    job: str
    partition: str
    status: str  # "done" | "skipped" | "failed"
    seconds: float = 0.0
    run_id: str | None = None
    error: str | None = None
    started: float | None = None  # time.time() when the run started in its worker
    peak_rss_mib: float | None = None  # the worker process's peak RSS so far (ru_maxrss; an upper bound for this run)


@dataclass
class RunReport:
    """Everything :func:`materialize_graph` did."""

    results: list[TaskResult] = field(default_factory=list)

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)


def settings_run_config(settings: SimulationSettings, training: TrainingSettings | None = None,
                        generalisation: GeneralisationSettings | None = None,
                        recording: RecordingSettings | None = None, crosscheck: CrosscheckSettings | None = None) -> dict:
    """Run config that gives a run exactly these settings (also visible in the UI's launchpad)."""
    resources = {"settings": {"config": _fields(settings)}}
    if crosscheck is not None:
        resources["crosscheck_settings"] = {"config": _fields(crosscheck)}
    if recording is not None:
        resources["recording"] = {"config": _fields(recording)}
    if training is not None:
        resources["training"] = {"config": _fields(training)}
    if generalisation is not None:
        resources["generalisation_settings"] = {"config": _fields(generalisation)}
    return {"resources": resources,
            "loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the instance keeps every event


def _fields(resource: dg.ConfigurableResource) -> dict:
    return {name: getattr(resource, name) for name in type(resource).model_fields}


def execute_partition(job_name: str, partition_key: str, run_config: dict) -> TaskResult:
    """Run one job for one partition in this process, recorded in the ``$DAGSTER_HOME`` instance."""
    from eap_assets.definitions import defs

    started, start = time.time(), time.perf_counter()
    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        check_partition_key(job, partition_key, instance)
        result = job.execute_in_process(
            partition_key=partition_key or None, instance=instance, run_config=run_config, raise_on_error=False)
    errors = [e.step_failure_data.error for e in result.all_events
              if e.is_step_failure and e.step_failure_data and e.step_failure_data.error]
    checks = [f"check {e.asset_check_evaluation_data.check_name} failed: {e.asset_check_evaluation_data.description}"
              for e in result.all_events if e.event_type_value == dg.DagsterEventType.ASSET_CHECK_EVALUATION.value
              and not e.asset_check_evaluation_data.passed]
    error = "; ".join([_root_cause(err) for err in errors[:1]] + checks) or None
    return TaskResult(job_name, partition_key, "done" if result.success and not checks else "failed",
                      round(time.perf_counter() - start, 1), result.run_id, error, started, _peak_rss_mib())


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_partition_key(job: dg.JobDefinition, partition_key: str, instance: dg.DagsterInstance) -> None:
    """ValueError naming the job, the key and the valid keys if ``partition_key`` is not one of the job's."""
    partitions = job.partitions_def
    if partitions is None:
        if partition_key:
            raise ValueError(f"{job.name} is not partitioned; got partition key {partition_key!r}")
        return
    def keys(definition: dg.PartitionsDefinition) -> list[str]:
        return definition.get_partition_keys(dynamic_partitions_store=instance)

    if partition_key in keys(partitions):
        return
    if isinstance(partitions, dg.MultiPartitionsDefinition):
        dims = partitions.partitions_defs
        valid = "; ".join(f"{d.name} in {', '.join(keys(d.partitions_def)) or 'none'}" for d in dims)
        valid = f"'{'|'.join(f'<{d.name}>' for d in dims)}' with {valid}"
    else:
        valid = ", ".join(keys(partitions)) or "none"
    raise ValueError(f"{job.name}: unknown partition key {partition_key!r}; valid: {valid}")


#: Wrappers around the user's exception in a step failure besides Dagster's own: a retry policy's,
#: and the ``Failure`` that makes bad input skip retries (``eap_assets.defs.retries``).
_WRAPPERS = ("Failure", "RetryRequested", "RetryRequestedFromPolicy")


def _root_cause(error) -> str:
    """The user's exception inside a Dagster step failure (skipping Dagster's wrappers, not its causes)."""
    while error.cause is not None and (error.cls_name.startswith("Dagster") or error.cls_name in _WRAPPERS):
        error = error.cause
    head, sep, rest = error.message.strip().partition(": ")
    message = rest if sep and head.rsplit(".", 1)[-1] == error.cls_name else error.message.strip()
    return f"{error.cls_name}: {message}"  # "StaleInputError: ...", not "eap_assets.core.stages.StaleInputError: ..."


def latest_key(instance: dg.DagsterInstance, asset: str, partition: str | None) -> str | None:
    """The ``key`` metadata of the latest materialisation of an asset partition (None if none)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=None if partition is None else [partition]),
        limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("key")
    return value.value if value is not None else None


class _UpToDate:
    """Which partitions the instance and the disk show as up to date under ``settings``."""

    def __init__(self, instance: dg.DagsterInstance, settings: SimulationSettings, training: TrainingSettings):
        self.instance, self.settings, self.training, self.data = instance, settings, training, settings.data_path

    def cell(self, model: cells.CellModel) -> bool:
        key = stages.templates_key(model, self.settings.stimulus())
        return (latest_key(self.instance, "cell_model", model.name) == cells.model_hash(model)
                and latest_key(self.instance, "spike_templates", model.name) == key
                and stages.stored_key(stages.templates_path(self.data, model.name)) == key)

    def eaps(self, model: cells.CellModel, rotation: str) -> bool:
        key = expected_features_key(self.settings, model, rotation)
        path = UPath(self.data) / "feature_table" / model.name / f"{rotation}.parquet"
        partition = str(cell_rotation_key(model.name, rotation))
        return latest_key(self.instance, "feature_table", partition) == key and stored_parquet_key(path) == key

    def training_key(self, models: Sequence[cells.CellModel], rotation: str) -> str:
        return training_key(self.settings, {m.name: expected_features_key(self.settings, m, rotation) for m in models})

    def training_tables(self, models: Sequence[cells.CellModel], rotation: str) -> bool:
        key = self.training_key(models, rotation)
        path = UPath(self.data) / "training_table" / f"{rotation}.parquet"
        return (latest_key(self.instance, "training_table", rotation) == key and stored_parquet_key(path) == key
                and latest_key(self.instance, "hold_out_cell_type", rotation) == model_key("hold_out", key, self.training))

    def models(self, models: Sequence[cells.CellModel], rotation: str, task: str) -> bool:
        table = self.training_key(models, rotation)
        partition = str(rotation_task_key(rotation, task))
        keys = {kind: model_key(kind, table, self.training) for kind in KINDS}
        return (all(latest_key(self.instance, f"{kind}_model", partition) == key for kind, key in keys.items())
                and latest_key(self.instance, "evaluation", partition) == model_key("evaluation", table, self.training))

    def recording_eaps(self, model: cells.CellModel, rotation: str, recording: RecordingSettings) -> bool:
        key = self.recording_eaps_key(model, rotation, recording)
        folder = stages.eaps_dir(self.data, model.name, rotation, "recording")
        return (latest_key(self.instance, "recording_eap_dataset", str(cell_rotation_key(model.name, rotation))) == key
                and stages.stored_key(folder) == key)

    def recording_eaps_key(self, model: cells.CellModel, rotation: str, recording: RecordingSettings) -> str:
        return stages.eaps_key(recording.eap_config(self.settings, rotation),
                               stages.templates_key(model, self.settings.stimulus()))

    def recording_set_key(self, models: Sequence[cells.CellModel], rotation: str, recording: RecordingSettings) -> str:
        return training_set_key(recording.set_config(self.settings).key(),
                                {m.name: self.recording_eaps_key(m, rotation, recording) for m in models})

    def recording_set(self, models: Sequence[cells.CellModel], rotation: str, recording: RecordingSettings) -> bool:
        key = self.recording_set_key(models, rotation, recording)
        path = UPath(self.data) / "recording_training_set" / f"{rotation}.parquet"
        return latest_key(self.instance, "recording_training_set", rotation) == key and stored_parquet_key(path) == key

    def recording_models(self, models: Sequence[cells.CellModel], rotation: str, task: str,
                         recording: RecordingSettings) -> bool:
        table = self.recording_set_key(models, rotation, recording)
        partition = str(rotation_task_key(rotation, task))
        return all(latest_key(self.instance, asset, partition) == recording_model_key(kind, table, self.training)
                   for kind, asset in [*((k, f"recording_{k}_model") for k in KINDS), ("classifier", "unit_classifier")])

    def mearec_templates(self, paper_models: Sequence[cells.CellModel], crosscheck: CrosscheckSettings) -> bool:
        key = crosscheck.key(list(paper_models), self.settings.probe)
        path = self.data / "crosscheck" / "templates.json"
        return latest_key(self.instance, "mearec_templates", None) == key and stored_key(path) == key

    def mearec_recording(self, paper_models: Sequence[cells.CellModel], rate: str,
                         crosscheck: CrosscheckSettings) -> bool:
        key = crosscheck.recording_key(crosscheck.key(list(paper_models), self.settings.probe), rate)
        recording, analyzer, _ = recording_paths(self.settings, rate)
        return (latest_key(self.instance, "mearec_recording", rate) == key
                and stored_key(recording.with_suffix(".json")) == key and analyzer.exists())

    def generalisation(self, paper_models: Sequence[cells.CellModel], rotation: str, task: str, config) -> bool:
        stimulus = self.settings.stimulus()
        pool = pool_models(self.settings, pool_cells(self.settings, [m.name for m in paper_models]))
        eaps = {m.name: stages.eaps_key(self.settings.eap_config(rotation), stages.templates_key(m, stimulus))
                for m in pool}
        key = generalisation_key(self.training_key(paper_models, rotation), eaps, config, self.training)
        return (latest_key(self.instance, "generalisation", str(rotation_task_key(rotation, task))) == key
                and generalisation_result_key(self.settings, rotation, task) == key)


def materialize_graph(settings: SimulationSettings, cell_names: Sequence[str] | None = None,
                      rotations: Sequence[str] | None = None, stages_: Sequence[str] = STAGES, workers: int = 2,
                      log: Log = print, training: TrainingSettings | None = None,
                      generalisation: GeneralisationSettings | None = None,
                      recording: RecordingSettings | None = None,
                      recording_rotations: Sequence[str] | None = None,
                      crosscheck: CrosscheckSettings | None = None) -> RunReport:
    """Materialise cells -> EAP datasets/feature tables -> training tables -> models and their
    evaluation -> the paper comparison, ``workers`` runs at a time.

    Parameters
    ----------
    settings : SimulationSettings
        Passed to every run as run config; ``settings.force`` disables skipping.
    cell_names : sequence of str, optional
        Models to run (default: every model found); they are registered as ``cell_model`` partitions.
        With ``settings.variants_per_cell`` > 0, the current variants of these models (those the
        settings draw, see ``SimulationSettings.variant_names``) are run too.
    rotations : sequence of str, optional
        Rotation partitions to run (default: all of the deployment's).
    stages_ : sequence of str
        Subset of :data:`STAGES`; ``variants`` runs ``morphology_variants_job`` (before the model scan)
        when ``settings.variants_per_cell`` > 0, and is a no-op otherwise.
    workers : int
        Runs executed at once (processes; NEURON is single-threaded).
    training : TrainingSettings, optional
        Training settings (default: the paper's).
    generalisation : GeneralisationSettings, optional
        Settings of the ``generalisation`` stage (default: its defaults).
    recording : RecordingSettings, optional
        Settings of the ``recording`` stage: the models for real recordings (default: their defaults).
    recording_rotations : sequence of str, optional
        Rotations of the ``recording`` stage (default: all of the deployment's recording rotations).
    crosscheck : CrosscheckSettings, optional
        Settings of the ``crosscheck`` stage (MEArec's templates and recordings of the BBP models, the
        champions of ``crosscheck.rotation`` scored on them; default: their defaults).

    Returns
    -------
    RunReport
        One result per partition; a failed partition does not stop the others (only what depends on it).
    """
    unknown = sorted(set(stages_) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")
    all_rotations = rotation_partitions.get_partition_keys()
    rotations = list(rotations or all_rotations)
    bad = [r for r in rotations if r not in all_rotations]
    if bad:
        raise ValueError(f"rotation(s) {bad} are not partitions of this deployment ({', '.join(all_rotations)}); "
                         "set EAP_ASSETS_ROTATIONS to change the set")
    settings.noise_config()  # a bad noise setting is refused before anything runs (ValueError naming it)
    recording = recording or RecordingSettings()
    all_recording = recording_rotation_partitions.get_partition_keys()
    recording_rotations = list(recording_rotations or all_recording) if "recording" in stages_ else []
    bad = [r for r in recording_rotations if r not in all_recording]
    if bad:
        raise ValueError(f"recording rotation(s) {bad} are not partitions of this deployment ({', '.join(all_recording)}); "
                         "set EAP_ASSETS_RECORDING_ROTATIONS to change the set")
    if recording_rotations:
        recording.set_config(settings)  # a bad recording setting is refused before anything runs
    with_variants = settings.variants_per_cell > 0
    if with_variants:
        settings.variant_names(cells.PAPER_CELLS[0])  # likewise a bad variant setting
    training = training or TrainingSettings()
    generalisation = generalisation or GeneralisationSettings()
    crosscheck = crosscheck or CrosscheckSettings()
    with_crosscheck = "crosscheck" in stages_
    rates = rate_partitions.get_partition_keys() if with_crosscheck else []
    run_config = settings_run_config(settings, training, generalisation, recording, crosscheck)
    variants_run = None
    if with_variants and "variants" in stages_:  # the variant folders must exist before the scan
        ensure_dagster_home()
        variants_run = execute_partition("morphology_variants_job", "", run_config)
        if variants_run.status == "failed":
            log(f"morphology_variants_job FAILED: {variants_run.error}; continuing with the variants on disk")
    models, invalid = _scan(settings, cell_names, log)
    variant_cells = {m.name for m in models if m.parent is not None}
    variant_cells |= {n for n in invalid if with_variants and (settings.variants_path / n).exists()}
    paper_models = [m for m in models if m.parent is None]  # the training tables' cells
    ensure_dagster_home()
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions(cell_partitions.name))
    new = [m.name for m in models if m.name not in known]
    if new:
        instance.add_dynamic_partitions(cell_partitions.name, new)
    try:
        if models:
            cells.prepare_mechanisms(models)  # compile once, before workers start
    except MechanismError as exc:  # each partition that needs the broken mechanism fails with it
        log(f"mechanisms of the selected cells do not compile together; the cells concerned will fail: {exc}")
    up_to_date = _UpToDate(instance, settings, training)
    report = RunReport()
    n_paper = len(models) + len(invalid) - len(variant_cells)
    n_tasks = ((len(models) + len(invalid)) * (("cells" in stages_) + len(rotations) * ("eaps" in stages_))
               + len(recording_rotations) * (n_paper + 1 + len(TASKS)) + with_crosscheck * (2 + 2 * len(rates))
               + len(rotations) * (("training" in stages_) + len(TASKS) * ("models" in stages_)) + ("report" in stages_)
               + (variants_run is not None) + ("generalisation" in stages_) * (len(rotations) * len(TASKS) + 1))
    n_variants = f" (+ {len(variant_cells)} morphology variants)" if variant_cells else ""
    log(f"{len(paper_models)}{n_variants} cells x {len(rotations)} rotations ({settings.preset} "
        f"preset) -> {settings.data_path}; Dagster instance {os.environ['DAGSTER_HOME']}; {n_tasks} partition runs, "
        f"{workers} at a time")

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one BLAS thread per worker process
    pool = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn"))
    running: dict[Future, tuple[str, str, str | None, str | None]] = {}
    waiting_rotation = {r: ({m.name for m in models} | set(invalid)) - variant_cells for r in rotations}
    failed_cells: dict[str, set[str]] = {r: set() for r in rotations}
    waiting_models = {str(rotation_task_key(r, t)) for r in rotations for t in TASKS}
    # generalisation of a rotation x task: after its models and every variant's EAPs of the rotation
    waiting_variant_eaps = {r: set(variant_cells) for r in rotations}
    failed_variants: dict[str, set[str]] = {r: set() for r in rotations}
    models_ok: dict[str, bool] = {}
    waiting_generalisation = set(waiting_models) if "generalisation" in stages_ else set()
    waiting_recording = {r: ({m.name for m in models} | set(invalid)) - variant_cells for r in recording_rotations}
    # the cross-check of each rate: after its recording and the unit classifiers of its rotation (if trained here)
    waiting_classifiers = ({str(rotation_task_key(crosscheck.rotation, t)) for t in TASKS}
                           if crosscheck.rotation in recording_rotations else set())
    waiting_rates, rates_ok, scored = set(rates), {}, set()
    failed_recording: dict[str, set[str]] = {r: set() for r in recording_rotations}
    started_generalisation: set[str] = set()
    start = time.perf_counter()

    def record(result: TaskResult) -> None:
        report.results.append(result)
        detail = {"done": f"done in {result.seconds:.1f} s", "skipped": "up to date, skipped",
                  "failed": f"FAILED after {result.seconds:.1f} s: {result.error}"}[result.status]
        log(f"[{len(report.results):>3}/{n_tasks}] {result.job} {result.partition}: {detail}")

    def submit(job: str, partition: str, cell: str | None, rotation: str | None) -> None:
        running[pool.submit(execute_partition, job, partition, run_config)] = (job, partition, cell, rotation)

    def after_cell(name: str, ok: bool) -> None:
        if name not in variant_cells:
            for rotation in recording_rotations:
                partition = str(cell_rotation_key(name, rotation))
                if not ok:
                    record(TaskResult("recording_eaps_job", partition, "failed", error=f"cell stage of {name} failed"))
                    after_recording_eaps(name, rotation, False)
                elif not settings.force and up_to_date.recording_eaps(by_name[name], rotation, recording):
                    record(TaskResult("recording_eaps_job", partition, "skipped"))
                    after_recording_eaps(name, rotation, True)
                else:
                    submit("recording_eaps_job", partition, name, rotation)
        for rotation in rotations:
            if "eaps" not in stages_:
                after_eaps(name, rotation, ok)
            elif not ok:
                record(TaskResult("eap_datasets_job", str(cell_rotation_key(name, rotation)), "failed",
                                  error=f"cell stage of {name} failed"))
                after_eaps(name, rotation, False)
            elif not settings.force and up_to_date.eaps(by_name[name], rotation):
                record(TaskResult("eap_datasets_job", str(cell_rotation_key(name, rotation)), "skipped"))
                after_eaps(name, rotation, True)
            else:
                submit("eap_datasets_job", str(cell_rotation_key(name, rotation)), name, rotation)

    def after_recording_eaps(name: str, rotation: str, ok: bool) -> None:
        waiting_recording[rotation].discard(name)
        if not ok:
            failed_recording[rotation].add(name)
        if waiting_recording[rotation]:
            return
        if failed_recording[rotation]:
            record(TaskResult("recording_training_job", rotation, "failed", error="recording EAPs failed for "
                              f"{', '.join(sorted(failed_recording[rotation]))}"))
            after_recording_set(rotation, False)
        elif not settings.force and up_to_date.recording_set(paper_models, rotation, recording):
            record(TaskResult("recording_training_job", rotation, "skipped"))
            after_recording_set(rotation, True)
        else:
            submit("recording_training_job", rotation, None, rotation)

    def after_recording_set(rotation: str, ok: bool) -> None:
        for task in TASKS:
            partition = str(rotation_task_key(rotation, task))
            if not ok:
                record(TaskResult("recording_models_job", partition, "failed",
                                  error=f"recording training set {rotation} failed"))
                after_classifier(partition)
            elif not settings.force and up_to_date.recording_models(paper_models, rotation, task, recording):
                record(TaskResult("recording_models_job", partition, "skipped"))
                after_classifier(partition)
            else:
                submit("recording_models_job", partition, None, rotation)

    def after_classifier(partition: str) -> None:
        waiting_classifiers.discard(partition)
        for rate in sorted(rates_ok):
            maybe_crosscheck(rate)

    def after_mearec_templates(ok: bool) -> None:
        for rate in rates:
            if not ok:
                record(TaskResult("crosscheck_recording_job", rate, "failed", error="MEArec templates failed"))
                after_mearec_recording(rate, False)
            elif not settings.force and up_to_date.mearec_recording(paper_models, rate, crosscheck):
                record(TaskResult("crosscheck_recording_job", rate, "skipped"))
                after_mearec_recording(rate, True)
            else:
                submit("crosscheck_recording_job", rate, None, None)

    def after_mearec_recording(rate: str, ok: bool) -> None:
        rates_ok[rate] = ok
        maybe_crosscheck(rate)

    def maybe_crosscheck(rate: str) -> None:
        if rate in scored or rate not in rates_ok or waiting_classifiers:
            return
        scored.add(rate)
        if rates_ok[rate]:
            submit("crosscheck_job", rate, None, None)
        else:
            record(TaskResult("crosscheck_job", rate, "failed", error=f"MEArec recording {rate} failed"))
            after_crosscheck(rate)

    def after_crosscheck(rate: str) -> None:
        waiting_rates.discard(rate)
        if not waiting_rates:
            submit("crosscheck_report_job", "", None, None)

    def after_eaps(name: str, rotation: str, ok: bool) -> None:
        if name in variant_cells:  # a variant's feature tables are not part of the training tables
            waiting_variant_eaps[rotation].discard(name)
            if not ok:
                failed_variants[rotation].add(name)
            for task in TASKS:
                maybe_generalise(rotation, task)
            return
        waiting_rotation[rotation].discard(name)
        if not ok:
            failed_cells[rotation].add(name)
        if waiting_rotation[rotation]:
            return
        if "training" not in stages_:
            after_training(rotation, not failed_cells[rotation])
        elif failed_cells[rotation]:
            record(TaskResult("training_tables_job", rotation, "failed",
                              error=f"feature tables failed for {', '.join(sorted(failed_cells[rotation]))}"))
            after_training(rotation, False)
        elif not settings.force and up_to_date.training_tables(paper_models, rotation):
            record(TaskResult("training_tables_job", rotation, "skipped"))
            after_training(rotation, True)
        else:
            submit("training_tables_job", rotation, None, rotation)

    def after_training(rotation: str, ok: bool) -> None:
        for task in TASKS:
            partition = str(rotation_task_key(rotation, task))
            if "models" not in stages_:
                after_models(partition, ok)
            elif not ok:
                record(TaskResult("models_job", partition, "failed", error=f"training table {rotation} failed"))
                after_models(partition, False)
            elif not settings.force and up_to_date.models(paper_models, rotation, task):
                record(TaskResult("models_job", partition, "skipped"))
                after_models(partition, True)
            else:
                submit("models_job", partition, None, rotation)

    def after_models(partition: str, ok: bool) -> None:
        waiting_models.discard(partition)
        models_ok[partition] = ok
        keys = rotation_task_partitions.get_partition_key_from_str(partition).keys_by_dimension
        maybe_generalise(keys["rotation"], keys["task"])
        if not waiting_models and "report" in stages_:
            submit("report_job", "", None, None)

    def maybe_generalise(rotation: str, task: str) -> None:
        partition = str(rotation_task_key(rotation, task))
        if (partition not in waiting_generalisation or partition in started_generalisation
                or partition not in models_ok or waiting_variant_eaps[rotation]):
            return
        started_generalisation.add(partition)
        if not models_ok[partition] or failed_variants[rotation]:
            why = (f"EAPs of variants {sorted(failed_variants[rotation])[:3]} failed" if models_ok[partition]
                   else f"models {partition} failed")
            record(TaskResult("generalisation_job", partition, "failed", error=why))
            after_generalisation(partition, False)
        elif not settings.force and up_to_date.generalisation(paper_models, rotation, task,
                                                              generalisation.config(settings)):
            record(TaskResult("generalisation_job", partition, "skipped"))
            after_generalisation(partition, True)
        else:
            submit("generalisation_job", partition, None, rotation)

    def after_generalisation(partition: str, ok: bool) -> None:
        waiting_generalisation.discard(partition)
        if not waiting_generalisation:
            submit("generalisation_report_job", "", None, None)

    by_name = {m.name: m for m in models}
    try:
        if variants_run is not None:
            record(variants_run)
        if with_crosscheck:  # MEArec's own simulations need no artefact of ours: they start at once
            if not settings.force and up_to_date.mearec_templates(paper_models, crosscheck):
                record(TaskResult("crosscheck_templates_job", "", "skipped"))
                after_mearec_templates(True)
            else:
                submit("crosscheck_templates_job", "", None, None)
        for name, problem in invalid.items():  # not a valid model folder: fails alone, as a partition would
            record(TaskResult("cell_models_job", name, "failed", error=f"CellModelError: {problem}"))
            after_cell(name, False)
        for model in models:
            if "cells" not in stages_:
                after_cell(model.name, True)
            elif not settings.force and up_to_date.cell(model):
                record(TaskResult("cell_models_job", model.name, "skipped"))
                after_cell(model.name, True)
            else:
                submit("cell_models_job", model.name, model.name, None)
        while running:
            done = next(f for f in _wait_any(running))
            job, partition, cell, rotation = running.pop(done)
            try:
                result = done.result()
            except Exception as exc:  # a worker that died (e.g. killed) fails only its partition
                result = TaskResult(job, partition, "failed", error=f"{type(exc).__name__}: {exc}")
            record(result)
            ok = result.status == "done"
            if job == "cell_models_job":
                after_cell(cell, ok)
            elif job == "recording_eaps_job":
                after_recording_eaps(cell, rotation, ok)
            elif job == "recording_training_job":
                after_recording_set(rotation, ok)
            elif job == "recording_models_job":
                after_classifier(partition)
            elif job == "crosscheck_templates_job":
                after_mearec_templates(ok)
            elif job == "crosscheck_recording_job":
                after_mearec_recording(partition, ok)
            elif job == "crosscheck_job":
                after_crosscheck(partition)
            elif job == "eap_datasets_job":
                after_eaps(cell, rotation, ok)
            elif job == "training_tables_job":
                after_training(rotation, ok)
            elif job == "models_job":
                after_models(partition, ok)
            elif job == "generalisation_job":
                after_generalisation(partition, ok)
    finally:
        pool.shutdown(cancel_futures=True)
        instance.dispose()
    log(f"finished in {time.perf_counter() - start:.0f} s: {report.count('done')} run, "
        f"{report.count('skipped')} up to date, {len(report.failed)} failed")
    return report


def _scan(settings: SimulationSettings, cell_names: Sequence[str] | None, log: Log
          ) -> tuple[list[cells.CellModel], dict[str, str]]:
    """The models to run and the invalid model folders among them (``stages.scan_models``).

    With ``settings.variants_per_cell`` > 0 the variants folder is scanned too, and the selection is
    ``cell_names`` (default: every model that is not a variant) plus the current variants of those
    models that exist (older variants in the folder, of other settings, are left alone).
    """
    folders = [Path(f).expanduser() for f in settings.model_folders]
    if settings.variants_per_cell < 1:
        return stages.scan_models(folders, cell_names)
    if settings.variants_path.is_dir():
        folders.append(settings.variants_path)
    everything, broken = stages.scan_models(folders)
    found = {m.name: m for m in everything}
    names = list(cell_names or [*(m.name for m in everything if m.parent is None),
                                *(n for n in broken if not (settings.variants_path / n).exists())])
    missing = []
    for name in list(names):
        if name not in found or found[name].parent is not None:
            continue  # an invalid folder, or a variant itself: no variants of it
        for variant in settings.variant_names(name):
            if variant not in found and variant not in broken:
                missing.append(variant)
            elif variant not in names:
                names.append(variant)
    if missing:
        log(f"{len(missing)} morphology variant(s) not made yet (run the 'variants' stage), e.g. {missing[0]}")
    return stages.scan_models(folders, names)


def _wait_any(futures: dict[Future, object]):
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
    return done
