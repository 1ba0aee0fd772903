"""A classifier on the full spatio-temporal EAP waveform: PCA projections + amplitude/width features -> LightGBM.

The paper's inputs (:mod:`eap_assets.core.features`) keep two numbers per contact (amplitude, width)
and drop the rest of the waveform: the shape of the trough and repolarisation, the initial
positive (capacitive) phase, and the delays between contacts (the backpropagation across the
footprint).  This model keeps them: every EAP (contacts x samples) is flattened, optionally cut
to a time window and decimated, and projected on the first ``n_components`` principal
components of the *training* waveforms; those projections are concatenated with the 200
amplitude/width features and fed to LightGBM (:func:`eap_assets.core.models.train_lgbm`, same
settings, same determinism).

Choices
-------
* **Global PCA** (one basis over the flattened contacts x time vector), not per-contact PCA: a
  global component is a whole spatio-temporal footprint, so it captures how the waveform
  *changes across contacts* (delays, shape gradients along the dendrite) — the information the
  per-contact features miss.  Per-contact PCA would share one temporal basis over contacts and
  give 100 x k numbers whose position on the grid varies from EAP to EAP (soma placements
  differ), which a tree model uses poorly.  Contacts are in probe order, so the projection is
  tied to the probe (checked at prediction time).
* **Raw µV, not normalised per EAP** (``normalise="none"``); ``"peak"`` divides each EAP by its
  largest absolute value before the projection (shape only; amplitude stays in the features).
* **Randomized SVD on float32** (``sklearn.decomposition.PCA(svd_solver="randomized")``, seeded):
  the paper-scale training set (10 530 x 100 x 224) is 940 MB as float32; decimating time by 2
  (default, 16 kHz, still ~10 samples across a 0.3 ms trough) halves it, and the randomized
  solver never forms the 11 200 x 11 200 covariance.  ``max_fit_rows`` optionally fits the basis
  on a seeded subsample of the training rows.
* **No peak alignment**: every EAP is cut from the same intracellular spike window (−2 / +5 ms
  around the somatic spike), so the waveforms are already aligned in time; re-aligning on each
  EAP's own trough would remove the inter-contact delays on which the model relies.
* The PCA is fitted on the training rows only; validation rows are used for LightGBM's early
  stopping exactly as in :func:`~eap_assets.core.models.train_lgbm`, and nothing else is looked
  at.

Input: the raw EAPs, shape (N, n_contacts, n_samples), µV (float32).  The amplitude/width
features are computed inside (:func:`eap_assets.core.features.amplitude_width`, the same function
that fills the feature tables), so a fitted :class:`WaveformModel` classifies templates directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from eap_assets.core import models
from eap_assets.core.features import SILENT_THRESHOLD, amplitude_width, check_finite

#: Model kind name (registry, Dagster).
KIND = "waveform"
#: How EAPs may be scaled before the projection.
NORMALISATIONS: tuple[str, ...] = ("none", "peak")
#: Rows per chunk when transforming (bounds the memory of feature extraction / projection).
TRANSFORM_CHUNK = 2048


def _positive_int(owner: str, name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")


@dataclass(frozen=True)
class WaveformConfig:
    """Settings of the waveform model.

    Attributes
    ----------
    n_components : int
        Principal components of the flattened (contacts x kept samples) waveform.
    decimate : int
        Keep every ``decimate``-th sample of the window (1: all; 2: 16 kHz at dt = 2**-5 ms).
    window : (start, stop) or None
        Sample range ``[start, stop)`` of each waveform used by the projection (None: all).  The
        amplitude/width features always use the whole waveform, as in the feature tables.
    normalise : str
        ``"none"`` (raw µV) or ``"peak"`` (each EAP divided by its largest absolute value).
    max_fit_rows : int or None
        Fit the PCA on at most this many training rows (seeded subsample); None: all of them.
    threshold : float
        Silent-contact amplitude of the features, µV (the feature tables' 5 µV).
    lgbm : models.LGBMConfig
        LightGBM settings (shared with the ``lgbm`` kind).
    """

    n_components: int = 100
    decimate: int = 2
    window: tuple[int, int] | None = None
    normalise: str = "none"
    max_fit_rows: int | None = None
    threshold: float = SILENT_THRESHOLD
    lgbm: models.LGBMConfig = field(default_factory=models.LGBMConfig)

    def __post_init__(self) -> None:
        _positive_int("WaveformConfig", "n_components", self.n_components)
        _positive_int("WaveformConfig", "decimate", self.decimate)
        _positive_int("WaveformConfig", "max_fit_rows", self.max_fit_rows, allow_none=True)
        if self.window is not None:
            if len(self.window) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                            for v in self.window) or not 0 <= self.window[0] < self.window[1]:
                raise ValueError(f"WaveformConfig.window must be None or (start, stop) sample indices with "
                                 f"0 <= start < stop, got {self.window!r}")
            object.__setattr__(self, "window", (int(self.window[0]), int(self.window[1])))
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"WaveformConfig.normalise must be one of {list(NORMALISATIONS)}, got {self.normalise!r}")
        if not (np.isfinite(self.threshold) and self.threshold >= 0):
            raise ValueError(f"WaveformConfig.threshold must be a finite amplitude >= 0 µV, got {self.threshold!r}")
        if not isinstance(self.lgbm, models.LGBMConfig):
            raise ValueError(f"WaveformConfig.lgbm must be a models.LGBMConfig, got {type(self.lgbm).__name__}")

    def samples(self, n_samples: int) -> slice:
        """The slice of a waveform's samples the projection uses.

        Raises
        ------
        ValueError
            If the window does not fit in ``n_samples`` or leaves fewer than 2 samples.
        """
        start, stop = self.window if self.window is not None else (0, n_samples)
        if stop > n_samples:
            raise ValueError(f"WaveformConfig.window {self.window} does not fit waveforms of {n_samples} samples")
        kept = len(range(start, stop, self.decimate))
        if kept < 2:
            raise ValueError(f"window {start}:{stop} decimated by {self.decimate} keeps {kept} sample(s); need >= 2")
        return slice(start, stop, self.decimate)


class WaveformModel:
    """Fitted waveform classifier: PCA basis of the training waveforms + LightGBM.

    Takes raw EAPs (N, n_contacts, n_samples) in µV; :meth:`predict_proba` gives (N, n_classes)
    in label order.  Plain attributes and a fitted ``lightgbm.LGBMClassifier``: picklable, and
    loggable with MLflow's sklearn flavour (it has ``predict`` / ``predict_proba``; the class is
    importable from the installed package at load time).

    Attributes
    ----------
    config : WaveformConfig
    dt : float or None
        Sampling step of the training EAPs, ms (the widths use it).
    n_contacts, n_samples : int
        Shape of the EAPs the model takes.
    mean, components : ndarrays, float32
        PCA centre (F,) and basis (n_components, F) over the flattened kept samples.
    classifier : lightgbm.LGBMClassifier
        On ``[amplitudes (n_contacts), widths (n_contacts), projections (n_components)]``.
    classes : list of str
    """

    kind = KIND

    def __init__(self, config: WaveformConfig, dt: float, n_contacts: int, n_samples: int, mean: np.ndarray,
                 components: np.ndarray, classifier: Any = None, classes: list[str] | None = None):
        self.config = config
        self.dt = float(dt)
        self.n_contacts = int(n_contacts)
        self.n_samples = int(n_samples)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.components = np.asarray(components, dtype=np.float32)
        self.classifier = classifier
        self.classes = list(classes or [])

    # ---- input checks and the transform ---------------------------------------------------

    def check_input(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        """``x`` as float32 (N, n_contacts, n_samples); ValueError for another shape or NaN / inf."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.n_contacts, self.n_samples):
            raise ValueError(f"{name} must be raw EAPs of shape (N, {self.n_contacts} contacts, {self.n_samples} "
                             f"samples) (the model's input), got shape {x.shape}")
        return check_finite(x, f"{name} contains")

    def features(self, x: np.ndarray) -> np.ndarray:
        """The model's feature matrix (N, 2 x n_contacts + n_components), float32: amplitudes (µV),
        widths (ms) as in the feature tables, then the PCA projections."""
        x = self.check_input(x)
        out = np.empty((len(x), 2 * self.n_contacts + len(self.components)), dtype=np.float32)
        for i in range(0, len(x), TRANSFORM_CHUNK):
            out[i:i + TRANSFORM_CHUNK] = _features(x[i:i + TRANSFORM_CHUNK], self.dt, self.config, self.mean,
                                                   self.components)
        return out

    def projections(self, x: np.ndarray) -> np.ndarray:
        """The PCA projections alone (N, n_components), float32: the last columns of :meth:`features`."""
        x = self.check_input(x)
        out = np.empty((len(x), len(self.components)), dtype=np.float32)
        for i in range(0, len(x), TRANSFORM_CHUNK):
            out[i:i + TRANSFORM_CHUNK] = (projection_input(x[i:i + TRANSFORM_CHUNK], self.config)
                                          - self.mean) @ self.components.T
        return out

    # ---- prediction -----------------------------------------------------------------------

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, n_classes), float64, columns in label order."""
        if self.classifier is None:
            raise ValueError("WaveformModel has no fitted classifier")
        lgbm = models.TrainedModel(model=self.classifier, history=pd.DataFrame(), best_step=0, steps_run=0,
                                   seconds=0.0, classes=self.classes)
        return lgbm.predict_proba(self.features(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Most probable class label of each row (int64)."""
        return np.argmax(self.predict_proba(x), axis=1).astype(np.int64)


