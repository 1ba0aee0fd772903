"""The training set of the models for real recordings: simulated EAPs as a sorted recording shows them.

From the EAP datasets of one rotation (simulated in the MEA-plane medium over the whole range of
positions where a unit is still detectable, :mod:`eap_assets.core.eaps`), every EAP is mapped
through :func:`eap_assets.core.recording.to_model_input` -- band-pass, alignment on its negative
peak, the model's window -- in ``augmentation.copies`` copies, each with its own filter order,
template noise (a recording's noise over the square root of the spikes averaged), noise
correlation across contacts and alignment offset (:class:`~eap_assets.core.recording.Augmentation`).

* **Detection rule**: an EAP takes part when its band-passed, noise-free peak-to-peak reaches
  ``min_amplitude_uv`` on one contact (what a sorter keeps); the others are left out, and counted.
* **Split**: per cell, seeded, over *EAPs* (all copies of an EAP are on one side): ``test``,
  ``validation`` (early stopping, calibration, the champion's choice) and ``train``.
* **Features in one pass**: per row, the amplitude / width of every contact (the paper's features,
  on the model's window) and the projections on the principal components of the training rows'
  waveforms (the waveform model's basis, fitted on a seeded subsample of ``train`` rows only):
  every model kind trains from the table, none reads waveforms again.

Same pool, config and seed => identical table (every draw is keyed by seed, cell, rotation, copy
and EAP id).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from eap_assets.core import models, splits
from eap_assets.core.eaps import derived_seed
from eap_assets.core.features import amplitude_width, feature_columns
from eap_assets.core.pool import EAPPool
from eap_assets.core.probe import model_plane_positions
from eap_assets.core.recording import (NOISE_MARGIN, Augmentation, NoiseBank, RecordingSpec, draw_copy,
                                       to_model_input)
from eap_assets.core.waveform import (WaveformConfig, WaveformModel, cap_components, fit_waveform_classifier,
                                     fit_waveform_projection, projection_input)

#: Version of this code (part of the training set's key).
CODE_VERSION = "recording-set-1"
#: Columns of the training set before the features.
INDEX_COLUMNS: tuple[str, ...] = ("cell", "parent", "mtype", "ei", "excitatory", "eap_id", "copy", "split", "x", "y",
                                  "z", "noise_uv", "shift", "filter_order", "peak_to_peak_uv", "peak_channel", "padded",
                                  "residual")
Log = Callable[[str], None]


def projection_columns(n_components: int) -> list[str]:
    """Names of the waveform projections' columns."""
    return [f"pc{i:03d}" for i in range(n_components)]


@dataclass(frozen=True)
class RecordingSetConfig:
    """Settings of a recording training set.

    Attributes
    ----------
    spec : RecordingSpec
        The models' input (band, window, rate, probe, medium).
    augmentation : Augmentation
        Copies and their noise / filter / jitter draws.
    min_amplitude_uv : float
        Detection rule: band-passed, noise-free peak-to-peak needed on one contact, µV.
    test_fraction, validation_fraction : float
        Per cell, over EAPs.
    waveform : WaveformConfig
        Basis of the waveform model (components, decimation, rows it is fitted on).
    seed : int
        Root seed of the split and the basis (the augmentation has its own).
    """

    spec: RecordingSpec = field(default_factory=RecordingSpec)
    augmentation: Augmentation = field(default_factory=Augmentation)
    min_amplitude_uv: float = 30.0
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    waveform: WaveformConfig = field(default_factory=lambda: WaveformConfig(max_fit_rows=4000))
    seed: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.min_amplitude_uv) and self.min_amplitude_uv >= 0):
            raise ValueError(f"RecordingSetConfig.min_amplitude_uv must be >= 0 µV, got {self.min_amplitude_uv!r}")

    def key(self) -> str:
        from eap_assets.core.keys import settings_hash

        return settings_hash("recording-set", CODE_VERSION, asdict(self))


#: EAPs of one cell mapped at once by :func:`build_recording_set` (a memory bound; the table does not depend on it).
CHUNK_EAPS = 2000


def _chunks(ids: np.ndarray, size: int) -> list[np.ndarray]:
    """``ids`` in consecutive pieces of at most ``size``."""
    if size < 1:
        raise ValueError(f"chunk_eaps must be >= 1, got {size!r}")
    return [ids[i:i + size] for i in range(0, len(ids), size)] or [ids]


