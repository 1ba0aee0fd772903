"""Recording noise added to EAPs before feature extraction, and noisy copies for augmentation.

The simulated EAPs are noise free; a real MEA adds thermal and biological noise of a few to
~10 µV RMS.  :func:`noisy_eaps` adds seeded Gaussian noise to an EAP array
``(N, n_contacts, n_samples)`` (µV), in float32 and in chunks of rows (an EAP partition is
~1000 x 100 x 224 float32 = 90 MB), so that :func:`eap_assets.core.features.feature_table`
can be computed from noisy EAPs (:func:`noisy_dataset`, :func:`augmented_feature_table`).

Two kinds of noise (:class:`NoiseConfig`):

- ``white``: independent Gaussian samples;
- ``band``: Gaussian samples filtered to ``band_hz`` (default 300-6000 Hz, a spike band) by a
  zero-phase Butterworth band-pass (``scipy.signal.sosfiltfilt``).  The noise is drawn with
  ``ceil(2 fs / f_low)`` extra samples on each side, filtered, and the middle kept, so the
  kept window holds stationary noise (no filter start-up transient).

RMS (``normalize``):

- ``"trace"`` (default): every noise trace -- one EAP on one contact, over the EAP's window --
  is rescaled so that its RMS (root mean square about 0) is *exactly* ``rms_uv``;
- ``"expected"``: the noise is a stationary process whose RMS is ``rms_uv`` in expectation
  (white: standard deviation ``rms_uv``; band: the filter's power gain, from its frequency
  response, divided out), so individual traces scatter around it.

Seeds.  Row ``i`` of copy ``k`` of a dataset identified by ``keys`` (e.g. cell and rotation)
draws from ``np.random.SeedSequence(entropy=[seed, sha256(key_1), ...], spawn_key=(k, i))``
(entropy as :func:`eap_assets.core.eaps.partition_seed`): every EAP's noise is independent of
every other EAP's, of the number of rows, of the chunking and of the order of processing;
same seed, keys, copy and row => identical noise.  ``row_offset`` gives the index of the
first row when an array is processed in parts; ``row_ids`` the index of every row when the rows
are an arbitrary subset (e.g. the test rows of a split): row ``i`` gets the same noise either way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import signal

from eap_assets.core import features
from eap_assets.core.eaps import partition_seed, row_rng
from eap_assets.core.keys import settings_hash

if TYPE_CHECKING:
    from eap_assets.core.eaps import EAPDataset

#: Version of the noise code (part of :meth:`NoiseConfig.key`): bump it when the noise would change.
CODE_VERSION = "noise-1"
NOISE_KINDS: tuple[str, ...] = ("white", "band")
NORMALIZATIONS: tuple[str, ...] = ("trace", "expected")
#: Upper bound of noise samples (rows x contacts x padded samples) drawn and filtered at a time.
_CHUNK_ELEMENTS = 2_000_000
#: Frequency points of the response used for the ``expected`` gain of the band filter.
_GAIN_POINTS = 1 << 16


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """ValueError naming ``name`` unless ``value`` is an integer (not a bool) in [minimum, maximum]."""
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum
            or (maximum is not None and value > maximum)):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")


@dataclass(frozen=True)
class NoiseConfig:
    """Settings of the recording noise.

    Attributes
    ----------
    rms_uv : float
        RMS of the noise, µV; 0 (default) for none.
    kind : {"white", "band"}
        White Gaussian noise, or Gaussian noise band-passed to ``band_hz``.
    band_hz : (float, float)
        Pass band of the ``band`` noise, Hz; the upper edge must lie below the Nyquist
        frequency of the EAPs' sampling (16 kHz at dt = 2**-5 ms).
    order : int
        Order of the Butterworth band-pass (applied forward and backward: the magnitude
        response is squared).
    normalize : {"trace", "expected"}
        ``trace``: each noise trace (EAP x contact) has exactly ``rms_uv``; ``expected``: the
        noise process has RMS ``rms_uv`` in expectation (see the module docstring).
    seed : int
        Root seed (>= 0).
    """

    rms_uv: float = 0.0
    kind: str = "white"
    band_hz: tuple[float, float] = (300.0, 6000.0)
    order: int = 3
    normalize: str = "trace"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.rms_uv, (int, float)) and math.isfinite(self.rms_uv) and self.rms_uv >= 0):
            raise ValueError(f"NoiseConfig.rms_uv must be a finite number >= 0 (µV), got {self.rms_uv!r}")
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"NoiseConfig.kind {self.kind!r} unknown; choose one of {', '.join(NOISE_KINDS)}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"NoiseConfig.normalize {self.normalize!r} unknown; "
                             f"choose one of {', '.join(NORMALIZATIONS)}")
        try:
            low, high = (float(f) for f in self.band_hz)
        except (TypeError, ValueError):
            raise ValueError(f"NoiseConfig.band_hz must be (low, high) in Hz, got {self.band_hz!r}") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ValueError(f"NoiseConfig.band_hz must be (low, high) with 0 < low < high Hz, got {self.band_hz!r}")
        object.__setattr__(self, "band_hz", (low, high))
        _check_int("NoiseConfig.order", self.order, 1, 10)
        _check_int("NoiseConfig.seed", self.seed, 0)

    @property
    def enabled(self) -> bool:
        """True when noise is added (``rms_uv > 0``)."""
        return self.rms_uv > 0

    def key(self) -> str:
        """Stable hash of the settings and the code version, for artefact keys.

        Every disabled configuration (``rms_uv == 0``) has the same key, whatever its other fields.
        """
        return settings_hash("noise", CODE_VERSION, asdict(self) if self.enabled else None)

    def check_sampling(self, dt: float) -> float:
        """Validate the sampling step for this noise and return the sampling rate, Hz.

        Raises
        ------
        ValueError
            If ``dt`` is not a positive number, or the band's upper edge is not below the
            Nyquist frequency.
        """
        if not (isinstance(dt, (int, float, np.floating)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"sampling step dt must be a positive number of ms, got {dt!r}")
        fs = 1000.0 / float(dt)
        if self.kind == "band" and self.band_hz[1] >= fs / 2:
            raise ValueError(f"NoiseConfig.band_hz {self.band_hz} reaches the Nyquist frequency {fs / 2:g} Hz of "
                             f"dt = {dt:g} ms; lower the upper edge below it")
        return fs


@dataclass(frozen=True)
class _Filter:
    """Band-pass of the ``band`` noise at one sampling rate."""

    sos: np.ndarray
    pad: int          # extra samples drawn on each side of the window
    gain: float       # RMS of the filtered unit white noise (stationary)


def _band_filter(config: NoiseConfig, fs: float) -> _Filter:
    sos = signal.butter(config.order, config.band_hz, btype="bandpass", fs=fs, output="sos")
    _, response = signal.sosfreqz(sos, worN=_GAIN_POINTS, fs=fs)
    # forward-backward filtering squares the magnitude: power gain = mean |H|^4 over [0, fs/2]
    gain = float(np.sqrt(np.mean(np.abs(response) ** 4)))
    return _Filter(sos=sos, pad=int(math.ceil(2.0 * fs / config.band_hz[0])), gain=gain)


def _noise_chunk(config: NoiseConfig, rows: range, n_contacts: int, n_samples: int, entropy: Sequence[int],
                 copy: int, band: _Filter | None) -> np.ndarray:
    """Noise of rows ``rows`` (global indices), shape (len(rows), n_contacts, n_samples), float32."""
    pad = band.pad if band is not None else 0
    draws = np.empty((len(rows), n_contacts, n_samples + 2 * pad), dtype=np.float32)
    for j, row in enumerate(rows):
        rng = row_rng(entropy, copy, row)
        rng.standard_normal(out=draws[j], dtype=np.float32)
    if band is not None:
        draws = signal.sosfiltfilt(band.sos, draws, axis=-1)[..., pad:pad + n_samples].astype(np.float32)
    if config.normalize == "trace":
        rms = np.sqrt(np.mean(np.square(draws, dtype=np.float64), axis=-1, keepdims=True))
        return (draws * (config.rms_uv / rms)).astype(np.float32)
    return draws * np.float32(config.rms_uv / (band.gain if band is not None else 1.0))


def _row_ids(n_rows: int, row_offset: int, row_ids: Sequence[int] | None) -> np.ndarray:
    """Global index of each row: ``row_offset + arange(n_rows)``, or ``row_ids`` (checked)."""
    _check_int("row_offset", row_offset, 0)
    if row_ids is None:
        return np.arange(row_offset, row_offset + n_rows)
    if row_offset:
        raise ValueError("give row_offset or row_ids, not both")
    ids = np.asarray(row_ids)
    if ids.shape != (n_rows,) or (ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0)):
        raise ValueError(f"row_ids must be {n_rows} non-negative integers (one per EAP row), got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    return ids


def _chunks(config: NoiseConfig, n_rows: int, n_contacts: int, n_samples: int, dt: float, keys: Sequence[str],
            copy: int, row_offset: int, row_ids: Sequence[int] | None = None) -> Iterator[tuple[slice, np.ndarray]]:
    """(local row slice, noise of those rows) in chunks of at most :data:`_CHUNK_ELEMENTS` samples."""
    _check_int("copy", copy, 0)
    ids = _row_ids(n_rows, row_offset, row_ids)
    entropy = partition_seed(config.seed, *(str(k) for k in keys)).entropy
    fs = config.check_sampling(dt)
    band = _band_filter(config, fs) if config.kind == "band" else None
    width = n_contacts * (n_samples + 2 * (band.pad if band is not None else 0))
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    for lo in range(0, n_rows, step):
        hi = min(n_rows, lo + step)
        rows = ids[lo:hi]
        yield slice(lo, hi), _noise_chunk(config, rows, n_contacts, n_samples, entropy, copy, band)


def recording_noise(n_eaps: int, n_contacts: int, n_samples: int, dt: float, config: NoiseConfig,
                    keys: Sequence[str] = (), copy: int = 0, row_offset: int = 0,
                    row_ids: Sequence[int] | None = None) -> np.ndarray:
    """The noise :func:`noisy_eaps` adds, on its own.

    Parameters
    ----------
    n_eaps, n_contacts, n_samples : int
        Shape of the EAP array the noise is for.
    dt : float
        Sampling step, ms.
    config : NoiseConfig
        Kind, RMS, band and seed.
    keys : sequence of str
        Names of the dataset (e.g. ``(cell, rotation)``): datasets with other keys get
        independent noise from the same seed.
    copy : int
        Index of the noisy copy (augmentation); copies are independent of each other.
    row_offset : int
        Global index of the first row (to process a dataset in parts).
    row_ids : sequence of int, optional
        Global index of every row (a subset of a dataset's rows); excludes ``row_offset``.

    Returns
    -------
    ndarray, shape (n_eaps, n_contacts, n_samples), float32, µV
        Zeros when ``config.rms_uv == 0``.
    """
    for name, value in (("n_eaps", n_eaps), ("n_contacts", n_contacts), ("n_samples", n_samples)):
        _check_int(name, value, 0 if name == "n_eaps" else 1)
    out = np.zeros((n_eaps, n_contacts, n_samples), dtype=np.float32)
    if config.enabled:
        for rows, noise in _chunks(config, n_eaps, n_contacts, n_samples, dt, keys, copy, row_offset, row_ids):
            out[rows] = noise
    return out


def noisy_eaps(eaps: np.ndarray, dt: float, config: NoiseConfig, keys: Sequence[str] = (), copy: int = 0,
               row_offset: int = 0, row_ids: Sequence[int] | None = None) -> np.ndarray:
    """EAPs plus recording noise, float32, computed in chunks of rows.

    Parameters
    ----------
    eaps : ndarray, shape (N, n_contacts, n_samples)
        Noise-free EAPs, µV (a memory-mapped array is read chunk by chunk).
    dt : float
        Sampling step, ms.
    config : NoiseConfig
        Kind, RMS, band and seed.
    keys, copy, row_offset, row_ids
        See :func:`recording_noise`.

    Returns
    -------
    ndarray, shape (N, n_contacts, n_samples), float32, µV
        A new array (a float32 copy of ``eaps`` when ``config.rms_uv == 0``).

    Raises
    ------
    ValueError
        If ``eaps`` is not 3-dimensional, ``dt`` not positive, or the band reaches Nyquist.
    """
    if not isinstance(eaps, np.ndarray):  # a memory-mapped array stays one (read chunk by chunk)
        eaps = np.asarray(eaps)
    if eaps.ndim != 3:
        raise ValueError(f"eaps must have shape (N, n_contacts, n_samples), got {eaps.shape}")
    n_rows, n_contacts, n_samples = eaps.shape
    out = np.empty((n_rows, n_contacts, n_samples), dtype=np.float32)
    if not config.enabled:
        config.check_sampling(dt)
        out[...] = eaps
        return out
    for rows, noise in _chunks(config, n_rows, n_contacts, n_samples, dt, keys, copy, row_offset, row_ids):
        np.add(np.asarray(eaps[rows], dtype=np.float32), noise, out=out[rows])
    return out


def noisy_dataset(dataset: EAPDataset, config: NoiseConfig, copy: int = 0) -> EAPDataset:
    """The dataset with noisy EAPs (keys: its cell and rotation); positions, rotations etc. unchanged.

    The noise settings, their key and the copy index are added to the provenance under ``"noise"``.
    """
    eaps = noisy_eaps(dataset.eaps, dataset.dt, config, keys=(dataset.cell_name, dataset.rotation), copy=copy)
    provenance = {**dataset.provenance, "noise": {**asdict(config), "copy": int(copy), "key": config.key()}}
    return replace(dataset, eaps=eaps, provenance=provenance)


def noisy_copies(dataset: EAPDataset, config: NoiseConfig, n_copies: int) -> Iterator[EAPDataset]:
    """``n_copies`` independently noisy versions of a dataset (copies 0 .. n_copies - 1), one at a time."""
    _check_int("n_copies", n_copies, 1)
    for copy in range(n_copies):
        yield noisy_dataset(dataset, config, copy)


def augmented_feature_table(dataset: EAPDataset, mtype: str, excitatory: bool, config: NoiseConfig,
                            n_copies: int, threshold: float = features.SILENT_THRESHOLD) -> pd.DataFrame:
    """Feature tables of ``n_copies`` noisy copies of a dataset, stacked, with a ``noise_copy`` column.

    Every EAP appears ``n_copies`` times with the same ``eap_id``: split such a table by
    ``eap_id`` (or by a group above it), never by row, so that copies of one EAP do not end
    up on both sides of a split.

    Returns
    -------
    DataFrame
        The columns of :func:`eap_assets.core.features.feature_table` plus ``noise_copy``
        (int16) after ``eap_id``; rows ordered by copy, then EAP.
    """
    tables = []
    for copy, noisy in enumerate(noisy_copies(dataset, config, n_copies)):
        table = features.feature_table(noisy, mtype, excitatory, threshold)
        table.insert(1, "noise_copy", np.int16(copy))
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
