"""Calibrated confidence, abstention and out-of-distribution flags for a classifier's answers.

* **Temperature scaling** (Guo et al. 2017): the class probabilities ``p`` of a fitted model are
  replaced by ``softmax(log p / T)``, one temperature ``T`` for all classes fitted by minimising
  the negative log-likelihood on the *validation* split. It keeps the predicted class and only
  changes how sure the model says it is.
* **Expected calibration error** (ECE): the confidence (largest probability) is cut into
  ``n_bins`` equal-width bins; ECE is the mean over bins, weighted by their share of rows, of
  ``|accuracy - mean confidence|``. :func:`reliability` gives the per-bin table of the reliability diagram.
* **Abstention**: a unit whose calibrated confidence is below a threshold chosen on the
  validation split gets ``abstained = True`` (its predicted type is still given): the smallest
  threshold whose retained validation rows reach ``target_accuracy`` (:func:`abstain_threshold`).
* **Out of distribution** (:class:`OODReference`): a unit is flagged, with the reason, when its
  peak-to-peak amplitude is outside the training range, its largest contact is on the probe's
  edge (the unit may be centred off the probe: part of its footprint is not recorded), or its
  waveform is far from the training waveforms (relative residual after projecting on the
  training waveforms' principal components above the validation split's ``quantile``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

#: Bins of the expected calibration error and of the reliability diagram.
ECE_BINS = 15
#: Seeded draws of :func:`calibrated_ece_range`.
ECE_RANGE_DRAWS = 4000
_EPS = 1e-12


def _check_proba(proba: np.ndarray, what: str = "probabilities") -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"{what} must have shape (rows, classes >= 2), got {proba.shape}")
    if not np.all(np.isfinite(proba)) or (proba < -1e-9).any():
        raise ValueError(f"{what} must be finite and >= 0")
    return proba


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row (T = 1 returns the normalised input)."""
    logits = np.log(np.clip(_check_proba(proba), _EPS, None)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def negative_log_likelihood(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean of ``-log p[label]`` (probabilities clipped at 1e-12)."""
    proba = _check_proba(proba)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(labels)), labels], _EPS, None))))


def fit_temperature(proba: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (bounded scalar search).

    Raises
    ------
    ValueError
        For mismatched shapes, labels outside the classes, or no rows.
    """
    from scipy.optimize import minimize_scalar

    proba = _check_proba(proba)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(proba),) or not len(labels):
        raise ValueError(f"labels must be one per row of the probabilities ({len(proba)}), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= proba.shape[1]:
        raise ValueError(f"labels must lie in [0, {proba.shape[1]})")
    # search log T: the likelihood is smooth in it and the bounds are symmetric around T = 1
    result = minimize_scalar(lambda log_t: negative_log_likelihood(apply_temperature(proba, np.exp(log_t)), labels),
                             bounds=tuple(np.log(bounds)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def _confidence_bins(confidence: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_bins + 1`` equal-width bin edges over [0, 1] and each confidence's bin (right-closed;
    a confidence of 0 falls in the first bin)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return edges, np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)


def reliability(proba: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Per confidence bin: range, rows, mean confidence and accuracy (the reliability diagram's table)."""
    proba = _check_proba(proba)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == labels
    edges, which = _confidence_bins(confidence, n_bins)
    rows = []
    for b in range(n_bins):
        mine = which == b
        rows.append({"low": edges[b], "high": edges[b + 1], "rows": int(mine.sum()),
                     "confidence": float(confidence[mine].mean()) if mine.any() else np.nan,
                     "accuracy": float(correct[mine].mean()) if mine.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: sum over confidence bins of (share of rows) x |accuracy - mean confidence|."""
    table = reliability(proba, labels, n_bins)
    filled = table[table["rows"] > 0]
    if filled.empty:
        return float("nan")
    weights = filled["rows"] / filled["rows"].sum()
    return float((weights * (filled["accuracy"] - filled["confidence"]).abs()).sum())


def calibrated_ece_range(proba: np.ndarray, level: float = 0.95, draws: int = ECE_RANGE_DRAWS, seed: int = 0,
                         n_bins: int = ECE_BINS) -> tuple[float, float]:
    """The ECE that a perfectly calibrated classifier with these confidences shows on this many rows.

    ECE over few rows is biased upwards: even a calibrated classifier's bins miss their confidence by
    chance. This is the equal-tailed ``level`` range of that ECE (consistency resampling, Bröcker & Smith
    2007): in each of ``draws`` seeded draws every row is correct with probability its confidence, and
    the ECE of those outcomes is taken with the same bins. An observed ECE inside the range is no
    evidence of miscalibration on these rows.

    Parameters
    ----------
    proba : ndarray, shape (n_rows, n_classes)
        The (calibrated) class probabilities of the rows.
    """
    proba = _check_proba(proba)
    confidence = proba.max(axis=1)
    _, which = _confidence_bins(confidence, n_bins)
    one_hot = np.zeros((len(confidence), n_bins))
    one_hot[np.arange(len(confidence)), which] = 1.0
    rng = np.random.default_rng(seed)
    # per bin, share of rows x |accuracy - mean confidence| = |sum over its rows of (correct - confidence)| / rows
    surprise = (rng.random((draws, len(confidence))) < confidence).astype(float) - confidence
    eces = np.abs(surprise @ one_hot).sum(axis=1) / len(confidence)
    low, high = np.quantile(eces, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def abstain_threshold(confidence: np.ndarray, correct: np.ndarray, target_accuracy: float) -> float:
    """The smallest confidence threshold whose retained rows (confidence >= threshold) are at least
    ``target_accuracy`` correct; 0 when every row together already is, and just above the largest
    confidence (abstain on everything) when no threshold reaches it.

    Parameters
    ----------
    confidence : ndarray (N,)
        Calibrated confidence of each validation row.
    correct : ndarray of bool (N,)
        Whether its prediction is right.
    target_accuracy : float
        In (0, 1].
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or not len(confidence):
        raise ValueError("confidence and correct must be non-empty and of one length")
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {target_accuracy!r}")
    order = np.argsort(-confidence, kind="stable")
    conf, hits = confidence[order], correct[order]
    accuracy_kept = np.cumsum(hits) / np.arange(1, len(hits) + 1)  # keeping the k most confident rows
    # thresholds can only fall between distinct confidences: the last row of each run of equal values
    last_of_value = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero(last_of_value & (accuracy_kept >= target_accuracy))
    if not ok.size:
        return float(np.nextafter(conf[0], np.inf))
    k = ok.max()
    return 0.0 if k == len(conf) - 1 else float(conf[k])


@dataclass
class Calibration:
    """What turns a model's probabilities into the per-unit answer: the temperature, the
    abstention threshold, and the validation/test figures that justify them."""

    temperature: float = 1.0
    threshold: float = 0.0
    target_accuracy: float = 0.95
    validation: dict | None = None  # ece_before/after, accuracy, coverage at the threshold

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        return apply_temperature(proba, self.temperature)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fit(cls, proba: np.ndarray, labels: np.ndarray, target_accuracy: float) -> Calibration:
        """Temperature and abstention threshold from validation probabilities and labels."""
        temperature = fit_temperature(proba, labels)
        calibrated = apply_temperature(proba, temperature)
        confidence = calibrated.max(axis=1)
        correct = calibrated.argmax(axis=1) == np.asarray(labels)
        threshold = abstain_threshold(confidence, correct, target_accuracy)
        kept = confidence >= threshold
        return cls(temperature=temperature, threshold=threshold, target_accuracy=target_accuracy, validation={
            "rows": int(len(labels)), "accuracy": float(correct.mean()),
            "ece_before": expected_calibration_error(proba, labels),
            "ece_after": expected_calibration_error(calibrated, labels),
            "nll_before": negative_log_likelihood(proba, labels), "nll_after": negative_log_likelihood(calibrated, labels),
            "coverage": float(kept.mean()), "accuracy_kept": float(correct[kept].mean()) if kept.any() else float("nan")})


@dataclass
class OODReference:
    """What the training data looked like, to flag units unlike it.

    Attributes
    ----------
    amplitude_range_uv : (float, float)
        Peak-to-peak range of the training inputs (the ``quantile`` tails cut off), µV.
    edge : ndarray of bool (C,)
        Contacts on the boundary of the model's probe.
    mean, components : ndarrays
        Principal components of the training inputs (flattened, as the waveform model's basis).
    residual_threshold : float
        Relative residual above which a waveform is far from the training data (the validation
        split's ``quantile``).
    quantile : float
    """

    amplitude_range_uv: tuple[float, float]
    edge: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    residual_threshold: float
    quantile: float = 0.995
    decimate: int = 1

    def flatten(self, windows: np.ndarray) -> np.ndarray:
        """Model inputs (N, C, T) as the flat vectors the components span: every ``decimate``-th sample."""
        windows = np.asarray(windows, dtype=np.float32)
        return np.ascontiguousarray(windows[:, :, ::self.decimate]).reshape(len(windows), -1)

    def residual(self, flat: np.ndarray) -> np.ndarray:
        """Relative residual of flattened inputs (N, F) after projection on the components: in [0, 1]."""
        centred = np.asarray(flat, dtype=np.float32) - self.mean
        projected = (centred @ self.components.T) @ self.components
        energy = np.einsum("nf,nf->n", centred, centred)
        left = np.einsum("nf,nf->n", centred - projected, centred - projected)
        return np.where(energy > 0, left / np.maximum(energy, _EPS), 0.0)

    @classmethod
    def fit(cls, amplitude_train: np.ndarray, residual_validation: np.ndarray, edge: np.ndarray, mean: np.ndarray,
            components: np.ndarray, decimate: int = 1, quantile: float = 0.995) -> OODReference:
        """Amplitude range from training amplitudes, residual threshold from the validation inputs'
        residuals (:meth:`residual`, e.g. the recording training set's ``residual`` column)."""
        low, high = np.quantile(np.asarray(amplitude_train, dtype=np.float64), [1 - quantile, quantile])
        return cls((float(low), float(high)), np.asarray(edge, dtype=bool), np.asarray(mean, np.float32),
                   np.asarray(components, np.float32),
                   residual_threshold=float(np.quantile(np.asarray(residual_validation, np.float64), quantile)),
                   quantile=quantile, decimate=int(decimate))

    def flags(self, amplitude_uv: np.ndarray, peak_channel: np.ndarray, windows: np.ndarray
              ) -> tuple[np.ndarray, list[str]]:
        """(out of distribution, reasons) per unit for model inputs ``windows`` (N, C, T); reasons
        joined by "; " (empty when in distribution)."""
        amplitude_uv = np.asarray(amplitude_uv, dtype=np.float64)
        residual = self.residual(self.flatten(windows))
        low, high = self.amplitude_range_uv
        reasons = []
        for amp, channel, res in zip(amplitude_uv, np.asarray(peak_channel), residual):
            why = []
            if amp < low:
                why.append(f"amplitude {amp:.0f} µV below the training range ({low:.0f}-{high:.0f} µV)")
            elif amp > high:
                why.append(f"amplitude {amp:.0f} µV above the training range ({low:.0f}-{high:.0f} µV)")
            if self.edge[int(channel)]:
                why.append(f"largest on edge contact {int(channel)} of the probe (the unit may lie beyond it)")
            if res > self.residual_threshold:
                why.append(f"waveform far from the training data (residual {res:.2f} > {self.residual_threshold:.2f})")
            reasons.append("; ".join(why))
        return np.array([bool(r) for r in reasons]), reasons

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"amplitude_range_uv": np.asarray(self.amplitude_range_uv), "edge": self.edge, "mean": self.mean,
                "components": self.components, "residual_threshold": np.asarray(self.residual_threshold),
                "quantile": np.asarray(self.quantile), "decimate": np.asarray(self.decimate)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OODReference:
        return cls(tuple(float(v) for v in arrays["amplitude_range_uv"]), np.asarray(arrays["edge"], bool),
                   np.asarray(arrays["mean"], np.float32), np.asarray(arrays["components"], np.float32),
                   float(arrays["residual_threshold"]), float(arrays["quantile"]), int(arrays["decimate"]))