def _windows(pool: EAPPool, cell: str, ids: np.ndarray, copy: int | None, config: RecordingSetConfig,
             bank: NoiseBank | None) -> tuple[np.ndarray, dict[str, np.ndarray], object]:
    """Model inputs of EAPs ``ids`` of ``cell``: clean (``copy`` None) or augmented copy ``copy``."""
    data = pool.datasets[cell]
    spec = config.spec
    eaps = np.asarray(data.eaps[np.sort(ids)], dtype=np.float32)
    order = np.argsort(np.argsort(ids))  # back to the order asked for
    eaps = eaps[order]
    draws = None
    if copy is not None:
        draws = draw_copy(config.augmentation, (cell, pool.rotation), copy, ids, spec, spec.n_samples + 2 * NOISE_MARGIN)
    windows, info = to_model_input(eaps, 1000.0 / data.dt, spec, filtered=False, draws=draws, bank=bank)
    return windows, info, draws


def build_recording_set(pool: EAPPool, config: RecordingSetConfig, log: Log | None = None,
                        split: Callable[[pd.DataFrame], np.ndarray] | None = None,
                        max_eaps_per_cell: int | None = None, chunk_eaps: int = CHUNK_EAPS
                        ) -> tuple[pd.DataFrame, WaveformModel, dict[str, object]]:
    """The augmented, split, featurised training set of one rotation, and the waveform basis.

    Parameters
    ----------
    pool : EAPPool
        The EAP datasets of the rotation's cells (simulated for recordings: MEA-plane medium).
    config : RecordingSetConfig
    log : callable, optional
    split : callable, optional
        Another split than the per-cell split over EAPs (a generalisation protocol's, e.g. by
        morphology or by cell type): called with one row per detected EAP (``cell``, ``parent``,
        ``mtype``, ``ei``), returns its labels (``train`` / ``validation`` / ``test`` / ``excluded``).
        The basis is fitted on the ``train`` rows of that split.
    max_eaps_per_cell : int, optional
        Use only each cell's first ``max_eaps_per_cell`` accepted EAPs (a random sample: positions and
        rotations are drawn independently per EAP).
    chunk_eaps : int
        EAPs mapped (band-passed, resampled, aligned) at once: bounds the memory, ~0.35 MB per EAP of the
        paper's 100 contacts x 224 samples; the table does not depend on it.

    Returns
    -------
    table : DataFrame
        One row per (detected EAP, copy): :data:`INDEX_COLUMNS`, then ``amp_c*`` (µV) and ``width_c*``
        (ms) per contact, then ``pc*`` (projections on the basis), float32. ``peak_to_peak_uv`` is
        the copy's band-passed, noise-free largest peak-to-peak; ``residual`` the share of the
        copy's (noisy, windowed) waveform energy the basis does not explain (out-of-distribution
        reference).
    basis : WaveformModel
        The principal components of the training rows' inputs (no classifier yet).
    summary : dict
        EAPs per cell, detected per cell, rows per split, seconds.

    Raises
    ------
    ValueError
        If the pool's probe or sampling step does not fit the spec, or a cell has no detected EAP.
    """
    start = time.perf_counter()
    spec = config.spec
    if pool.probe != spec.probe:
        raise ValueError(f"the EAP datasets are on probe {pool.probe!r}, the spec's is {spec.probe!r}")
    log = log or (lambda message: None)
    bank = NoiseBank(spec, model_plane_positions(spec.probe), config.augmentation.seed)
    cells = list(pool.datasets)
    # 1. detection rule on the clean mapping
    detected: dict[str, np.ndarray] = {}
    for cell in cells:
        ids = np.arange(min(pool.datasets[cell].accepted, max_eaps_per_cell or pool.datasets[cell].accepted))
        p2p = np.concatenate([_windows(pool, cell, chunk, None, config, None)[1]["peak_to_peak_uv"]
                              for chunk in _chunks(ids, chunk_eaps)])
        detected[cell] = ids[p2p >= config.min_amplitude_uv]
        if not detected[cell].size:
            raise ValueError(f"no EAP of cell {cell!r} ({pool.rotation}) reaches {config.min_amplitude_uv:g} µV "
                             "peak-to-peak once band-passed: lower min_amplitude_uv or simulate closer somata")
    # 2. split over EAPs, per cell
    eap_cells = np.concatenate([[c] * detected[c].size for c in cells])
    eap_ids = np.concatenate([detected[c] for c in cells])
    labels = pool.index.drop_duplicates("cell").set_index("cell")
    if split is None:
        split_seed = derived_seed(config.seed, "recording-split", pool.rotation)
        eap_split = splits.assign_split(eap_cells, config.test_fraction, config.validation_fraction, split_seed)
    else:
        eap_split = np.asarray(split(labels.loc[eap_cells, ["parent", "mtype", "ei"]].reset_index()), dtype=object)
        if eap_split.shape != eap_cells.shape or not set(eap_split) <= {*splits.SPLITS, splits.EXCLUDED}:
            raise ValueError(f"split must label each of the {eap_cells.size} detected EAPs with one of "
                             f"{', '.join((*splits.SPLITS, splits.EXCLUDED))}")
    frames = []
    for cell in cells:
        mine = eap_cells == cell
        for copy in range(config.augmentation.copies):
            positions = pool.datasets[cell].positions[eap_ids[mine]]
            frames.append(pd.DataFrame({
                "cell": cell, "parent": labels.at[cell, "parent"], "mtype": labels.at[cell, "mtype"],
                "ei": labels.at[cell, "ei"], "excitatory": bool(labels.at[cell, "excitatory"]),
                "eap_id": eap_ids[mine], "copy": np.int16(copy), "split": eap_split[mine],
                "x": positions[:, 0], "y": positions[:, 1], "z": positions[:, 2]}))
    table = pd.concat(frames, ignore_index=True)
    # 3. waveform basis on a seeded subsample of training rows
    basis_seed = derived_seed(config.seed, "recording-basis", pool.rotation, int31=True)
    train_rows = np.flatnonzero(table["split"].to_numpy() == "train")
    wf = config.waveform
    fit = train_rows
    if wf.max_fit_rows is not None and len(train_rows) > wf.max_fit_rows:
        rng = np.random.default_rng(np.random.SeedSequence([basis_seed, 0x57A7E]))
        fit = np.sort(rng.choice(train_rows, wf.max_fit_rows, replace=False))
    wf, capped = cap_components(replace(wf, max_fit_rows=None), len(fit), len(model_plane_positions(spec.probe)),
                                spec.n_samples)
    if capped:
        log(capped)
    fit_windows = []
    for (cell, copy), rows in table.iloc[fit].groupby(["cell", "copy"], sort=False).groups.items():
        fit_windows.append(_windows(pool, cell, table.loc[rows, "eap_id"].to_numpy(), int(copy), config, bank)[0])
    basis = fit_waveform_projection(np.concatenate(fit_windows), wf, basis_seed, spec.dt_ms)
    log(f"{pool.rotation}: waveform basis of {wf.n_components} components from {len(fit)} training rows")
    # 4. every row's features, one cell and copy at a time
    n_contacts = basis.n_contacts
    amp_cols, width_cols = feature_columns(n_contacts)
    pc_cols = projection_columns(len(basis.components))
    features = np.empty((len(table), 2 * n_contacts + len(pc_cols)), dtype=np.float32)
    extra = {name: np.empty(len(table), dtype=dtype) for name, dtype in (
        ("noise_uv", np.float32), ("shift", np.int16), ("filter_order", np.int8), ("peak_to_peak_uv", np.float32),
        ("peak_channel", np.int16), ("padded", np.int16), ("residual", np.float32))}
    for (cell, copy), group in table.groupby(["cell", "copy"], sort=False).groups.items():
        group = np.asarray(group)
        centred = None
        for part in _chunks(np.arange(len(group)), chunk_eaps):  # the mapping, the memory-heavy step, in chunks
            rows = group[part]
            windows, info, draws = _windows(pool, cell, table.loc[rows, "eap_id"].to_numpy(), int(copy), config, bank)
            amplitude, width = amplitude_width(windows, spec.dt_ms)
            features[rows, :2 * n_contacts] = np.concatenate([amplitude, width], axis=1)
            inputs = projection_input(windows, basis.config) - basis.mean
            if centred is None:
                centred = np.empty((len(group), inputs.shape[1]), dtype=inputs.dtype)
            centred[part] = inputs
            extra["noise_uv"][rows] = draws.noise_uv
            extra["shift"][rows] = draws.shift
            extra["filter_order"][rows] = draws.filter_order
            for name in ("peak_to_peak_uv", "peak_channel", "padded"):
                extra[name][rows] = info[name]
        # one product per cell and copy: BLAS rounds by the rows of a call, so chunking it would change the table
        projections = centred @ basis.components.T
        features[group, 2 * n_contacts:] = projections
        energy = np.einsum("nf,nf->n", centred, centred)
        extra["residual"][group] = np.where(energy > 0, 1.0 - np.einsum("nk,nk->n", projections, projections)
                                            / np.maximum(energy, 1e-12), 0.0)
    for name, values in extra.items():
        table[name] = values
    table = pd.concat([table[list(INDEX_COLUMNS)],
                       pd.DataFrame(features, columns=amp_cols + width_cols + pc_cols)], axis=1)
    summary = {"eaps": {c: int(pool.datasets[c].accepted) for c in cells},
               "detected": {c: int(detected[c].size) for c in cells},
               "rows": {s: int((table["split"] == s).sum()) for s in splits.SPLITS},
               "components": int(len(pc_cols)), "seconds": round(time.perf_counter() - start, 1)}
    log(f"{pool.rotation}: {len(table)} rows ({summary['rows']}) in {summary['seconds']} s")
    return table, basis, summary


