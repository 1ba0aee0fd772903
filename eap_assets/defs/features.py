"""Feature tables (Parquet, one per cell x rotation) and the per-rotation training tables."""


from collections.abc import Iterable

import dagster as dg
import numpy as np
import pandas as pd

from eap_assets.core import cells, features, keys, noise, plots, splits, stages
from eap_assets.core.eaps import derived_seed, peak_to_peak
from eap_assets.core.probe import get_probe
from eap_assets.defs.eaps import eap_dataset, partition_cell_rotation
from eap_assets.defs.metadata import figure_metadata, key_metadata, markdown_table
from eap_assets.defs.partitions import cell_rotation_partitions, rotation_partitions
from eap_assets.defs.resources import SimulationSettings
from eap_assets.defs.retries import TRANSIENT_RETRY, fail_fast
from eap_assets.defs.tags import k8s_op_tags

PARQUET = "parquet_io_manager"
TRAINING_TABLE_VERSION = "training-table-1"


def expected_features_key(settings: SimulationSettings, model: cells.CellModel, rotation: str) -> str:
    """Key the feature table of ``model`` x ``rotation`` has under the current settings (recording
    noise included; without noise, the noise-free key)."""
    return stages.features_key(stages.eaps_key(settings.eap_config(rotation),
                                               stages.templates_key(model, settings.stimulus())),
                               settings.noise_config().key())


def paper_cells(settings: SimulationSettings, names: Iterable[str],
                found: dict[str, cells.CellModel] | None = None) -> list[str]:
    """The cell partitions among ``names`` that are not morphology variants (sorted): the cells of the
    training tables. Variants (``CellModel.parent`` set) go through the cell and EAP stages only.

    ``found``: models by name to look the names up in (default: ``settings.scan_models_with_variants()``).
    """
    found = settings.scan_models_with_variants() if found is None else found
    return sorted(n for n in names if not settings.is_variant(n, found))


def training_key(settings: SimulationSettings, feature_keys: dict[str, str]) -> str:
    """Key of a training table: its cells' feature-table keys, the split settings and the code version."""
    return keys.settings_hash(sorted(feature_keys.items()), settings.test_fraction, settings.validation_fraction,
                                settings.seed, TRAINING_TABLE_VERSION)


@dg.asset(partitions_def=cell_rotation_partitions, deps=[eap_dataset, "simulation_settings"], io_manager_key=PARQUET, group_name="features",
          kinds={"parquet"}, code_version=features.CODE_VERSION, op_tags=k8s_op_tags("eaps"),
          retry_policy=TRANSIENT_RETRY)
@fail_fast
def feature_table(context: dg.AssetExecutionContext, settings: SimulationSettings) -> dg.Output[pd.DataFrame]:
    """One row per EAP: cell, m-type, E/I, rotation, soma position, rotation quaternion, spike index,
    peak-to-peak, and the per-contact amplitude (µV) and width (ms) features (paper §II-C).

    With recording noise (``settings.noise_rms_uv`` > 0, see :meth:`SimulationSettings.noise_config`)
    the amplitude and width features are computed from the EAPs plus seeded noise
    (:func:`eap_assets.core.noise.noisy_dataset`: same seed, cell and rotation => same noise), and
    the key includes the noise's. ``peak_to_peak_uv`` stays the noise-free value: it is the quantity
    the amplitude rule selected the EAPs by (the simulated EAP, not the recording), so the
    ``feature_table_amplitude_rule`` check keeps its meaning with noise on; noise would otherwise
    move EAPs near the rule across it.
    """
    cell, rotation = partition_cell_rotation(context)
    model = settings.cell_model(cell)
    config = settings.noise_config()
    dataset = stages.load_current_eaps(model, settings.eap_config(rotation), settings.stimulus(), settings.data_path)
    if config.enabled:
        try:
            noisy = noise.noisy_dataset(dataset, config)
        except ValueError as exc:  # e.g. a band reaching the Nyquist frequency of the EAPs' sampling
            raise settings.noise_error(exc) from None
        table = features.feature_table(noisy, model.mtype, model.excitatory)
        clean = np.asarray(dataset.eaps)
        table["peak_to_peak_uv"] = peak_to_peak(clean).astype(np.float32)
    else:
        table = features.feature_table(dataset, model.mtype, model.excitatory)
    key = stages.features_key(dataset.provenance["settings_hash"], config.key())
    table.attrs["key"] = key
    noise_metadata = ({"noise RMS (µV)": config.rms_uv, "noise kind": config.kind if config.kind == "white" else
                       f"band {config.band_hz[0]:g}-{config.band_hz[1]:g} Hz"} if config.enabled
                      else {"noise RMS (µV)": 0.0, "noise kind": "none"})
    return dg.Output(table, data_version=dg.DataVersion(key), metadata={
        "dagster/row_count": len(table), "columns": len(table.columns),
        "median amplitude at best contact (µV)": float(np.median(table["amplitude_max_uv"])),
        "median width at best contact (ms)": float(np.median(table["width_at_max_ms"])),
        **noise_metadata, **key_metadata(key, True)})


