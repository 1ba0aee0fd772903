"""The Dagster code location: ``dagster dev -w workspace.yaml`` (or ``make ui``) loads ``defs``."""


import os

import dagster as dg

from eap_assets.defs import (cells, crosscheck, eaps, features, generalisation, jobs, recording, report, sensors,
                             training, variants)
from eap_assets.defs.automation import automation_sensor, with_automation
from eap_assets.defs.io import npz_io_manager, parquet_io_manager
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.settings import deployment_resources
from eap_assets.defs.sources import SOURCE_ASSETS
from eap_assets.defs.training import MLflowTracking

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
    """Definitions with the instance's settings (:func:`eap_assets.defs.settings.deployment_resources`: the
    last ``make run``'s, else the defaults and ``EAP_ASSETS_*`` variables; ``settings`` replaces the simulation
    settings), the automation conditions of :mod:`eap_assets.defs.automation`, and the executor (default:
    :func:`select_executor` from ``$EAP_ASSETS_EXECUTOR``, in-process)."""
    resources = deployment_resources()
    if settings is not None:
        resources["settings"] = settings
    return dg.Definitions(
        assets=[*with_automation(dg.load_assets_from_modules(STAGE_MODULES)), *SOURCE_ASSETS],
        asset_checks=dg.load_asset_checks_from_modules(STAGE_MODULES),
        jobs=jobs.JOBS,
        sensors=[sensors.new_cell_models, automation_sensor()],
        resources={**resources, "mlflow_tracking": MLflowTracking(),
                   "parquet_io_manager": parquet_io_manager, "npz_io_manager": npz_io_manager},
        executor=select_executor(executor),
    )


defs = build_definitions()
