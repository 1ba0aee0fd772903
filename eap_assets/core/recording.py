"""What a recording does to a spike, in one place: the input mapping of the models that classify real units.

A sorted unit's template (a SpikeInterface ``SortingAnalyzer``'s ``templates`` extension, a
MEArec recording averaged per unit) differs from the project's simulated EAPs in ways that every
model trained for real data must see in training *and* undo or reproduce at serving time:

* **sampling rate** -- 20-40 kHz (30 kHz is the silicon-probe default); the models work at
  ``fs_hz`` (32 kHz, the NEURON step 2**-5 ms): :func:`resample` (``scipy.signal.resample_poly``);
* **band-pass** -- a recording is filtered (300-6000 Hz typical) before sorting; the filter
  shortens the repolarisation on which widths and the E/I decision rest: :func:`bandpass`
  (zero-phase Butterworth of order ``filter_order``, as MEArec's ``filtfilt``), applied to
  training EAPs and to unfiltered inputs; a filtered input is used as it is;
* **window and alignment** -- templates are cut around the detection time (SpikeInterface's
  default 1 ms before and 2 ms after), a sample or two off: every input is re-aligned on its
  negative peak (the most negative sample over all channels, as MEArec centres its EAPs) and
  cropped to ``ms_before`` / ``ms_after`` around it (:func:`align`; samples beyond the input's
  window are zeros, and reported);
* **medium** -- an MEA is a non-conducting plane that doubles the potential of the half-space
  (method of images, MEArec's convention for MEAs): the training EAPs are simulated in that
  medium (``medium``); it is part of the spec so that a model says what it assumes;
* **noise** -- a template averaged over ``n`` spikes of a recording with noise ``sigma`` keeps
  ``sigma / sqrt(n)`` of band-limited, spatially correlated noise: :func:`template_noise`.

:class:`RecordingSpec` holds these settings; it is stored with every registered model (MLflow)
and :func:`to_model_input` is the single function that maps an array of waveforms onto a
model's input, at training (with :class:`Augmentation`) and at serving time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from scipy import signal

from eap_assets.core.eaps import contact_peak_to_peak, partition_seed, row_rng

#: Version of the mapping code (part of artefact keys): bump it when the mapping would change.
CODE_VERSION = "recording-1"
#: Alignments a spec may ask for: ``trough`` (negative peak at a fixed sample) or ``none`` (the input
#: is used as it comes, e.g. the paper models' 224-sample windows around the intracellular spike).
ALIGNMENTS: tuple[str, ...] = ("trough", "none")


class InputError(ValueError):
    """Waveforms that cannot be mapped onto a model's input (shape, values, sampling rate)."""


