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
    """

    kind: str
    task: str
    model: object
    classes: list[str]
    spec: RecordingSpec
    calibration: Calibration = field(default_factory=Calibration)
    ood: OODReference | None = None

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """Uncalibrated class probabilities of mapped waveforms (N, C, spec.n_samples)."""
        return predict_proba(self.model, self.kind, kind_input(self.kind, windows, self.spec), self.classes)

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
