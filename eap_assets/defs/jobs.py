"""Jobs (one per stage group): what ``make run`` launches per partition; the weekly retraining is an
automation condition of the models (:mod:`eap_assets.defs.automation`)."""


import dagster as dg

from eap_assets.defs.cells import cell_model, spike_templates
from eap_assets.defs.eaps import eap_dataset
from eap_assets.defs.features import feature_table, training_table
from eap_assets.defs.generalisation import generalisation, generalisation_report, recording_generalisation
from eap_assets.defs.report import paper_comparison
from eap_assets.defs.training import (cnn_model, evaluation, hold_out_cell_type, lgbm_model,
                                       waveform_model)
from eap_assets.defs.variants import morphology_variants
from eap_assets.defs.eaps import recording_eap_dataset
from eap_assets.defs.recording import RECORDING_MODELS, unit_classifier
from eap_assets.defs.crosscheck import crosscheck, crosscheck_report, mearec_recording, mearec_templates

#: Cell model + spike templates of one cell (NEURON).
cell_models_job = dg.define_asset_job(
    "cell_models_job", selection=dg.AssetSelection.assets(cell_model, spike_templates),
    tags={"eap_assets/stage": "neuron"},
    description="Validate, compile and instantiate a cell model, then simulate its spike templates.")
#: EAP dataset + feature table of one cell x rotation.
eap_datasets_job = dg.define_asset_job(
    "eap_datasets_job", selection=dg.AssetSelection.assets(eap_dataset, feature_table),
    tags={"eap_assets/stage": "eaps"},
    description="Line-source EAPs of one cell and rotation, then its Parquet feature table.")
#: Training table of one rotation (all cells, seeded split) and the hold-one-cell-type-out test on it.
training_tables_job = dg.define_asset_job(
    "training_tables_job", selection=dg.AssetSelection.assets(training_table, hold_out_cell_type),
    tags={"eap_assets/stage": "training"},
    description="Per-rotation training table with the seeded split; E/I on held-out cell types.")
#: Every model kind (CNN, LightGBM, waveform) of one rotation x task, then their evaluation (aliases follow the gate).
models_job = dg.define_asset_job(
    "models_job", selection=dg.AssetSelection.assets(cnn_model, lgbm_model, waveform_model, evaluation),
    tags={"eap_assets/stage": "training"},
    description="Train, log, register (promotion gate) and evaluate the classifiers of one rotation x task.")
#: The report gathering every evaluation next to the paper.
report_job = dg.define_asset_job("report_job", selection=dg.AssetSelection.assets(paper_comparison),
                                 description="Paper comparison report (Markdown + CSV).")

#: Morphology variants of every BBP model (unpartitioned), registered as cell_model partitions.
morphology_variants_job = dg.define_asset_job(
    "morphology_variants_job", selection=dg.AssetSelection.assets(morphology_variants),
    tags={"eap_assets/stage": "variants"},
    description="Seeded morphology variants of every BBP model, added as cell_model partitions.")
#: Generalisation of one rotation x task (noise sweep, unseen variants / distances / cell types).
generalisation_job = dg.define_asset_job(
    "generalisation_job", selection=dg.AssetSelection.assets(generalisation),
    tags={"eap_assets/stage": "training"},
    description="Every model kind under recording noise and on unseen morphology variants, distances and cell types.")
#: The recipe of the models for real recordings on unseen morphology variants and cell types (one rotation x task).
recording_generalisation_job = dg.define_asset_job(
    "recording_generalisation_job", selection=dg.AssetSelection.assets(recording_generalisation),
    tags={"eap_assets/stage": "training"},
    description="The models for real recordings' recipe on unseen morphology variants and held-out cell types.")
#: The report over every rotation x task's generalisation result.
generalisation_report_job = dg.define_asset_job(
    "generalisation_report_job", selection=dg.AssetSelection.assets(generalisation_report),
    description="Generalisation report (Markdown + CSV + plots) with the targets.")

#: EAPs of one cell x rotation simulated for the models of real recordings.
recording_eaps_job = dg.define_asset_job(
    "recording_eaps_job", selection=dg.AssetSelection.assets(recording_eap_dataset),
    tags={"eap_assets/stage": "eaps"},
    description="EAPs of one cell and rotation as an MEA records them (MEA-plane medium, whole detectable range).")
#: The recording training set and waveform basis of one rotation.
recording_training_job = dg.define_asset_job(
    "recording_training_job", selection=dg.AssetSelection.assets("recording_training_set", "waveform_basis"),
    tags={"eap_assets/stage": "training"},
    description="Band-passed, re-aligned, augmented training set of the models for real recordings (one rotation).")
#: Every kind of model for real recordings of one rotation x task, then the served unit classifier.
recording_models_job = dg.define_asset_job(
    "recording_models_job", selection=dg.AssetSelection.assets(*RECORDING_MODELS, unit_classifier),
    tags={"eap_assets/stage": "training"},
    description="Train the models for real recordings, then calibrate and register the best as the unit classifier.")

#: The cross-simulator check: MEArec's templates, a recording per sampling rate, the champions scored on it, the report.
crosscheck_templates_job = dg.define_asset_job(
    "crosscheck_templates_job", selection=dg.AssetSelection.assets(mearec_templates),
    tags={"eap_assets/stage": "neuron"}, description="MEArec's own templates of every BBP cell model.")
crosscheck_recording_job = dg.define_asset_job(
    "crosscheck_recording_job", selection=dg.AssetSelection.assets(mearec_recording),
    tags={"eap_assets/stage": "eaps"}, description="A MEArec recording at one sampling rate and its SortingAnalyzer.")
crosscheck_job = dg.define_asset_job(
    "crosscheck_job", selection=dg.AssetSelection.assets(crosscheck),
    description="The champions classify the MEArec analyzer's units; scored against the ground truth.")
crosscheck_report_job = dg.define_asset_job(
    "crosscheck_report_job", selection=dg.AssetSelection.assets(crosscheck_report),
    description="Cross-simulator report (Markdown + CSV) with the targets.")

JOBS = [crosscheck_templates_job, crosscheck_recording_job, crosscheck_job, crosscheck_report_job, recording_eaps_job, recording_training_job, recording_models_job, morphology_variants_job, cell_models_job, eap_datasets_job, training_tables_job, models_job, report_job,
        generalisation_job, recording_generalisation_job, generalisation_report_job]