def _contacts(settings: SimulationSettings) -> int:
    return get_probe(settings.probe).n_contacts


def _result(problems: list[str], **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not problems, description="; ".join(problems) or None, metadata=metadata)


@dg.asset_check(asset=feature_table, partitions_def=cell_rotation_partitions, blocking=True)
def feature_table_schema(feature_table: pd.DataFrame, settings: SimulationSettings) -> dg.AssetCheckResult:
    """Every expected column with its dtype (ids, labels, placement, 2 x contacts float32 features)."""
    return _result(features.schema_problems(feature_table, _contacts(settings)), columns=len(feature_table.columns))


@dg.asset_check(asset=feature_table, partitions_def=cell_rotation_partitions, blocking=True)
def feature_table_finite(feature_table: pd.DataFrame) -> dg.AssetCheckResult:
    """No NaN or inf in any numeric column."""
    bad = features.nonfinite_columns(feature_table)
    return _result([f"NaN or inf in {bad[:5]}"] if bad else [], **{"columns with NaN/inf": len(bad)})


@dg.asset_check(asset=feature_table, partitions_def=cell_rotation_partitions, blocking=True)
def feature_table_row_count(context: dg.AssetCheckExecutionContext, feature_table: pd.DataFrame,
                            settings: SimulationSettings) -> dg.AssetCheckResult:
    """Exactly N rows (one per accepted EAP), EAP ids 0..N-1."""
    want = settings.eap_config(partition_cell_rotation(context)[1]).n_eaps
    problems = [] if len(feature_table) == want else [f"{len(feature_table)} rows, expected {want}"]
    if not np.array_equal(feature_table["eap_id"].to_numpy(), np.arange(len(feature_table))):
        problems.append("eap_id is not 0..N-1")
    return _result(problems, rows=len(feature_table), expected=want)


@dg.asset_check(asset=feature_table, partitions_def=cell_rotation_partitions, blocking=True)
def feature_table_amplitude_rule(feature_table: pd.DataFrame, settings: SimulationSettings) -> dg.AssetCheckResult:
    """Every row's peak-to-peak reaches the amplitude rule (paper: 30 µV). With recording noise the
    column holds the noise-free peak-to-peak (see ``feature_table``), so the rule applies unchanged."""
    low = feature_table["peak_to_peak_uv"] < settings.min_amplitude - 1e-3
    return _result([f"{int(low.sum())} rows below {settings.min_amplitude} µV"] if low.any() else [],
                   **{"smallest peak-to-peak (µV)": float(feature_table["peak_to_peak_uv"].min())})


@dg.asset_check(asset=feature_table, partitions_def=cell_rotation_partitions, blocking=True)
def feature_table_labels(context: dg.AssetCheckExecutionContext, feature_table: pd.DataFrame) -> dg.AssetCheckResult:
    """Labels in the known sets and those of the partition's cell: m-type, E/I, cell, rotation."""
    cell, rotation = partition_cell_rotation(context)
    _, mtype, _ = cells.parse_name(cell)
    ei = "E" if mtype in cells.EXCITATORY_MTYPES else "I"
    problems = [f"column {col!r} has {sorted(set(feature_table[col]) - {want})}, expected only {want!r}"
                for col, want in (("cell", cell), ("rotation", rotation), ("mtype", mtype), ("ei", ei))
                if set(feature_table[col]) != {want}]
    if (feature_table["ei"].eq("E") != feature_table["excitatory"]).any():
        problems.append("'ei' disagrees with 'excitatory'")
    return _result(problems, mtype=mtype, ei=ei)


