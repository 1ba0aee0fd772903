"""Generalisation tools: recording noise, morphology variants (real NEURON) and group splits."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from eap_assets.core import cells, features, noise, splits, variants
from eap_assets.core.eaps import EAPDataset
from eap_assets.core.intracellular import StimulusConfig, simulate_spike_templates

DT = 2**-5  # ms: 32 kHz
BP = "L5_BP_bAC217_1"


# --- noise -------------------------------------------------------------------------------------

def _rms(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(a, dtype=np.float64), axis=-1))


@pytest.mark.parametrize("kind", noise.NOISE_KINDS)
def test_noise_has_the_requested_rms_and_is_reproducible_from_its_seed(kind):
    config = noise.NoiseConfig(rms_uv=7.5, kind=kind, seed=11)
    eaps = np.random.default_rng(0).normal(0, 50, (40, 100, 224)).astype(np.float32)
    noisy = noise.noisy_eaps(eaps, DT, config, keys=("cell", "norot"))
    assert noisy.dtype == np.float32 and noisy.shape == eaps.shape
    added = noisy.astype(np.float64) - eaps
    np.testing.assert_allclose(_rms(added), 7.5, rtol=1e-4)  # exactly, per EAP and contact ("trace")
    np.testing.assert_array_equal(noisy, noise.noisy_eaps(eaps, DT, config, keys=("cell", "norot")))
    other_seed = noise.NoiseConfig(rms_uv=7.5, kind=kind, seed=12)
    assert np.abs(noise.noisy_eaps(eaps, DT, other_seed, keys=("cell", "norot")) - noisy).max() > 1.0
    assert np.abs(noise.noisy_eaps(eaps, DT, config, keys=("cell", "zrot")) - noisy).max() > 1.0  # other dataset
    copy1 = noise.noisy_eaps(eaps, DT, config, keys=("cell", "norot"), copy=1)
    assert abs(np.corrcoef((copy1 - eaps).ravel(), added.ravel())[0, 1]) < 0.02  # independent copies


@pytest.mark.parametrize("kind", noise.NOISE_KINDS)
def test_expected_rms_is_met_on_average(kind):
    config = noise.NoiseConfig(rms_uv=10.0, kind=kind, normalize="expected", seed=3)
    rms = _rms(noise.recording_noise(100, 100, 224, DT, config))
    assert abs(rms.mean() - 10.0) < 0.3 and rms.std() > 0.1  # a stationary process: traces scatter


def test_noise_of_an_eap_depends_only_on_seed_keys_copy_and_row(monkeypatch):
    config = noise.NoiseConfig(rms_uv=5.0, kind="band", seed=1)
    whole = noise.recording_noise(30, 100, 224, DT, config, keys=("a",))
    monkeypatch.setattr(noise, "_CHUNK_ELEMENTS", 1)  # one row per chunk
    part = noise.recording_noise(10, 100, 224, DT, config, keys=("a",), row_offset=20)
    np.testing.assert_array_equal(part, whole[20:])


def test_band_noise_power_lies_in_the_band():
    def in_band_share(kind: str) -> float:
        traces = noise.recording_noise(100, 100, 224, DT, noise.NoiseConfig(rms_uv=5.0, kind=kind, seed=2))
        power = np.mean(np.abs(np.fft.rfft(traces * np.hanning(224), axis=-1)) ** 2, axis=(0, 1))
        freqs = np.fft.rfftfreq(224, d=DT / 1000.0)
        return power[(freqs >= 300) & (freqs <= 6000)].sum() / power.sum()

    assert in_band_share("band") > 0.9
    assert in_band_share("white") < 0.45  # 5.7 of 16 kHz


def test_noise_config_is_validated_and_keyed():
    assert noise.NoiseConfig().key() == noise.NoiseConfig(seed=5, kind="band").key()  # disabled: one key
    assert noise.NoiseConfig(rms_uv=5).key() != noise.NoiseConfig(rms_uv=5, seed=1).key()
    for bad, match in (({"rms_uv": -1}, "rms_uv"), ({"kind": "pink"}, "kind 'pink'"),
                       ({"band_hz": (6000, 300)}, "band_hz"), ({"seed": -1}, "seed"),
                       ({"normalize": "peak"}, "normalize")):
        with pytest.raises(ValueError, match=match):
            noise.NoiseConfig(**bad)
    with pytest.raises(ValueError, match="Nyquist"):
        noise.noisy_eaps(np.zeros((1, 4, 64), np.float32), 0.1, noise.NoiseConfig(rms_uv=1, kind="band"))
    with pytest.raises(ValueError, match="shape"):
        noise.noisy_eaps(np.zeros((4, 64)), DT, noise.NoiseConfig(rms_uv=1))
    clean = np.ones((2, 3, 8), np.float64)
    assert np.array_equal(noise.noisy_eaps(clean, DT, noise.NoiseConfig()), clean)


def test_feature_table_from_noisy_copies():
    rng = np.random.default_rng(0)
    n, t = 20, 224
    eaps = np.zeros((n, 100, t), np.float32)
    eaps[:, :, 64] = -rng.uniform(40, 80, (n, 100))  # a trough and a later peak on every contact
    eaps[:, :, 80] = 20.0
    dataset = EAPDataset(cell_name="L5_BP_bAC217_1", rotation="norot", probe="SqMEA-10-15", eaps=eaps,
                         positions=rng.uniform(10, 60, (n, 3)), rotations=np.broadcast_to(np.eye(3), (n, 3, 3)).copy(),
                         spike_index=np.zeros(n, int), candidate_index=np.arange(n), tries=n, dt=DT)
    config = noise.NoiseConfig(rms_uv=2.0, seed=4)
    table = noise.augmented_feature_table(dataset, "BP", False, config, n_copies=3)
    assert len(table) == 3 * n and list(table.columns[:2]) == ["eap_id", "noise_copy"]
    assert not features.schema_problems(table, 100)
    amp = table[features.feature_columns(100)[0]].to_numpy()
    clean = features.feature_table(dataset, "BP", False)[features.feature_columns(100)[0]].to_numpy()
    assert 0 < np.abs(amp[:n] - clean).mean() < 10 and not np.array_equal(amp[:n], amp[n:2 * n])
    assert next(noise.noisy_copies(dataset, config, 1)).provenance["noise"]["key"] == config.key()


# --- morphology variants -----------------------------------------------------------------------

ASC = """("CellBody"
  (Color Red)
  (CellBody)
  (1 0 0 0)  ; contour
  (0 1 0 0)
  (-1 0 0 0)
  (0 -1 0 0)
);
( (Color Blue)
  (Dendrite)
  (0 2 0 1.5)
  (0 12 0 1.5)
  (
    (0 12 0 1)
    (10 22 5 1)
  |
    (0 12 0 0.8)
    (-10 22 -5 0.8)
    (
      (-10 22 -5 0.5)
      (-10 40 -5 0.5)
    |
      (-10 22 -5 0.5)
      (-20 22 -5 0.5)
    )
  )
)
"""


def test_asc_scaling_changes_coordinates_by_the_factors_and_keeps_diameters():
    spec = variants.VariantSpec(1.2, 0.8, 1.1)
    text, centre = variants.transform_asc(ASC, spec)
    before, after = variants.parse_asc(ASC), variants.parse_asc(text)
    np.testing.assert_allclose(centre, 0.0, atol=1e-12)
    np.testing.assert_allclose(after.xyz, before.xyz * [1.2, 0.8, 1.1], atol=1e-6)
    def diameters(asc: str) -> list[str]:
        return [t.split()[3] for t in re.findall(r"\(([^()]*)\)", asc) if len(t.split()) == 4]

    assert diameters(text) == diameters(ASC) and len(diameters(ASC)) == 14  # as written
    assert "; contour" in text and text.count("|") == ASC.count("|")


def test_asc_jitter_keeps_the_tree_connected_and_is_seeded():
    spec = variants.VariantSpec(jitter_deg=10.0, seed=1)
    morph = variants.parse_asc(ASC)
    jittered = [variants.jitter_points(morph, 10.0, np.random.default_rng(s)) for s in (1, 1, 2)]
    np.testing.assert_array_equal(jittered[0], jittered[1])
    assert np.abs(jittered[0] - jittered[2]).max() > 0.1
    moved = jittered[0]
    np.testing.assert_array_equal(moved[morph.soma], morph.xyz[morph.soma])  # soma contour untouched
    for branch in morph.branches:
        pts = branch.points
        if not pts:
            continue
        if branch.pivot >= 0:  # every child still starts at its parent's end
            np.testing.assert_allclose(moved[pts[0]], moved[branch.pivot], atol=1e-9)
        # rigid motion: distances within the branch are kept
        np.testing.assert_allclose(np.linalg.norm(np.diff(moved[pts], axis=0), axis=1),
                                   np.linalg.norm(np.diff(morph.xyz[pts], axis=0), axis=1), atol=1e-9)
    assert np.abs(moved - morph.xyz).max() > 0.1
    with pytest.raises(ValueError, match="no soma contour"):
        variants.parse_asc("( (Dendrite) (0 0 0 1) (0 1 0 1) )")
    with pytest.raises(ValueError, match="unclosed"):
        variants.parse_asc("(\"CellBody\" (0 0 0 1)")
    assert variants.transform_asc(ASC, spec, np.random.default_rng(0))[0] != ASC


def test_variant_spec_names_and_validation():
    spec = variants.VariantSpec(1.1, 0.9, 1.0, 0.0, 3)
    assert spec.variant_name(BP) == f"{BP}_sx1.100_sy0.900_sz1.000_j0.0_s3"
    assert variants.VariantSpec(1.23456).sx == 1.235
    with pytest.raises(ValueError, match="sx"):
        variants.VariantSpec(sx=0.0)
    with pytest.raises(ValueError, match="jitter_deg"):
        variants.VariantSpec(jitter_deg=90)
    drawn = variants.draw_variant_specs(BP, 4, (0.8, 1.2), seed=5)
    assert drawn == variants.draw_variant_specs(BP, 4, (0.8, 1.2), seed=5) != variants.draw_variant_specs(BP, 4, seed=6)
    assert all(0.8 <= f <= 1.2 for s in drawn for f in s.factors) and len({s.suffix() for s in drawn}) == 4


def test_variants_are_discovered_with_their_parents_labels(models, tmp_path):
    parent = models[BP]
    made = variants.make_variants(parent, [(1.1, 0.9, 1.0), (0.9, 1.1, 1.0)], out_dir=tmp_path)
    found = cells.discover_cell_models([cells.mearec_models_dir(), tmp_path])
    for variant in made:
        assert found[variant.name] == variant
        assert (variant.layer, variant.mtype, variant.etype, variant.excitatory) == \
               (parent.layer, parent.mtype, parent.etype, parent.excitatory)
        assert variant.parent == BP and found[BP].parent is None
        assert variant.template_name != parent.template_name
        assert json.loads((variant.path / cells.VARIANT_FILE).read_text())["parent_hash"] == cells.model_hash(parent)
    hashes = {cells.model_hash(m) for m in [parent, *made]}
    assert len(hashes) == 3
    stamp = made[0].morphology.stat().st_mtime_ns
    assert variants.make_variants(parent, [(1.1, 0.9, 1.0)], out_dir=tmp_path)[0].morphology.stat().st_mtime_ns == stamp
    sidecar = made[0].path / cells.VARIANT_FILE  # a variant of another parent version is rewritten
    sidecar.write_text(sidecar.read_text().replace(cells.model_hash(parent), "0" * 16))
    variants.make_variants(parent, [(1.1, 0.9, 1.0)], out_dir=tmp_path)
    assert json.loads(sidecar.read_text())["parent_hash"] == cells.model_hash(parent)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(m.name for m in made)  # no temporaries left
    with pytest.raises(ValueError, match="same variant twice"):
        variants.make_variants(parent, [(1.1, 0.9, 1.0), (1.1001, 0.9, 1.0)], out_dir=tmp_path)
    (tmp_path / f"{BP}_sx1.000_sy1.000_sz1.200_j0.0_s0").mkdir()
    with pytest.raises(ValueError, match="not a variant folder"):
        variants.make_variants(parent, [(1.0, 1.0, 1.2)], out_dir=tmp_path)


def _pt3d(model: cells.CellModel) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """3D points (x, y, z, diam) of every section by name, and the dendritic segments' end points
    relative to the soma segment's midpoint, of a loaded model."""
    from neuron import h

    cell = cells.load_lfpy_cell(model, tstop=1.0)
    points = {sec.name().split(".")[-1]: np.array([[h.x3d(i, sec=sec), h.y3d(i, sec=sec), h.z3d(i, sec=sec),
                                                     h.diam3d(i, sec=sec)] for i in range(int(h.n3d(sec=sec)))])
              for sec in cell.template.all}
    geometry = cells.segment_geometry(cell)
    soma = 0.5 * (geometry["seg_start"][0] + geometry["seg_end"][0])
    dendritic = np.concatenate([cell.get_idx("dend"), cell.get_idx("apic")])
    return points, np.concatenate([geometry["seg_start"][dendritic], geometry["seg_end"][dendritic]]) - soma


