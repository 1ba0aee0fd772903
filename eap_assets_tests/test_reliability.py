"""Reliability: the bad-input catalogue of docs/reliability.md and its guarantees.

Every bad input gives an error naming the input and what is wrong, leaves the other partitions
intact and nothing half-written on disk; writes are atomic (a full disk, a failed rename or a
SIGKILL leaves the previous artefact), two runs of one partition at once compute it once,
transient failures are retried and bad input is not, the same seed gives bit-identical feature
tables, the servers bind to loopback, and the repository holds no secrets.

Catalogue cases already proven elsewhere (referenced in docs/reliability.md, not repeated here):
missing .mod / .mod that fails to compile / broken morphology as errors of the core
(test_cells.py), a cell that never reaches the spike target (test_intracellular.py), wrong
template shape or sampling step for ``classify`` (test_defs.py), the promotion gate's aliases
(test_defs.py::test_promotion_gate_keeps_a_better_champion).
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from upath import UPath

from eap_assets import cli, local, registry
from eap_assets.core import cells, features, intracellular, stages, storage
from eap_assets.core.eaps import EAPConfig, EAPDataset
from eap_assets.defs.io import ParquetIOManager, parquet_io_manager
from eap_assets.defs.resources import SimulationSettings
from eap_assets.run import _root_cause, execute_partition, materialize_graph, settings_run_config

from .conftest import INTERNEURON, SHORT
from .test_cells import _copy_model
from .test_defs import SMALL, _materializations
from .test_features import _dataset

REPO = Path(__file__).resolve().parents[1]


def _message(excinfo) -> str:
    """The error text, printed for docs/reliability.md (``pytest -s``)."""
    text = f"{type(excinfo.value).__name__}: {excinfo.value}"
    print(f"\nMESSAGE {inspect.stack()[1].function}: {text}")
    return text


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --- bad cell models in a real run: each fails alone ------------------------------------------

def test_bad_cell_models_fail_alone_in_a_run(models, tmp_path, monkeypatch):
    """A missing .mod and a .mod that does not compile, next to a good model in the same folder."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    folder = tmp_path / "models"
    good = _copy_model(models, folder, SMALL).rename(folder / "L5_SBC_bNAC219_2")
    nomod = _copy_model(models, folder, SMALL).rename(folder / "L5_SBC_nomod_1")
    (nomod / "mechanisms" / "Ih.mod").unlink()
    badmod = _copy_model(models, folder, SMALL).rename(folder / "L5_SBC_badmod_1")
    (badmod / "mechanisms" / "Broken.mod").write_text("NEURON {\n    SUFFIX Broken\n}\nTHIS IS NOT NMODL {{{\n")
    data = tmp_path / "data"
    settings = SimulationSettings(data_dir=str(data), preset="quick", n_eaps=10, model_folders=[str(folder)])
    report = materialize_graph(settings, [good.name, nomod.name, badmod.name], ["zrot"], stages_=("cells", "eaps"),
                               workers=2, log=lambda m: None)
    status = {(r.job, r.partition): r for r in report.results}
    assert status[("cell_models_job", good.name)].status == "done"  # its folder's broken neighbour does not matter
    assert status[("eap_datasets_job", f"{good.name}|zrot")].status == "done"
    missing = status[("cell_models_job", nomod.name)]
    print(f"\nMESSAGE missing .mod: {missing.error}")
    assert missing.status == "failed" and re.search(r"CellModelError: cell model 'L5_SBC_nomod_1': biophysics.hoc "
                                                    r"inserts Ih .*\(missing Ih.mod\?\)", missing.error)
    broken = status[("cell_models_job", badmod.name)]
    print(f"\nMESSAGE .mod that fails to compile: {broken.error[:300]}")
    assert broken.status == "failed" and re.search(
        r"MechanismError: nrnivmodl failed to compile Broken.mod \(cell models: L5_SBC_badmod_1\)", broken.error)
    assert "Illegal block at line 4 in file Broken.mod" in broken.error  # the compiler's own words
    for bad in (nomod.name, badmod.name):
        assert status[("eap_datasets_job", f"{bad}|zrot")].error == f"cell stage of {bad} failed"
        assert not stages.templates_path(data, bad).exists() and not stages.eaps_dir(data, bad, "zrot").exists()
    assert stages.load_current_templates(cells.read_cell_model(good), SHORT, data).n_spikes == SHORT.n_keep
    assert (data / "feature_table" / good.name / "zrot.parquet").exists()
    with dg.DagsterInstance.get() as instance:
        assert set(_materializations(instance, "feature_table")) == {f"{good.name}|zrot"}
        assert set(instance.get_dynamic_partitions("cell_model")) == {good.name, badmod.name}  # nomod is no model
    assert not _temporaries(data)


