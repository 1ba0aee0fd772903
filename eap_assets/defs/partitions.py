"""Partitions: cell models (dynamic: a sensor adds new models), rotation modes (static, chosen per
deployment), and their product for the per-dataset assets."""


import os

import dagster as dg

from eap_assets.core.rotations import PAPER_ROTATIONS, ROTATION_MODES

#: Comma-separated rotation modes of this deployment (default: the paper's four).
ENV_ROTATIONS = "EAP_ASSETS_ROTATIONS"
#: Comma-separated rotation modes of the models for real recordings (default: 3drot, any orientation).
ENV_RECORDING_ROTATIONS = "EAP_ASSETS_RECORDING_ROTATIONS"


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
recording_rotation_partitions = dg.StaticPartitionsDefinition(deployment_rotations(ENV_RECORDING_ROTATIONS, ("3drot",)))
cell_recording_partitions = dg.MultiPartitionsDefinition({"cell": cell_partitions,
                                                          "rotation": recording_rotation_partitions})


def cell_rotation_key(cell: str, rotation: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"cell": cell, "rotation": rotation})
