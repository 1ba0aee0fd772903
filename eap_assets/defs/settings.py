"""The settings a deployment's code location runs with: one file in the Dagster instance folder.

``make run`` (``eap_assets.run.materialize_graph``) records the resources it ran with in
``$DAGSTER_HOME/eap_assets_settings.json``; the code location that ``make ui`` and its daemon load
(:func:`eap_assets.definitions.build_definitions`) starts from that file, so that what the UI
launches, "materialise" as much as the automation sensor's runs, uses the data directory, scale,
seeds and training recipe of the last ``make run``. Without the file (a production deployment),
the resources' defaults and the ``EAP_ASSETS_*`` environment variables apply.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

from eap_assets.core.storage import atomic_write_text
from eap_assets.defs.crosscheck import CrosscheckSettings
from eap_assets.defs.generalisation import GeneralisationSettings
from eap_assets.defs.resources import RecordingSettings, SimulationSettings, default_settings, resource_fields
from eap_assets.defs.training import TrainingSettings
from eap_assets.local import settings_path

#: The configurable resources of a run, by resource key (as in run config and in the file).
RESOURCE_CLASSES: dict[str, type[dg.ConfigurableResource]] = {
    "settings": SimulationSettings, "training": TrainingSettings, "recording": RecordingSettings,
    "crosscheck_settings": CrosscheckSettings, "generalisation_settings": GeneralisationSettings}
#: Fields that belong to one run, never to the deployment (``--force`` must not stick).
RUN_ONLY_FIELDS = {"settings": ("force",)}


def write_settings(resources: dict[str, dg.ConfigurableResource], home: str | os.PathLike | None = None) -> Path:
    """Record ``resources`` (keys of :data:`RESOURCE_CLASSES`) as the instance's settings (atomically)."""
    values = {}
    for key, resource in resources.items():
        if key not in RESOURCE_CLASSES:
            raise ValueError(f"unknown resource {key!r}; choose from {', '.join(RESOURCE_CLASSES)}")
        fields = resource_fields(resource)
        for name in RUN_ONLY_FIELDS.get(key, ()):
            fields.pop(name, None)
        values[key] = fields
    path = settings_path(home)
    atomic_write_text(path, json.dumps(values, indent=1, sort_keys=True) + "\n")
    return path


def deployment_resources(home: str | os.PathLike | None = None) -> dict[str, dg.ConfigurableResource]:
    """The configurable resources of the code location: defaults and ``EAP_ASSETS_*`` variables,
    overridden by the instance's settings file when there is one.

    Raises
    ------
    ValueError
        If the file is not JSON or names an unknown resource or field (naming the file).
    """
    resources: dict[str, dg.ConfigurableResource] = {
        "settings": default_settings(), "training": TrainingSettings(), "recording": RecordingSettings(),
        "crosscheck_settings": CrosscheckSettings(), "generalisation_settings": GeneralisationSettings()}
    path = settings_path(home)
    if not path.is_file():
        return resources
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        for key, values in stored.items():
            if key not in RESOURCE_CLASSES:
                raise ValueError(f"unknown resource {key!r} (known: {', '.join(RESOURCE_CLASSES)})")
            unknown = sorted(set(values) - set(RESOURCE_CLASSES[key].model_fields))
            if unknown:
                raise ValueError(f"{key}: unknown field(s) {unknown}")
            resources[key] = RESOURCE_CLASSES[key](**{**resource_fields(resources[key]), **values})
    except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
        raise ValueError(f"settings file {path}: {exc} (delete it to use the defaults)") from None
    return resources