def test_spike_target_failure_leaves_the_previous_templates(models, bp_templates, tmp_path):
    data = tmp_path / "data"
    path = bp_templates.save(stages.templates_path(data, INTERNEURON))
    before = path.read_bytes()
    never = intracellular.StimulusConfig(tstop=100.0, n_keep=3, max_spikes=12, initial_amp=0.0, max_tries=1)
    with pytest.raises(intracellular.SpikeTargetError) as err:
        stages.ensure_templates(models[INTERNEURON], never, data)
    assert re.fullmatch(r"SpikeTargetError: cell model 'L5_BP_bAC217_1': no somatic current gave 4-12 spikes in "
                        r"100 ms after 1 simulations \(0.000 nA -> 0\)", _message(err))
    assert path.read_bytes() == before and not _temporaries(data)


# --- bad data ---------------------------------------------------------------------------------

def test_nan_in_an_eap_is_refused_naming_dataset_and_rows(tmp_path):
    dataset = _dataset()
    dataset.eaps[4, 17, 100] = np.nan
    dataset.eaps[5, 0, 0] = np.inf
    stored = EAPDataset.load(dataset.save(tmp_path / "eaps" / dataset.cell_name / "zrot"))
    with pytest.raises(ValueError) as err:
        features.feature_table(stored, "BP", excitatory=False)
    assert _message(err) == "ValueError: EAP dataset 'L5_BP_bAC217_1' x 'zrot': NaN or inf in EAP rows [4, 5]"


def test_corrupt_eap_files_are_named_and_recomputed(bp_templates, models, tmp_path):
    model, data, config = models[INTERNEURON], tmp_path / "data", EAPConfig(n_eaps=5, rotation="norot")
    templates = replace(bp_templates, provenance={**bp_templates.provenance,
                                                  "settings_hash": stages.templates_key(model, SHORT)})
    stages.ensure_eaps(templates, model, config, data)
    folder = stages.eaps_dir(data, INTERNEURON, "norot")
    (folder / "index.parquet").write_bytes(b"PAR1 this is not parquet")  # damaged on disk, key still current
    with pytest.raises(ValueError) as err:
        stages.load_current_eaps(model, config, SHORT, data)
    assert re.fullmatch(rf"ValueError: EAP dataset {re.escape(str(folder))}: index.parquet is missing or unreadable "
                        r"\(ArrowInvalid: .*\); re-materialise eap_dataset for it", _message(err), re.S)
    again, computed = stages.ensure_eaps(templates, model, config, data)  # the next run recovers
    assert computed and np.array_equal(again.eaps, stages.load_current_eaps(model, config, SHORT, data).eaps)
    npz = stages.templates_path(data, INTERNEURON)
    npz.parent.mkdir(parents=True)
    npz.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"L5_BP_bAC217_1.npz: not a readable .npz file \(BadZipFile"):
        intracellular.SpikeTemplates.load(npz)
    assert stages.stored_key(npz) is None  # so ensure_templates recomputes instead of failing


# --- the training table through Dagster: empty / corrupt partitions, retries --------------------

CELL_PAIR = (INTERNEURON, SMALL)


