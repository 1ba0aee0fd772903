"""The Dagster code location: ``dagster dev -w workspace.yaml`` (or ``make ui``) loads ``defs``."""


import dagster as dg

from eap_assets.defs import cells, eaps, features, jobs, report, sensors, training
from eap_assets.defs.io import parquet_io_manager
from eap_assets.defs.resources import SimulationSettings, default_settings
from eap_assets.defs.training import MLflowTracking, TrainingSettings

STAGE_MODULES = [cells, eaps, features, training, report]


def build_definitions(settings: SimulationSettings | None = None) -> dg.Definitions:
    """Definitions with the given settings (default: :func:`default_settings`, from the environment)."""
    settings = settings or default_settings()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(STAGE_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(STAGE_MODULES),
        jobs=jobs.JOBS,
        schedules=[jobs.weekly_retraining],
        sensors=[sensors.new_cell_models],
        resources={"settings": settings, "training": TrainingSettings(), "mlflow_tracking": MLflowTracking(),
                   "parquet_io_manager": parquet_io_manager},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
