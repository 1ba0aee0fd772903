"""The new-cell-model sensor: model folders that appear become cell partitions, and their files are observed.

It adds partitions and reports the data versions of the cell model files that changed (the
``cell_model_files`` source, :mod:`eap_assets.defs.sources`); it requests no run. The automation
conditions (:mod:`eap_assets.defs.automation`) take it from there: a new partition, or an edited model
folder, is simulated, placed in every rotation, added to the training tables (a new m-type is a new
class), and the models are retrained, evaluated and gated.

It does not observe the settings sources: those are observed by ``make run`` (with the settings it runs
with) or "Observe sources" in the UI. Eager automation reacts to every observation of a new data version,
even one that returns to settings whose artefacts are still fresh, and would redo everything downstream.
"""


import dagster as dg

from eap_assets.core import cells
from eap_assets.defs.automation import automation_enabled
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.sources import changed_cell_observations


@dg.sensor(minimum_interval_seconds=30, default_status=(dg.DefaultSensorStatus.RUNNING if automation_enabled()
                                                         else dg.DefaultSensorStatus.STOPPED))
def new_cell_models(context: dg.SensorEvaluationContext, settings: SimulationSettings) -> dg.SensorResult:
    """Add each new valid model of ``settings.model_folders`` as a ``cell_model`` partition, and observe the
    files of every cell model.

    The 13 BBP models shipped in MEArec are added when the instance has no cell partition yet (a new
    deployment); after that, the deployment's cells are the ones ``make run`` or this sensor added,
    and a model folder that appears in ``settings.model_folders`` is added. Invalid folders are
    logged, not added. The data version of each cell's files (``cell_model_files``) is reported when it
    changed: a new cell's, or an edited model folder's. Running by default, like the automation sensor,
    unless ``$EAP_ASSETS_AUTOMATION=off`` (as in the ``dagster dev`` that ``make run`` starts: only its
    backfill runs there).
    """
    found, problems = settings.scan_models()
    for folder, problem in problems.items():
        context.log.warning(f"skipped {folder}: {problem}")
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    shipped = cells.mearec_models_dir().resolve()
    new = [name for name, model in found.items() if name not in known
           and (not known or model.path.resolve().parent != shipped)]
    observed = changed_cell_observations(context.instance, [m for name, m in found.items() if name in known or name in new])
    if not new and not observed:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new cell models ({len(known)} cell partitions), "
                                                         "no changed model files"))
    if new:
        context.log.info(f"new cell model(s): {', '.join(new)}")
    if observed:
        context.log.info(f"files observed: {', '.join(o.partition for o in observed)}")
    return dg.SensorResult(dynamic_partitions_requests=[cell_partitions.build_add_request(new)] if new else [],
                           asset_events=observed)