def test_scaled_variant_geometry_in_neuron(models, tmp_path):
    factors = np.array([1.15, 0.85, 1.1])
    [variant] = variants.make_variants(models[BP], [tuple(factors)], out_dir=tmp_path)
    original, orig_ends = _pt3d(models[BP])
    scaled, var_ends = _pt3d(variant)
    assert original.keys() == scaled.keys()
    dendrites = [name for name in original if "dend" in name or "apic" in name]
    assert len(dendrites) > 10
    for name in dendrites:
        a, b = original[name], scaled[name]
        # each section's shape, relative to its first point, is the original's scaled per axis
        np.testing.assert_allclose(b[:, :3] - b[0, :3], (a[:, :3] - a[0, :3]) * factors, atol=2e-3)
        np.testing.assert_array_equal(b[:, 3], a[:, 3])  # diameters unchanged
    # the spans of the dendritic segments relative to the soma scale by the factors
    spans = np.ptp(var_ends, axis=0) / np.ptp(orig_ends, axis=0)
    np.testing.assert_allclose(spans, factors, rtol=2e-3)


def test_variant_simulates_in_neuron(models, tmp_path):
    [variant] = variants.make_variants(models[BP], [(1.1, 0.9, 1.0)], jitter_deg=3.0, seed=2, out_dir=tmp_path)
    templates = simulate_spike_templates(variant, StimulusConfig(tstop=150.0, n_keep=1, max_spikes=10))
    assert templates.cell_name == variant.name and templates.n_spikes == 1
    assert np.all(np.isfinite(templates.imem)) and templates.vsoma.max() > 0  # a real action potential
    # the soma current step is the sum of all membrane currents (the cell is whole and connected)
    np.testing.assert_allclose(templates.imem.sum(axis=1), templates.amplitude,
                               atol=1e-6 * np.abs(templates.imem).max())