def _feature_tables(data: Path, settings: SimulationSettings, rows: dict[str, int]) -> dict[str, Path]:
    """Current feature tables of ``norot`` (synthetic EAPs, real feature code and Parquet writer)."""
    manager, paths = ParquetIOManager(base_path=UPath(data)), {}
    for i, (cell, n) in enumerate(rows.items()):
        model = settings.cell_model(cell)
        table = features.feature_table(replace(_dataset(max(n, 1), seed=i), cell_name=cell, rotation="norot"),
                                       model.mtype, model.excitatory).iloc[:n]
        table.attrs["key"] = stages.features_key(stages.eaps_key(settings.eap_config("norot"),
                                                                 stages.templates_key(model, settings.stimulus())))
        paths[cell] = data / "feature_table" / cell / "norot.parquet"
        manager.dump_to_path(dg.build_output_context(), table, UPath(paths[cell]))
    return paths


def _materialize_training_table(settings: SimulationSettings, cells_: tuple[str, ...]):
    """training_table 'norot' in a fresh instance whose cell partitions are ``cells_``: (result, error, retries)."""
    from eap_assets.defs.features import feature_table, training_table

    with dg.instance_for_test() as instance:
        if cells_:
            instance.add_dynamic_partitions("cell_model", list(cells_))
        result = dg.materialize([feature_table, training_table], selection=[training_table], partition_key="norot",
                                instance=instance, raise_on_error=False,
                                resources={"settings": settings, "parquet_io_manager": parquet_io_manager})
    failures = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    retries = [e.event_specific_data for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    return result, (_root_cause(failures[0]) if failures else None), retries


@pytest.fixture
def table_settings(tmp_path) -> SimulationSettings:
    return SimulationSettings(data_dir=str(tmp_path / "data"), preset="quick")


def test_empty_partition_is_refused_without_retries(table_settings):
    _feature_tables(table_settings.data_path, table_settings, {INTERNEURON: 20, SMALL: 0})
    result, error, retries = _materialize_training_table(table_settings, CELL_PAIR)
    print(f"\nMESSAGE empty partition: {error}")
    assert not result.success and not retries
    assert error == ("ValueError: training_table 'norot': feature_table of L5_SBC_bNAC219_1 x 'norot' has no rows "
                     "(an empty partition); re-materialise eap_dataset and feature_table for it")
    result, error, retries = _materialize_training_table(table_settings, ())
    print(f"\nMESSAGE no partitions: {error}")
    assert not result.success and not retries and error == (
        "StaleInputError: training_table 'norot': there are no feature_table partitions to load (no cell models "
        "yet?); materialise feature_table first")
    assert not (table_settings.data_path / "training_table").exists()


def test_corrupt_parquet_is_named_and_not_retried(table_settings):
    paths = _feature_tables(table_settings.data_path, table_settings, {INTERNEURON: 20, SMALL: 20})
    paths[SMALL].write_bytes(paths[SMALL].read_bytes()[:-200])  # truncated: footer gone
    result, error, retries = _materialize_training_table(table_settings, CELL_PAIR)
    print(f"\nMESSAGE corrupt Parquet: {error}")
    assert not result.success and not retries
    assert re.fullmatch(rf"ValueError: {re.escape(str(paths[SMALL]))}: not a readable Parquet file \(.*\); "
                        r"re-materialise feature_table", error, re.S)


def test_transient_write_failure_is_retried_with_backoff(table_settings, monkeypatch):
    _feature_tables(table_settings.data_path, table_settings, {INTERNEURON: 20, SMALL: 20})
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):  # the first write of the run fails as a flaky file system would
        calls.append(dst)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", flaky_replace)
    result, error, retries = _materialize_training_table(table_settings, CELL_PAIR)
    assert result.success and error is None and len(retries) == 1
    assert "[Errno 5]" in retries[0].error.cause.message and 0 <= retries[0].seconds_to_wait <= 4  # 2 s +- 2 s
    table = pd.read_parquet(table_settings.data_path / "training_table" / "norot.parquet")
    assert len(table) == 40 and set(table["cell"]) == set(CELL_PAIR)
    assert not _temporaries(table_settings.data_path)