def projection_input(x: np.ndarray, config: WaveformConfig) -> np.ndarray:
    """Windowed, decimated, optionally peak-normalised waveforms flattened to (N, contacts x kept), float32."""
    kept = x[:, :, config.samples(x.shape[2])]
    flat = np.ascontiguousarray(kept, dtype=np.float32).reshape(len(x), -1)
    if config.normalise == "peak":
        peak = np.abs(flat).max(axis=1, keepdims=True)
        flat = flat / np.where(peak > 0, peak, 1.0).astype(np.float32)
    return flat


def _features(x: np.ndarray, dt: float, config: WaveformConfig, mean: np.ndarray, components: np.ndarray
              ) -> np.ndarray:
    amplitude, width = amplitude_width(x, dt, config.threshold)
    projection = (projection_input(x, config) - mean) @ components.T
    return np.concatenate([amplitude, width, projection], axis=1).astype(np.float32)


def projection_rows(n_rows: int, config: WaveformConfig, seed: int) -> np.ndarray:
    """Which of ``n_rows`` training rows the PCA is fitted on: all, or a seeded sample of
    ``config.max_fit_rows`` (sorted) -- the one draw every fit of the basis uses."""
    rows = np.arange(n_rows)
    if config.max_fit_rows is not None and n_rows > config.max_fit_rows:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x57A7E]))
        rows = np.sort(rng.choice(n_rows, config.max_fit_rows, replace=False))
    return rows


