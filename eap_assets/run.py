"""``make run``: materialise the whole asset graph as one Dagster backfill through the local instance.

The selection (the stages asked for, every cell and rotation) is planned per stage partition
(:func:`_plan`): up to date ones are skipped, the rest are the targets of one asset backfill,
launched through the webserver of the local deployment (``make ui``'s if it runs, else a
``dagster dev`` started for the run: :class:`eap_assets.local.LocalDagster`). Dagster's backfill
daemon orders the runs by the asset graph (cell -> EAP datasets and feature tables -> training
tables -> models and evaluation -> report; the recording family, generalisation and cross-check
likewise), and the instance's run queue runs at most one per core. Progress is printed per run;
Ctrl-C cancels the backfill; a rerun materialises only what is missing or out of date. With
``settings.variants_per_cell`` > 0, a first backfill makes the morphology variants (added as cell
partitions); they go through the cell and EAP stages only (the training tables are the BBP models').
Every run is an ordinary Dagster run recorded in the instance, so it shows in the UI with its
logs, metadata and checks.

What is up to date is Dagster's call, not this module's: before planning, the run reports the data
versions of the sources (its settings, the cell model files: :mod:`eap_assets.defs.sources`) that
changed, then asks the webserver for the stale status of every asset partition of the selection (the
markers the UI shows: code versions and the data versions of the inputs). A stage partition whose
assets are all FRESH is skipped; the missing and stale ones are backfilled. Dagster's staleness is
not transitive (a model is stale once its training table *was* updated), so everything downstream of
a stale partition in the selection is backfilled with it, in one backfill that Dagster orders; should
Dagster still show something stale afterwards, a second backfill follows. ``force`` runs everything
once (and makes the assets recompute). Artefacts deleted by hand behind Dagster's back are not
noticed: ``make clean`` removes the data directory and the instance together.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from eap_assets.core import cells, stages
from eap_assets.core.mechanisms import MechanismError
from eap_assets.core.models import TASKS
from eap_assets.defs.crosscheck import CrosscheckSettings, rate_partitions
from eap_assets.defs.generalisation import GeneralisationSettings
from eap_assets.defs.partitions import (cell_partitions, cell_rotation_key, recording_rotation_partitions,
                                        rotation_partitions)
from eap_assets.defs.resources import RecordingSettings, SimulationSettings, resource_fields
from eap_assets.defs.settings import write_settings
from eap_assets.defs.sources import observe_sources
from eap_assets.defs.training import TrainingSettings, rotation_task_key
from eap_assets.local import BACKFILL_DONE, LocalDagster, ensure_dagster_home

STAGES: tuple[str, ...] = ("variants", "cells", "eaps", "training", "models", "recording", "generalisation",
                           "recording_generalisation", "crosscheck", "report")
#: What ``eap-assets run`` / ``make run`` do unless told otherwise: everything but the generalisation and
#: cross-simulator stages (``make generalisation`` / ``make recording-generalisation`` / ``make crosscheck`` add them).
DEFAULT_STAGES: tuple[str, ...] = tuple(s for s in STAGES
                                        if s not in ("generalisation", "recording_generalisation", "crosscheck"))
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
    ended: float | None = None  # ... and when it ended (of the last run, when the partition took several)
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
    given = {"settings": settings, "crosscheck_settings": crosscheck, "recording": recording, "training": training,
             "generalisation_settings": generalisation}
    resources = {key: {"config": resource_fields(value)} for key, value in given.items() if value is not None}
    return {"resources": resources,
            "loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the instance keeps every event


def execute_partition(job_name: str, partition_key: str, run_config: dict) -> TaskResult:
    """Run one job for one partition in this process, recorded in the ``$DAGSTER_HOME`` instance."""
    from eap_assets.definitions import defs

    started, start = time.time(), time.perf_counter()
    job = defs.resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        check_partition_key(job, partition_key, instance)
        result = job.execute_in_process(
            partition_key=partition_key or None, instance=instance, run_config=run_config, raise_on_error=False)
    error, checks_failed = run_problems(result.all_events)
    return TaskResult(job_name, partition_key, "done" if result.success and not checks_failed else "failed",
                      round(time.perf_counter() - start, 1), result.run_id, error, started, _peak_rss_mib())


def run_problems(events) -> tuple[str | None, bool]:
    """What went wrong in a run, from its Dagster events: the root cause of its first step failure and every
    failed asset check ("; "-joined, None if nothing), and whether a check failed."""
    errors = [e.step_failure_data.error for e in events
              if e.is_step_failure and e.step_failure_data and e.step_failure_data.error]
    checks = [f"check {d.check_name} failed: {d.description}" for d in (
        e.asset_check_evaluation_data for e in events
        if e.event_type_value == dg.DagsterEventType.ASSET_CHECK_EVALUATION.value) if not d.passed]
    return "; ".join([_root_cause(err) for err in errors[:1]] + checks) or None, bool(checks)


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


#: Backfills one ``make run`` may launch one after the other. The first holds everything due (:func:`_plan`
#: adds what is downstream of a stale partition); a second one only runs what Dagster still shows as stale.
MAX_WAVES = 3
#: Dagster leaves a partitioned input out of staleness when it spans this many upstream partitions or more
#: (``SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD`` in dagster 1.13): the training tables read every cell.
DAGSTER_PARTITION_INPUT_LIMIT = 100


class Staleness:
    """Dagster's answer for the stage partitions of a plan: FRESH, STALE or MISSING per asset partition, asked
    once per wave of the webserver's GraphQL API (the same stale markers the UI shows)."""

    def __init__(self, status: dict[tuple[str, str | None], str] | None = None):
        self.status = status or {}

    @classmethod
    def of(cls, local: LocalDagster, targets: dict[str, list[str] | None]) -> "Staleness":
        status = {}
        for asset, partitions in targets.items():
            for partition, value in local.stale_status(asset, partitions).items():
                status[(asset, partition)] = value
        return cls(status)

    def fresh(self, assets: Sequence[str], partition: str | None) -> bool:
        """Whether every one of ``assets`` is FRESH at ``partition`` (unknown: not fresh)."""
        return all(self.status.get((a, partition)) == "FRESH" for a in assets)


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
        Runs at once, when this call creates the local instance (its ``dagster.yaml`` run queue limit; then
        edit that file).
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
    recording_rotations = (list(recording_rotations or all_recording)
                           if {"recording", "recording_generalisation"} & set(stages_) else [])
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
    home = ensure_dagster_home(workers)
    resources = {"settings": settings, "training": training, "recording": recording, "crosscheck_settings": crosscheck,
                 "generalisation_settings": generalisation}
    # the UI, its daemon and the automation sensor go on with these settings (eap_assets.defs.settings)
    write_settings(resources, home)
    report = RunReport()
    start = time.perf_counter()
    with LocalDagster(home, log=log) as local, dg.DagsterInstance.get() as instance:
        changed = observe_sources(instance, resources, [])  # the settings, before anything runs with them
        if with_variants and "variants" in stages_:  # the variant folders must exist before the scan
            plan = Plan()
            plan.target("morphology_variants", None)
            Backfill(local, instance, plan, run_config, report, log, "make run: morphology variants").run()
            if report.failed:
                log(f"morphology_variants FAILED: {report.failed[0].error}; continuing with the variants on disk")
        models, invalid = _scan(settings, cell_names, log)
        variant_cells = {m.name for m in models if m.parent is not None}
        variant_cells |= {n for n in invalid if with_variants and (settings.variants_path / n).exists()}
        paper_models = [m for m in models if m.parent is None]  # the training tables' cells
        known = set(instance.get_dynamic_partitions(cell_partitions.name))
        new = [m.name for m in models if m.name not in known]
        if new:
            instance.add_dynamic_partitions(cell_partitions.name, new)
        try:
            if models:
                cells.prepare_mechanisms(models)  # compile once, before the runs start
        except MechanismError as exc:  # each partition that needs the broken mechanism fails with it
            log(f"mechanisms of the selected cells do not compile together; the cells concerned will fail: {exc}")
        changed += observe_sources(instance, resources, models)  # and the model files of the selection
        if len(known) + len(new) >= DAGSTER_PARTITION_INPUT_LIMIT:
            log(f"warning: {len(known) + len(new)} cell partitions; Dagster does not follow a partitioned input of "
                f"{DAGSTER_PARTITION_INPUT_LIMIT} partitions or more, so an edited cell does not make the training "
                "tables stale: pass --force after changing a model")
        if changed:
            log("sources changed: " + ", ".join(sorted({o.asset_key.to_user_string() for o in changed})))
        selection = (models, invalid, variant_cells, paper_models, rotations, recording_rotations, rates, stages_)
        _waves(local, instance, selection, settings.force, run_config, report, log)
    log(f"finished in {time.perf_counter() - start:.0f} s: {report.count('done')} run, "
        f"{report.count('skipped')} up to date, {len(report.failed)} failed")
    return report


