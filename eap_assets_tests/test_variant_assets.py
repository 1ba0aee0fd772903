"""Morphology variants as cell-model partitions and recording noise in the feature stage, through a
real Dagster instance and real NEURON (quick preset, the cheapest cell, one rotation, 10 EAPs)."""

from __future__ import annotations

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from eap_assets import cli
from eap_assets.core import stages
from eap_assets.defs.io import stored_parquet_key
from eap_assets.defs.resources import SimulationSettings
from eap_assets.run import DEFAULT_STAGES, STAGES, execute_partition, materialize_graph, settings_run_config

SMALL = "L5_SBC_bNAC219_1"  # 158 segments: the cheapest cell
ROTATION = "norot"
N_EAPS = 10


@pytest.fixture(scope="module")
def run(dagster_home, tmp_path_factory):
    """Variants stage, then SBC and its one variant through cells + EAPs, then the training table."""
    data = tmp_path_factory.mktemp("data")
    settings = SimulationSettings(data_dir=str(data), preset="quick", n_eaps=N_EAPS, variants_per_cell=1)
    variant = settings.variant_names(SMALL)[0]
    report = materialize_graph(settings, [SMALL], [ROTATION], stages_=("variants", "cells", "eaps", "training"),
                               workers=2, log=lambda m: None)
    return settings, variant, report


def _settings(settings: SimulationSettings, **changes) -> SimulationSettings:
    return SimulationSettings(**{**{f: getattr(settings, f) for f in SimulationSettings.model_fields}, **changes})


def _latest(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dg.AssetMaterialization:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].asset_materialization


def _materialize(job: str, partition: str, assets: list[str], settings: SimulationSettings):
    """Some assets of a job for one partition, in this process (checks of those assets included)."""
    from eap_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=partition, instance=instance, run_config=settings_run_config(settings),
            asset_selection=[dg.AssetKey(a) for a in assets], raise_on_error=False)


def test_variants_stage_makes_registers_and_simulates_variants(run):
    settings, variant, report = run
    status = {(r.job, r.partition): r for r in report.results}
    assert not report.failed, [(r.job, r.partition, r.error) for r in report.failed]
    assert status[("morphology_variants_job", "")].status == "done"
    assert report.results[0].job == "morphology_variants_job"  # before any cell
    for job, partition in (("cell_models_job", SMALL), ("cell_models_job", variant),
                           ("eap_datasets_job", f"{SMALL}|{ROTATION}"), ("eap_datasets_job", f"{variant}|{ROTATION}"),
                           ("training_tables_job", ROTATION)):
        assert status[(job, partition)].status == "done"
    assert len(report.results) == 1 + 2 * 2 + 1  # variants, 2 cells x (cell + eaps), one training table

    folders = sorted(p for p in settings.variants_path.iterdir() if not p.name.startswith("."))
    assert len(folders) == 13 and variant in {p.name for p in folders}  # one variant of every BBP model
    record = json.loads((settings.variants_path / variant / "variant.json").read_text())
    assert record["parent"] == SMALL and record["jitter_deg"] == 5.0 and 0.8 <= record["sx"] <= 1.2
    instance = dg.DagsterInstance.get()
    partitions = set(instance.get_dynamic_partitions("cell_model"))
    assert partitions == {SMALL, *(p.name for p in folders)}
    meta = _latest(instance, "morphology_variants").metadata
    assert meta["variants"].value == 13 and variant in meta["variant factors"].value
    assert "| parent | variant | sx | sy | sz | jitter |" in meta["variant factors"].value

    assert _latest(instance, "spike_templates", variant).metadata["kept spikes"].value == 3
    table = pd.read_parquet(settings.data_path / "feature_table" / variant / f"{ROTATION}.parquet")
    assert len(table) == N_EAPS and set(table["cell"]) == {variant}
    assert set(table["mtype"]) == {"SBC"} and set(table["ei"]) == {"I"}  # the parent's labels
    assert settings.is_variant(variant) and not settings.is_variant(SMALL)


def test_training_table_excludes_variants(run):
    settings, variant, _ = run
    training = pd.read_parquet(settings.data_path / "training_table" / f"{ROTATION}.parquet")
    assert set(training["cell"]) == {SMALL} and len(training) == N_EAPS
    # with the paper settings (no variants) the variant partitions, whose feature tables exist, are ignored too
    paper = _settings(settings, variants_per_cell=0)
    result = _materialize("training_tables_job", ROTATION, ["training_table"], paper)
    assert result.success
    checks = [e.asset_check_evaluation_data for e in result.all_events
              if e.event_type_value == dg.DagsterEventType.ASSET_CHECK_EVALUATION.value]
    assert {c.check_name for c in checks} == {"training_table_split", "training_table_cells"}
    assert all(c.passed for c in checks)
    # up to date: variants are made again (idempotent: the folder is untouched), everything else is skipped
    before = (settings.variants_path / variant / "variant.json").stat().st_mtime_ns
    again = materialize_graph(settings, [SMALL], [ROTATION], stages_=("variants", "cells", "eaps"), workers=1,
                              log=lambda m: None)
    assert [r.status for r in again.results] == ["done"] + ["skipped"] * 4
    assert (settings.variants_path / variant / "variant.json").stat().st_mtime_ns == before


