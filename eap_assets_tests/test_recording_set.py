"""The recording training set on real NEURON EAPs (core/recording_set.py): detection rule, split over EAPs,
determinism, the basis fitted on training rows only, and serving = training (the features a model was
trained on are exactly what the served classifier computes from the same waveforms)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from eap_assets.core import models
from eap_assets.core.classifier import UnitClassifier, merge_proba
from eap_assets.core.eaps import EAPConfig, simulate_eap_dataset
from eap_assets.core.pool import EAPPool
from eap_assets.core.recording import Augmentation, RecordingSpec, to_model_input
from eap_assets.core.recording_set import (INDEX_COLUMNS, RecordingSetConfig, _windows, build_recording_set,
                                           table_input, table_proba)
from eap_assets.core.waveform import WaveformConfig, fit_waveform_classifier

BOX = {"x_range": (10.0, 100.0), "y_range": (-97.5, 97.5), "z_range": (-97.5, 97.5), "medium": "mea_plane"}
CONFIG = RecordingSetConfig(augmentation=Augmentation(copies=2, seed=5),
                            waveform=WaveformConfig(n_components=12, max_fit_rows=150), seed=1)


@pytest.fixture(scope="module")
def pool(bp_templates, ttpc1_templates) -> EAPPool:
    datasets = [simulate_eap_dataset(t, EAPConfig(n_eaps=80, rotation="3drot", seed=2, **BOX), mtype=m)
                for t, m in ((bp_templates, "BP"), (ttpc1_templates, "TTPC1"))]
    labels = {bp_templates.cell_name: (bp_templates.cell_name, "BP", False),
              ttpc1_templates.cell_name: (ttpc1_templates.cell_name, "TTPC1", True)}
    return EAPPool(datasets, labels)


@pytest.fixture(scope="module")
def built(pool):
    return build_recording_set(pool, CONFIG)


def test_rows_copies_split_and_detection_rule(pool, built):
    table, basis, summary = built
    assert list(table.columns[:len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert table.shape[1] == len(INDEX_COLUMNS) + 200 + 12
    assert set(table["copy"]) == {0, 1} and len(table) == 2 * sum(summary["detected"].values())
    # every copy of an EAP is on the same side of the split; every cell is in every split
    assert (table.groupby(["cell", "eap_id"])["split"].nunique() == 1).all()
    assert (table.groupby("cell")["split"].nunique() == 3).all()
    # the detection rule: the clean band-passed EAP reaches 30 µV; what was left out did not
    for cell, dataset in pool.datasets.items():
        ids = np.arange(dataset.accepted)
        _, info, _ = _windows(pool, cell, ids, None, CONFIG, None)
        detected = set(table.loc[table["cell"] == cell, "eap_id"])
        assert detected == set(ids[info["peak_to_peak_uv"] >= CONFIG.min_amplitude_uv])
        assert 0 < len(detected) <= dataset.accepted
    assert summary["detected"]["L5_BP_bAC217_1"] < summary["eaps"]["L5_BP_bAC217_1"]  # band-passing costs amplitude
    assert table["noise_uv"].between(5 / np.sqrt(1000), 30 / np.sqrt(10)).all()
    assert ((table["residual"] >= 0) & (table["residual"] <= 1)).all()


def test_same_seed_same_table_and_the_augmentation_seed_matters(pool, built):
    table = built[0]
    again = build_recording_set(pool, CONFIG)[0]
    assert table.equals(again)
    other = build_recording_set(pool, replace(CONFIG, augmentation=replace(CONFIG.augmentation, seed=6)))[0]
    assert not np.allclose(other["noise_uv"], table["noise_uv"])


def test_the_eaps_are_mapped_in_chunks_and_the_table_does_not_depend_on_them(pool, built, monkeypatch):
    """A paper-scale cell (12 000 EAPs of 100 contacts x 224 samples) mapped in one piece took ~4.8 GiB: the
    mapping runs on at most ``chunk_eaps`` EAPs at a time, and the table is the same to the bit."""
    from eap_assets.core import recording_set

    table, basis, _ = built
    sizes = []

    def spy(pool_, cell, ids, *args):
        sizes.append(len(ids))
        return _windows(pool_, cell, ids, *args)

    monkeypatch.setattr(recording_set, "_windows", spy)
    chunked, chunked_basis, _ = build_recording_set(pool, CONFIG, chunk_eaps=7)
    # detection on every EAP and the features of every row in chunks; only the basis's few fit rows in one piece
    assert sizes.count(7) > len(table) // 7 and sum(n for n in sizes if n > 7) <= CONFIG.waveform.max_fit_rows
    assert chunked.equals(table)
    np.testing.assert_array_equal(chunked_basis.components, basis.components)
    with pytest.raises(ValueError, match="chunk_eaps must be >= 1"):
        build_recording_set(pool, CONFIG, chunk_eaps=0)


def test_the_basis_is_fitted_on_training_rows_only(pool, built):
    table, basis, _ = built
    held_out = table[table["split"] != "train"]
    changed = {}
    for cell, dataset in pool.datasets.items():
        eaps = np.array(dataset.eaps)
        ids = held_out.loc[held_out["cell"] == cell, "eap_id"].unique()
        eaps[ids] = eaps[ids][::-1]  # other waveforms for the validation / test EAPs (same amplitudes)
        changed[cell] = replace(dataset, eaps=eaps)
    labels = {c: tuple(pool.index.loc[pool.index["cell"] == c, ["parent", "mtype", "excitatory"]].iloc[0])
              for c in pool.datasets}
    other = build_recording_set(EAPPool(list(changed.values()), labels), CONFIG)[1]
    assert np.array_equal(other.components, basis.components) and np.array_equal(other.mean, basis.mean)


@pytest.mark.parametrize("kind", ["lgbm", "waveform"])
def test_serving_computes_exactly_the_features_the_model_was_trained_on(pool, built, kind):
    """A model trained on the table, served as a UnitClassifier on the rows' mapped waveforms, gives the
    probabilities it gives on the table's rows: no second implementation of the features."""
    table, basis, _ = built
    spec = CONFIG.spec
    y, classes = models.task_labels(table, "binary")
    train, val = (table["split"] == "train").to_numpy(), (table["split"] == "validation").to_numpy()
    x = table_input(kind, table, spec)
    config = models.LGBMConfig(n_estimators=40, early_stopping_rounds=None)
    if kind == "lgbm":
        fitted = models.train_lgbm(x[train], y[train], x[val], y[val], 2, config, 0, classes).model
    else:
        basis.config = replace(basis.config, lgbm=config)
        fitted = fit_waveform_classifier(basis, x[train], y[train], x[val], y[val], 2, 0, classes).model
    rows = table[(table["copy"] == 1) & (table["cell"] == "L5_TTPC1_cADpyr232_1")].head(20)
    windows, info, _ = _windows(pool, "L5_TTPC1_cADpyr232_1", rows["eap_id"].to_numpy(), 1, CONFIG,
                                _bank(spec))
    served = UnitClassifier(kind=kind, task="binary", model=fitted, classes=classes, spec=spec)
    assert np.allclose(served.predict_proba(windows), table_proba(kind, fitted, rows, spec, classes), atol=1e-6)
    assert np.allclose(info["peak_to_peak_uv"], rows["peak_to_peak_uv"], rtol=1e-6)


