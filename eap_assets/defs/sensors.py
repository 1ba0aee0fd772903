"""The new-cell-model sensor: model folders that appear become cell partitions.

It only adds partitions; the automation conditions (:mod:`eap_assets.defs.automation`) take a new
partition from there: simulated, placed in every rotation, added to the training tables (a new
m-type is a new class), models retrained, evaluated and gated.
"""


import dagster as dg

from eap_assets.core import cells
from eap_assets.defs.automation import automation_enabled
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import SimulationSettings


@dg.sensor(minimum_interval_seconds=30, default_status=(dg.DefaultSensorStatus.RUNNING if automation_enabled()
                                                         else dg.DefaultSensorStatus.STOPPED))
def new_cell_models(context: dg.SensorEvaluationContext, settings: SimulationSettings) -> dg.SensorResult:
    """Add each new valid model of ``settings.model_folders`` as a ``cell_model`` partition.

    The 13 BBP models shipped in MEArec are added when the instance has no cell partition yet (a new
    deployment); after that, the deployment's cells are the ones ``make run`` or this sensor added,
    and a model folder that appears in ``settings.model_folders`` is added. Invalid folders are
    logged, not added. Running by default, like the automation sensor, unless ``$EAP_ASSETS_AUTOMATION=off``
    (as in the ``dagster dev`` that ``make run`` starts: only its backfill runs there).
    """
    found, problems = settings.scan_models()
    for folder, problem in problems.items():
        context.log.warning(f"skipped {folder}: {problem}")
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    shipped = cells.mearec_models_dir().resolve()
    new = [name for name, model in found.items() if name not in known
           and (not known or model.path.resolve().parent != shipped)]
    if not new:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new cell models ({len(known)} cell partitions)"))
    context.log.info(f"new cell model(s): {', '.join(new)}")
    return dg.SensorResult(dynamic_partitions_requests=[cell_partitions.build_add_request(new)])
