"""The Dagster code location: ``dagster dev -w workspace.yaml`` (or ``make ui``) loads ``defs``."""


import os

import dagster as dg

from eap_assets.defs import (cells, crosscheck, eaps, features, generalisation, jobs, recording, report, sensors,
                             training, variants)
from eap_assets.defs.io import npz_io_manager, parquet_io_manager
from eap_assets.defs.resources import RecordingSettings, SimulationSettings, default_settings
from eap_assets.defs.training import MLflowTracking, TrainingSettings

STAGE_MODULES = [cells, eaps, features, training, report, variants, generalisation, recording, crosscheck]
#: Executor of every job: ``in_process`` (default: one process per run, runs in parallel),
#: ``multiprocess`` (one process per step) or ``k8s`` (one Kubernetes pod per step; needs the
#: ``k8s`` extra, i.e. ``dagster-k8s``, and the run launched in a cluster).
ENV_EXECUTOR = "EAP_ASSETS_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "k8s")


def select_executor(name: str | None = None) -> dg.ExecutorDefinition:
    """The executor called ``name`` (default ``$EAP_ASSETS_EXECUTOR``, else ``in_process``).

    Raises
    ------
    ValueError
        For an unknown name, listing :data:`EXECUTORS`.
    ImportError
        For ``k8s`` when ``dagster-k8s`` is not installed, saying how to install it.
    """
    name = (name if name is not None else os.environ.get(ENV_EXECUTOR, "")).strip() or "in_process"
    if name == "in_process":
        return dg.in_process_executor
    if name == "multiprocess":
        return dg.multiprocess_executor
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError(f"{ENV_EXECUTOR}=k8s needs dagster-k8s: pip install 'eap_assets[k8s]'") from exc
        return k8s_job_executor
    raise ValueError(f"{ENV_EXECUTOR}={name!r}: unknown executor; choose one of {', '.join(EXECUTORS)}")


def build_definitions(settings: SimulationSettings | None = None, executor: str | None = None) -> dg.Definitions:
    """Definitions with the given settings (default: :func:`default_settings`, from the environment)
    and executor (default: :func:`select_executor` from ``$EAP_ASSETS_EXECUTOR``, in-process)."""
    settings = settings or default_settings()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(STAGE_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(STAGE_MODULES),
        jobs=jobs.JOBS,
        schedules=[jobs.weekly_retraining],
        sensors=[sensors.new_cell_models],
        resources={"settings": settings, "training": TrainingSettings(), "mlflow_tracking": MLflowTracking(),
                   "parquet_io_manager": parquet_io_manager, "npz_io_manager": npz_io_manager,
                   "recording": RecordingSettings(), "crosscheck_settings": crosscheck.CrosscheckSettings(),
                   "generalisation_settings": generalisation.GeneralisationSettings()},
        executor=select_executor(executor),
    )


defs = build_definitions()
