"""The new-cell-model sensor: model folders that appear become cell partitions and are simulated."""


import dagster as dg

from eap_assets.defs.jobs import cell_models_job
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import SimulationSettings


@dg.sensor(job=cell_models_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def new_cell_models(context: dg.SensorEvaluationContext, settings: SimulationSettings) -> dg.SensorResult:
    """Scan MEArec's models and ``settings.model_folders``; add each new valid model as a
    ``cell_model`` partition and request its cell stage. Invalid folders are logged, not added."""
    found, problems = settings.scan_models()
    for folder, problem in problems.items():
        context.log.warning(f"skipped {folder}: {problem}")
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    new = [name for name in found if name not in known]
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new cell models ({len(found)} known)"))
    return dg.SensorResult(
        dynamic_partitions_requests=[cell_partitions.build_add_request(new)],
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"new-cell-{name}") for name in new],
    )
