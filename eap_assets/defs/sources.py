"""What the asset graph starts from: the cell model folders and the settings, as observable source assets.

Dagster decides what is stale from code versions and data versions. The data versions of the assets
are the keys of their artefacts (:mod:`eap_assets.core.stages`); what those keys start from (a cell
model's files, the settings a run uses) enters the graph here, as observable source assets whose data
version is a hash of exactly what they cover:

* ``cell_model_files`` (one partition per cell model): the model's files (``cells.model_hash``);
* ``stimulus_settings``: the NEURON stimulus of the spike templates (the preset);
* ``simulation_settings``: EAPs, features and the paper's training tables (scale, probe, medium, seed,
  splits, recording noise of the features);
* ``variant_settings``: the morphology variants (and the generalisation pool);
* ``cnn_recipe``, ``lgbm_recipe``, ``waveform_recipe``: one model kind's training recipe each;
* ``recording_settings``: the EAPs, training set and served classifiers for real recordings;
* ``crosscheck_settings``, ``generalisation_settings``: the opt-in stages.

A changed setting thus makes stale the assets that read it (``eap_dataset`` after a new seed, not
``spike_templates``; the CNNs after a new CNN recipe, not LightGBM), and Dagster's stale markers in the UI
are what ``make run`` materialises. The sources are coarser than the artefact keys in places: a new split
fraction or feature noise also marks the EAP datasets stale, whose runs then reuse the stored arrays. Each
run's data directory is part of every settings source: artefacts in another directory are not up to date.

Observations are reported by ``make run`` (every source, before it asks Dagster what is stale, with the
settings it runs with) and by the ``new_cell_models`` sensor (the cell model files, every 30 s), only when a
version changed; "Observe sources" in the UI computes the same versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict

import dagster as dg

from eap_assets.core import cells
from eap_assets.core.keys import settings_hash
from eap_assets.core.probe import probe_name
from eap_assets.defs.partitions import cell_partitions
from eap_assets.defs.resources import resource_fields
from eap_assets.defs.tags import k8s_op_tags

#: Dagster's tag of an event's data version (``AssetObservation.data_version`` reads it).
DATA_VERSION_TAG = "dagster/data_version"

#: Fields of the simulation settings (resource ``settings``) by the source that covers them; the fields of
#: :data:`NOT_CONTENT` decide which cells exist or how a run behaves, not what an artefact holds.
STIMULUS_FIELDS = ("preset",)
SIMULATION_FIELDS = ("preset", "n_eaps", "probe", "medium", "min_amplitude", "seed", "test_fraction",
                     "validation_fraction", "noise_rms_uv", "noise_kind", "noise_band_hz")
VARIANT_FIELDS = ("seed", "variants_per_cell", "variant_scale_range", "variant_jitter_deg")
NOT_CONTENT = ("data_dir", "model_folders", "force")


def _fields(resource, names: Iterable[str]) -> dict:
    values = {name: getattr(resource, name) for name in names}
    if "probe" in values:  # a probe file counts by its contacts, not by its path (as in the artefact keys)
        values["probe"] = probe_name(values["probe"])
    return values


def _recipe(kind: str) -> Callable[[Mapping], object]:
    return lambda r: asdict(r["training"].config_for(kind))


#: Settings source -> (resource keys it reads, what its data version hashes, description).
SETTINGS_SOURCES: dict[str, tuple[tuple[str, ...], Callable[[Mapping], object], str]] = {
    "stimulus_settings": (("settings",), lambda r: _fields(r["settings"], STIMULUS_FIELDS),
                          "NEURON stimulus of the spike templates (the preset)."),
    "simulation_settings": (("settings",), lambda r: _fields(r["settings"], SIMULATION_FIELDS),
                            "EAP datasets, feature tables and the paper's training tables: scale, probe, medium, "
                            "seed, splits, feature noise."),
    "variant_settings": (("settings",), lambda r: _fields(r["settings"], VARIANT_FIELDS),
                         "Morphology variants of the BBP models (and the generalisation pool)."),
    "cnn_recipe": (("training",), _recipe("cnn"), "Training recipe of the CNNs."),
    "lgbm_recipe": (("training",), _recipe("lgbm"), "Training recipe of the LightGBM models."),
    "waveform_recipe": (("training",), _recipe("waveform"), "Training recipe of the waveform models."),
    "recording_settings": (("recording",), lambda r: resource_fields(r["recording"]),
                           "What looks like a recording: EAPs, augmentation, input spec and abstention of the "
                           "models for real recordings."),
    "crosscheck_settings": (("crosscheck_settings", "settings"),
                            lambda r: [resource_fields(r["crosscheck_settings"]), probe_name(r["settings"].probe)],
                            "MEArec's templates and recordings of the cross-simulator check (and the probe)."),
    "generalisation_settings": (("generalisation_settings",), lambda r: resource_fields(r["generalisation_settings"]),
                                "The generalisation protocols."),
}
CELL_MODEL_FILES = "cell_model_files"


def settings_versions(resources: Mapping[str, object]) -> dict[str, str]:
    """The data version of every settings source under ``resources`` (resource key -> configured resource).

    The data directory is part of each: artefacts in another directory are not up to date.
    """
    return {name: settings_versions_of(name, resources) for name in SETTINGS_SOURCES}


def cell_versions(models: Iterable[cells.CellModel]) -> dict[str, str]:
    """The data version of each cell model's files, by cell name."""
    return {model.name: cells.model_hash(model) for model in models}


