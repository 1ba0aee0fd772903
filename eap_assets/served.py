"""The served classifier as an MLflow ``pyfunc`` (imported only where classifiers are logged or loaded:
importing MLflow's pyfunc takes a second or two).

Logged and registered by :func:`eap_assets.registry.log_classifier`; loaded by
``mlflow.pyfunc.load_model("models:/unit_classifier_<probe>_<rotation>_<task>@champion")`` (or
:func:`eap_assets.registry.load_classifier`). The class is pickled by reference: loading it imports
this module from the installed ``eap_assets`` package, a requirement of the logged model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import mlflow.pyfunc
import numpy as np

from eap_assets.core.recording import RecordingSpec
from eap_assets.registry import FLAVOURS


def stable_probe_copy(path: str | Path) -> Path:
    """A copy of a model's probe file that outlives MLflow's download folder: under the temporary
    directory, in a folder named by the probe (stem and contact hash), under its own file name (so its
    probe name is the one the model was trained with)."""
    from eap_assets.core.probe import probe_name
    from eap_assets.core.storage import atomic_path

    path = Path(path)
    copy = Path(tempfile.gettempdir()) / "eap_assets_probes" / probe_name(str(path)) / path.name
    if not copy.is_file():
        copy.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(copy) as tmp:
            shutil.copyfile(path, tmp)
    return copy


class ServedClassifier(mlflow.pyfunc.PythonModel):
    """MLflow ``pyfunc`` of a :class:`~eap_assets.core.classifier.UnitClassifier`.

    Artefacts: ``native`` (the fitted model saved in its own MLflow flavour), ``serving.json``
    (kind, task, classes, input spec, calibration; for an m-type model answering E/I its own classes
    and their groups), ``ood.npz`` (the out-of-distribution
    reference) and, for a model of a probe file, ``probe`` (a copy of the file: the loaded spec
    points at it, so serving works where the original file is not). ``predict`` takes waveforms
    already mapped onto the input (N, contacts, samples) float32
    (:func:`eap_assets.core.recording.to_model_input`) and returns one row per unit: ``predicted``,
    ``confidence``, ``abstained``, ``ood``, ``ood_reason``, ``p_<class>``.
    """

    classifier = None

    def load_context(self, context) -> None:
        from eap_assets.core.calibration import Calibration, OODReference
        from eap_assets.core.classifier import UnitClassifier

        meta = json.loads(Path(context.artifacts["serving"]).read_text())
        native = getattr(mlflow, FLAVOURS[meta["kind"]]).load_model(context.artifacts["native"])
        with np.load(context.artifacts["ood"]) as arrays:
            ood = OODReference.from_arrays(dict(arrays))
        spec = RecordingSpec.from_json(meta["spec"])
        if "probe" in context.artifacts:
            spec = replace(spec, probe=str(stable_probe_copy(context.artifacts["probe"])))
        self.classifier = UnitClassifier(kind=meta["kind"], task=meta["task"], model=native, classes=meta["classes"],
                                         spec=spec, calibration=Calibration(**meta["calibration"]), ood=ood,
                                         model_classes=meta.get("model_classes"), groups=meta.get("groups"))

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        return self.classifier.predict(np.asarray(model_input, dtype=np.float32))


