"""Jobs (one per stage group) and the weekly retraining schedule."""


import dagster as dg

from eap_assets.defs.cells import cell_model, spike_templates
from eap_assets.defs.eaps import eap_dataset
from eap_assets.defs.features import feature_table, training_table
from eap_assets.defs.partitions import cell_partitions, cell_rotation_partitions, rotation_partitions

#: Cell model + spike templates of one cell (NEURON).
cell_models_job = dg.define_asset_job(
    "cell_models_job", selection=dg.AssetSelection.assets(cell_model, spike_templates),
    partitions_def=cell_partitions, tags={"eap_assets/stage": "neuron"},
    description="Validate, compile and instantiate a cell model, then simulate its spike templates.")
#: EAP dataset + feature table of one cell x rotation.
eap_datasets_job = dg.define_asset_job(
    "eap_datasets_job", selection=dg.AssetSelection.assets(eap_dataset, feature_table),
    partitions_def=cell_rotation_partitions, tags={"eap_assets/stage": "eaps"},
    description="Line-source EAPs of one cell and rotation, then its Parquet feature table.")
#: Training table of one rotation (all cells, seeded split); the next stage's models hang off it.
training_tables_job = dg.define_asset_job(
    "training_tables_job", selection=dg.AssetSelection.assets(training_table).downstream(),
    partitions_def=rotation_partitions, tags={"eap_assets/stage": "training"},
    description="Per-rotation training table with the seeded split, and everything trained from it.")

JOBS = [cell_models_job, eap_datasets_job, training_tables_job]


@dg.schedule(cron_schedule="0 4 * * 1", job=training_tables_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED)
def weekly_retraining(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    """Every Monday 04:00 UTC: rebuild each rotation's training table and what is trained from it."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [dg.RunRequest(run_key=f"{day}-{rotation}", partition_key=rotation)
            for rotation in rotation_partitions.get_partition_keys()]