def _waves(local: LocalDagster, instance: dg.DagsterInstance, selection: tuple, force: bool, run_config: dict,
           report: RunReport, log: Log) -> None:
    """Backfill what Dagster shows as missing or stale in the selection and everything downstream of it
    (:func:`_plan`), as one backfill; then, should Dagster still show something stale, once more (at most
    :data:`MAX_WAVES` backfills; ``force``: everything, once). Within a backfill a failed partition stops only
    what depends on it; after a backfill with a failure no other is launched. An asset partition runs at most
    once per ``make run``: one still stale after its run is said so, not run again."""
    everything = _plan(*selection, staleness=None)
    report.results.extend(r for r in everything.settled if r.status == "failed")
    for result in everything.settled:
        log(f"{result.job} {result.partition}: FAILED: {result.error}")
    ran: set[tuple[str, str]] = set()  # stage partitions run (job, partition)
    done: set[tuple[str, str | None]] = set()  # asset partitions targeted
    plan = everything
    for wave in range(MAX_WAVES):
        if not (force and wave == 0):
            plan = _plan(*selection, staleness=Staleness.of(local, everything.targets))
            again = sorted(plan.asset_partitions() & done, key=str)
            if again:
                log("still stale after their run in this `make run` (not run again): "
                    + ", ".join(f"{a} {p or ''}".strip() for a, p in again[:10]) + (" …" if len(again) > 10 else ""))
            plan.drop(done)  # an asset partition runs once per `make run`
        if not plan.targets:
            break
        title = "make run" if wave == 0 else f"make run (wave {wave + 1}: inputs updated by the previous one)"
        failed = len(report.failed)
        Backfill(local, instance, plan, run_config, report, log, title).run()
        ran |= plan.expected
        done |= plan.asset_partitions()
        if len(report.failed) > failed or force:
            break
    for result in plan.settled if not force else []:
        if result.status == "skipped" and (result.job, result.partition) not in ran:
            report.results.append(result)
            log(f"{result.job} {result.partition}: up to date, skipped")


