"""The per-unit answer of a trained model: predicted type, calibrated confidence, abstention, OOD flag.

A :class:`UnitClassifier` bundles what serving needs besides the fitted model itself: the input
spec (:class:`~eap_assets.core.recording.RecordingSpec`, how waveforms become the model's input),
the class names, the calibration (temperature and abstention threshold,
:class:`~eap_assets.core.calibration.Calibration`) and the out-of-distribution reference
(:class:`~eap_assets.core.calibration.OODReference`). It takes waveforms already mapped onto the
model's input (:func:`eap_assets.core.recording.to_model_input`) and returns one row per unit.
No MLflow here: :mod:`eap_assets.registry` stores and loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from eap_assets.core.calibration import Calibration, OODReference
from eap_assets.core.eaps import contact_peak_to_peak
from eap_assets.core.features import amplitude_width, feature_images
from eap_assets.core.models import MODEL_KINDS
from eap_assets.core.recording import RecordingSpec


def kind_input(kind: str, windows: np.ndarray, spec: RecordingSpec) -> np.ndarray:
    """A model kind's input from mapped waveforms: the CNN's amplitude/width images, LightGBM's
    amplitude/width features (amplitudes then widths, contact order), the waveform model's raw windows."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind {kind!r} unknown; choose one of {', '.join(MODEL_KINDS)}")
    model_input = MODEL_KINDS[kind].model_input
    if model_input == "images":
        return feature_images(windows, spec.dt_ms, spec.probe)
    if model_input == "features":
        amplitude, width = amplitude_width(windows, spec.dt_ms)
        return np.concatenate([amplitude, width], axis=1).astype(np.float32)
    return np.asarray(windows, dtype=np.float32)


def predict_proba(model: object, kind: str, x: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class probabilities of a fitted model of ``kind`` (one home: ``models.TrainedModel.predict_proba``)."""
    from eap_assets.core.models import TrainedModel

    trained = TrainedModel(model=model, history=pd.DataFrame(), best_step=0, steps_run=0, seconds=0.0,
                           classes=list(classes))
    return trained.predict_proba(x)


def merge_proba(proba: np.ndarray, model_classes: list[str], groups: dict[str, str], classes: list[str]) -> np.ndarray:
    """Probabilities of coarse classes as sums over a model's finer ones (E/I from an m-type model's
    probabilities: the marginal of its posterior).

    Parameters
    ----------
    proba : ndarray, shape (N, len(model_classes))
    model_classes : list of str
        The model's classes, in its output order.
    groups : dict
        The coarse class of every model class (``{"TTPC1": "E", "LBC": "I", ...}``).
    classes : list of str
        The coarse classes, in output order.

    Raises
    ------
    ValueError
        If ``proba`` does not have one column per model class, or a model class has no coarse class
        among ``classes``.
    """
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != len(model_classes):
        raise ValueError(f"probabilities of shape {proba.shape} do not match the {len(model_classes)} model classes")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in model_classes if groups.get(c) not in index]
    if unknown:
        raise ValueError(f"model classes {unknown} have no class among {classes} in the groups {groups}")
    member = np.zeros((len(model_classes), len(classes)), dtype=proba.dtype)
    for i, label in enumerate(model_classes):
        member[i, index[groups[label]]] = 1
    return proba @ member


@dataclass
class UnitClassifier:
    """A fitted model with its input spec, classes, calibration and OOD reference.

    Attributes
    ----------
    kind : str
        ``cnn``, ``lgbm`` or ``waveform``.
    task : str
        ``binary`` or ``mtype``.
    model : object
        The fitted model (Keras model, LightGBM classifier, :class:`~eap_assets.core.waveform.WaveformModel`).
    classes : list of str
        Class names in the model's output order.
    spec : RecordingSpec
    calibration : Calibration
        Identity (temperature 1, threshold 0) for a model that was not calibrated.
    ood : OODReference or None
        None: no reference (every unit's ``ood_reason`` says so).
    model_classes : list of str or None
        The model's own classes when it predicts finer ones than ``classes`` (an m-type model answering
        E/I); None: ``classes``.
    groups : dict or None
        With ``model_classes``: the class of ``classes`` that each model class belongs to; the answer's
        probabilities are sums over the groups (:func:`merge_proba`).
    """

    kind: str
    task: str
    model: object
    classes: list[str]
    spec: RecordingSpec
    calibration: Calibration = field(default_factory=Calibration)
    ood: OODReference | None = None
    model_classes: list[str] | None = None
    groups: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if (self.model_classes is None) != (self.groups is None):
            raise ValueError("UnitClassifier: model_classes and groups go together (a model of finer classes), "
                             f"got model_classes={self.model_classes!r}, groups={self.groups!r}")

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Uncalibrated class probabilities of mapped waveforms (N, C, spec.n_samples)."""
        x = kind_input(self.kind, windows, self.spec)
        if self.model_classes is None:
            return predict_proba(self.model, self.kind, x, self.classes)
        proba = predict_proba(self.model, self.kind, x, self.model_classes)
        return merge_proba(proba, self.model_classes, self.groups, self.classes)

    def predict(self, windows: np.ndarray, info: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
        """One row per unit: ``predicted``, ``confidence`` (calibrated), ``abstained``, ``ood``,
        ``ood_reason`` and ``p_<class>`` (calibrated probabilities).

        Parameters
        ----------
        windows : ndarray, shape (N, C, T)
            Mapped waveforms (:func:`eap_assets.core.recording.to_model_input`).
        info : dict, optional
            The mapping's per-unit ``peak_to_peak_uv`` and ``peak_channel`` (default: of ``windows``).
        """
        if info is None:
            p2p = contact_peak_to_peak(windows)
            info = {"peak_to_peak_uv": p2p.max(axis=-1), "peak_channel": p2p.argmax(axis=-1)}
        proba = self.calibration.calibrate(self.predict_proba(windows))
        confidence = proba.max(axis=1)
        frame = pd.DataFrame({"predicted": np.asarray(self.classes)[proba.argmax(axis=1)],
                              "confidence": confidence, "abstained": confidence < self.calibration.threshold})
        if self.ood is None:
            frame["ood"] = False
            frame["ood_reason"] = "not checked: the model has no out-of-distribution reference"
        else:
            flags, reasons = self.ood.flags(info["peak_to_peak_uv"], info["peak_channel"], windows)
            frame["ood"] = flags
            frame["ood_reason"] = reasons
        for i, label in enumerate(self.classes):
            frame[f"p_{label}"] = proba[:, i]
        return frame
