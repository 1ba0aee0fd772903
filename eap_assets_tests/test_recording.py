"""The input mapping of the models for real recordings (core/recording.py), contact matching by geometry
(core/probe.py) and calibration / abstention / OOD (core/calibration.py): pure numpy, checked against
scipy's own filters and resampling, and against what the numbers must be."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from eap_assets.core import calibration as cal
from eap_assets.core import recording as rec
from eap_assets.core.probe import (ProbeGeometryError, edge_contacts, match_contacts, model_plane_positions,
                                   planar_positions)

SPEC = rec.RecordingSpec()


def _spikes(n: int = 6, channels: int = 100, samples: int = 224, trough: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth biphasic waveforms with their trough at ``trough`` on channel 7 (µV)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    shape = -np.exp(-0.5 * ((t - trough) / 3.0) ** 2) + 0.35 * np.exp(-0.5 * ((t - trough - 14) / 8.0) ** 2)
    gains = rng.uniform(5, 20, size=(n, channels))
    gains[:, 7] = 150.0
    return (gains[:, :, None] * shape[None, None, :]).astype(np.float32)


def test_bandpass_is_zero_phase_filtfilt_of_the_zero_padded_waveform():
    x = _spikes()
    ours = rec.bandpass(x, 32000.0, (300.0, 6000.0), 3)
    pad = 600
    padded = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pad, pad)])
    sos = signal.butter(3, (300.0, 6000.0), btype="bandpass", fs=32000.0, output="sos")
    reference = signal.sosfiltfilt(sos, padded, axis=-1, padtype=None)[..., pad:pad + x.shape[-1]]
    assert np.abs(ours - reference).max() < 1e-5 * np.abs(reference).max()
    # zero phase: the filtered trough stays at the same sample
    assert np.array_equal(rec.trough_samples(ours), rec.trough_samples(x))
    # the band-pass removes what a recording's filter removes: the slow part is gone, so the trough is shallower
    assert np.abs(ours[:, 7]).max() < np.abs(x[:, 7]).max()


def test_resample_30_to_32_khz_keeps_a_band_limited_signal():
    t30 = np.arange(300) / 30000.0
    t32 = np.arange(320) / 32000.0
    tone = lambda t: np.sin(2 * np.pi * 1500.0 * t) * np.hanning(len(t))[None, None, :]  # noqa: E731
    out = rec.resample(tone(t30).astype(np.float32), 30000.0, 32000.0)
    assert out.shape[-1] == 320
    inner = slice(40, 280)
    assert np.abs(out[..., inner] - tone(t32)[..., inner]).max() < 0.02
    assert rec.resample(out, 32000.0, 32000.0) is not None and rec.resample(out, 32000, 32000).shape == out.shape


def test_alignment_puts_the_trough_at_the_window_peak_and_reports_padding():
    x = _spikes(trough=80)
    windows, padded = rec.align(x, SPEC)
    assert windows.shape == (6, 100, SPEC.n_samples) and SPEC.n_before == 32 and SPEC.n_samples == 96
    assert np.all(rec.trough_samples(windows) == SPEC.n_before)
    assert not padded.any()
    early = _spikes(trough=10)  # only 10 samples before the trough: 22 of the 32 are outside the input
    windows, padded = rec.align(early, SPEC)
    assert np.all(padded == 22) and not windows[:, :, :22].any()
    shifted, _ = rec.align(x, SPEC, shift=np.array([2, -2, 0, 1, -1, 0]))
    assert list(rec.trough_samples(shifted)) == [30, 34, 32, 31, 33, 32]


def test_model_input_resamples_filters_and_aligns_every_unit_the_same_way():
    x = _spikes(trough=60)
    w32, info32 = rec.to_model_input(x, 32000.0, SPEC, filtered=False)
    assert w32.shape == (6, 100, 96) and np.all(info32["peak_channel"] == 7) and np.all(info32["trough_sample"] == 60)
    # the same spikes at 30 kHz give the same model input, to the resampling's accuracy
    t = np.arange(224) / 32000.0
    x30 = np.stack([np.stack([np.interp(np.arange(210) / 30000.0, t, ch) for ch in unit]) for unit in x])
    w30, _ = rec.to_model_input(x30.astype(np.float32), 30000.0, SPEC, filtered=False)
    assert np.abs(w30[:, 7] - w32[:, 7]).max() < 0.05 * np.abs(w32[:, 7]).max()
    # an already filtered input is not filtered again
    once = rec.bandpass(x, 32000.0, (300.0, 6000.0), 3)
    w_once, _ = rec.to_model_input(once, 32000.0, SPEC, filtered=True)
    assert np.allclose(w_once, w32, atol=1e-3)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 100)), "shape \\(units, channels, samples\\)"),
    (np.full((2, 4, 50), np.nan), "NaN or inf \\(units at rows \\[0, 1\\]\\)"),
])
def test_model_input_refuses_bad_arrays(bad, message):
    with pytest.raises(rec.InputError, match=message):
        rec.to_model_input(bad, 32000.0, SPEC, filtered=True)


def test_a_sampling_rate_too_low_for_the_band_is_refused():
    with pytest.raises(rec.InputError, match="10000 Hz is too low for the model's 300-6000 Hz band"):
        rec.to_model_input(_spikes(), 10000.0, SPEC, filtered=False)


def test_spec_round_trips_and_validates():
    assert rec.RecordingSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(ValueError, match="band_hz"):
        rec.RecordingSpec(fs_hz=10000.0)
    with pytest.raises(ValueError, match="align"):
        rec.RecordingSpec(align="peak")


def test_augmentation_draws_depend_only_on_seed_dataset_copy_and_eap():
    aug = rec.Augmentation(seed=3)
    window = SPEC.n_samples + 2 * rec.NOISE_MARGIN
    all_rows = rec.draw_copy(aug, ("cell", "3drot"), 1, np.arange(50), SPEC, window)
    some = rec.draw_copy(aug, ("cell", "3drot"), 1, np.array([40, 7]), SPEC, window)
    assert some.noise_uv[0] == all_rows.noise_uv[40] and some.shift[1] == all_rows.shift[7]
    other_copy = rec.draw_copy(aug, ("cell", "3drot"), 2, np.arange(50), SPEC, window)
    assert not np.allclose(other_copy.noise_uv, all_rows.noise_uv)
    # residual noise of a template: recording noise 5-30 µV over sqrt(10..1000 spikes)
    assert all_rows.noise_uv.min() >= 5 / np.sqrt(1000) and all_rows.noise_uv.max() <= 30 / np.sqrt(10)
    assert set(all_rows.shift) <= {-1, 0, 1} and set(all_rows.filter_order) <= {2, 3, 4, 5}


def test_noise_bank_is_band_limited_unit_rms_and_correlated_as_asked():
    positions = model_plane_positions("SqMEA-10-15")
    bank = rec.NoiseBank(SPEC, positions, seed=0)
    assert bank.noise.shape == (len(rec.BANK_CORRELATIONS_UM), 100, rec.BANK_SAMPLES)
    assert np.allclose(np.sqrt(np.mean(bank.noise ** 2, axis=(1, 2))), 1.0, atol=1e-3)
    freqs, power = signal.welch(bank.noise[0], fs=SPEC.fs_hz, nperseg=1024)
    band = (freqs >= 300) & (freqs <= 6000)
    assert power[:, band].sum() / power.sum() > 0.9
    neighbours = [(0, 1), (11, 12), (45, 46)]  # 15 µm apart
    for level, distance in enumerate(rec.BANK_CORRELATIONS_UM):
        r = np.mean([np.corrcoef(bank.noise[level, a], bank.noise[level, b])[0, 1] for a, b in neighbours])
        expected = 0.0 if distance == 0 else 0.5 ** (15.0 / distance)
        assert abs(r - expected) < 0.12, (distance, r, expected)


# ---- probes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("angle, mirror", [(0.0, False), (0.7, False), (np.pi / 2, False), (0.3, True)])
def test_a_moved_rotated_mirrored_shuffled_grid_maps_onto_the_model_contacts(angle, mirror):
    model = model_plane_positions("SqMEA-10-15")
    perm = np.random.default_rng(1).permutation(100)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    ours = (model[perm] * ([1, -1] if mirror else [1, 1])) @ rotation.T + [250.0, -40.0]
    order = match_contacts(ours, "SqMEA-10-15")
    mapped = ours[order]
    # an isometry: every pair of mapped contacts is as far apart as the model's pair
    assert np.allclose(np.linalg.norm(mapped[:, None] - mapped[None], axis=-1),
                       np.linalg.norm(model[:, None] - model[None], axis=-1), atol=1e-6)
    if not mirror and angle == 0.0:
        assert np.array_equal(perm[order], np.arange(100))  # identical layout: the identity, not a symmetry


def test_identical_positions_give_the_identity_and_3d_positions_are_projected():
    model = model_plane_positions("SqMEA-10-15")
    assert np.array_equal(match_contacts(model, "SqMEA-10-15"), np.arange(100))
    assert np.array_equal(match_contacts(np.c_[np.zeros(100), model], "SqMEA-10-15"), np.arange(100))


def test_other_layouts_and_bent_probes_are_refused_with_what_differs():
    model = model_plane_positions("SqMEA-10-15")
    with pytest.raises(ProbeGeometryError, match="100 contacts \\(spacing 22.5 µm\\).*spacing 15.0 µm"):
        match_contacts(model * 1.5, "SqMEA-10-15")
    with pytest.raises(ProbeGeometryError, match="has 32 contacts, probe 'SqMEA-10-15' has 100"):
        match_contacts(model[:32], "SqMEA-10-15")
    bent = np.c_[0.005 * model[:, 0] ** 2, model]  # a curved sheet: 23 µm out of plane at the edges
    with pytest.raises(ProbeGeometryError, match="not in one plane"):
        planar_positions(bent)


def test_edge_contacts_are_the_outer_ring_of_the_grid():
    edge = edge_contacts("SqMEA-10-15")
    assert edge.sum() == 36
    model = model_plane_positions("SqMEA-10-15")
    inner = (np.abs(model) < 60).all(axis=1)
    assert not edge[inner].any()


# ---- calibration ---------------------------------------------------------------------------------


def _overconfident(n: int = 4000, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model that is right 70 % of the time but says ~95 %."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + rng.integers(1, classes, n)) % classes)
    logits = rng.normal(0, 0.3, (n, classes))
    logits[np.arange(n), predicted] += 4.0
    proba = np.exp(logits)
    return proba / proba.sum(axis=1, keepdims=True), labels


def test_temperature_scaling_fixes_an_overconfident_model_and_keeps_its_predictions():
    proba, labels = _overconfident()
    assert cal.expected_calibration_error(proba, labels) > 0.2
    temperature = cal.fit_temperature(proba, labels)
    assert temperature > 1.5
    calibrated = cal.apply_temperature(proba, temperature)
    assert np.array_equal(calibrated.argmax(axis=1), proba.argmax(axis=1))
    assert cal.expected_calibration_error(calibrated, labels) < 0.05
    assert cal.negative_log_likelihood(calibrated, labels) < cal.negative_log_likelihood(proba, labels)
    table = cal.reliability(calibrated, labels)
    assert table["rows"].sum() == len(labels) and len(table) == cal.ECE_BINS


def test_the_ece_of_a_calibrated_model_on_few_units_is_a_range_above_zero():
    """On 156 units a calibrated model's ECE is not 0 but a range, which a model whose outcomes follow its
    confidences lands in, and which a 20 pp overconfident model leaves; more units narrow it."""
    rng = np.random.default_rng(3)
    n, k = 156, 13
    logits = rng.normal(0, 2.5, size=(n, k))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    low, high = cal.calibrated_ece_range(proba)
    assert 0 < low < high < 0.2
    assert cal.calibrated_ece_range(proba) == (low, high)  # seeded
    predicted = proba.argmax(axis=1)
    inside = 0
    for trial in range(40):  # outcomes drawn from the confidences: ECE inside the range ~95 % of the time
        draw = np.random.default_rng(100 + trial)
        correct = draw.random(n) < proba.max(axis=1)
        labels = np.where(correct, predicted, (predicted + draw.integers(1, k, n)) % k)
        inside += low <= cal.expected_calibration_error(proba, labels) <= high
    assert inside >= 34
    labels = np.where(rng.random(n) < proba.max(axis=1) - 0.2, predicted, (predicted + 1) % k)  # overconfident
    assert cal.expected_calibration_error(proba, labels) > high
    many = np.repeat(proba, 10, axis=0)
    assert cal.calibrated_ece_range(many)[1] < high


def test_abstention_threshold_is_the_smallest_that_reaches_the_target():
    confidence = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True, False])
    assert cal.abstain_threshold(confidence, correct, 0.75) == 0.7   # keep 5 rows: 4/5 = 80 % >= 75 %
    assert cal.abstain_threshold(confidence, correct, 1.0) == 0.9    # keep the 3 most confident
    assert cal.abstain_threshold(confidence, correct, 0.5) == 0.0    # everything: 4/6 >= 50 %
    assert cal.abstain_threshold(confidence, np.zeros(6, bool), 0.9) > 0.99  # unreachable: abstain on all
    fitted = cal.Calibration.fit(*_overconfident(), target_accuracy=0.9)
    assert fitted.validation["accuracy_kept"] >= 0.9 and 0 < fitted.validation["coverage"] < 1


def test_ood_flags_say_why():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(40, 5)))[0].T.astype(np.float32)   # 5 orthonormal directions in 40-D
    inside = (rng.normal(size=(200, 5)) @ basis).astype(np.float32)
    residuals = cal.OODReference(amplitude_range_uv=(0, 1), edge=np.zeros(4, bool), mean=np.zeros(40, np.float32),
                                 components=basis, residual_threshold=1.0).residual(inside)
    assert residuals.max() < 1e-5
    edge = np.array([True, False, False, False])
    reference = cal.OODReference.fit(np.linspace(30, 300, 100), residuals, edge, np.zeros(40), basis, decimate=1)
    windows = np.concatenate([inside[:3], rng.normal(size=(1, 40)).astype(np.float32)]).reshape(4, 4, 10)
    flags, reasons = reference.flags(np.array([100.0, 10.0, 100.0, 100.0]), np.array([1, 2, 0, 3]), windows)
    assert list(flags) == [False, True, True, True]
    assert reasons[0] == "" and "below the training range" in reasons[1] and "edge contact 0" in reasons[2]
    assert "far from the training data" in reasons[3]
    again = cal.OODReference.from_arrays(reference.to_arrays())
    assert again.residual_threshold == reference.residual_threshold and again.amplitude_range_uv == \
        reference.amplitude_range_uv


def test_the_deployment_resource_takes_the_recipe_defaults_from_the_core():
    from eap_assets.defs.resources import RecordingSettings, SimulationSettings

    settings, recording = SimulationSettings(), RecordingSettings()
    config = recording.set_config(settings)
    assert config.augmentation == rec.Augmentation(seed=settings.seed)
    assert config.spec == rec.RecordingSpec(fs_hz=config.spec.fs_hz, probe=settings.probe)
    changed = RecordingSettings(copies=4, band_hz=[500.0, 5000.0]).set_config(settings)
    assert changed.augmentation.copies == 4 and changed.spec.band_hz == (500.0, 5000.0)