@functools.cache
def _job_of_asset() -> dict[str, str]:
    """The stage job of every asset (``eap_assets.defs.jobs``): a backfill run is reported under its assets' jobs."""
    from eap_assets.definitions import defs
    from eap_assets.defs.jobs import JOBS

    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): job.name for job in reversed(JOBS) for key in job.selection.resolve(graph)}


def _stage_jobs(assets: Sequence[str]) -> list[str]:
    """The stage jobs of ``assets`` (a backfill run may cover several: models and generalisation of one
    rotation x task share their partitions, and Dagster runs them together)."""
    return sorted({_job_of_asset().get(a, a) for a in assets}) or ["__ASSET_JOB"]


@dataclass
class Plan:
    """What a ``make run`` asks Dagster for: asset -> partitions to materialise (one backfill), the stage
    partitions settled without a run (up to date, or failed before starting), and the (job, partition)
    of every targeted stage partition (to report those the backfill never reached)."""

    targets: dict[str, list[str] | None] = field(default_factory=dict)
    settled: list[TaskResult] = field(default_factory=list)
    stages: dict[tuple[str, str], tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)

    def target(self, asset: str, partition: str | None, *more: str) -> None:
        """Materialise ``asset`` (and ``more`` assets of the same partitioning) at ``partition``."""
        for name in (asset, *more):
            if partition is None:
                self.targets[name] = None
            else:
                self.targets.setdefault(name, []).append(partition)
        self.stages[(_stage_jobs([asset])[0], partition or "")] = (partition, (asset, *more))

    @property
    def expected(self) -> set[tuple[str, str]]:
        """The (job, partition) of every targeted stage partition."""
        return set(self.stages)

    def asset_partitions(self) -> set[tuple[str, str | None]]:
        """Every (asset, partition) targeted."""
        return {(asset, p) for asset, keys in self.targets.items() for p in (keys if keys is not None else [None])}

    def drop(self, done: set[tuple[str, str | None]]) -> None:
        """Target no more the asset partitions ``done`` (as in :meth:`asset_partitions`)."""
        kept = [(partition, [a for a in assets if (a, partition) not in done]) for partition, assets in self.stages.values()]
        self.targets, self.stages = {}, {}
        for partition, assets in kept:
            if assets:
                self.target(assets[0], partition, *assets[1:])

    def skip(self, job: str, partition: str) -> None:
        self.settled.append(TaskResult(job, partition, "skipped"))

    def fail(self, job: str, partition: str, error: str) -> None:
        self.settled.append(TaskResult(job, partition, "failed", error=error))