def test_feature_table_with_recording_noise(run):
    settings, _, _ = run
    path = settings.data_path / "feature_table" / SMALL / f"{ROTATION}.parquet"
    model = settings.cell_model(SMALL)
    eaps_key = stages.eaps_key(settings.eap_config(ROTATION), stages.templates_key(model, settings.stimulus()))
    clean = pd.read_parquet(path)
    assert stored_parquet_key(path) == stages.features_key(eaps_key)  # the clean key is unchanged by noise support

    noisy_settings = _settings(settings, noise_rms_uv=10.0)
    tables = []
    for _ in range(2):  # same seed, from scratch each time: identical tables
        path.unlink()
        result = _materialize("eap_datasets_job", f"{SMALL}|{ROTATION}", ["feature_table"], noisy_settings)
        assert result.success
        tables.append(pd.read_parquet(path))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    noisy = tables[0]
    key = stored_parquet_key(path)
    assert key != stages.features_key(eaps_key)
    assert key == stages.features_key(eaps_key, noisy_settings.noise_config().key())
    with dg.DagsterInstance.get() as instance:
        meta = _latest(instance, "feature_table", f"{SMALL}|{ROTATION}").metadata
    assert meta["noise RMS (µV)"].value == 10.0 and meta["noise kind"].value == "white"
    assert meta["key"].value == key
    amp_cols = [c for c in clean.columns if c.startswith("amp_c")]
    assert not np.allclose(noisy[amp_cols].to_numpy(), clean[amp_cols].to_numpy())
    # the amplitude rule's quantity stays the noise-free one (its check passed above); labels unchanged
    np.testing.assert_array_equal(noisy["peak_to_peak_uv"], clean["peak_to_peak_uv"])
    pd.testing.assert_frame_equal(noisy[["eap_id", "cell", "mtype", "x", "y", "z"]],
                                  clean[["eap_id", "cell", "mtype", "x", "y", "z"]])
    # the clean table comes back with the clean key (other tests of this module read it)
    assert _materialize("eap_datasets_job", f"{SMALL}|{ROTATION}", ["feature_table"], settings).success
    pd.testing.assert_frame_equal(pd.read_parquet(path), clean)


def test_new_cell_model_sensor_finds_variants_when_enabled(run, tmp_path):
    from eap_assets.defs.sensors import new_cell_models

    settings, variant, _ = run
    for changes, expected in (({}, 26), ({"variants_per_cell": 0}, 13),  # 13 BBP models (+ 13 variants)
                              ({"data_dir": str(tmp_path)}, 13)):  # variants enabled, none made yet: no problem
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(instance=instance, resources={"settings": _settings(settings, **changes)})
            added = new_cell_models(context).dynamic_partitions_requests[0].partition_keys
            assert len(added) == expected and SMALL in added and (variant in added) == (expected == 26)


def test_bad_variant_and_noise_settings_are_refused(run):
    settings, _, _ = run
    none = execute_partition("morphology_variants_job", "", settings_run_config(_settings(settings,
                                                                                           variants_per_cell=0)))
    assert none.status == "failed" and "set variants_per_cell >= 1" in none.error
    pink = _settings(settings, noise_kind="pink")
    with pytest.raises(ValueError, match="noise_kind='pink'.*choose one of white, band"):
        pink.noise_config()
    with pytest.raises(ValueError, match="noise_kind"):
        materialize_graph(pink, [SMALL], [ROTATION], stages_=("eaps",), log=lambda m: None)
    failed = execute_partition("eap_datasets_job", f"{SMALL}|{ROTATION}", settings_run_config(pink))
    assert failed.status == "failed" and "noise_kind" in failed.error
    with pytest.raises(ValueError, match="noise_rms_uv"):
        _settings(settings, noise_rms_uv=-1.0).noise_config()
    with pytest.raises(ValueError, match="variant_scale_range"):
        _settings(settings, variant_scale_range=[0.1, 1.2]).variant_names(SMALL)


def test_cli_passes_noise_and_variants_into_the_settings():
    assert STAGES[0] == "variants"
    args = cli.build_parser().parse_args(["run", "--quick", "--noise-uv", "7.5", "--noise-kind", "band",
                                          "--variants", "2", "--variant-jitter", "3"])
    settings = cli._settings(args)
    assert (settings.noise_rms_uv, settings.noise_kind, settings.variants_per_cell, settings.variant_jitter_deg) == (
        7.5, "band", 2, 3.0)
    assert args.stages.split(",") == list(DEFAULT_STAGES)  # all but generalisation (make generalisation adds it)
    assert settings.variants_path in settings.model_roots()
    default = cli._settings(cli.build_parser().parse_args(["run"]))
    assert default.variants_per_cell == 0 and default.variants_path not in default.model_roots()
    assert not default.noise_config().enabled
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--noise-kind", "pink"])
