"""Generalisation tools: recording noise, morphology variants (real NEURON) and group splits."""

from __future__ import annotations

import json
import re

import numpy as np
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
