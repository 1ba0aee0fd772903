"""Spike features per contact (paper §II-C): amplitude and width, laid out as probe images.

Negative peak = minimum over time; positive peak = maximum at or after it (an initial positive
peak from capacitive currents is ignored); amplitude = positive - negative peak; width = time
between them.  Where the amplitude is below ``threshold`` (5 µV) the amplitude is set to 0 and
the width to the whole window (7 ms at paper settings).
"""

from __future__ import annotations

import numpy as np

from eap_assets.core.probe import probe_grid

#: Amplitude below which a contact is treated as silent, µV (paper: 5).
SILENT_THRESHOLD = 5.0


def amplitude_width(eaps: np.ndarray, dt: float, threshold: float = SILENT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Amplitude (µV) and width (ms) of each contact's waveform.

    Parameters
    ----------
    eaps : ndarray, shape (..., n_samples)
        Waveforms, µV.
    dt : float
        Sampling step, ms.
    threshold : float
        Amplitudes below this are set to 0 and their width to ``n_samples * dt``.

    Returns
    -------
    amplitude, width : ndarrays, shape (...,), float32
    """
    eaps = np.asarray(eaps)
    if eaps.ndim < 1 or eaps.shape[-1] < 2:
        raise ValueError(f"eaps must have a time axis of >= 2 samples, got shape {eaps.shape}")
    n_t = eaps.shape[-1]
    neg_idx = np.argmin(eaps, axis=-1)
    after = np.where(np.arange(n_t) >= neg_idx[..., None], eaps, -np.inf)
    pos_idx = np.argmax(after, axis=-1)
    neg = np.take_along_axis(eaps, neg_idx[..., None], axis=-1)[..., 0]
    pos = np.take_along_axis(eaps, pos_idx[..., None], axis=-1)[..., 0]
    amplitude = (pos - neg).astype(np.float32)
    width = ((pos_idx - neg_idx) * dt).astype(np.float32)
    silent = amplitude < threshold
    amplitude[silent] = 0.0
    width[silent] = n_t * dt
    return amplitude, width


def feature_images(eaps: np.ndarray, dt: float, probe: str = "SqMEA-10-15",
                   threshold: float = SILENT_THRESHOLD) -> np.ndarray:
    """Amplitude and width images of EAPs on a grid probe.

    Parameters
    ----------
    eaps : ndarray, shape (N, n_contacts, n_samples)
        EAPs, µV.
    dt : float
        Sampling step, ms.
    probe : str
        MEAutility name of the (grid) probe the EAPs were computed on.
    threshold : float
        Silent-contact amplitude, µV.

    Returns
    -------
    ndarray, shape (N, rows, cols, 2), float32
        Channel 0 amplitude (µV), channel 1 width (ms).
    """
    eaps = np.asarray(eaps)
    grid = probe_grid(probe)
    n_contacts = grid.row.size
    if eaps.ndim != 3 or eaps.shape[1] != n_contacts:
        raise ValueError(f"eaps must have shape (N, {n_contacts}, n_samples) for probe {probe!r}, got {eaps.shape}")
    if not np.all(np.isfinite(eaps)):
        bad = np.flatnonzero(~np.isfinite(eaps).all(axis=(1, 2)))
        raise ValueError(f"eaps contain NaN or inf (EAP rows {bad[:10].tolist()}{'...' if bad.size > 10 else ''})")
    amplitude, width = amplitude_width(eaps, dt, threshold)
    return np.stack([grid.to_image(amplitude), grid.to_image(width)], axis=-1)