def test_retry_policies_are_on_io_and_mlflow_assets_only():
    from eap_assets.definitions import defs
    from eap_assets.defs.retries import TRANSIENT_RETRY

    graph = defs.resolve_asset_graph()
    policies = {key.to_user_string(): graph.get(key).assets_def.op.retry_policy for key in graph.get_all_asset_keys()}
    retried = {name for name, policy in policies.items() if policy == TRANSIENT_RETRY}
    assert retried == {"eap_dataset", "feature_table", "training_table", "cnn_model", "lgbm_model", "waveform_model",
                       "evaluation", "hold_out_cell_type", "paper_comparison", "morphology_variants",
                       "generalisation", "recording_generalisation", "generalisation_report", "recording_eap_dataset",
                       "recording_training_set", "waveform_basis", "recording_cnn_model", "recording_lgbm_model", "recording_waveform_model",
                       "unit_classifier", "mearec_templates", "mearec_recording", "crosscheck", "crosscheck_report"}
    assert policies["cell_model"] is None and policies["spike_templates"] is None  # NEURON: deterministic
    assert TRANSIENT_RETRY.max_retries == 2 and TRANSIENT_RETRY.backoff == dg.Backoff.EXPONENTIAL


def test_bad_input_in_a_multi_asset_generator_is_not_retried():
    """fail_fast also guards a generator (recording_training_set yields its two outputs): the bad input
    surfaces as a Failure that skips the retry policy, after the outputs yielded before it."""
    from eap_assets.defs.retries import fail_fast

    @fail_fast
    def outputs():
        yield 1
        raise ValueError("recording_training_set '3drot': 1 cell model(s)")

    produced = outputs()
    assert next(produced) == 1
    with pytest.raises(dg.Failure, match="ValueError: recording_training_set '3drot'") as failure:
        next(produced)
    assert failure.value.allow_retries is False


def test_unknown_partition_key_is_refused_listing_the_valid_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    config = settings_run_config(SimulationSettings(data_dir=str(tmp_path / "data"), preset="quick"))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("cell_model", [SMALL])
    with pytest.raises(ValueError) as err:
        execute_partition("eap_datasets_job", "L5_XX_bAC_1|norot", config)
    assert _message(err) == ("ValueError: eap_datasets_job: unknown partition key 'L5_XX_bAC_1|norot'; valid: "
                             f"'<cell>|<rotation>' with cell in {SMALL}; rotation in norot, zrot, xrot, 3drot")
    with pytest.raises(ValueError, match="training_tables_job: unknown partition key 'spin'; valid: norot, zrot"):
        execute_partition("training_tables_job", "spin", config)
    assert not (tmp_path / "data").exists()


# --- the registry: probe of another contact count, the promotion gate ------------------------

@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    """Two versions of a small real LightGBM model registered in a real MLflow store."""
    import mlflow

    from eap_assets.core import models

    registry.configure(registry.default_tracking_uri(tmp_path_factory.mktemp("mlflow")), "reliability")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 200)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    trained = models.train_lgbm(x, y, x, y, 2, models.LGBMConfig(n_estimators=5, early_stopping_rounds=None), seed=0)
    name = registry.model_name("lgbm", "reliability", "binary")
    tags = {"kind": "lgbm", "classes": ["E", "I"], "probe": "SqMEA-10-15", "dt_ms": 2**-5, "n_samples": 224}
    with mlflow.start_run(run_name="reliability"):
        versions = [registry.log_model(trained.model, "lgbm", name, x[:4], tags=tags).version for _ in range(2)]
    return name, versions


