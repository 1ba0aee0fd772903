"""EAP datasets: the acceptance rule, the bound on tries, determinism and storage."""

from __future__ import annotations

import numpy as np
import pytest

from eap_assets.core.eaps import AcceptanceError, EAPConfig, EAPDataset, peak_to_peak, simulate_eap_dataset
from eap_assets.core.features import feature_images


@pytest.fixture(scope="module")
def dataset(bp_templates):
    return simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=3), mtype="BP")


def test_every_accepted_eap_passes_the_rule_and_counts_add_up(dataset):
    assert dataset.eaps.shape == (40, 100, 224) and dataset.eaps.dtype == np.float32
    assert np.all(peak_to_peak(dataset.eaps) >= 30.0)
    assert dataset.tries >= 40 and dataset.tries == dataset.candidate_index[-1] + 1
    assert 0 < dataset.acceptance_rate <= 1
    assert np.all((dataset.positions[:, 0] >= 10) & (dataset.positions[:, 0] <= 60))
    assert np.all(np.abs(dataset.positions[:, 1:]) <= 75)
    assert set(np.unique(dataset.spike_index)) <= set(range(3))


def test_rejected_candidates_really_fail_the_rule(bp_templates, dataset):
    # recompute the candidates between accepted ones: they must be below 30 µV
    from eap_assets.core.eaps import EAPEngine

    ds2 = simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=3, min_amplitude=0.0),
                               mtype="BP")
    assert ds2.tries == 40  # with no rule everything is accepted, in candidate order
    rejected = np.setdiff1d(np.arange(dataset.tries), dataset.candidate_index)
    eaps = EAPEngine(bp_templates).compute(ds2.rotations[rejected[rejected < 40]], ds2.positions[rejected[rejected < 40]],
                                           ds2.spike_index[rejected[rejected < 40]])
    assert np.all(peak_to_peak(eaps) < 30.0)


def test_same_seed_same_arrays_other_seed_other_arrays(bp_templates, dataset):
    again = simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=3), mtype="BP")
    for name in ("eaps", "positions", "rotations", "spike_index"):
        np.testing.assert_array_equal(getattr(again, name), getattr(dataset, name))
    np.testing.assert_array_equal(feature_images(again.eaps, again.dt), feature_images(dataset.eaps, dataset.dt))
    other = simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=4), mtype="BP")
    assert not np.array_equal(other.positions, dataset.positions)


def test_computing_the_last_chunk_in_steps_changes_nothing(bp_templates, dataset, monkeypatch):
    from eap_assets.core import eaps

    monkeypatch.setattr(eaps, "FINAL_STEP", eaps.DRAW_CHUNK)  # whole chunks: the old behaviour
    whole = simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=3), mtype="BP")
    for name in ("positions", "rotations", "spike_index", "candidate_index", "tries"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(dataset, name))
    # the same values up to float32 rounding (matrix products of other shapes round differently)
    assert np.abs(whole.eaps - dataset.eaps).max() <= 1e-6 * np.abs(dataset.eaps).max()


def test_float64_dataset_accepts_the_same_candidates(bp_templates, dataset):
    f64 = simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=40, rotation="3drot", seed=3), mtype="BP",
                               dtype=np.float64)
    np.testing.assert_array_equal(f64.candidate_index, dataset.candidate_index)
    assert np.abs(f64.eaps - dataset.eaps).max() <= 5e-5 * np.abs(f64.eaps).max()
    assert f64.provenance["dtype"] == "float64" and dataset.provenance["dtype"] == "float32"


def test_bound_on_tries_gives_a_clear_error(bp_templates):
    with pytest.raises(AcceptanceError, match=r"'L5_BP_bAC217_1', rotation 'norot': only \d+ of 50 .* 5000 µV .* 60 tries"):
        simulate_eap_dataset(bp_templates, EAPConfig(n_eaps=50, min_amplitude=5000.0, max_tries=60))


def test_config_is_validated():
    with pytest.raises(ValueError, match="rotation 'diagonal' unknown"):
        EAPConfig(rotation="diagonal")
    with pytest.raises(ValueError, match="x_range"):
        EAPConfig(x_range=(60.0, 10.0))
    with pytest.raises(ValueError, match="n_eaps"):
        EAPConfig(n_eaps=0)


def test_dataset_round_trip(dataset, tmp_path):
    folder = dataset.save(tmp_path / "eaps")
    assert sorted(p.name for p in folder.iterdir()) == ["eaps.npy", "index.parquet", "meta.json"]
    back = EAPDataset.load(folder)
    assert isinstance(back.eaps, np.memmap)
    np.testing.assert_array_equal(back.eaps, dataset.eaps)
    np.testing.assert_allclose(back.rotations, dataset.rotations, atol=1e-12)
    np.testing.assert_array_equal(back.positions, dataset.positions)
    assert back.tries == dataset.tries and back.acceptance_rate == dataset.acceptance_rate