def _plan(models, invalid, variant_cells, paper_models, rotations, recording_rotations, rates, stages_,
          staleness: Staleness | None) -> Plan:
    """Which stage partitions to materialise, which are up to date (skipped), which fail without a run (an
    invalid model folder and what needs every cell of a rotation). Dagster orders the targets by the graph.

    A stage partition is due when one of its assets is not FRESH in Dagster's eyes (all are when
    ``staleness`` is None, i.e. forced), or when a stage partition it depends on is due: Dagster's
    staleness is not transitive, and an asset reached by two paths of different lengths (generalisation:
    from the variant settings and from the models) must not run before the longer one has updated its
    inputs. A due stage targets its assets that are not fresh and those of its assets that depend on them
    (a new CNN recipe: the CNNs and the evaluation, not LightGBM), or all of them when an upstream stage is due.
    """
    plan = Plan()
    due: set[tuple[str, str]] = set()

    def stage(job: str, partition: str | None, assets: Sequence[str], upstream: Sequence[tuple[str, str]] = (),
              last_needs_all: bool = True) -> None:
        """``assets`` in order; the last one depends on all the others when ``last_needs_all``."""
        key = (job, partition or "")
        if staleness is None or any(u in due for u in upstream):
            targets = list(assets)
        else:
            targets = [a for a in assets if not staleness.fresh([a], partition)]
            if targets and last_needs_all and assets[-1] not in targets:
                targets.append(assets[-1])
        if targets:
            due.add(key)
            plan.target(targets[0], partition, *targets[1:])
        else:
            plan.skip(job, partition or "")

    for name, problem in invalid.items():  # not a valid model folder: fails alone, as a partition would
        plan.fail("cell_models_job", name, f"CellModelError: {problem}")
    broken = sorted(set(invalid) - variant_cells)
    for model in models:
        cell = [("cell_models_job", model.name)]
        if "cells" in stages_:
            stage("cell_models_job", model.name, ["cell_model", "spike_templates"])
        for rotation in rotations if "eaps" in stages_ else []:
            stage("eap_datasets_job", str(cell_rotation_key(model.name, rotation)), ["eap_dataset", "feature_table"],
                  cell)
        # the recording EAPs of a variant serve only the recording generalisation's unseen-variant protocol
        for rotation in recording_rotations if model.parent is None or "recording_generalisation" in stages_ else []:
            stage("recording_eaps_job", str(cell_rotation_key(model.name, rotation)), ["recording_eap_dataset"], cell)
    for name in broken:
        for rotation in rotations if "eaps" in stages_ else []:
            plan.fail("eap_datasets_job", str(cell_rotation_key(name, rotation)), f"cell stage of {name} failed")
    needs_all = f"feature tables failed for {', '.join(broken)}"

    def of_cells(job: str, rotation: str, cells_: Sequence[cells.CellModel]) -> list[tuple[str, str]]:
        return [(job, str(cell_rotation_key(m.name, rotation))) for m in cells_]

    recording_models, generalisations = [], []
    for rotation in recording_rotations if "recording_generalisation" in stages_ else []:
        for task in TASKS:
            partition = str(rotation_task_key(rotation, task))
            generalisations.append(("recording_generalisation_job", partition))
            if broken:
                plan.fail("recording_generalisation_job", partition, f"recording EAPs failed for {', '.join(broken)}")
            else:
                stage("recording_generalisation_job", partition, ["recording_generalisation"],
                      of_cells("recording_eaps_job", rotation, models))
    for rotation in recording_rotations if "recording" in stages_ else []:
        if broken:
            plan.fail("recording_training_job", rotation, f"recording EAPs failed for {', '.join(broken)}")
        else:
            stage("recording_training_job", rotation, ["recording_training_set", "waveform_basis"],
                  of_cells("recording_eaps_job", rotation, paper_models), last_needs_all=False)
        for task in TASKS:
            partition = str(rotation_task_key(rotation, task))
            recording_models.append(("recording_models_job", partition))
            if broken:
                plan.fail("recording_models_job", partition, f"recording training set {rotation} failed")
            else:
                stage("recording_models_job", partition, ["recording_cnn_model", "recording_lgbm_model",
                                                          "recording_waveform_model", "unit_classifier"],
                      [("recording_training_job", rotation)])
    models_ = []
    for rotation in rotations:
        if "training" in stages_:
            if broken:
                plan.fail("training_tables_job", rotation, needs_all)
            else:
                stage("training_tables_job", rotation, ["training_table", "hold_out_cell_type"],
                      of_cells("eap_datasets_job", rotation, paper_models))
        for task in TASKS:
            partition = str(rotation_task_key(rotation, task))
            models_.append(("models_job", partition))
            if "models" in stages_:
                if broken:
                    plan.fail("models_job", partition, f"training table {rotation} failed")
                else:
                    stage("models_job", partition, ["cnn_model", "lgbm_model", "waveform_model", "evaluation"],
                          [("training_tables_job", rotation)])
            if "generalisation" in stages_:
                generalisations.append(("generalisation_job", partition))
                if broken:
                    plan.fail("generalisation_job", partition, f"models {partition} failed")
                else:
                    stage("generalisation_job", partition, ["generalisation"],
                          [("training_tables_job", rotation), ("models_job", partition),
                           *of_cells("eap_datasets_job", rotation, models)])
    if generalisations:
        stage("generalisation_report_job", None, ["generalisation_report"], generalisations)
    if "report" in stages_ and "models" in stages_ and rotations:
        if broken:
            plan.fail("report_job", "", needs_all)
        else:
            stage("report_job", None, ["paper_comparison"],
                  [*models_, *(("training_tables_job", r) for r in rotations)])
    if rates:
        stage("crosscheck_templates_job", None, ["mearec_templates"],
              [("cell_models_job", m.name) for m in paper_models])
        for rate in rates:
            stage("crosscheck_recording_job", rate, ["mearec_recording"], [("crosscheck_templates_job", "")])
            stage("crosscheck_job", rate, ["crosscheck"], [("crosscheck_recording_job", rate), *recording_models])
        stage("crosscheck_report_job", None, ["crosscheck_report"], [("crosscheck_job", r) for r in rates])
    return plan