def test_probe_with_another_contact_count_than_the_model(tiny_registry, tmp_path):
    from eap_assets.core.units import Units
    from eap_assets.core.probe import model_plane_positions
    from eap_assets.serving import classify_units

    name, _ = tiny_registry
    registry.promote(name, 1, 0.5)
    loaded = registry.load_classifier(name)
    units = Units(source="units.npy", unit_ids=np.arange(3), templates=np.ones((3, 25, 224)), fs_hz=32000.0,
                  positions=model_plane_positions("SqMEA-5-30"), filtered=False)
    with pytest.raises(ValueError) as err:
        classify_units(units, loaded)
    print(f"\nMESSAGE probe mismatch: {_message(err)}")
    assert _message(err) == ("ProbeGeometryError: units.npy: model paper_lgbm_SqMEA-10-15_reliability_binary v1 is for "
                             "probe SqMEA-10-15 (100 contacts): the recording has 25 contacts, probe 'SqMEA-10-15' has 100: "
                             "a model reads a recording whose probe holds its whole layout")
    with pytest.raises(ValueError, match=r"units.npy: no units to classify \(an empty sorting\)"):
        Units(source="units.npy", unit_ids=np.arange(0), templates=np.zeros((0, 100, 224)), fs_hz=32000.0,
              positions=model_plane_positions("SqMEA-10-15"), filtered=False)


def test_worse_model_is_not_promoted_and_says_why(tiny_registry, caplog):
    import mlflow

    name, (first, second) = tiny_registry
    assert registry.promote(name, first, 0.9) == registry.CHAMPION
    with caplog.at_level("WARNING", logger="eap_assets.registry"):
        assert registry.promote(name, second, 0.6) == registry.CHALLENGER
    reason = mlflow.MlflowClient().get_model_version(name, second).tags["promotion"]
    print(f"\nMESSAGE worse than the champion: {reason}")
    assert reason == ("paper_lgbm_SqMEA-10-15_reliability_binary v2 not promoted to champion: its test accuracy 0.6000 "
                      "is below champion v1's 0.9000; aliased challenger, champion unchanged")
    assert reason in caplog.text and registry.load_registered(name).version == str(first)


# --- atomic writes: full disk, failed rename, killed writer --------------------------------------

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_keeps_the_previous_file(bp_templates, tmp_path, monkeypatch):
    path = bp_templates.save(stages.templates_path(tmp_path, INTERNEURON))
    before = path.read_bytes()
    monkeypatch.setattr(storage.os, "replace", _enospc)
    with pytest.raises(OSError) as err:
        replace(bp_templates, amplitude=1.0).save(path)
    monkeypatch.undo()
    assert err.value.errno == errno.ENOSPC
    assert _message(err) == f"OSError: [Errno 28] could not write {path}: No space left on device"
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("failing", ["write", "rename"])
def test_full_disk_keeps_the_previous_eap_folder(tmp_path, monkeypatch, failing):
    folder = _dataset(seed=1).save(tmp_path / "eaps" / INTERNEURON / "zrot")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    if failing == "write":  # the disk fills up after eaps.npy was written
        monkeypatch.setattr(pd.DataFrame, "to_parquet", _enospc)
    else:  # the old folder was moved aside, then renaming the new one in fails: the old one goes back
        real, calls = os.replace, []

        def second_rename_fails(src, dst):
            calls.append(src)
            return _enospc() if len(calls) == 2 else real(src, dst)

        monkeypatch.setattr(storage.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match=rf"could not write {re.escape(str(folder))}: No space left on device") as err:
        _dataset(seed=2).save(folder)
    monkeypatch.undo()
    _message(err)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not _temporaries(tmp_path)
    np.testing.assert_array_equal(EAPDataset.load(folder).eaps, _dataset(seed=1).eaps)


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from eap_assets.core import storage
target, kind = Path(sys.argv[1]), sys.argv[2]
opener = storage.atomic_path if kind == "file" else storage.atomic_dir
with opener(target) as tmp:
    out = tmp if kind == "file" else tmp / "eaps.npy"
    with open(out, "wb") as fh:
        for _ in range(200):  # a 200 MB artefact, written slowly enough to be killed in the middle
            fh.write(bytes(1_000_000))
            fh.flush()
            if _ == 20:
                print("writing", flush=True)
            time.sleep(0.05)