# --- group splits ------------------------------------------------------------------------------

def _variant_rows():
    rng = np.random.default_rng(0)
    names = [f"L5_{m}_x_1{suffix}" for m in ("BP", "MC", "NBC") for suffix in ("", "_a", "_b", "_c", "_d")]
    names.append("L5_SBC_x_1")  # a class with one variant only
    variants_ = np.repeat(names, rng.integers(30, 60, len(names)))
    classes = np.array([v.split("_")[1] for v in variants_])
    return variants_, classes


def test_variant_split_never_puts_a_variant_on_both_sides():
    variants_, classes = _variant_rows()
    split = splits.variant_split(variants_, classes, test_fraction=0.4, validation_fraction=0.1, seed=1)
    assert set(split) == set(splits.SPLITS)
    for name in np.unique(variants_):
        sides = {"test" if s == "test" else "train" for s in split[variants_ == name]}
        assert len(sides) == 1, name
    for label in ("BP", "MC", "NBC"):
        held = {v for v in np.unique(variants_[(classes == label) & (split == "test")])}
        trained = {v for v in np.unique(variants_[(classes == label) & (split != "test")])}
        assert len(held) == 2 and len(trained) == 3 and not held & trained
    assert set(split[classes == "SBC"]) <= {"train", "validation"}
    assert np.array_equal(split, splits.variant_split(variants_, classes, 0.4, 0.1, seed=1))
    assert any(not np.array_equal(split, splits.variant_split(variants_, classes, 0.4, 0.1, seed=s))
               for s in range(2, 6))
    with pytest.raises(ValueError, match="several classes"):
        splits.variant_split(np.array(["a", "a", "b"]), np.array(["BP", "MC", "MC"]))