def test_an_m_type_model_answers_e_i_with_its_summed_probabilities(pool, built):
    """A UnitClassifier over an m-type model with E/I groups: p_E is the sum of the excitatory m-types'
    probabilities, and the model classes and groups must come together and cover every model class."""
    table, _, _ = built
    spec = CONFIG.spec
    y, mtypes = models.task_labels(table, "mtype")
    train, val = (table["split"] == "train").to_numpy(), (table["split"] == "validation").to_numpy()
    x = table_input("lgbm", table, spec)
    config = models.LGBMConfig(n_estimators=20, early_stopping_rounds=None)
    fitted = models.train_lgbm(x[train], y[train], x[val], y[val], len(mtypes), config, 0, mtypes).model
    groups = dict(table[["mtype", "ei"]].drop_duplicates().itertuples(index=False))
    assert set(groups.values()) == {"E", "I"}
    rows = table[table["copy"] == 1].head(12)
    fine = UnitClassifier(kind="lgbm", task="mtype", model=fitted, classes=mtypes, spec=spec)
    coarse = UnitClassifier(kind="lgbm", task="binary", model=fitted, classes=["E", "I"], spec=spec,
                            model_classes=mtypes, groups=groups)
    windows = np.concatenate([_windows(pool, cell, part["eap_id"].to_numpy(), 1, CONFIG, _bank(spec))[0]
                              for cell, part in rows.groupby("cell", sort=False)])
    p_fine, p_coarse = fine.predict_proba(windows), coarse.predict_proba(windows)
    excitatory = [i for i, m in enumerate(mtypes) if groups[m] == "E"]
    assert np.allclose(p_coarse[:, 0], p_fine[:, excitatory].sum(axis=1), atol=1e-6)
    assert np.allclose(p_coarse.sum(axis=1), 1.0, atol=1e-6)
    assert list(coarse.predict(windows)["predicted"]) == list(np.where(p_coarse[:, 0] >= p_coarse[:, 1], "E", "I"))
    four = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])  # several m-types per group are summed
    merged = merge_proba(four, ["TTPC1", "LBC", "UTPC", "NBC"], {"TTPC1": "E", "UTPC": "E", "LBC": "I", "NBC": "I"},
                         ["E", "I"])
    assert np.allclose(merged, [[0.4, 0.6], [0.8, 0.2]])
    with pytest.raises(ValueError, match="go together"):
        UnitClassifier(kind="lgbm", task="binary", model=fitted, classes=["E", "I"], spec=spec, groups=groups)
    with pytest.raises(ValueError, match="no class among"):
        merge_proba(p_fine, mtypes, {m: "E" for m in mtypes[1:]}, ["E", "I"])
    with pytest.raises(ValueError, match="do not match"):
        merge_proba(p_fine[:, 1:], mtypes, groups, ["E", "I"])