"""


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_writer_killed_mid_write_leaves_the_old_artefact_and_the_next_run_recovers(tmp_path, kind):
    if kind == "file":
        target = storage.atomic_save_npy(tmp_path / "eaps.npy", np.arange(10.0))
        read = lambda: np.load(target)  # noqa: E731
    else:
        target = _dataset(seed=1).save(tmp_path / "eaps" / INTERNEURON / "zrot")
        read = lambda: EAPDataset.load(target).eaps  # noqa: E731
    old = np.array(read())
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), kind], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    stale = _temporaries(target.parent)
    assert stale and all(f"-{writer.pid}." in p.name for p in stale)  # SIGKILL skipped the clean-up
    np.testing.assert_array_equal(read(), old)  # the old artefact, whole
    if kind == "file":
        storage.atomic_save_npy(target, np.arange(5.0))
    else:
        _dataset(seed=2).save(target)
    assert not _temporaries(target.parent)  # the next write removed what the dead writer left
    assert not np.array_equal(read(), old)


# --- two runs of one partition at once -----------------------------------------------------------

_CONCURRENT_RUN = """
import json, sys, time
from pathlib import Path
from eap_assets.core import cells, stages
data, go = Path(sys.argv[1]), Path(sys.argv[2])
model = cells.discover_cell_models()[sys.argv[3]]
cells.ensure_mechanisms(model)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
start = time.perf_counter()
templates, computed = stages.ensure_templates(model, stages.QUICK_STIMULUS, data)
print(json.dumps({"computed": computed, "key": templates.provenance["settings_hash"],
                  "seconds": time.perf_counter() - start}), flush=True)