def test_distance_split_keeps_the_bands_apart():
    rng = np.random.default_rng(0)
    x = rng.uniform(10, 60, 2000)
    cell = rng.choice(["a", "b"], 2000)
    split = splits.distance_split(x, strata=cell, validation_fraction=0.1, seed=3)
    assert np.all(x[split == "test"] > 40) and np.all(x[split != "test"] <= 40)
    assert np.all((x[split != "test"] >= 10))
    val = split == "validation"
    assert abs(val.sum() - 0.1 * (x <= 40).sum()) <= 2
    assert np.array_equal(split, splits.distance_split(x, strata=cell, seed=3))
    assert splits.distance_split(np.array([40.0, 40.001]), validation_fraction=0).tolist() == ["train", "test"]
    with pytest.raises(ValueError, match="outside train_range"):
        splits.distance_split(np.array([5.0, 20.0, 50.0]), validation_fraction=0)
    assert splits.distance_split(np.array([5.0, 20.0, 50.0]), validation_fraction=0, outside="exclude").tolist() == \
           [splits.EXCLUDED, "train", "test"]
    with pytest.raises(ValueError, match="overlap"):
        splits.distance_split(x, train_range=(10, 45), test_range=(40, 60))


def test_leave_one_type_out_folds():
    types = np.repeat(["BP", "MC", "TTPC1"], [50, 80, 40])
    folds = splits.leave_one_type_out(types, validation_fraction=0.2, seed=0)
    assert list(folds) == ["BP", "MC", "TTPC1"]
    for held, split in folds.items():
        assert np.all(split[types == held] == "test") and not np.any(split[types != held] == "test")
        for other in set(types) - {held}:
            share = (split[types == other] == "validation").mean()
            assert 0.15 < share < 0.25  # stratified by type
    assert np.array_equal(folds["MC"], splits.leave_one_type_out(types, 0.2, seed=0)["MC"])
    with pytest.raises(ValueError, match="not in the data"):
        splits.leave_one_type_out(types, held_out=["LBC"])
    with pytest.raises(ValueError, match="at least two"):
        splits.leave_one_type_out(np.array(["BP"] * 10))


