"""Partitions: cell models (dynamic: a sensor adds new models), rotation modes (static, chosen per
deployment), and their product for the per-dataset assets.

The rotations of the models for real recordings follow the deployment's probe by default: ``3drot``
for an MEA, ``physrot`` for a shank (:data:`eap_assets.core.probe.KIND_ROTATIONS`), the probe being
the one of the instance's settings file (the last ``make run``'s ``--probe``) or the default MEA;
``$EAP_ASSETS_RECORDING_ROTATIONS`` overrides it.
"""


import json
import os

import dagster as dg

from eap_assets.core.probe import ProbeError, get_probe
from eap_assets.core.rotations import PAPER_ROTATIONS, ROTATION_MODES
from eap_assets.defs.resources import SimulationSettings
from eap_assets.local import settings_path

#: Comma-separated rotation modes of this deployment (default: the paper's four).
ENV_ROTATIONS = "EAP_ASSETS_ROTATIONS"
#: Comma-separated rotation modes of the models for real recordings (default: the probe kind's).
ENV_RECORDING_ROTATIONS = "EAP_ASSETS_RECORDING_ROTATIONS"


def deployment_probe(home: str | os.PathLike | None = None) -> str:
    """The probe spec of the instance in ``home`` (default ``$DAGSTER_HOME``): its settings file's, else the default.

    Raises
    ------
    ValueError
        If the settings file is not JSON (naming it).
    """
    path = settings_path(home)
    if not path.is_file():
        return SimulationSettings.model_fields["probe"].default
    try:
        stored = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"settings file {path}: {exc} (delete it to use the defaults)") from None
    return str((stored.get("settings") or {}).get("probe") or SimulationSettings.model_fields["probe"].default)


def recording_rotations(probe: str | None = None, home: str | os.PathLike | None = None) -> list[str]:
    """Rotations of the models for real recordings: ``$EAP_ASSETS_RECORDING_ROTATIONS`` if set, else the
    rotation set of ``probe``'s kind (:attr:`eap_assets.core.probe.Probe.default_rotation`; default probe:
    :func:`deployment_probe` of ``home``).

    Raises
    ------
    ProbeError
        For an unknown probe or a probe file that cannot be used (naming it and what to do).
    """
    if os.environ.get(ENV_RECORDING_ROTATIONS, "").strip():
        return deployment_rotations(ENV_RECORDING_ROTATIONS)
    spec = probe if probe is not None else deployment_probe(home)
    try:
        return [get_probe(spec).default_rotation]
    except ProbeError as exc:
        raise ProbeError(f"the rotations of the models for real recordings follow the probe {spec!r}: {exc}; set "
                         f"{ENV_RECORDING_ROTATIONS} or run `make run` with a probe that exists") from None


def deployment_rotations(variable: str = ENV_ROTATIONS, default: tuple[str, ...] = PAPER_ROTATIONS) -> list[str]:
    """Rotation modes from the environment variable ``variable`` (ValueError naming unknown ones)."""
    modes = [m.strip() for m in os.environ.get(variable, ",".join(default)).split(",") if m.strip()]
    unknown = [m for m in modes if m not in ROTATION_MODES]
    if unknown or not modes:
        raise ValueError(f"{variable}={os.environ.get(variable)!r}: unknown rotation mode(s) "
                         f"{unknown}; choose from {', '.join(ROTATION_MODES)}")
    return modes


cell_partitions = dg.DynamicPartitionsDefinition(name="cell_model")
rotation_partitions = dg.StaticPartitionsDefinition(deployment_rotations())
#: Keys look like ``L5_BP_bAC217_1|norot`` (dimensions in alphabetical order: cell, rotation).
cell_rotation_partitions = dg.MultiPartitionsDefinition({"cell": cell_partitions, "rotation": rotation_partitions})
#: Rotations of the models for real recordings, and the cell x rotation datasets simulated for them.
recording_rotation_partitions = dg.StaticPartitionsDefinition(recording_rotations())
cell_recording_partitions = dg.MultiPartitionsDefinition({"cell": cell_partitions,
                                                          "rotation": recording_rotation_partitions})


def cell_rotation_key(cell: str, rotation: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"cell": cell, "rotation": rotation})