"""


def test_two_runs_of_one_partition_at_once_compute_it_once(tmp_path):
    data, go = tmp_path / "data", tmp_path / "go"
    runs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_RUN, str(data), str(go), SMALL], cwd=REPO,
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        assert [run.stdout.readline().strip() for run in runs] == ["ready", "ready"]
        go.touch()  # both start at the same moment
        outcomes = [json.loads(next(line for line in run.stdout if line.startswith("{"))) for run in runs]
    finally:
        for run in runs:
            run.wait(timeout=300)
    assert sorted(o["computed"] for o in outcomes) == [False, True]  # one simulated, the other waited and reused
    waited = next(o for o in outcomes if not o["computed"])
    assert waited["seconds"] > 0.5 * next(o for o in outcomes if o["computed"])["seconds"]
    assert len({o["key"] for o in outcomes}) == 1
    path = stages.templates_path(data, SMALL)
    assert sorted(p.name for p in path.parent.iterdir()) == [f".{path.name}.lock", path.name]
    assert intracellular.SpikeTemplates.load(path).provenance["settings_hash"] == outcomes[0]["key"]


# --- determinism, servers, secrets ---------------------------------------------------------------

def build_feature_parquet(data: Path) -> Path:
    """Templates -> EAPs (seed 7) -> feature table of SMALL x 3drot, written as the IO manager writes it."""
    model = cells.discover_cell_models()[SMALL]
    templates, _ = stages.ensure_templates(model, SHORT, data)
    dataset, _ = stages.ensure_eaps(templates, model, EAPConfig(n_eaps=20, rotation="3drot", seed=7), data)
    table = features.feature_table(dataset, model.mtype, model.excitatory)
    table.attrs["key"] = stages.features_key(dataset.provenance["settings_hash"])
    path = data / "feature_table" / SMALL / "3drot.parquet"
    ParquetIOManager(base_path=UPath(data)).dump_to_path(dg.build_output_context(), table, UPath(path))
    return path


def test_same_seed_gives_bit_identical_feature_tables(tmp_path):
    """Built twice, in this process and in a fresh one with two BLAS threads (make run's workers have one)."""
    script = ("import sys; from pathlib import Path; from eap_assets_tests.test_reliability import "
              "build_feature_parquet; print(build_feature_parquet(Path(sys.argv[1])))")
    other = subprocess.run([sys.executable, "-c", script, str(tmp_path / "b")], cwd=REPO, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    assert other.returncode == 0, other.stderr[-2000:]
    ours, theirs = build_feature_parquet(tmp_path / "a"), Path(other.stdout.strip().splitlines()[-1])
    assert ours.read_bytes() == theirs.read_bytes()  # the Parquet files, byte for byte
    a, b = pd.read_parquet(ours), pd.read_parquet(theirs)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert dict(a.dtypes.astype(str)) == features.feature_table_schema(100)
    eaps = [d / "eaps" / SMALL / "3drot" / "eaps.npy" for d in (tmp_path / "a", tmp_path / "b")]
    assert eaps[0].read_bytes() == eaps[1].read_bytes()


def test_servers_bind_to_loopback_unless_told_otherwise():
    parser = cli.build_parser()
    assert parser.parse_args(["ui"]).host == "127.0.0.1"
    assert parser.parse_args(["mlflow-ui"]).host == "127.0.0.1"
    assert inspect.signature(local.run_ui).parameters["host"].default == "127.0.0.1"
    assert parser.parse_args(["mlflow-ui", "--host", "0.0.0.0"]).host == "0.0.0.0"  # only when configured


def test_run_flags_reach_the_recording_settings_and_make_its_artefacts_stale():
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings, resource_fields
    from eap_assets.defs.sources import settings_versions_of

    parser = cli.build_parser()
    default = cli._recording(parser.parse_args(["run"]))
    assert resource_fields(default) == resource_fields(RecordingSettings())
    recording = cli._recording(parser.parse_args(["run", "--recording-eaps-factor", "24", "--recording-copies", "3"]))
    assert (recording.eaps_factor, recording.copies) == (24.0, 3)
    settings = SimulationSettings()
    assert recording.eap_config(settings, "3drot").n_eaps == 24 * settings.eap_config("3drot").n_eaps
    # the recording family's settings source gets another data version: Dagster marks its artefacts stale
    versions = {settings_versions_of("recording_settings", {"settings": settings, "recording": r})
                for r in (default, recording)}
    assert len(versions) == 2


#: Formats of real credentials (private keys, cloud and service tokens).
SECRET_PATTERNS = {
    "private key": r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----",
    "AWS access key id": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "OpenAI-style key": r"\bsk-[A-Za-z0-9]{32,}\b",
    "Google API key": r"\bAIza[0-9A-Za-z_\-]{35}\b",
    "credentials in a URL": r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s:@'\"${}<>]{6,}@",
}


def test_no_secrets_in_the_repository():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    files = [REPO / f for f in listed if f and (REPO / f).is_file()]
    assert len(files) > 50
    assert not [f for f in files if f.name in (".env", "id_rsa", "id_ed25519") or f.suffix in (".pem", ".key", ".p12")]
    found = []
    for path in files:
        text = path.read_text(errors="ignore") if path.stat().st_size < 5_000_000 else ""
        found += [f"{path.relative_to(REPO)}: {kind}" for kind, pattern in SECRET_PATTERNS.items()
                  if re.search(pattern, text)]
    assert not found, found


def test_atomic_writes_give_ordinary_permissions(tmp_path):
    """Temporaries are created 0600 / 0700 by ``tempfile``; the renamed artefact must have the
    mode a plain write would give (0666 / 0777 minus the umask), so other users can read it."""
    old = os.umask(0o022)
    try:
        text = storage.atomic_write_text(tmp_path / "a" / "report.md", "x")
        with storage.atomic_dir(tmp_path / "folder") as folder:
            (folder / "eaps.npy").write_bytes(b"0")
    finally:
        os.umask(old)
    assert text.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
