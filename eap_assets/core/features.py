"""Spike features per contact (paper §II-C): amplitude and width, laid out as probe images.

Negative peak = minimum over time; positive peak = maximum at or after it (an initial positive
peak from capacitive currents is ignored); amplitude = positive - negative peak; width = time
between them.  Where the amplitude is below ``threshold`` (5 µV) the amplitude is set to 0 and
the width to the whole window (7 ms at paper settings).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eap_assets.core.eaps import peak_to_peak
from eap_assets.core.probe import probe_grid

#: Version of the feature code (part of every feature table's key).
CODE_VERSION = "features-1"
#: Amplitude below which a contact is treated as silent, µV (paper: 5).
SILENT_THRESHOLD = 5.0
#: The labels a feature table may carry.
EI_LABELS: tuple[str, ...] = ("E", "I")


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


def check_finite(eaps: np.ndarray, what: str) -> np.ndarray:
    """``eaps`` (N, C, T) unchanged, or a ValueError ``"<what> NaN or inf in EAP rows [...]"``."""
    if not np.all(np.isfinite(eaps)):
        bad = np.flatnonzero(~np.isfinite(eaps).all(axis=(1, 2)))
        raise ValueError(f"{what} NaN or inf in EAP rows {bad[:10].tolist()}{'...' if bad.size > 10 else ''}")
    return eaps


def feature_images(eaps: np.ndarray, dt: float, probe: str = "SqMEA-10-15",
                   threshold: float = SILENT_THRESHOLD) -> np.ndarray:
    """Amplitude and width images of EAPs on a probe (:func:`eap_assets.core.probe.probe_grid`).

    Parameters
    ----------
    eaps : ndarray, shape (N, n_contacts, n_samples)
        EAPs, µV.
    dt : float
        Sampling step, ms.
    probe : str
        Probe spec the EAPs were computed on (see :func:`eap_assets.core.probe.get_probe`).
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
    check_finite(eaps, "eaps contain")
    amplitude, width = amplitude_width(eaps, dt, threshold)
    return np.stack([grid.to_image(amplitude), grid.to_image(width)], axis=-1)


def feature_columns(n_contacts: int) -> tuple[list[str], list[str]]:
    """Names of the per-contact amplitude (µV) and width (ms) columns, in probe contact order."""
    return [f"amp_c{c:03d}" for c in range(n_contacts)], [f"width_c{c:03d}" for c in range(n_contacts)]


def feature_table_schema(n_contacts: int) -> dict[str, str]:
    """Column -> numpy dtype name of a feature table (see :func:`feature_table`)."""
    amp, width = feature_columns(n_contacts)
    schema = {"eap_id": "int64", "cell": "object", "mtype": "object", "ei": "object", "excitatory": "bool",
              "rotation": "object", "spike_index": "int16", "x": "float64", "y": "float64", "z": "float64",
              "qx": "float64", "qy": "float64", "qz": "float64", "qw": "float64",
              "peak_to_peak_uv": "float32", "amplitude_max_uv": "float32", "width_at_max_ms": "float32"}
    schema.update({c: "float32" for c in amp + width})
    return schema


def feature_table(dataset, mtype: str, excitatory: bool, threshold: float = SILENT_THRESHOLD) -> pd.DataFrame:
    """One row per EAP of a dataset: identifiers, labels, placement and the 2 x n_contacts features.

    Parameters
    ----------
    dataset : eap_assets.core.eaps.EAPDataset
        Accepted EAPs of one cell and rotation.
    mtype : str
        The cell's m-type label.
    excitatory : bool
        The cell's E/I class.
    threshold : float
        Silent-contact amplitude, µV.

    Returns
    -------
    DataFrame
        Columns of :func:`feature_table_schema`: ``peak_to_peak_uv`` is the largest peak-to-peak
        over contacts (the acceptance rule's quantity), ``amplitude_max_uv`` / ``width_at_max_ms``
        the amplitude and width on the contact of largest amplitude (the paper's Fig. 1C), then
        ``amp_c*`` and ``width_c*`` per contact in the probe's contact order (the images are
        :func:`images_from_table`).
    """
    eaps = np.asarray(dataset.eaps)
    check_finite(eaps, f"EAP dataset {dataset.cell_name!r} x {dataset.rotation!r}:")
    amplitude, width = amplitude_width(eaps, dataset.dt, threshold)
    best = np.argmax(amplitude, axis=1)
    rows = np.arange(len(eaps))
    index = dataset.index_frame()
    amp_cols, width_cols = feature_columns(eaps.shape[1])
    table = pd.DataFrame({
        "eap_id": index["eap_id"], "cell": dataset.cell_name, "mtype": mtype, "ei": "E" if excitatory else "I",
        "excitatory": bool(excitatory), "rotation": dataset.rotation, "spike_index": index["spike_index"],
        **{c: index[c] for c in ("x", "y", "z", "qx", "qy", "qz", "qw")},
        "peak_to_peak_uv": peak_to_peak(eaps).astype(np.float32),
        "amplitude_max_uv": amplitude[rows, best], "width_at_max_ms": width[rows, best],
    })
    features = pd.DataFrame(np.concatenate([amplitude, width], axis=1), columns=amp_cols + width_cols)
    return pd.concat([table, features], axis=1)


def images_from_table(table: pd.DataFrame, probe: str = "SqMEA-10-15") -> np.ndarray:
    """Feature images (N, rows, cols, 2) from a feature table's ``amp_c*`` / ``width_c*`` columns."""
    grid = probe_grid(probe)
    amp_cols, width_cols = feature_columns(grid.row.size)
    missing = [c for c in amp_cols + width_cols if c not in table.columns]
    if missing:
        raise ValueError(f"feature table lacks {len(missing)} feature columns for probe {probe!r} (e.g. {missing[0]})")
    amplitude = table[amp_cols].to_numpy(np.float32)
    width = table[width_cols].to_numpy(np.float32)
    return np.stack([grid.to_image(amplitude), grid.to_image(width)], axis=-1)


def schema_problems(table: pd.DataFrame, n_contacts: int) -> list[str]:
    """Missing columns and wrong dtypes of a feature table against :func:`feature_table_schema` (empty: none)."""
    schema = feature_table_schema(n_contacts)
    problems = []
    missing = [c for c in schema if c not in table.columns]
    if missing:
        problems.append(f"missing columns {missing[:5]}{'...' if len(missing) > 5 else ''}")
    wrong = [(c, str(table[c].dtype), d) for c, d in schema.items() if c in table.columns and str(table[c].dtype) != d]
    problems += [f"column {c!r} has dtype {got}, expected {want}" for c, got, want in wrong[:5]]
    return problems


def nonfinite_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns holding NaN or inf."""
    numeric = table.select_dtypes(include="number")
    return numeric.columns[~np.isfinite(numeric.to_numpy(np.float64)).all(axis=0)].tolist()