def _bank(spec: RecordingSpec):
    from eap_assets.core.probe import model_plane_positions
    from eap_assets.core.recording import NoiseBank

    return NoiseBank(spec, model_plane_positions(spec.probe), CONFIG.augmentation.seed)


def test_a_noise_free_copy_equals_the_serving_mapping(pool):
    cell = "L5_BP_bAC217_1"
    eaps = np.asarray(pool.datasets[cell].eaps[:10])
    clean = RecordingSetConfig(augmentation=Augmentation(copies=1, noise_rms_uv=(0.0, 0.0), jitter_samples=0,
                                                         filter_orders=(3,)), waveform=CONFIG.waveform)
    windows, _, _ = _windows(pool, cell, np.arange(10), 0, clean, None)
    served, _ = to_model_input(eaps, 32000.0, clean.spec, filtered=False)
    assert np.array_equal(windows, served)


def test_recording_generalisation_holds_out_whole_morphologies_and_cell_types(pool, bp_templates):
    """The recording protocols on 3 cells (BP, a second BP morphology -- another draw of BP's EAPs named as
    its variant -- and TTPC1): the variant split keeps every cell on one side, the basis of each protocol sees
    its own training rows only, EAPs are capped per cell, and a hold-out fold whose training rows are of one
    class is reported as skipped."""
    from eap_assets.core import generalisation as gen

    variant = replace(simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=60, rotation="3drot", seed=3, **BOX),
                                           mtype="BP"), cell_name="L5_BP_bAC217_1_sx1")
    labels = {c: tuple(pool.index.loc[pool.index["cell"] == c, ["parent", "mtype", "excitatory"]].iloc[0])
              for c in pool.datasets}
    labels[variant.cell_name] = ("L5_BP_bAC217_1", "BP", False)
    three = EAPPool([*pool.datasets.values(), variant], labels)
    config = gen.RecordingGeneralisationConfig(kinds=("lgbm",), max_eaps_per_cell=40, seed=4)
    lgbm = models.LGBMConfig(n_estimators=30)
    splits_ = gen.recording_protocol_splits(three.index, "binary", config)
    assert list(splits_) == ["own_split", "unseen_variants", "hold_out_type/BP", "hold_out_type/TTPC1"]
    only = replace(config, protocols=("unseen_variants",))
    assert list(gen.recording_protocol_splits(three.index, "binary", only)) == ["unseen_variants"]
    # the protocol's split reaches the table: every row of the held-out type is a test row, no other is
    table = build_recording_set(three, CONFIG, split=splits_["hold_out_type/BP"], max_eaps_per_cell=40)[0]
    assert ((table["split"] == "test") == (table["mtype"] == "BP")).all()
    assert table.groupby("cell")["eap_id"].max().max() < 40
    with pytest.raises(ValueError, match="split must label each of the"):
        build_recording_set(three, CONFIG, split=lambda eaps: np.full(len(eaps), "nowhere"))
    result = gen.run_recording_generalisation(three, "mtype", CONFIG, config, models.CNNConfig(), lgbm,
                                              log=lambda m: None)
    unseen = result["details"]["unseen_variants"]["lgbm"]
    bp_cells = {"L5_BP_bAC217_1", "L5_BP_bAC217_1_sx1"}
    assert len(unseen["test_cells"]) == 1 and set(unseen["test_cells"]) < bp_cells
    assert not set(unseen["train_cells"]) & set(unseen["test_cells"])
    assert "L5_TTPC1_cADpyr232_1" in unseen["train_cells"]
    rows = {r["protocol"]: r for r in result["rows"]}
    assert set(rows) == {"own_split", "unseen_variants"} and 0 <= rows["unseen_variants"]["accuracy"] <= 100
    assert result["sets"]["own_split"]["rows"]["test"] > 0
    binary = gen.run_recording_generalisation(three, "binary", CONFIG, config, models.CNNConfig(), lgbm,
                                              log=lambda m: None)
    # holding BP out leaves only TTPC1 (E) to train on, and the other way round: nothing to learn E/I from
    assert binary["details"]["hold_out_type/BP"] == {"skipped": "training rows of a single class, or no test rows"}
    assert {r["protocol"] for r in binary["rows"]} == {"own_split", "unseen_variants"}
    # the same draw as a third cell type (an interneuron "NGC"): holding BP out trains on NGC (I) and TTPC1 (E)
    labels[variant.cell_name] = (variant.cell_name, "NGC", False)
    types = EAPPool([*pool.datasets.values(), variant], labels)
    held = gen.run_recording_generalisation(types, "binary", CONFIG, replace(config, held_out=("BP",)),
                                            models.CNNConfig(), lgbm, log=lambda m: None)
    fold = held["details"]["hold_out_type/BP"]["lgbm"]
    assert fold["test_cells"] == ["L5_BP_bAC217_1"] and fold["train_cells"] == sorted(set(labels) - {"L5_BP_bAC217_1"})
    assert [r["held_type"] for r in held["rows"] if r["protocol"] == "hold_out_type"] == ["BP"]
    assert list(fold["per_class"]) == ["I"]
    with pytest.raises(ValueError, match="cell type"):
        gen.recording_protocol_splits(three.index, "binary", replace(config, held_out=("NGC",)))