@dataclass(frozen=True)
class RecordingSpec:
    """How waveforms are mapped onto a model's input.

    Attributes
    ----------
    fs_hz : float
        Sampling rate of the model's input, Hz (32 kHz: the NEURON step of 2**-5 ms).
    band_hz : (float, float) or None
        Pass band of the zero-phase Butterworth band-pass (None: no filtering, the paper's models).
    filter_order : int
        Order of the Butterworth filter (applied forward and backward, MEArec's ``filtfilt``).
    ms_before, ms_after : float
        Window around the negative peak, ms (``align="trough"``).
    align : {"trough", "none"}
        ``trough``: re-align each waveform on its most negative sample and crop the window around
        it; ``none``: take the waveforms as they come (they must already have the model's length).
    medium : str
        The medium the training EAPs were simulated in (``mea_plane``: potential doubled by the
        non-conducting MEA plane; ``infinite``: the paper's homogeneous medium).
    probe : str
        MEAutility name of the probe the model was trained on.
    """

    fs_hz: float = 32000.0
    band_hz: tuple[float, float] | None = (300.0, 6000.0)
    filter_order: int = 3
    ms_before: float = 1.0
    ms_after: float = 2.0
    align: str = "trough"
    medium: str = "mea_plane"
    probe: str = "SqMEA-10-15"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fs_hz) and self.fs_hz > 0):
            raise ValueError(f"RecordingSpec.fs_hz must be a positive rate in Hz, got {self.fs_hz!r}")
        if self.band_hz is not None:
            low, high = (float(v) for v in self.band_hz)
            if not 0 < low < high < self.fs_hz / 2:
                raise ValueError(f"RecordingSpec.band_hz must be (low, high) with 0 < low < high < fs/2 = "
                                 f"{self.fs_hz / 2:g} Hz, got {self.band_hz!r}")
            object.__setattr__(self, "band_hz", (low, high))
        if isinstance(self.filter_order, bool) or not isinstance(self.filter_order, int) or not 1 <= self.filter_order <= 10:
            raise ValueError(f"RecordingSpec.filter_order must be an integer in [1, 10], got {self.filter_order!r}")
        if self.align not in ALIGNMENTS:
            raise ValueError(f"RecordingSpec.align must be one of {ALIGNMENTS}, got {self.align!r}")
        if not (self.ms_before > 0 and self.ms_after > 0):
            raise ValueError(f"RecordingSpec window must be positive, got {self.ms_before} ms / {self.ms_after} ms")

    @property
    def n_before(self) -> int:
        """Samples before the negative peak (the peak's index in the window)."""
        return int(round(self.ms_before * self.fs_hz / 1000.0))

    @property
    def n_samples(self) -> int:
        """Samples of the model's window."""
        return self.n_before + int(round(self.ms_after * self.fs_hz / 1000.0))

    @property
    def dt_ms(self) -> float:
        return 1000.0 / self.fs_hz

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> RecordingSpec:
        values = json.loads(text) if isinstance(text, str) else dict(text)
        if values.get("band_hz") is not None:
            values["band_hz"] = tuple(values["band_hz"])
        return cls(**values)

    def key(self) -> str:
        """Stable hash of the spec and the mapping code (artefact keys; a probe file counts by its
        contacts, :func:`eap_assets.core.probe.probe_name`, not its path)."""
        from eap_assets.core.keys import settings_hash
        from eap_assets.core.probe import probe_name

        return settings_hash("recording-spec", CODE_VERSION, {**asdict(self), "probe": probe_name(self.probe)})


