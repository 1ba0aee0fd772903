"""The new-cell-model sensor: model folders that appear become cell partitions, and the sources are observed.

It adds partitions and reports the data versions of the sources that changed (:mod:`eap_assets.defs.sources`:
a cell model's files, the deployment's settings); it requests no run. The automation conditions
(:mod:`eap_assets.defs.automation`) take it from there: a new partition, or an updated source, is simulated,
placed in every rotation, added to the training tables (a new m-type is a new class), and the models are
retrained, evaluated and gated.
"""


import dagster as dg

from eap_assets.core import cells
from eap_assets.defs.automation import automation_enabled
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.crosscheck import CrosscheckSettings
from eap_assets.defs.generalisation import GeneralisationSettings
from eap_assets.defs.resources import RecordingSettings, SimulationSettings
from eap_assets.defs.sources import changed_observations
from eap_assets.defs.training import TrainingSettings


@dg.sensor(minimum_interval_seconds=30, default_status=(dg.DefaultSensorStatus.RUNNING if automation_enabled()
                                                         else dg.DefaultSensorStatus.STOPPED))
def new_cell_models(context: dg.SensorEvaluationContext, settings: SimulationSettings, training: TrainingSettings,
                    recording: RecordingSettings, crosscheck_settings: CrosscheckSettings,
                    generalisation_settings: GeneralisationSettings) -> dg.SensorResult:
    """Add each new valid model of ``settings.model_folders`` as a ``cell_model`` partition.

    The 13 BBP models shipped in MEArec are added when the instance has no cell partition yet (a new
    deployment); after that, the deployment's cells are the ones ``make run`` or this sensor added,
    and a model folder that appears in ``settings.model_folders`` is added. Invalid folders are
    logged, not added. Running by default, like the automation sensor, unless ``$EAP_ASSETS_AUTOMATION=off``
    (as in the ``dagster dev`` that ``make run`` starts: only its backfill runs there).

    It also observes the sources: the data version of each cell model's files (of the known partitions and
    the new ones) and of each settings source under the deployment's resources, reported when it changed.
    """
    found, problems = settings.scan_models()
    for folder, problem in problems.items():
        context.log.warning(f"skipped {folder}: {problem}")
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    shipped = cells.mearec_models_dir().resolve()
    new = [name for name, model in found.items() if name not in known
           and (not known or model.path.resolve().parent != shipped)]
    resources = {"settings": settings, "training": training, "recording": recording,
                 "crosscheck_settings": crosscheck_settings, "generalisation_settings": generalisation_settings}
    observed = changed_observations(context.instance, resources,
                                    [model for name, model in found.items() if name in known or name in new])
    if not new and not observed:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"no new cell models ({len(known)} cell partitions), "
                                                         "no changed source"))
    if new:
        context.log.info(f"new cell model(s): {', '.join(new)}")
    if observed:
        context.log.info("changed: " + ", ".join(o.asset_key.to_user_string() + (f" {o.partition}" if o.partition else "")
                                                 for o in observed))
    return dg.SensorResult(dynamic_partitions_requests=[cell_partitions.build_add_request(new)] if new else [],
                           asset_events=observed)