def _why_not_run(job: str, partition: str, failed: Sequence[TaskResult]) -> str:
    """Why the backfill never ran a stage partition, from the failures upstream of it."""
    parts = partition.split("|")
    failed_cells = sorted({r.partition.split("|")[0] for r in failed
                           if r.job in ("cell_models_job", "eap_datasets_job", "recording_eaps_job")
                           and (r.job == "cell_models_job" or r.partition.split("|")[-1] == parts[0])})
    if job in ("eap_datasets_job", "recording_eaps_job") and parts[0] in failed_cells:
        return f"cell stage of {parts[0]} failed"
    if job == "training_tables_job" and failed_cells:
        return f"feature tables failed for {', '.join(failed_cells)}"
    if job in ("recording_training_job", "recording_generalisation_job") and failed_cells:
        return f"recording EAPs failed for {', '.join(failed_cells)}"
    if job in ("models_job", "recording_models_job", "generalisation_job") and len(parts) == 2:
        table = "training_tables_job" if job != "recording_models_job" else "recording_training_job"
        if failed_cells or any(r.job == table and r.partition == parts[0] for r in failed):
            return f"training table {parts[0]} failed"
    return "not run: upstream failed (" + "; ".join(f"{r.job} {r.partition}" for r in failed[:3]) + ")"


def _over(status: str, runs: Sequence[dg.DagsterRun]) -> bool:
    """A backfill is over when Dagster says so and none of its runs is still going."""
    return status in BACKFILL_DONE and all(r.is_finished for r in runs)


def _merge_into(first: TaskResult, other: TaskResult) -> None:
    """``other``, a later run of the same stage partition, folded into ``first``: failed if either failed, the
    run times added, both run ids (comma-separated), the earliest start and the latest end."""
    if other.status == "failed":
        first.status = "failed"
        first.error = "; ".join(e for e in (first.error, other.error) if e)
    first.seconds = round(first.seconds + other.seconds, 1)
    first.run_id = ",".join(r for r in (first.run_id, other.run_id) if r)
    if other.started is not None and (first.started is None or other.started < first.started):
        first.started = other.started
    if other.ended is not None and (first.ended is None or other.ended > first.ended):
        first.ended = other.ended


