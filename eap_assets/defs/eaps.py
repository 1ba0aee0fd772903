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
from eap_assets.defs.partitions import cell_rotation_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags

#: Each cell x rotation partition depends on its cell's templates.
BY_CELL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="cell")


def partition_cell_rotation(context) -> tuple[str, str]:
    """(cell, rotation) of a cell x rotation partition (asset or check context)."""
    keys = cell_rotation_partitions.get_partition_key_from_str(str(context.partition_key)).keys_by_dimension
    return keys["cell"], keys["rotation"]


@dg.asset(partitions_def=cell_rotation_partitions, deps=[dg.AssetDep(spike_templates, partition_mapping=BY_CELL)],
          group_name="eaps", kinds={"numpy", "parquet"}, code_version=eaps.CODE_VERSION, op_tags=k8s_op_tags("eaps"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def eap_dataset(context: dg.AssetExecutionContext, settings: SimulationSettings) -> dg.MaterializeResult:
    """Accepted EAPs of one cell and rotation mode: random soma positions and rotations in front
    of the MEA, line-source potentials, kept when peak-to-peak >= the amplitude rule (paper: 30 µV)."""
    cell, rotation = partition_cell_rotation(context)
    model = settings.cell_model(cell)
    templates = stages.load_current_templates(model, settings.stimulus(), settings.data_path)
    dataset, computed = stages.ensure_eaps(templates, model, settings.eap_config(rotation), settings.data_path,
                                           settings.force)
    folder = stages.eaps_dir(settings.data_path, cell, rotation)
    figure = plots.eap_on_probe(np.asarray(dataset.eaps[0]), dataset.dt, get_probe(dataset.probe),
                                f"{cell} {rotation}, EAP 0 (soma at {np.round(dataset.positions[0], 1).tolist()} µm)")
    key = dataset.provenance["settings_hash"]
    return dg.MaterializeResult(
        metadata={"accepted": dataset.accepted, "tries": dataset.tries,
                  "acceptance rate": round(dataset.acceptance_rate, 4), "probe": dataset.probe,
                  "medium": settings.medium, "seed": settings.seed, "dagster/row_count": dataset.accepted,
                  "size (MB)": round(np.asarray(dataset.eaps).nbytes / 1e6, 1),
                  "path": dg.MetadataValue.path(str(folder)), **key_metadata(key, computed),
                  **figure_metadata(figure, folder / "eap0.png", "one EAP on the probe")},
        data_version=dg.DataVersion(key),
    )


def _current_dataset(context, settings: SimulationSettings) -> EAPDataset:
    cell, rotation = partition_cell_rotation(context)
    return stages.load_current_eaps(settings.cell_model(cell), settings.eap_config(rotation), settings.stimulus(),
                                    settings.data_path)


@dg.asset_check(asset=eap_dataset, partitions_def=cell_rotation_partitions, blocking=True)
def eap_dataset_finite(context: dg.AssetCheckExecutionContext, settings: SimulationSettings) -> dg.AssetCheckResult:
    """No NaN or inf in any EAP."""
    data = np.asarray(_current_dataset(context, settings).eaps)
    bad = np.flatnonzero(~np.isfinite(data).all(axis=(1, 2)))
    return dg.AssetCheckResult(passed=bad.size == 0, metadata={"rows with NaN/inf": int(bad.size)},
                               description=f"NaN/inf in EAP rows {bad[:10].tolist()}" if bad.size else None)


@dg.asset_check(asset=eap_dataset, partitions_def=cell_rotation_partitions, blocking=True)
def eap_dataset_row_count(context: dg.AssetCheckExecutionContext,
                          settings: SimulationSettings) -> dg.AssetCheckResult:
    """Exactly the configured number of EAPs, with as many index rows."""
    dataset = _current_dataset(context, settings)
    want = settings.eap_config(dataset.rotation).n_eaps
    counts = {"eaps": dataset.accepted, "positions": len(dataset.positions), "spike_index": len(dataset.spike_index)}
    passed = set(counts.values()) == {want}
    return dg.AssetCheckResult(passed=passed, metadata={**counts, "expected": want},
                               description=None if passed else f"row counts {counts}, expected {want}")


@dg.asset_check(asset=eap_dataset, partitions_def=cell_rotation_partitions, blocking=True)
def eap_dataset_amplitude_rule(context: dg.AssetCheckExecutionContext,
                               settings: SimulationSettings) -> dg.AssetCheckResult:
    """Every EAP reaches the amplitude rule (peak-to-peak >= min_amplitude on at least one contact)."""
    dataset = _current_dataset(context, settings)
    p2p = eaps.peak_to_peak(np.asarray(dataset.eaps, dtype=np.float64))
    below = np.flatnonzero(p2p < settings.min_amplitude - 1e-3)  # float32 storage rounding
    return dg.AssetCheckResult(
        passed=below.size == 0,
        metadata={"smallest peak-to-peak (µV)": float(p2p.min()), "rule (µV)": settings.min_amplitude},
        description=f"{below.size} EAPs below {settings.min_amplitude} µV (rows {below[:10].tolist()})"
        if below.size else None)


def pool_models(settings: SimulationSettings, names) -> list[cells.CellModel]:
    """The cell models called ``names`` (one scan of the model folders; CellModelError naming a missing one)."""
    found, _ = settings.scan_models()
    return [found[n] if n in found else settings.cell_model(n) for n in names]


def load_pool(settings: SimulationSettings, rotation: str, names) -> EAPPool:
    """The current EAP datasets of ``rotation`` of the cells ``names`` (labels: a variant has its parent's).

    Raises
    ------
    CellModelError, StaleInputError
        Naming a cell that is not a model under the settings, or whose EAP dataset is missing or stale.
    """
    datasets, labels = [], {}
    for model in pool_models(settings, names):
        name = model.name
        datasets.append(stages.load_current_eaps(model, settings.eap_config(rotation), settings.stimulus(),
                                                 settings.data_path))
        labels[name] = (model.parent or name, model.mtype, model.excitatory)
    return EAPPool(datasets, labels)