# --- EAP pool and the generalisation protocols (real NEURON templates, real trainings, small) ---

def _pool_datasets(bp_templates, ttpc1_templates, n_eaps=40):
    """Two 'morphologies' per m-type: EAP datasets of the real BP / TTPC1 templates with two seeds each."""
    from dataclasses import replace

    from eap_assets.core.eaps import EAPConfig, simulate_eap_dataset

    datasets, labels = [], {}
    for templates, mtype, excitatory in ((bp_templates, "BP", False), (ttpc1_templates, "TTPC1", True)):
        for seed in (0, 1):
            config = EAPConfig(n_eaps=n_eaps, rotation="3drot", seed=seed)
            data = simulate_eap_dataset(templates, config)
            name = templates.cell_name + ("" if seed == 0 else "_variant1")
            datasets.append(replace(data, cell_name=name))
            labels[name] = (templates.cell_name, mtype, excitatory)
    return datasets, labels


@pytest.fixture(scope="module")
def eap_pool(bp_templates, ttpc1_templates):
    from eap_assets.core.pool import EAPPool

    return EAPPool(*_pool_datasets(bp_templates, ttpc1_templates))


def test_pool_rows_noise_and_errors(eap_pool):
    from eap_assets.core.pool import EAPPool

    index = eap_pool.index
    assert len(eap_pool) == 160 and list(index.columns[:6]) == ["cell", "parent", "mtype", "ei", "excitatory", "eap_id"]
    rows = eap_pool.rows_of(index["cell"].iloc[[5, 90]], index["eap_id"].iloc[[5, 90]])
    assert rows.tolist() == [5, 90]
    with pytest.raises(ValueError, match="no EAP 999 of cell"):
        eap_pool.rows_of(["L5_BP_bAC217_1"], [999])
    cfg = noise.NoiseConfig(rms_uv=1.0, seed=3)
    clean = eap_pool.gather(np.array([3, 100]))
    ten = eap_pool.gather(np.array([3, 100]), cfg, 10.0)
    # a row's noise depends on its cell, rotation, copy and EAP id only -- not on the other rows read with it
    alone = eap_pool.gather(np.array([100]), cfg, 10.0)
    np.testing.assert_array_equal(ten[1], alone[0])
    # the noise scales with the level: 10 µV RMS on every contact, the same draw as noisy_eaps at 10 µV
    rms = np.sqrt(np.mean((ten - clean) ** 2, axis=-1))
    np.testing.assert_allclose(rms, 10.0, rtol=1e-4)
    data = eap_pool.datasets[index["cell"].iloc[3]]
    direct = noise.noisy_eaps(np.asarray(data.eaps[3:4]), data.dt, noise.NoiseConfig(rms_uv=10.0, seed=3),
                              keys=(data.cell_name, data.rotation), row_offset=3)
    np.testing.assert_allclose(ten[0], direct[0], atol=1e-4)
    other_copy = eap_pool.gather(np.array([3]), cfg, 10.0, copy=1)
    assert not np.allclose(other_copy[0], ten[0])
    datasets = list(eap_pool.datasets.values())
    with pytest.raises(ValueError, match="cells given twice"):
        EAPPool([datasets[0], datasets[0]], {datasets[0].cell_name: ("p", "BP", False)})
    with pytest.raises(ValueError, match="no \\(parent, mtype, excitatory\\) labels"):
        EAPPool(datasets[:1], {})