@dg.asset(
    partitions_def=rotation_partitions, group_name="training", kinds={"parquet"}, io_manager_key=PARQUET,
    deps=["simulation_settings"],
    code_version=TRAINING_TABLE_VERSION, op_tags=k8s_op_tags("tables"), retry_policy=TRANSIENT_RETRY,
    ins={"feature_table": dg.AssetIn(
        partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="rotation"),
        metadata={"allow_missing_partitions": True})},
)
@fail_fast
def training_table(context: dg.AssetExecutionContext, settings: SimulationSettings,
                   feature_table: dict[str, pd.DataFrame]) -> dg.Output[pd.DataFrame]:
    """All cells' feature tables of one rotation with a seeded split column (``train`` /
    ``validation`` / ``test``, stratified by cell: 10 % of each cell held out, as in the paper).

    Only cell partitions that are not morphology variants take part (:func:`paper_cells`): the
    feature tables of variants may exist and are ignored here.
    """
    rotation = context.partition_key
    found = settings.scan_models_with_variants()  # one scan: variants, and the models of the key check
    cell_names = paper_cells(settings, context.instance.get_dynamic_partitions("cell_model"), found)
    tables = {cell_rotation_partitions.get_partition_key_from_str(str(key)).keys_by_dimension["cell"]: t
              for key, t in feature_table.items()}
    empty = [c for c in cell_names if c in tables and not len(tables[c])]
    if empty:
        raise ValueError(f"training_table {rotation!r}: feature_table of {', '.join(empty)} x {rotation!r} has no rows "
                         "(an empty partition); re-materialise eap_dataset and feature_table for it")
    missing = [c for c in cell_names if c not in tables]
    if missing:
        raise stages.StaleInputError(f"training_table {rotation!r}: feature_table missing for {', '.join(missing)}; "
                                     f"materialise them first (or remove those cell partitions)")
    stale = [c for c in cell_names if tables[c].attrs.get("key") != expected_features_key(
        settings, found[c] if c in found else settings.cell_model(c), rotation)]
    if stale:
        raise stages.StaleInputError(f"training_table {rotation!r}: feature_table of {', '.join(stale)} was made "
                                     "with other settings; re-materialise eap_dataset and feature_table for them")
    table = pd.concat([tables[c] for c in cell_names], ignore_index=True)
    seed = derived_seed(settings.seed, "split", rotation)
    table["split"] = splits.assign_split(table["cell"].to_numpy(), settings.test_fraction,
                                         settings.validation_fraction, seed)
    key = training_key(settings, {c: tables[c].attrs["key"] for c in cell_names})
    table.attrs["key"] = key
    counts = table.groupby(["cell", "split"]).size().unstack(fill_value=0).reset_index()
    figure = plots.amplitude_vs_width(table["amplitude_max_uv"], table["width_at_max_ms"], table["ei"],
                                      f"{rotation}: {len(table)} EAPs of {len(cell_names)} cells")
    return dg.Output(table, data_version=dg.DataVersion(key), metadata={
        "dagster/row_count": len(table), "cells": len(cell_names),
        **{f"{s} rows": int((table["split"] == s).sum()) for s in splits.SPLITS},
        "rows per cell and split": markdown_table(counts),
        **key_metadata(key, True),
        **figure_metadata(figure, settings.data_path / "figures" / f"amplitude_vs_width_{rotation}.png",
                          "amplitude vs width (Fig. 1C)")})


@dg.asset_check(asset=training_table, partitions_def=rotation_partitions, blocking=True)
def training_table_split(training_table: pd.DataFrame, settings: SimulationSettings) -> dg.AssetCheckResult:
    """Each cell's test share is the configured fraction (to one row), and every cell has train and test rows."""
    problems = []
    for cell, group in training_table.groupby("cell"):
        n_test = int((group["split"] == "test").sum())
        if abs(n_test - settings.test_fraction * len(group)) > 1:
            problems.append(f"{cell}: {n_test} of {len(group)} rows in test, expected {settings.test_fraction:.0%}")
        if not (group["split"] == "train").any() or (settings.test_fraction > 0 and n_test == 0):
            problems.append(f"{cell}: empty train or test split")
    unknown = set(training_table["split"]) - set(splits.SPLITS)
    if unknown:
        problems.append(f"unknown split labels {sorted(unknown)}")
    return _result(problems, **{s: int((training_table["split"] == s).sum()) for s in splits.SPLITS})


@dg.asset_check(asset=training_table, partitions_def=rotation_partitions, blocking=True)
def training_table_cells(context: dg.AssetCheckExecutionContext, training_table: pd.DataFrame,
                         settings: SimulationSettings) -> dg.AssetCheckResult:
    """Every cell partition that is not a morphology variant is present (and no variant), labels are
    in the known sets, and no EAP appears twice."""
    expected = set(paper_cells(settings, context.instance.get_dynamic_partitions("cell_model")))
    problems = []
    if set(training_table["cell"]) != expected:
        problems.append(f"cells {sorted(set(training_table['cell']) ^ expected)} missing or unexpected")
    known = cells.EXCITATORY_MTYPES | cells.INHIBITORY_MTYPES
    if not set(training_table["mtype"]) <= known or not set(training_table["ei"]) <= set(features.EI_LABELS):
        problems.append("unknown m-type or E/I labels")
    if training_table.duplicated(["cell", "eap_id"]).any():
        problems.append("duplicate (cell, eap_id) rows")
    return _result(problems, cells=training_table["cell"].nunique())
