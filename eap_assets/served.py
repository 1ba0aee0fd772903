"""The served classifier as an MLflow ``pyfunc`` (imported only where classifiers are logged or loaded:
importing MLflow's pyfunc takes a second or two).

Logged and registered by :func:`eap_assets.registry.log_classifier`; loaded by
``mlflow.pyfunc.load_model("models:/unit_classifier_<probe>_<rotation>_<task>@champion")`` (or
:func:`eap_assets.registry.load_classifier`). The class is pickled by reference: loading it imports
this module from the installed ``eap_assets`` package, a requirement of the logged model.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from eap_assets.core.recording import RecordingSpec
from eap_assets.registry import FLAVOURS


class ServedClassifier(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` of a :class:`~eap_assets.core.classifier.UnitClassifier`.

    Artefacts: ``native`` (the fitted model saved in its own MLflow flavour), ``serving.json``
    (kind, task, classes, input spec, calibration) and ``ood.npz`` (the out-of-distribution
    reference). ``predict`` takes waveforms already mapped onto the input (N, contacts, samples)
    float32 (:func:`eap_assets.core.recording.to_model_input`) and returns one row per unit:
    ``predicted``, ``confidence``, ``abstained``, ``ood``, ``ood_reason``, ``p_<class>``.
    """

    classifier = None

    def load_context(self, context) -> None:
        from eap_assets.core.calibration import Calibration, OODReference
        from eap_assets.core.classifier import UnitClassifier

        meta = json.loads(Path(context.artifacts["serving"]).read_text())
        native = getattr(mlflow, FLAVOURS[meta["kind"]]).load_model(context.artifacts["native"])
        with np.load(context.artifacts["ood"]) as arrays:
            ood = OODReference.from_arrays(dict(arrays))
        self.classifier = UnitClassifier(kind=meta["kind"], task=meta["task"], model=native, classes=meta["classes"],
                                         spec=RecordingSpec.from_json(meta["spec"]),
                                         calibration=Calibration(**meta["calibration"]), ood=ood)

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        return self.classifier.predict(np.asarray(model_input, dtype=np.float32))