def table_input(kind: str, table: pd.DataFrame, spec: RecordingSpec) -> np.ndarray:
    """A model kind's input from a recording training set's rows: ``cnn`` the amplitude/width images,
    ``lgbm`` the amplitude/width features, ``waveform`` those plus the projections."""
    from eap_assets.core.features import images_from_table

    n_contacts = len(model_plane_positions(spec.probe))
    amp, width = feature_columns(n_contacts)
    if kind == "cnn":
        return images_from_table(table, spec.probe)
    if kind == "lgbm":
        return table[amp + width].to_numpy(np.float32)
    if kind == "waveform":
        pcs = [c for c in table.columns if str(c).startswith("pc")]
        return table[amp + width + pcs].to_numpy(np.float32)
    raise ValueError(f"model kind {kind!r} unknown; choose one of cnn, lgbm, waveform")


def train_on_table(kind: str, table: pd.DataFrame, basis: WaveformModel, task: str, spec: RecordingSpec,
                   cnn: models.CNNConfig, lgbm: models.LGBMConfig, seed: int, on_step=None
                   ) -> tuple[models.TrainedModel, list[str]]:
    """A model of ``kind`` for ``task`` trained on a recording set's ``train`` rows, early stopping on its
    ``validation`` rows (the waveform model: a copy of ``basis`` with a LightGBM of ``lgbm`` on top).

    Returns
    -------
    trained : TrainedModel
    classes : list of str
        The task's classes in label order.
    """
    y, classes = models.task_labels(table, task)
    split = table["split"].to_numpy()
    train, val = split == "train", split == "validation"
    x = table_input(kind, table, spec)
    if kind == "cnn":
        trained = models.train_cnn(x[train], y[train], x[val], y[val], len(classes), cnn, seed, on_step=on_step,
                                   classes=classes)
    elif kind == "lgbm":
        trained = models.train_lgbm(x[train], y[train], x[val], y[val], len(classes), lgbm, seed, classes)
    else:
        model = WaveformModel(replace(basis.config, lgbm=lgbm), basis.dt, basis.n_contacts, basis.n_samples,
                              basis.mean, basis.components)
        start = time.perf_counter()
        trained = fit_waveform_classifier(model, x[train], y[train], x[val], y[val], len(classes), seed, classes)
        trained.seconds = time.perf_counter() - start
    return trained, classes


def table_proba(kind: str, model: object, table: pd.DataFrame, spec: RecordingSpec, classes: list[str]) -> np.ndarray:
    """Class probabilities of a fitted model of ``kind`` for training-set rows, from the stored features
    (the waveform model's classifier on the features and projections it would compute from the rows'
    waveforms): equal to the model on the mapped waveforms, without mapping them again."""
    from eap_assets.core.classifier import predict_proba

    x = table_input(kind, table, spec)
    if kind == "waveform":
        return predict_proba(model.classifier, "lgbm", x, classes)
    return predict_proba(model, kind, x, classes)