class Backfill:
    """One asset backfill of a :class:`Plan`'s targets through the instance's run queue, followed run by run;
    Ctrl-C cancels it (its runs in progress are cancelled) and re-raises."""

    def __init__(self, local: LocalDagster, instance: dg.DagsterInstance, plan: Plan, run_config: dict,
                 report: RunReport, log: Log, title: str):
        self.local, self.instance, self.plan, self.run_config = local, instance, plan, run_config
        self.report, self.log, self.title = report, log, title

    def run(self) -> None:
        local = self.local
        backfill_id = local.launch_backfill(self.plan.targets, self.run_config, self.title,
                                            {"eap_assets/launched_by": "make run"})
        n_stage = len(self.plan.expected)
        seen: set[str] = set()
        reached: dict[tuple[str, str], TaskResult] = {}  # one result per stage partition, over all its runs
        try:  # from the launch on: a stop signal right after it must cancel the backfill too
            self.log(f"backfill {backfill_id}: {sum(len(k or [None]) for k in self.plan.targets.values())} asset "
                     f"partitions in {n_stage} stage partitions; runs in the UI under Overview > Backfills")
            while True:
                status, runs = self._state(local, backfill_id)
                for run in sorted(runs, key=lambda r: r.run_id):
                    if run.run_id in seen or not run.is_finished:
                        continue
                    seen.add(run.run_id)
                    for result in self._results(run):
                        key = (result.job, result.partition)
                        if key in reached:  # Dagster ran the stage partition's assets in more than one run
                            _merge_into(reached[key], result)
                        else:
                            reached[key] = result
                            self.report.results.append(result)
                        detail = (f"done in {result.seconds:.1f} s" if result.status == "done"
                                  else f"FAILED after {result.seconds:.1f} s: {result.error}")
                        self.log(f"[{len(reached):>3}/{n_stage}] {result.job} {result.partition}: {detail}")
                if _over(status, runs):
                    break
                time.sleep(2)
        except KeyboardInterrupt:
            self.log(f"interrupted: cancelling backfill {backfill_id} (its runs in progress are cancelled; "
                     "Ctrl-C again to stop waiting)")
            local.cancel_backfill(backfill_id)
            self._wait_cancelled(local, backfill_id)
            raise
        failed = [r for r in self.report.results if r.status == "failed"]
        for (job, partition) in self.plan.expected:
            if (job, partition) not in reached:
                why = _why_not_run(job, partition, failed) if failed else f"not run (backfill {status.lower()})"
                self.report.results.append(TaskResult(job, partition, "failed", error=why))
                self.log(f"{job} {partition}: FAILED: {why}")

    def _wait_cancelled(self, local: LocalDagster, backfill_id: str, timeout: float = 180.0) -> None:
        """Until the daemon has cancelled the backfill's runs (it does so within its 30 s iteration)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if _over(*self._state(local, backfill_id)):
                    self.log(f"backfill {backfill_id} cancelled")
                    return
                time.sleep(2)
            self.log(f"backfill {backfill_id} still cancelling after {timeout:.0f} s; see the UI")
        except KeyboardInterrupt:
            self.log("stopped waiting; the daemon finishes cancelling the backfill when it next runs")

    def _state(self, local: LocalDagster, backfill_id: str) -> tuple[str, list[dg.DagsterRun]]:
        """The backfill's status and its runs so far."""
        return (local.backfill_status(backfill_id),
                self.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))

    def _results(self, run: dg.DagsterRun) -> list[TaskResult]:
        """One result per stage job whose assets the run materialised."""
        record = self.instance.get_run_record_by_id(run.run_id)
        started, ended = record.start_time, record.end_time
        assets = sorted(k.to_user_string() for k in (run.asset_selection or []))
        events = [e.dagster_event for e in self.instance.all_logs(
            run.run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_CHECK_EVALUATION})
            if e.dagster_event]
        error, checks_failed = run_problems(events)
        ok = run.status == dg.DagsterRunStatus.SUCCESS and not checks_failed
        if not ok and error is None:
            error = f"run {run.run_id} {run.status.value.lower()}"
        return [TaskResult(job, run.tags.get("dagster/partition", ""), "done" if ok else "failed",
                           round((ended or started or 0) - (started or 0), 1), run.run_id, error, started,
                           ended=ended)
                for job in _stage_jobs(assets)]


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