def cap_components(config: WaveformConfig, n_fit_rows: int, n_contacts: int, n_samples: int
                   ) -> tuple[WaveformConfig, str | None]:
    """``config`` with ``n_components`` capped at what a PCA of ``n_fit_rows`` waveforms can give
    (the rows, the flattened window length), and a message saying so (None when unchanged).
    A small training set (a quick run, a narrow protocol) then still trains."""
    limit = max(1, min(n_fit_rows, n_contacts * len(range(n_samples)[config.samples(n_samples)])))
    if config.n_components <= limit:
        return config, None
    return (replace(config, n_components=limit),
            f"waveform model: n_components={config.n_components} capped at {limit} (the PCA is fitted on "
            f"{n_fit_rows} training EAPs)")


def fit_projection(x_train: np.ndarray, config: WaveformConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA centre (F,) and basis (n_components, F) of the training waveforms (float32, randomized SVD).

    Raises
    ------
    ValueError
        If ``n_components`` exceeds the rows used or the flattened dimension.
    """
    from sklearn.decomposition import PCA

    rows = projection_rows(len(x_train), config, seed)
    flat = projection_input(x_train[rows] if len(rows) < len(x_train) else x_train, config)
    limit = min(flat.shape)
    if config.n_components > limit:
        raise ValueError(f"WaveformConfig.n_components={config.n_components} exceeds min(rows used for the PCA "
                         f"{flat.shape[0]}, flattened waveform length {flat.shape[1]}) = {limit}")
    pca = PCA(n_components=config.n_components, svd_solver="randomized", random_state=int(seed) % (2**32))
    pca.fit(flat)
    return pca.mean_.astype(np.float32), pca.components_.astype(np.float32)


def train_waveform(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, n_classes: int,
                   config: WaveformConfig, seed: int, classes: list[str] | None = None, dt: float = 2.0**-5
                   ) -> models.TrainedModel:
    """Fit the PCA on the training waveforms, then LightGBM on features + projections.

    Parameters
    ----------
    x_train, y_train : ndarrays, shapes (N, n_contacts, n_samples) and (N,)
        Raw training EAPs (µV) and integer labels.  Only these rows shape the PCA basis.
    x_val, y_val : ndarrays
        Validation EAPs and labels: LightGBM's early stopping and history.
    n_classes : int
    config : WaveformConfig
    seed : int
        Seeds the randomized PCA (and its row subsample) and LightGBM.
    classes : list of str, optional
        Class names stored in the result.
    dt : float
        Sampling step of the EAPs, ms (widths; default the project's 2**-5 ms).

    Returns
    -------
    models.TrainedModel
        Kind ``"waveform"`` (the :class:`WaveformModel` declares it); ``model`` is the :class:`WaveformModel`,
        ``predict_proba`` takes raw EAPs.  ``history`` / ``best_step`` / ``steps_run`` are
        LightGBM's; ``seconds`` covers the PCA, the feature extraction and the boosting.

    Raises
    ------
    ValueError
        Wrong shapes (not 3-D, contacts / samples differ between train and validation), NaN / inf,
        bad labels, too many components, a non-positive ``dt``.
    """
    start = time.perf_counter()
    x_train = np.asarray(x_train, dtype=np.float32)
    x_val = np.asarray(x_val, dtype=np.float32)
    for name, x in (("x_train", x_train), ("x_val", x_val)):
        if x.ndim != 3:
            raise ValueError(f"{name} must be raw EAPs of shape (N, contacts, samples), got shape {x.shape}")
    if x_val.shape[1:] != x_train.shape[1:]:
        raise ValueError(f"x_val has EAPs of shape {x_val.shape[1:]}, x_train {x_train.shape[1:]} "
                         "(contacts, samples must match)")
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError("train_waveform needs non-empty training and validation sets")
    check_finite(x_val, "x_val contains")
    model = fit_waveform_projection(x_train, config, seed, dt)
    trained = fit_waveform_classifier(model, model.features(x_train), y_train, model.features(x_val), y_val,
                                      n_classes, seed, classes)
    trained.seconds = time.perf_counter() - start
    return trained


def fit_waveform_projection(x_train: np.ndarray, config: WaveformConfig, seed: int, dt: float = 2.0**-5
                            ) -> WaveformModel:
    """First half of :func:`train_waveform`: a :class:`WaveformModel` whose PCA basis is fitted on
    ``x_train`` (raw training EAPs; only these rows, or ``config.max_fit_rows`` of them, shape it),
    without a classifier yet.

    With the basis fixed, :meth:`WaveformModel.features` can be computed chunk by chunk (e.g. one
    cell's EAPs at a time, :func:`fit_waveform_classifier` after), so a large training set never
    has to be in memory as raw waveforms.

    Raises
    ------
    ValueError
        Not a WaveformConfig, a non-positive ``dt``, ``x_train`` not 3-D / empty / with NaN or inf,
        a window that does not fit, too many components.
    """
    if not isinstance(config, WaveformConfig):
        raise ValueError(f"config must be a WaveformConfig, got {type(config).__name__}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive sampling step in ms, got {dt!r}")
    x_train = np.asarray(x_train, dtype=np.float32)
    if x_train.ndim != 3 or len(x_train) == 0:
        raise ValueError(f"x_train must be raw EAPs of shape (N >= 1, contacts, samples), got shape {x_train.shape}")
    check_finite(x_train, "x_train contains")
    config.samples(x_train.shape[2])  # window fits
    mean, components = fit_projection(x_train, config, seed)
    return WaveformModel(config, dt, x_train.shape[1], x_train.shape[2], mean, components)


def fit_waveform_classifier(model: WaveformModel, f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray,
                            y_val: np.ndarray, n_classes: int, seed: int, classes: list[str] | None = None
                            ) -> models.TrainedModel:
    """Second half of :func:`train_waveform`: LightGBM (``model.config.lgbm``) on feature matrices
    ``model.features(...)`` of the training and validation EAPs; the classifier is stored in ``model``.

    Returns
    -------
    models.TrainedModel
        ``model`` is the (now complete) :class:`WaveformModel`; history etc. are LightGBM's.

    Raises
    ------
    ValueError
        If the feature matrices do not have the model's width (as :func:`models.train_lgbm` for labels).
    """
    width = 2 * model.n_contacts + len(model.components)
    for name, f in (("f_train", f_train), ("f_val", f_val)):
        if np.ndim(f) != 2 or np.shape(f)[1] != width:
            raise ValueError(f"{name} must be the model's features (N, {width}) (WaveformModel.features), "
                             f"got shape {np.shape(f)}")
    fitted = models.train_lgbm(f_train, y_train, f_val, y_val, n_classes, model.config.lgbm, seed, classes)
    model.classifier = fitted.model
    model.classes = fitted.classes
    return models.TrainedModel(model=model, history=fitted.history, best_step=fitted.best_step,
                               steps_run=fitted.steps_run, seconds=fitted.seconds, classes=fitted.classes)