def _settings_source(name: str, keys: tuple[str, ...], description: str) -> dg.SourceAsset:
    keys = {*keys, "settings"}  # the data directory

    @dg.observable_source_asset(name=name, group_name="sources", required_resource_keys=keys,
                                description=description, op_tags=k8s_op_tags("observe"))
    def _observe(context) -> dg.DataVersion:
        return dg.DataVersion(settings_versions_of(name, {key: getattr(context.resources, key) for key in keys}))

    return _observe


def settings_versions_of(name: str, resources: Mapping[str, object]) -> str:
    """The data version of one settings source (see :func:`settings_versions`)."""
    _, part, _ = SETTINGS_SOURCES[name]
    return settings_hash(str(resources["settings"].data_path), name, part(resources))


@dg.observable_source_asset(name=CELL_MODEL_FILES, group_name="sources", partitions_def=cell_partitions,
                            required_resource_keys={"settings"}, op_tags=k8s_op_tags("observe"),
                            description="The files of each cell model folder (morphology, biophysics, "
                                        "mechanisms, template): a changed file makes its cell stale.")
def cell_model_files(context) -> dg.DataVersionsByPartition:
    known = set(context.instance.get_dynamic_partitions(cell_partitions.name))
    found = context.resources.settings.scan_models_with_variants()
    return dg.DataVersionsByPartition({name: dg.DataVersion(version)
                                       for name, version in cell_versions(found.values()).items() if name in known})


SOURCE_ASSETS = [cell_model_files, *(_settings_source(name, keys, description)
                                     for name, (keys, _, description) in SETTINGS_SOURCES.items())]


def _latest_version(instance: dg.DagsterInstance, asset: str, partition: str | None) -> str | None:
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=None if partition is None else [partition]),
        limit=1).records
    observation = records[0].asset_observation if records else None
    return observation.data_version if observation is not None else None


def changed_cell_observations(instance: dg.DagsterInstance, models: Iterable[cells.CellModel]
                              ) -> list[dg.AssetObservation]:
    """Observations of the ``cell_model_files`` partitions of ``models`` whose data version differs from the
    instance's latest one (none when nothing changed: the event log is not filled with repeats)."""
    return [dg.AssetObservation(CELL_MODEL_FILES, partition=cell, tags={DATA_VERSION_TAG: version})
            for cell, version in cell_versions(models).items()
            if _latest_version(instance, CELL_MODEL_FILES, cell) != version]


def changed_observations(instance: dg.DagsterInstance, resources: Mapping[str, object],
                         models: Iterable[cells.CellModel]) -> list[dg.AssetObservation]:
    """Observations of the settings sources under ``resources``, and of the files of ``models``, whose data
    version differs from the instance's latest one."""
    observations = [dg.AssetObservation(name, tags={DATA_VERSION_TAG: version})
                    for name, version in settings_versions(resources).items()
                    if _latest_version(instance, name, None) != version]
    return observations + changed_cell_observations(instance, models)


def observe_sources(instance: dg.DagsterInstance, resources: Mapping[str, object],
                    models: Iterable[cells.CellModel]) -> list[dg.AssetObservation]:
    """Report :func:`changed_observations` to ``instance`` (runless events, as an external system would);
    returns them."""
    observations = changed_observations(instance, resources, models)
    for observation in observations:
        instance.report_runless_asset_event(observation)
    return observations