def _as_waveforms(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or 0 in x.shape:
        raise InputError(f"{what} must have shape (units, channels, samples) with none of them empty, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{what} must be numbers, got dtype {x.dtype}")
    return x


def _check_rate(fs_hz: float, what: str) -> float:
    fs_hz = float(fs_hz)
    if not (math.isfinite(fs_hz) and fs_hz > 0):
        raise InputError(f"{what}: sampling rate must be a positive number of Hz, got {fs_hz!r}")
    return fs_hz


#: Elements (rows x channels x padded samples) filtered at a time (bounds the memory of :func:`bandpass`).
_FILTER_ELEMENTS = 4_000_000


def bandpass(x: np.ndarray, fs_hz: float, band_hz: tuple[float, float], order: int = 3) -> np.ndarray:
    """Zero-phase Butterworth band-pass of waveforms along the last axis, float32.

    Forward-backward filtering (``filtfilt``, as MEArec filters its recordings) applies the
    squared magnitude response ``|H(f)|**2`` of the Butterworth filter with no phase shift. Each
    waveform is treated as an isolated event in a silent recording: it is padded with zeros
    (``1.5 fs / f_low`` samples on each side, longer than the filter's response), multiplied by
    ``|H(f)|**2`` in the frequency domain (float32 FFT), and the padding is cut off again. This
    agrees with ``scipy.signal.sosfiltfilt`` on the zero-padded waveform to ~1e-5 of the peak (tested)
    and is ~8x faster.

    Parameters
    ----------
    x : ndarray, shape (..., samples)
        Waveforms, µV.
    fs_hz : float
        Sampling rate, Hz.
    band_hz : (float, float)
        Pass band, Hz; the upper edge must lie below the Nyquist frequency.
    order : int
        Butterworth order (the filter runs forward and backward: the magnitude response is squared).

    Raises
    ------
    InputError
        If the band does not fit below the Nyquist frequency of ``fs_hz``.
    """
    import scipy.fft

    fs_hz = _check_rate(fs_hz, "bandpass")
    low, high = (float(v) for v in band_hz)
    if high >= fs_hz / 2:
        raise InputError(f"sampling rate {fs_hz:g} Hz is too low for the {low:g}-{high:g} Hz band: it needs more than "
                         f"{2 * high:g} Hz")
    x = np.asarray(x, dtype=np.float32)
    n_t = x.shape[-1]
    pad = int(math.ceil(1.5 * fs_hz / low))
    n_fft = scipy.fft.next_fast_len(n_t + 2 * pad, real=True)
    gain = _squared_response(order, low, high, fs_hz, n_fft)
    flat = x.reshape(-1, n_t)
    out = np.empty_like(flat)
    step = max(1, _FILTER_ELEMENTS // n_fft)
    for lo in range(0, len(flat), step):
        padded = np.zeros((min(step, len(flat) - lo), n_fft), dtype=np.float32)
        padded[:, pad:pad + n_t] = flat[lo:lo + step]
        spectrum = scipy.fft.rfft(padded, axis=-1)
        spectrum *= gain
        out[lo:lo + step] = scipy.fft.irfft(spectrum, n=n_fft, axis=-1)[:, pad:pad + n_t]
    return out.reshape(x.shape)


_RESPONSE_CACHE: dict[tuple, np.ndarray] = {}


def _squared_response(order: int, low: float, high: float, fs_hz: float, n_fft: int) -> np.ndarray:
    """``|H(f)|**2`` of the Butterworth band-pass at the rfft frequencies of ``n_fft`` samples (float32)."""
    key = (order, low, high, fs_hz, n_fft)
    if key not in _RESPONSE_CACHE:
        _, response = signal.sosfreqz(_butter(order, low, high, fs_hz), worN=np.fft.rfftfreq(n_fft, 1.0 / fs_hz),
                                      fs=fs_hz)
        _RESPONSE_CACHE[key] = (np.abs(response) ** 2).astype(np.float32)
    return _RESPONSE_CACHE[key]


_BUTTER_CACHE: dict[tuple, np.ndarray] = {}


def _butter(order: int, low: float, high: float, fs_hz: float) -> np.ndarray:
    key = (order, low, high, fs_hz)
    if key not in _BUTTER_CACHE:
        _BUTTER_CACHE[key] = signal.butter(order, (low, high), btype="bandpass", fs=fs_hz, output="sos")
    return _BUTTER_CACHE[key]


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Waveforms resampled from ``fs_in`` to ``fs_out`` along the last axis (polyphase, float32).

    The ratio is approximated by a fraction with a denominator of at most 1000 (30 -> 32 kHz:
    up 16, down 15). Equal rates return the input as float32.
    """
    fs_in, fs_out = _check_rate(fs_in, "resample input"), _check_rate(fs_out, "resample output")
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(x, dtype=np.float32)
    return signal.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator,
                                axis=-1).astype(np.float32)


def trough_samples(x: np.ndarray) -> np.ndarray:
    """Sample index of the most negative value over all channels of each waveform (N, C, T) -> (N,)."""
    x = np.asarray(x)
    return np.argmin(x.min(axis=1), axis=-1)


def align(x: np.ndarray, spec: RecordingSpec, shift: np.ndarray | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Crop each waveform to the spec's window around its negative peak (plus ``shift`` samples).

    Parameters
    ----------
    x : ndarray, shape (N, C, T)
        Waveforms at the spec's sampling rate.
    spec : RecordingSpec
        ``n_before`` samples before the peak, ``n_samples`` in all.
    shift : int or ndarray of int, shape (N,)
        Offset of the window (alignment jitter in training; 0 at serving time).

    Returns
    -------
    windows : ndarray, shape (N, C, spec.n_samples), float32
        Samples outside the input are zeros.
    padded : ndarray of int, shape (N,)
        How many samples of each window lay outside the input (0: none).
    """
    x = _as_waveforms(x, "waveforms")
    n, _, t = x.shape
    start = trough_samples(x) - spec.n_before + np.broadcast_to(np.asarray(shift, dtype=np.int64), (n,))
    idx = start[:, None] + np.arange(spec.n_samples)[None, :]                    # (N, W)
    inside = (idx >= 0) & (idx < t)
    gathered = np.take_along_axis(np.asarray(x, dtype=np.float32), np.clip(idx, 0, t - 1)[:, None, :], axis=2)
    windows = np.where(inside[:, None, :], gathered, np.float32(0.0))
    return windows.astype(np.float32, copy=False), (~inside).sum(axis=1)


#: Accepted EAPs per cell and rotation of a training set for real recordings, as a multiple of the paper's.
EAPS_FACTOR = 12.0


@dataclass(frozen=True)
class Augmentation:
    """How training waveforms are varied so that a model sees what sorted templates look like.

    Attributes
    ----------
    copies : int
        Augmented copies of every EAP (each with its own noise, filter and jitter draw).
    noise_rms_uv : (float, float)
        Range of the *recording* noise RMS, µV (uniform).
    spikes_per_template : (float, float)
        Range of the number of spikes a template averages (log-uniform): its residual noise is the
        recording noise divided by the square root of this number.
    correlation_um : (float, float)
        Range of the distance at which the noise correlation between two contacts is 0.5, µm
        (uniform; 0: independent contacts).
    jitter_samples : int
        Largest alignment offset, samples (uniform over -j..j).
    filter_orders : tuple of int
        Butterworth orders drawn per copy (users' filters differ: SpikeInterface's default is 5,
        MEArec's 3).
    seed : int
        Root seed; a copy's draws depend on (seed, cell, rotation, copy, EAP id) only.
    """

    copies: int = 2
    noise_rms_uv: tuple[float, float] = (5.0, 30.0)
    spikes_per_template: tuple[float, float] = (50.0, 1000.0)
    correlation_um: tuple[float, float] = (0.0, 60.0)
    jitter_samples: int = 1
    filter_orders: tuple[int, ...] = (2, 3, 4, 5)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 1:
            raise ValueError(f"Augmentation.copies must be an integer >= 1, got {self.copies!r}")
        for name in ("noise_rms_uv", "spikes_per_template", "correlation_um"):
            lo, hi = (float(v) for v in getattr(self, name))
            if not (0 <= lo <= hi and math.isfinite(hi)):
                raise ValueError(f"Augmentation.{name} must be (low, high) with 0 <= low <= high, got "
                                 f"{getattr(self, name)!r}")
            object.__setattr__(self, name, (lo, hi))
        if self.spikes_per_template[0] < 1:
            raise ValueError(f"Augmentation.spikes_per_template must be >= 1 spike, got {self.spikes_per_template!r}")
        if isinstance(self.jitter_samples, bool) or not isinstance(self.jitter_samples, int) or self.jitter_samples < 0:
            raise ValueError(f"Augmentation.jitter_samples must be an integer >= 0, got {self.jitter_samples!r}")
        orders = tuple(int(o) for o in self.filter_orders)
        if not orders or any(not 1 <= o <= 10 for o in orders):
            raise ValueError(f"Augmentation.filter_orders must be orders in [1, 10], got {self.filter_orders!r}")
        object.__setattr__(self, "filter_orders", orders)

    def key(self) -> str:
        from eap_assets.core.keys import settings_hash

        return settings_hash("augmentation", CODE_VERSION, asdict(self))


@dataclass
class CopyDraws:
    """The random draws of one augmented copy of some EAPs (one row per EAP)."""

    noise_uv: np.ndarray        # residual noise RMS of each template, µV
    correlation: np.ndarray     # index into the noise bank's correlation distances
    offset: np.ndarray          # start of each template's noise in the bank, samples
    shift: np.ndarray           # alignment offset, samples
    filter_order: np.ndarray    # Butterworth order of each copy's band-pass


#: Half-correlation distances (µm) of the noise bank: a draw from ``Augmentation.correlation_um`` uses the nearest.
BANK_CORRELATIONS_UM: tuple[float, ...] = (0.0, 20.0, 40.0, 60.0)
#: Samples of noise per channel and correlation distance in a bank (0.5 s at 32 kHz).
BANK_SAMPLES = 16_000


def draw_copy(augmentation: Augmentation, keys: tuple[str, ...], copy: int, eap_ids: np.ndarray,
              spec: RecordingSpec, window: int) -> CopyDraws:
    """Draws of ``copy`` for the EAPs ``eap_ids`` of the dataset ``keys`` (e.g. cell, rotation).

    Every row draws from ``SeedSequence([seed, *sha256(keys)], spawn_key=(copy, eap_id))``: an EAP's
    augmentation does not depend on which other EAPs are processed with it. ``window`` is the length
    of the noise each template needs (samples).
    """
    aug = augmentation
    entropy = partition_seed(aug.seed, *keys).entropy
    ids = np.asarray(eap_ids, dtype=np.int64)
    draws = np.empty((len(ids), 6))
    lo, hi = aug.spikes_per_template
    for i, eap in enumerate(ids):
        draws[i] = row_rng(entropy, copy, eap).random(6)
    sigma = aug.noise_rms_uv[0] + draws[:, 0] * (aug.noise_rms_uv[1] - aug.noise_rms_uv[0])
    spikes = np.exp(math.log(lo) + draws[:, 1] * (math.log(hi) - math.log(lo)))
    correlation = aug.correlation_um[0] + draws[:, 2] * (aug.correlation_um[1] - aug.correlation_um[0])
    nearest = np.abs(correlation[:, None] - np.asarray(BANK_CORRELATIONS_UM)[None, :]).argmin(axis=1)
    return CopyDraws(
        noise_uv=sigma / np.sqrt(spikes), correlation=nearest,
        offset=np.floor(draws[:, 3] * (BANK_SAMPLES - window + 1)).astype(np.int64),
        shift=np.floor(draws[:, 4] * (2 * aug.jitter_samples + 1)).astype(np.int64) - aug.jitter_samples,
        filter_order=np.asarray(aug.filter_orders)[np.floor(draws[:, 5] * len(aug.filter_orders)).astype(np.int64)])


def contact_correlation(positions: np.ndarray, half_distance_um: float) -> np.ndarray:
    """Noise correlation of the contacts: ``0.5 ** (distance / half_distance_um)`` (identity for 0).

    An exponential kernel of the Euclidean distance is positive definite, so its Cholesky factor
    exists for any layout (MEArec's ``distance-correlated`` mode uses ``0.5 d_half / d``, which is
    not, for contacts closer than half the distance).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if half_distance_um <= 0:
        return np.eye(len(positions))
    d = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    return 0.5 ** (d / float(half_distance_um))


class NoiseBank:
    """Stationary recording noise to cut templates' residual noise from.

    For each half-correlation distance of :data:`BANK_CORRELATIONS_UM`, :data:`BANK_SAMPLES`
    samples per contact of white Gaussian noise, correlated across contacts
    (:func:`contact_correlation`, by Cholesky factor), band-passed like the recording (the spec's
    band and order) and scaled to unit RMS: a noise *recording*. A template's noise is a window of
    it at a seeded offset, times the template's RMS (:class:`CopyDraws`): cheap, and the noise
    of a window fluctuates around its level as in a recording.

    Parameters
    ----------
    spec : RecordingSpec
    positions : ndarray, shape (C, 2 or 3)
        Contact positions, µm (model contact order).
    seed : int
    """

    def __init__(self, spec: RecordingSpec, positions: np.ndarray, seed: int = 0):
        positions = np.asarray(positions, dtype=np.float64)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0BA4C]))
        pad = int(math.ceil(3 * spec.fs_hz / spec.band_hz[0])) if spec.band_hz is not None else 0
        banks = []
        for distance in BANK_CORRELATIONS_UM:
            white = rng.standard_normal((len(positions), BANK_SAMPLES + 2 * pad))
            if distance > 0:
                white = np.linalg.cholesky(contact_correlation(positions, distance)) @ white
            if spec.band_hz is not None:
                white = signal.sosfiltfilt(_butter(spec.filter_order, *spec.band_hz, spec.fs_hz), white, axis=-1)
            white = white[:, pad:pad + BANK_SAMPLES]
            banks.append((white / np.sqrt(np.mean(np.square(white)))).astype(np.float32))
        self.noise = np.stack(banks)  # (levels, C, BANK_SAMPLES), unit RMS

    def windows(self, draws: CopyDraws, length: int) -> np.ndarray:
        """The noise of each draw: (N, C, length) float32, µV."""
        idx = draws.offset[:, None] + np.arange(length)[None, :]             # (N, L)
        picked = self.noise[draws.correlation[:, None, None], np.arange(self.noise.shape[1])[None, :, None],
                            idx[:, None, :]]
        return picked * draws.noise_uv.astype(np.float32)[:, None, None]


#: Extra samples on each side of the window when a training template gets its noise before re-alignment.
NOISE_MARGIN = 8


def to_model_input(x: np.ndarray, fs_hz: float, spec: RecordingSpec, filtered: bool,
                   draws: CopyDraws | None = None, bank: NoiseBank | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Map waveforms onto a model's input: band-pass (unless ``filtered``), resample, then align on
    the negative peak and crop; in training (``draws``), with each template's residual noise added
    before the alignment, so that the model sees noisy alignment as serving does.

    Parameters
    ----------
    x : ndarray, shape (N, C, T)
        Waveforms in µV at ``fs_hz``, channels in the model's contact order.
    fs_hz : float
        Their sampling rate, Hz.
    spec : RecordingSpec
        The model's input spec.
    filtered : bool
        True when the waveforms are already band-passed (a sorted recording's templates): they are
        not filtered again.
    draws : CopyDraws, optional
        Augmentation of a training copy: filter order, noise and alignment offset per waveform.
    bank : NoiseBank, optional
        Where the noise of ``draws`` is cut from (needed when ``draws`` has noise).

    Returns
    -------
    inputs : ndarray, shape (N, C, spec.n_samples), float32
    info : dict of ndarray
        ``trough_sample`` (the negative peak in the input, at ``fs_hz``), ``padded`` (samples of
        the window outside the input), ``peak_to_peak_uv`` (largest over channels after filtering
        and resampling, before any noise), ``peak_channel`` (its channel).

    Raises
    ------
    InputError
        Wrong shape, NaN/inf, a sampling rate too low for the band, or (``align="none"``) a
        window whose length is not the model's.
    """
    x = _as_waveforms(x, "waveforms")
    if not np.all(np.isfinite(x)):
        bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
        raise InputError(f"waveforms contain NaN or inf (units at rows {bad[:10].tolist()})")
    fs_hz = _check_rate(fs_hz, "waveforms")
    if spec.band_hz is not None and fs_hz / 2 <= spec.band_hz[1]:
        raise InputError(f"sampling rate {fs_hz:g} Hz is too low for the model's {spec.band_hz[0]:g}-"
                         f"{spec.band_hz[1]:g} Hz band: it needs more than {2 * spec.band_hz[1]:g} Hz")
    y = np.asarray(x, dtype=np.float32)
    if spec.band_hz is not None and not filtered:
        orders = np.full(len(y), spec.filter_order) if draws is None else draws.filter_order
        out = np.empty_like(y)
        for order in np.unique(orders):
            rows = np.flatnonzero(orders == order)
            out[rows] = bandpass(y[rows], fs_hz, spec.band_hz, int(order))
        y = out
    y = resample(y, fs_hz, spec.fs_hz)
    p2p = contact_peak_to_peak(y)
    info = {"trough_sample": trough_samples(x), "peak_to_peak_uv": p2p.max(axis=-1).astype(np.float32),
            "peak_channel": p2p.argmax(axis=-1)}
    if spec.align == "none":
        if draws is not None and np.any(draws.noise_uv > 0):
            y = y + bank.windows(draws, y.shape[2])
        if y.shape[2] != spec.n_samples:
            raise InputError(f"waveforms have {y.shape[2]} samples at {spec.fs_hz:g} Hz; the model takes "
                             f"{spec.n_samples} ({spec.n_samples * spec.dt_ms:g} ms) as they come (no alignment)")
        info["padded"] = np.zeros(len(y), dtype=np.int64)
        return y, info
    if draws is not None and np.any(draws.noise_uv > 0):
        if bank is None:
            raise ValueError("to_model_input: draws with noise need a NoiseBank")
        wide = RecordingSpec(**{**asdict(spec), "ms_before": (spec.n_before + NOISE_MARGIN) / spec.fs_hz * 1000,
                                "ms_after": (spec.n_samples - spec.n_before + NOISE_MARGIN) / spec.fs_hz * 1000})
        y, padded_wide = align(y, wide)
        y = y + bank.windows(draws, y.shape[2])
    windows, padded = align(y, spec, 0 if draws is None else draws.shift)
    info["padded"] = padded
    return windows, info
