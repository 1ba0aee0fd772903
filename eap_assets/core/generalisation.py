"""Honest generalisation: every model kind under recording noise, on unseen morphology variants,
unseen soma distances and unseen cell types.

A random split over EAPs of the same cell models measures "recognise this model again".  This
module measures what a user classifying real spikes needs, on one rotation mode and task:

* ``in_distribution`` -- the registered models (trained on noise-free EAPs, paper split) on
  their own test rows, at every noise level of the sweep;
* ``unseen_variants`` -- models trained on some morphology variants of each m-type (the BBP
  models and their scaled / jittered copies, :mod:`eap_assets.core.variants`) and tested on the
  variants never seen in training (:func:`eap_assets.core.splits.variant_split`);
* ``unseen_distances`` -- trained on somata at x in [10, 40] µm from the probe plane, tested on
  x in (40, 60] µm (the original models only, :func:`eap_assets.core.splits.distance_split`);
* ``hold_out_type`` (binary task) -- E/I of each cell type by a model trained on the other
  types (:func:`eap_assets.core.splits.leave_one_type_out`), the mean over the types reported.

The trained protocols (all but ``in_distribution``) train with **noise augmentation**: each
training and validation EAP appears ``train_copies`` times, each copy with its own noise draw at
an RMS drawn uniformly from ``train_noise_uv`` per EAP.  Every protocol is tested at every level
of ``noise_levels_uv`` (default 0, 5, 10, 20, 40 µV RMS), with one noise draw per test EAP scaled
to each level (common random numbers: the curve over levels is not blurred by redrawing).

Efficiency: the features of every EAP under every noise condition -- the 200 amplitude/width
features and the projections on each protocol's waveform PCA basis -- are computed in **one
pass** over the pool (:class:`FeatureBank`), one cell at a time; the models are then trained
and tested on those matrices.  Each protocol's waveform basis is fitted on (noisy) training
EAPs of that protocol only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd

from eap_assets.core import models, splits
from eap_assets.core.eaps import derived_seed, partition_seed
from eap_assets.core.features import SILENT_THRESHOLD, amplitude_width, probe_grid
from eap_assets.core.noise import NOISE_KINDS, NoiseConfig
from eap_assets.core.pool import EAPPool
from eap_assets.core.recording_set import RecordingSetConfig, build_recording_set, table_proba, train_on_table
from eap_assets.core.waveform import (WaveformConfig, WaveformModel, cap_components, fit_waveform_classifier,
                                     fit_waveform_projection, projection_rows)

#: Noise levels of the sweep, µV RMS.
NOISE_LEVELS_UV: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0)
PROTOCOLS: tuple[str, ...] = ("in_distribution", "unseen_variants", "unseen_distances", "hold_out_type")
#: The issue's targets: accuracy (%) on unseen morphology variants at the target noise level on
#: :data:`TARGET_ROTATION`, per task; and the hold-cell-type-out E/I mean over the cell types.
TARGETS: dict[str, float] = {"mtype": 90.0, "binary": 98.0}
HOLD_OUT_TARGET = 90.0
TARGET_ROTATION = "3drot"
#: Version of this code (part of the generalisation asset's key).
CODE_VERSION = "generalisation-1"
#: Version of :func:`run_recording_generalisation` (part of the ``recording_generalisation`` asset's key).
RECORDING_CODE_VERSION = "recording-generalisation-1"
Log = Callable[[str], None]


@dataclass(frozen=True)
class GeneralisationConfig:
    """Settings of the generalisation protocols.

    Attributes
    ----------
    noise_levels_uv : tuple of float
        Test noise levels, µV RMS.
    noise_kind : {"white", "band"}
        Kind of the recording noise (:class:`eap_assets.core.noise.NoiseConfig`), band ``band_hz``.
    train_copies : int
        Noisy copies of each training / validation EAP (0: train on the noise-free EAPs).
    train_noise_uv : (float, float)
        Range of the per-copy noise RMS of the augmentation, µV.
    variant_test_fraction : float
        Share of each m-type's morphologies (model and variants) held out as unseen.
    distance_train_um, distance_test_um : (float, float)
        Soma-distance bands (x, µm) of the distance protocol.
    validation_fraction : float
        Share of each protocol's training rows kept for validation (early stopping).
    kinds : tuple of str
        Model kinds trained by the variant and distance protocols.
    hold_out_kinds : tuple of str
        Model kinds trained for each held-out cell type (one model per type and kind).
    target_noise_uv : float
        The level at which confusions are reported (the issue's 10 µV).
    seed : int
        Root seed of the splits, the noise and the trainings.
    """

    noise_levels_uv: tuple[float, ...] = NOISE_LEVELS_UV
    noise_kind: str = "white"
    band_hz: tuple[float, float] = (300.0, 6000.0)
    train_copies: int = 2
    train_noise_uv: tuple[float, float] = (0.0, 20.0)
    variant_test_fraction: float = 0.25
    distance_train_um: tuple[float, float] = (10.0, 40.0)
    distance_test_um: tuple[float, float] = (40.0, 60.0)
    validation_fraction: float = 0.1
    kinds: tuple[str, ...] = models.KINDS
    hold_out_kinds: tuple[str, ...] = ("lgbm",)
    target_noise_uv: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.noise_levels_uv)
        if not levels or any(not np.isfinite(v) or v < 0 for v in levels) or 0.0 not in levels:
            raise ValueError(f"GeneralisationConfig.noise_levels_uv must be finite levels >= 0 µV including 0, "
                             f"got {self.noise_levels_uv!r}")
        object.__setattr__(self, "noise_levels_uv", tuple(sorted(set(levels))))
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"GeneralisationConfig.noise_kind {self.noise_kind!r} unknown; choose one of "
                             f"{', '.join(NOISE_KINDS)}")
        lo, hi = (float(v) for v in self.train_noise_uv)
        if not (0 <= lo <= hi and np.isfinite(hi)):
            raise ValueError(f"GeneralisationConfig.train_noise_uv must be (low, high) µV with 0 <= low <= high, "
                             f"got {self.train_noise_uv!r}")
        object.__setattr__(self, "train_noise_uv", (lo, hi))
        if isinstance(self.train_copies, bool) or not isinstance(self.train_copies, int) or self.train_copies < 0:
            raise ValueError(f"GeneralisationConfig.train_copies must be an integer >= 0, got {self.train_copies!r}")
        for name in ("kinds", "hold_out_kinds"):
            unknown = sorted(set(getattr(self, name)) - set(models.KINDS))
            if unknown:
                raise ValueError(f"GeneralisationConfig.{name}: unknown model kind(s) {unknown}; choose from "
                                 f"{', '.join(models.KINDS)}")
        if self.target_noise_uv not in self.noise_levels_uv:
            raise ValueError(f"GeneralisationConfig.target_noise_uv {self.target_noise_uv} is not one of the "
                             f"noise levels {self.noise_levels_uv}")

    def noise(self) -> NoiseConfig:
        """Kind, band and seed of the noise (the RMS is set per row)."""
        return NoiseConfig(rms_uv=1.0, kind=self.noise_kind, band_hz=self.band_hz, seed=self.seed)


@dataclass(frozen=True)
class Trainers:
    """How each model kind is trained (the pipeline's settings)."""

    cnn: models.CNNConfig = field(default_factory=models.CNNConfig)
    lgbm: models.LGBMConfig = field(default_factory=models.LGBMConfig)
    waveform: WaveformConfig = field(default_factory=WaveformConfig)


def level_name(level: float) -> str:
    """Name of the test condition at ``level`` µV (``"0uV"``, ``"10uV"``)."""
    return f"{level:g}uV"


def augmentation_levels(pool: EAPPool, config: GeneralisationConfig, copy: int) -> np.ndarray:
    """Noise RMS of every pool row in augmentation copy ``copy`` (>= 1), uniform in ``train_noise_uv``.

    Each cell draws from ``(seed, "augment", cell, rotation, copy)`` for all its EAP ids, so a row's
    level does not depend on the other cells of the pool.
    """
    lo, hi = config.train_noise_uv
    out = np.empty(len(pool))
    for cell, rows in pool.index.groupby("cell", sort=False).indices.items():
        rng = np.random.default_rng(partition_seed(config.seed, "augment", cell, pool.rotation, str(copy)))
        draws = rng.uniform(lo, hi, int(pool.index["eap_id"].to_numpy()[rows].max()) + 1)
        out[rows] = draws[pool.index["eap_id"].to_numpy()[rows]]
    return out


class FeatureBank:
    """Features of every pool row under every noise condition, computed in one pass.

    Conditions: ``"<L>uV"`` for each test level (noise copy 0 scaled to L) and ``"aug<k>"`` for
    each augmentation copy k = 1 .. ``train_copies`` (per-row RMS from :func:`augmentation_levels`).
    Columns of each matrix: amplitudes (contacts), widths (contacts), then ``n_components``
    projections on each waveform basis in ``bases`` order.
    """

    def __init__(self, pool: EAPPool, config: GeneralisationConfig, bases: Mapping[str, WaveformModel],
                 threshold: float = SILENT_THRESHOLD, log: Log = print):
        self.pool, self.config = pool, config
        self.n_contacts = pool.shape[0]
        self.slices: dict[str, slice] = {}
        start = 2 * self.n_contacts
        for name, basis in bases.items():
            self.slices[name] = slice(start, start + len(basis.components))
            start += len(basis.components)
        noise = config.noise()
        conditions = {level_name(level): (0, level) for level in config.noise_levels_uv}
        conditions.update({f"aug{k}": (k, augmentation_levels(pool, config, k))
                           for k in range(1, config.train_copies + 1)})

        def extract(x: np.ndarray) -> np.ndarray:
            amplitude, width = amplitude_width(x, pool.dt, threshold)
            return np.concatenate([amplitude, width, *(b.projections(x) for b in bases.values())], axis=1)

        rows = np.arange(len(pool))
        self.matrices: dict[str, np.ndarray] = {}
        for name, (copy, levels) in conditions.items():
            tick = time.perf_counter()
            self.matrices[name] = pool.map(rows, extract, noise, levels, copy).astype(np.float32, copy=False)
            log(f"features {name}: {len(rows)} EAPs in {time.perf_counter() - tick:.1f} s")

    @property
    def train_conditions(self) -> list[str]:
        """The conditions training and validation rows are taken in (clean when no augmentation)."""
        return [f"aug{k}" for k in range(1, self.config.train_copies + 1)] or [level_name(0.0)]

    def inputs(self, kind: str, condition: str, rows: np.ndarray, basis: str | None = None) -> np.ndarray:
        """Model input of ``kind`` for ``rows`` in ``condition``: images (cnn), 200 features (lgbm),
        200 features + the projections on ``basis`` (waveform)."""
        matrix = self.matrices[condition]
        flat = matrix[rows, :2 * self.n_contacts]
        if kind == "lgbm":
            return flat
        if kind == "cnn":
            grid = probe_grid(self.pool.probe)
            return np.stack([grid.to_image(flat[:, :self.n_contacts]), grid.to_image(flat[:, self.n_contacts:])],
                            axis=-1)
        if kind == "waveform":
            return np.concatenate([flat, matrix[rows, self.slices[basis]]], axis=1)
        raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(models.KINDS)}")

    def training_set(self, kind: str, rows: np.ndarray, y: np.ndarray, basis: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and labels of ``rows`` in every training condition, stacked (copies of one EAP together)."""
        xs = [self.inputs(kind, c, rows, basis) for c in self.train_conditions]
        return np.concatenate(xs), np.tile(y[rows], len(xs))


def fit_basis(pool: EAPPool, rows: np.ndarray, config: GeneralisationConfig, waveform: WaveformConfig, name: str,
              log: Log = print) -> WaveformModel:
    """A waveform PCA basis fitted on (a seeded sample of ``max_fit_rows`` of) the training ``rows`` of
    one protocol, with the first augmentation copy's noise (noise-free without augmentation);
    ``n_components`` capped at what the sample gives (:func:`~eap_assets.core.waveform.cap_components`)."""
    seed = derived_seed(config.seed, "basis", name)
    sample = rows[projection_rows(len(rows), waveform, seed)]
    waveform, capped = cap_components(waveform, len(sample), *pool.shape)
    if capped:
        log(f"{name}: {capped}")
    levels = augmentation_levels(pool, config, 1)[sample] if config.train_copies else 0.0
    eaps = pool.gather(sample, config.noise(), levels, copy=1)
    return fit_waveform_projection(eaps, replace(waveform, max_fit_rows=None), seed, pool.dt)


def protocol_splits(pool: EAPPool, task: str, config: GeneralisationConfig) -> dict[str, np.ndarray]:
    """Split labels over the pool rows of each trained protocol (rows outside it: ``excluded``).

    ``unseen_variants`` needs at least two morphologies of some m-type; ``hold_out_type`` is made
    for the binary task only (one fold per cell type, keyed ``hold_out_type/<type>``).
    """
    index = pool.index
    out: dict[str, np.ndarray] = {}
    if index.groupby("mtype")["cell"].nunique().max() >= 2:
        out["unseen_variants"] = splits.variant_split(index["cell"], index["mtype"], config.variant_test_fraction,
                                                      config.validation_fraction, config.seed)
    original = (index["cell"] == index["parent"]).to_numpy()
    labels = np.full(len(index), splits.EXCLUDED, dtype=object)
    labels[original] = splits.distance_split(
        index.loc[original, "x"], config.distance_train_um, config.distance_test_um,
        strata=index.loc[original, "cell"], validation_fraction=config.validation_fraction, seed=config.seed,
        outside="exclude")
    out["unseen_distances"] = labels.astype(str)
    if task == "binary":
        for held, labels in splits.leave_one_type_out(index["mtype"], config.validation_fraction, config.seed,
                                                      strata=index["cell"]).items():
            out[f"hold_out_type/{held}"] = labels
    return out


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], top: int = 3) -> list[dict]:
    """The ``top`` most frequent confusions (true -> predicted, share of the true class's rows)."""
    pairs = []
    for t in np.unique(y_true):
        mask = y_true == t
        predicted, counts = np.unique(y_pred[mask], return_counts=True)
        pairs += [{"true": classes[t], "predicted": classes[p], "share": round(float(c / mask.sum()), 4)}
                  for p, c in zip(predicted, counts) if p != t]
    return sorted(pairs, key=lambda d: -d["share"])[:top]


def _classifier(trained: models.TrainedModel) -> models.TrainedModel:
    """What predicts from bank inputs: the model itself, or a waveform model's LightGBM on its features."""
    if isinstance(trained.model, WaveformModel):
        return models.TrainedModel(model=trained.model.classifier, history=trained.history, best_step=0, steps_run=0,
                                   seconds=0.0, classes=trained.classes)
    return trained


@dataclass
class GeneralisationResult:
    """Accuracies of one rotation x task.

    Attributes
    ----------
    rows : DataFrame
        Long format: ``protocol, kind, noise_uv, accuracy`` (%, per held-out type for
        ``hold_out_type`` with its ``held_type``), ``n_test``, ``n_train``.
    details : dict
        Per protocol and kind: cells on each side, training rows and time, steps, the top
        confusions and per-class accuracy at the target level.
    """

    rotation: str
    task: str
    classes: list[str]
    config: GeneralisationConfig
    rows: pd.DataFrame
    details: dict

    def summary(self) -> pd.DataFrame:
        """Accuracy (%) per protocol x kind (rows) and noise level (columns); ``hold_out_type`` is the
        mean over the held-out types."""
        return (self.rows.groupby(["protocol", "kind", "noise_uv"])["accuracy"].mean()
                .unstack("noise_uv").reindex(columns=list(self.config.noise_levels_uv)))

    def to_dict(self) -> dict:
        return {"rotation": self.rotation, "task": self.task, "classes": self.classes,
                "config": asdict(self.config), "code_version": CODE_VERSION,
                "rows": self.rows.to_dict(orient="records"), "details": self.details}


def _train(kind: str, bank: FeatureBank, rows_train: np.ndarray, rows_val: np.ndarray, y: np.ndarray,
           classes: list[str], trainers: Trainers, seed: int, basis: str | None, bases: Mapping[str, WaveformModel]
           ) -> models.TrainedModel:
    x_train, y_train = bank.training_set(kind, rows_train, y, basis)
    x_val, y_val = bank.training_set(kind, rows_val, y, basis)
    if kind == "cnn":
        return models.train_cnn(x_train, y_train, x_val, y_val, len(classes), trainers.cnn, seed, classes=classes)
    if kind == "lgbm":
        return models.train_lgbm(x_train, y_train, x_val, y_val, len(classes), trainers.lgbm, seed, classes)
    model = bases[basis]
    model = WaveformModel(model.config, model.dt, model.n_contacts, model.n_samples, model.mean, model.components)
    return fit_waveform_classifier(model, x_train, y_train, x_val, y_val, len(classes), seed, classes)


def run_generalisation(pool: EAPPool, task: str, config: GeneralisationConfig, trainers: Trainers,
                       registered: Mapping[str, object] | None = None, registered_test_rows: np.ndarray | None = None,
                       log: Log = print) -> GeneralisationResult:
    """Every protocol of :data:`PROTOCOLS` on one pool (rotation) and task.

    Parameters
    ----------
    pool : EAPPool
        The rotation's EAPs: original models and their variants (``parent`` column).
    task : {"binary", "mtype"}
    config : GeneralisationConfig
    trainers : Trainers
        Training settings of each kind (the same as the registered models').
    registered : mapping, optional
        Kind -> fitted model of the in-distribution protocol (a keras model, a LightGBM
        classifier or a :class:`WaveformModel`, e.g. the registry's champions), its classes in
        the task's label order.
    registered_test_rows : ndarray of int, optional
        Pool rows of their test split (:meth:`EAPPool.rows_of` of the training table's test rows).
    log : callable

    Returns
    -------
    GeneralisationResult
    """
    y, classes = models.task_labels(pool.index, task)
    split_by_protocol = protocol_splits(pool, task, config)
    registered = dict(registered or {})
    waveform_bases: dict[str, WaveformModel] = {}
    if "waveform" in registered:
        waveform_bases["in_distribution"] = registered["waveform"]
    for name, labels in split_by_protocol.items():
        protocol = name.split("/")[0]
        wants = config.hold_out_kinds if protocol == "hold_out_type" else config.kinds
        if "waveform" in wants:
            tick = time.perf_counter()
            waveform_bases[name] = fit_basis(pool, np.flatnonzero(labels == "train"), config, trainers.waveform, name,
                                             log)
            log(f"waveform basis {name}: {time.perf_counter() - tick:.1f} s")
    bank = FeatureBank(pool, config, waveform_bases, trainers.waveform.threshold, log)
    records: list[dict] = []
    details: dict = {}

    def test(protocol: str, kind: str, classifier: models.TrainedModel, rows: np.ndarray, basis: str | None,
             n_train: int, extra: dict | None = None) -> dict:
        info = {}
        for level in config.noise_levels_uv:
            pred = classifier.predict(bank.inputs(kind, level_name(level), rows, basis))
            accuracy = 100.0 * float((pred == y[rows]).mean())
            records.append({"protocol": protocol, "kind": kind, "noise_uv": level, "accuracy": accuracy,
                            "n_test": int(rows.size), "n_train": n_train, **(extra or {})})
            if level == config.target_noise_uv:
                info = {"confusions_at_target": _confusions(y[rows], pred, classes),
                        "per_class_at_target": {classes[c]: round(100.0 * float((pred[y[rows] == c] == c).mean()), 2)
                                                for c in np.unique(y[rows])}}
        return info

    if registered and registered_test_rows is not None:
        for kind, model in registered.items():
            classifier = models.TrainedModel(model=model.classifier if kind == "waveform" else model,
                                             history=pd.DataFrame(), best_step=0, steps_run=0, seconds=0.0,
                                             classes=classes)
            details.setdefault("in_distribution", {})[kind] = test(
                "in_distribution", kind, classifier, np.asarray(registered_test_rows), "in_distribution", 0)
    cells = pool.index["cell"].to_numpy()
    for name, labels in split_by_protocol.items():
        protocol, _, held = name.partition("/")
        train, val, rows_test = (np.flatnonzero(labels == s) for s in splits.SPLITS)
        kinds = config.hold_out_kinds if protocol == "hold_out_type" else config.kinds
        if np.unique(y[train]).size < 2 or rows_test.size == 0:  # e.g. the other cell types are all E
            log(f"{name}: skipped (training rows of a single class, or no test rows)")
            details.setdefault(name, {})["skipped"] = "training rows of a single class, or no test rows"
            continue
        for kind in kinds:
            seed = derived_seed(config.seed, "generalisation", name, kind, task, int31=True)
            tick = time.perf_counter()
            trained = _train(kind, bank, train, val, y, classes, trainers, seed, name, waveform_bases)
            seconds = time.perf_counter() - tick
            n_train = int(train.size * len(bank.train_conditions))
            extra = {"held_type": held} if held else {}
            info = test(protocol, kind, _classifier(trained), rows_test, name, n_train, extra)
            info.update({"train_cells": sorted(set(cells[train])), "test_cells": sorted(set(cells[rows_test])),
                         "n_train": n_train, "n_validation": int(val.size * len(bank.train_conditions)),
                         "n_test": int(rows_test.size), "train_seconds": round(seconds, 1),
                         "steps_run": int(trained.steps_run), "best_step": int(trained.best_step)})
            key = protocol if not held else f"{protocol}/{held}"
            details.setdefault(key, {})[kind] = info
            accuracy = next(r["accuracy"] for r in reversed(records) if r["noise_uv"] == config.target_noise_uv)
            log(f"{name} {kind}: {n_train} training rows, {seconds:.0f} s; "
                f"{accuracy:.2f} % at {config.target_noise_uv:g} µV")
    frame = pd.DataFrame(records)
    if "held_type" not in frame.columns:
        frame["held_type"] = None
    return GeneralisationResult(pool.rotation, task, classes, config, frame, details)


#: Protocols of the models for real recordings (:func:`run_recording_generalisation`): the champions'
#: recipe on its own per-cell split over EAPs (the reference), on unseen morphology variants, and E/I of
#: each cell type by a model trained on the others.
RECORDING_PROTOCOLS: tuple[str, ...] = ("own_split", "unseen_variants", "hold_out_type")


@dataclass(frozen=True)
class RecordingGeneralisationConfig:
    """Settings of the generalisation protocols of the models for real recordings.

    Attributes
    ----------
    protocols : tuple of str
        The protocols to run, among :data:`RECORDING_PROTOCOLS` (``hold_out_type`` for the binary task only).
    kinds : tuple of str
        Model kinds trained per protocol (and per held-out type).
    variant_test_fraction : float
        Share of each m-type's morphologies held out by ``unseen_variants``.
    validation_fraction : float
        Share of each protocol's training rows kept for validation (early stopping).
    max_eaps_per_cell : int or None
        Each cell's first accepted EAPs used (every protocol builds its own training set: this bounds the
        cost of the 13 hold-out folds); None: all.
    held_out : tuple of str or None
        Cell types held out by ``hold_out_type`` (default: every type).
    seed : int
        Root seed of the splits and the trainings.
    """

    protocols: tuple[str, ...] = RECORDING_PROTOCOLS
    kinds: tuple[str, ...] = ("lgbm", "waveform")
    variant_test_fraction: float = 0.25
    validation_fraction: float = 0.1
    max_eaps_per_cell: int | None = 3000
    held_out: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(RECORDING_PROTOCOLS))
        if not self.protocols or unknown:
            raise ValueError(f"RecordingGeneralisationConfig.protocols must be among {', '.join(RECORDING_PROTOCOLS)}, "
                             f"got {self.protocols!r}")
        object.__setattr__(self, "protocols", tuple(self.protocols))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        unknown = sorted(set(self.kinds) - set(models.KINDS))
        if not self.kinds or unknown:
            raise ValueError(f"RecordingGeneralisationConfig.kinds must be model kinds among "
                             f"{', '.join(models.KINDS)}, got {self.kinds!r}")
        if self.max_eaps_per_cell is not None and (isinstance(self.max_eaps_per_cell, bool)
                                                   or int(self.max_eaps_per_cell) < 10):
            raise ValueError(f"RecordingGeneralisationConfig.max_eaps_per_cell must be None or >= 10, got "
                             f"{self.max_eaps_per_cell!r}")
        if not 0 < self.variant_test_fraction < 1:
            raise ValueError(f"RecordingGeneralisationConfig.variant_test_fraction must be in (0, 1), got "
                             f"{self.variant_test_fraction!r}")


def recording_protocol_splits(index: pd.DataFrame, task: str, config: RecordingGeneralisationConfig
                              ) -> dict[str, Callable[[pd.DataFrame], np.ndarray] | None]:
    """The split of each recording protocol of ``config.protocols``, as
    :func:`~eap_assets.core.recording_set.build_recording_set` takes it (None: its own per-cell split over
    EAPs): ``own_split``; ``unseen_variants`` when some m-type of the pool (``index``: cell, parent, mtype per
    row) has two morphologies or more; for the binary task ``hold_out_type/<type>`` per cell type."""
    out: dict[str, Callable[[pd.DataFrame], np.ndarray] | None] = {}
    if "own_split" in config.protocols:
        out["own_split"] = None
    if "unseen_variants" in config.protocols and index.groupby("mtype")["cell"].nunique().max() >= 2:
        out["unseen_variants"] = lambda eaps: splits.variant_split(
            eaps["cell"], eaps["mtype"], config.variant_test_fraction, config.validation_fraction, config.seed)
    if task == "binary" and "hold_out_type" in config.protocols:
        types = sorted(set(index["mtype"]))
        unknown = sorted(set(config.held_out or ()) - set(types))
        if unknown:
            raise ValueError(f"RecordingGeneralisationConfig.held_out: cell type(s) {unknown} not in the pool "
                             f"({', '.join(types)})")
        for held in config.held_out or types:
            out[f"hold_out_type/{held}"] = lambda eaps, held=held: splits.leave_one_type_out(
                eaps["mtype"], config.validation_fraction, config.seed, strata=eaps["cell"], held_out=[held])[held]
    return out


def run_recording_generalisation(pool: EAPPool, task: str, set_config: RecordingSetConfig,
                                 config: RecordingGeneralisationConfig,
                                 cnn: models.CNNConfig, lgbm: models.LGBMConfig, log: Log = print) -> dict:
    """The recipe of the models for real recordings under every protocol of :data:`RECORDING_PROTOCOLS`.

    Each protocol builds its own training set from the pool (:func:`~eap_assets.core.recording_set.build_recording_set`
    with the protocol's split: augmented copies, detection rule, and a waveform basis fitted on that split's
    training rows only), trains every kind of ``config.kinds`` on its ``train`` rows (early stopping on
    ``validation``) and scores its ``test`` rows: templates as the champions' own test split has them (the
    augmentation's recording noise, spikes per template, correlation, filter and jitter).

    Parameters
    ----------
    pool : EAPPool
        The rotation's recording EAPs: models and their morphology variants (``parent``).
    task : {"binary", "mtype"}
    set_config : RecordingSetConfig
        The champions' training-set settings (spec, augmentation, detection rule, basis).
    config : RecordingGeneralisationConfig
    cnn, lgbm : CNNConfig, LGBMConfig
        The champions' training settings.
    log : callable

    Returns
    -------
    dict
        ``rows``: one per protocol x kind (x held-out type): ``protocol, kind, held_type, accuracy`` (%),
        ``n_train, n_test``; ``details``: per protocol and kind, the cells on each side, the accuracy per
        class and per test cell, the top confusions, training time and rounds; ``sets``: rows per split
        and seconds of each protocol's training set; ``classes``, ``config``.
    """
    records: list[dict] = []
    details: dict = {}
    sets: dict = {}
    classes = models.task_labels(pool.index, task)[1]
    for name, split in recording_protocol_splits(pool.index, task, config).items():
        protocol, _, held = name.partition("/")
        table, basis, summary = build_recording_set(pool, set_config, log, split=split,
                                                    max_eaps_per_cell=config.max_eaps_per_cell)
        sets[name] = {"rows": summary["rows"], "seconds": summary["seconds"]}
        y, set_classes = models.task_labels(table, task)  # this set's classes: the model's output order
        labels = table["split"].to_numpy()
        train, test = labels == "train", labels == "test"
        if np.unique(y[train]).size < 2 or not test.any():
            details.setdefault(name, {})["skipped"] = "training rows of a single class, or no test rows"
            log(f"recording {name}: skipped (training rows of a single class, or no test rows)")
            continue
        cells = table["cell"].to_numpy()
        for kind in config.kinds:
            seed = derived_seed(config.seed, "recording-generalisation", name, kind, task, int31=True)
            trained, _ = train_on_table(kind, table, basis, task, set_config.spec, cnn, lgbm, seed)
            pred = table_proba(kind, trained.model, table[test], set_config.spec, set_classes).argmax(axis=1)
            truth = y[test]
            accuracy = 100.0 * float((pred == truth).mean())
            records.append({"protocol": protocol, "kind": kind, "held_type": held or None, "accuracy": accuracy,
                            "n_train": int(train.sum()), "n_test": int(test.sum())})
            details.setdefault(name, {})[kind] = {
                "train_cells": sorted(set(cells[train])), "test_cells": sorted(set(cells[test])),
                "per_class": {set_classes[c]: round(100.0 * float((pred[truth == c] == c).mean()), 2)
                              for c in np.unique(truth)},
                "per_test_cell": {c: round(100.0 * float((pred[cells[test] == c] == truth[cells[test] == c]).mean()), 2)
                                  for c in sorted(set(cells[test]))},
                "confusions": _confusions(truth, pred, set_classes),
                "train_seconds": round(float(trained.seconds), 1), "steps_run": int(trained.steps_run),
                "best_step": int(trained.best_step)}
            log(f"recording {name} {kind}: {int(train.sum())} training rows, {trained.seconds:.0f} s; "
                f"{accuracy:.2f} % on {int(test.sum())} test rows")
    return {"task": task, "rotation": pool.rotation, "classes": classes, "config": asdict(config),
            "code_version": RECORDING_CODE_VERSION, "rows": records, "details": details, "sets": sets}