def test_protocol_splits_keep_groups_apart(eap_pool):
    from eap_assets.core import generalisation as gen

    config = gen.GeneralisationConfig(variant_test_fraction=0.5, validation_fraction=0.2)
    by_protocol = gen.protocol_splits(eap_pool, "binary", config)
    index = eap_pool.index
    assert set(by_protocol) == {"unseen_variants", "unseen_distances", "hold_out_type/BP", "hold_out_type/TTPC1"}
    variants = by_protocol["unseen_variants"]
    for cell, labels in pd.Series(variants).groupby(index["cell"].to_numpy()):
        assert set(labels) in ({"test"}, {"train", "validation"}, {"train"}), cell
    assert set(index.loc[variants == "test", "mtype"]) == {"BP", "TTPC1"}  # one unseen morphology per m-type
    distance = by_protocol["unseen_distances"]
    variant_rows = (index["cell"] != index["parent"]).to_numpy()
    assert (distance[variant_rows] == "excluded").all()
    assert index.loc[np.isin(distance, ["train", "validation"]), "x"].max() <= 40
    assert index.loc[distance == "test", "x"].min() > 40
    held = by_protocol["hold_out_type/BP"]
    assert set(index.loc[held == "test", "mtype"]) == {"BP"} and "BP" not in set(index.loc[held != "test", "mtype"])


def test_generalisation_protocols_train_and_test_every_kind(eap_pool):
    from eap_assets.core import generalisation as gen
    from eap_assets.core import models
    from eap_assets.core.waveform import WaveformConfig

    lgbm = models.LGBMConfig(n_estimators=15, early_stopping_rounds=None)
    trainers = gen.Trainers(cnn=models.CNNConfig(steps=12, batch_size=32, eval_every=6),
                            lgbm=lgbm, waveform=WaveformConfig(n_components=4, max_fit_rows=30, lgbm=lgbm))
    config = gen.GeneralisationConfig(noise_levels_uv=(0.0, 10.0, 40.0), train_copies=1, variant_test_fraction=0.5,
                                      validation_fraction=0.2)
    result = gen.run_generalisation(eap_pool, "binary", config, trainers, log=lambda _: None)
    rows = result.rows
    for protocol, kinds in (("unseen_variants", models.KINDS), ("unseen_distances", models.KINDS)):
        for kind in kinds:
            part = rows[(rows.protocol == protocol) & (rows.kind == kind)]
            assert sorted(part["noise_uv"]) == [0.0, 10.0, 40.0], (protocol, kind)
            assert part["accuracy"].between(0, 100).all()
            detail = result.details[protocol][kind]
            assert not set(detail["train_cells"]) & set(detail["test_cells"]) or protocol == "unseen_distances"
    # with two cell types, each held-out type leaves a single class to train on: skipped, said so
    assert result.details["hold_out_type/BP"]["skipped"]
    assert result.summary().shape == (6, 3)
    again = gen.run_generalisation(eap_pool, "binary", config, trainers, log=lambda _: None)
    pd.testing.assert_frame_equal(rows.drop(columns="n_train"), again.rows.drop(columns="n_train"))
