"""EAP datasets, one partition per cell x rotation: ``eaps/<cell>/<rotation>/`` holds
``eaps.npy`` (memory-mappable), ``index.parquet`` (positions, rotations, spike index) and ``meta.json``."""


import dagster as dg
import numpy as np

from eap_assets.core import cells, eaps, plots, stages
from eap_assets.core.eaps import EAPDataset
from eap_assets.core.pool import EAPPool
from eap_assets.core.probe import get_probe
from eap_assets.defs.cells import spike_templates
from eap_assets.defs.metadata import figure_metadata, key_metadata
from eap_assets.defs.partitions import cell_recording_partitions, cell_rotation_partitions
from eap_assets.defs.resources import RecordingSettings, SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags

#: Each cell x rotation partition depends on its cell's templates.
BY_CELL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="cell")


def partition_cell_rotation(context) -> tuple[str, str]:
    """(cell, rotation) of a cell x rotation partition (asset or check context; both families' keys are
    ``<cell>|<rotation>``, dimensions in alphabetical order)."""
    cell, rotation = str(context.partition_key).split("|")
    return cell, rotation


def eap_config(family: str, settings: SimulationSettings, recording: RecordingSettings, rotation: str):
    """The EAP settings of a family's dataset of one rotation: the paper's, or simulated for recordings."""
    return settings.eap_config(rotation) if family == "paper" else recording.eap_config(settings, rotation)


#: Per family: asset name, partitions, description.
_FAMILIES = {
    "paper": ("eap_dataset", cell_rotation_partitions,
              "Accepted EAPs of one cell and rotation mode: random soma positions and rotations in front of the MEA, "
              "line-source potentials in an infinite medium, kept when peak-to-peak >= the amplitude rule (paper: 30 "
              "µV)."),
    "recording": ("recording_eap_dataset", cell_recording_partitions,
                  "EAPs of one cell and rotation simulated for the models of real recordings: the MEA plane's medium "
                  "(potential doubled, as MEArec), somata over the whole detectable range (x 10-100 µm, 30 µm beyond "
                  "the probe's edges), kept when peak-to-peak >= the amplitude rule."),
}


def _current_dataset(family: str, context, settings: SimulationSettings, recording: RecordingSettings) -> EAPDataset:
    cell, rotation = partition_cell_rotation(context)
    return stages.load_current_eaps(settings.cell_model(cell), eap_config(family, settings, recording, rotation),
                                    settings.stimulus(), settings.data_path, family)


#: The settings sources (:mod:`eap_assets.defs.sources`) each family's EAPs are made from.
SOURCES = {"paper": ["simulation_settings"], "recording": ["simulation_settings", "recording_settings"]}


def eap_dataset_asset(family: str) -> tuple[dg.AssetsDefinition, list[dg.AssetChecksDefinition]]:
    """The EAP dataset asset of a family (``eap_dataset``, ``recording_eap_dataset``) and its blocking checks:
    finite, exactly N EAPs, every EAP reaching the amplitude rule. One code for both: only the
    settings (:func:`eap_config`) and the folder (``stages.EAP_ROOTS``) differ."""
    name, partitions, description = _FAMILIES[family]

    @dg.asset(name=name, partitions_def=partitions, deps=[dg.AssetDep(spike_templates, partition_mapping=BY_CELL), *SOURCES[family]],
              group_name="eaps" if family == "paper" else "recording", kinds={"numpy", "parquet"},
              code_version=eaps.CODE_VERSION, op_tags=k8s_op_tags("eaps"), retry_policy=TRANSIENT_RETRY,
              description=description)
    @fail_fast
    def _asset(context: dg.AssetExecutionContext, settings: SimulationSettings,
               recording: RecordingSettings) -> dg.MaterializeResult:
        cell, rotation = partition_cell_rotation(context)
        model = settings.cell_model(cell)
        config = eap_config(family, settings, recording, rotation)
        templates = stages.load_current_templates(model, settings.stimulus(), settings.data_path)
        dataset, computed = stages.ensure_eaps(templates, model, config, settings.data_path, settings.force,
                                               family=family)
        folder = stages.eaps_dir(settings.data_path, cell, rotation, family)
        figure = plots.eap_on_probe(np.asarray(dataset.eaps[0]), dataset.dt, get_probe(dataset.probe),
                                    f"{cell} {rotation}, EAP 0 (soma at {np.round(dataset.positions[0], 1).tolist()} µm)")
        key = dataset.provenance["settings_hash"]
        return dg.MaterializeResult(
            metadata={"accepted": dataset.accepted, "tries": dataset.tries,
                      "acceptance rate": round(dataset.acceptance_rate, 4), "probe": dataset.probe,
                      "medium": config.medium, "soma box x (µm)": str(config.x_range), "seed": settings.seed,
                      "dagster/row_count": dataset.accepted,
                      "size (MB)": round(np.asarray(dataset.eaps).nbytes / 1e6, 1),
                      "path": dg.MetadataValue.path(str(folder)), **key_metadata(key, computed),
                      **figure_metadata(figure, folder / "eap0.png", "one EAP on the probe")},
            data_version=dg.DataVersion(key),
        )

    @dg.asset_check(asset=_asset, name=f"{name}_finite", partitions_def=partitions, blocking=True)
    def finite(context: dg.AssetCheckExecutionContext, settings: SimulationSettings,
               recording: RecordingSettings) -> dg.AssetCheckResult:
        """No NaN or inf in any EAP."""
        data = np.asarray(_current_dataset(family, context, settings, recording).eaps)
        bad = np.flatnonzero(~np.isfinite(data).all(axis=(1, 2)))
        return dg.AssetCheckResult(passed=bad.size == 0, metadata={"rows with NaN/inf": int(bad.size)},
                                   description=f"NaN/inf in EAP rows {bad[:10].tolist()}" if bad.size else None)

    @dg.asset_check(asset=_asset, name=f"{name}_row_count", partitions_def=partitions, blocking=True)
    def row_count(context: dg.AssetCheckExecutionContext, settings: SimulationSettings,
                  recording: RecordingSettings) -> dg.AssetCheckResult:
        """Exactly the configured number of EAPs, with as many index rows."""
        dataset = _current_dataset(family, context, settings, recording)
        want = eap_config(family, settings, recording, dataset.rotation).n_eaps
        counts = {"eaps": dataset.accepted, "positions": len(dataset.positions),
                  "spike_index": len(dataset.spike_index)}
        passed = set(counts.values()) == {want}
        return dg.AssetCheckResult(passed=passed, metadata={**counts, "expected": want},
                                   description=None if passed else f"row counts {counts}, expected {want}")

    @dg.asset_check(asset=_asset, name=f"{name}_amplitude_rule", partitions_def=partitions, blocking=True)
    def amplitude_rule(context: dg.AssetCheckExecutionContext, settings: SimulationSettings,
                       recording: RecordingSettings) -> dg.AssetCheckResult:
        """Every EAP reaches the amplitude rule (peak-to-peak >= min_amplitude on at least one contact)."""
        dataset = _current_dataset(family, context, settings, recording)
        p2p = eaps.peak_to_peak(np.asarray(dataset.eaps, dtype=np.float64))
        below = np.flatnonzero(p2p < settings.min_amplitude - 1e-3)  # float32 storage rounding
        return dg.AssetCheckResult(
            passed=below.size == 0,
            metadata={"smallest peak-to-peak (µV)": float(p2p.min()), "rule (µV)": settings.min_amplitude},
            description=f"{below.size} EAPs below {settings.min_amplitude} µV (rows {below[:10].tolist()})"
            if below.size else None)

    return _asset, [finite, row_count, amplitude_rule]


(eap_dataset, _paper_checks), (recording_eap_dataset, _recording_checks) = (eap_dataset_asset(f) for f in _FAMILIES)
eap_dataset_finite, eap_dataset_row_count, eap_dataset_amplitude_rule = _paper_checks
recording_eap_dataset_checks = _recording_checks


def pool_models(settings: SimulationSettings, names) -> list[cells.CellModel]:
    """The cell models called ``names`` (one scan of the model folders; CellModelError naming a missing one)."""
    found, _ = settings.scan_models()
    return [found[n] if n in found else settings.cell_model(n) for n in names]


def load_pool(settings: SimulationSettings, rotation: str, names, family: str = "paper",
              recording: RecordingSettings | None = None) -> EAPPool:
    """The current EAP datasets of ``family`` of ``rotation`` of the cells ``names`` (labels: a variant has its
    parent's; ``recording``: the recording family's settings).

    Raises
    ------
    CellModelError, StaleInputError
        Naming a cell that is not a model under the settings, or whose EAP dataset is missing or stale.
    """
    datasets, labels = [], {}
    for model in pool_models(settings, names):
        name = model.name
        datasets.append(stages.load_current_eaps(model, eap_config(family, settings, recording, rotation),
                                                 settings.stimulus(), settings.data_path, family))
        labels[name] = (model.parent or name, model.mtype, model.excitatory)
    return EAPPool(datasets, labels)
