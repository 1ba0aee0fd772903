"""Artefact keys: one short, stable hash of the settings and code versions an artefact was made with.

Every stage's key (:mod:`eap_assets.core.stages`, the noise's, the recording family's, the
cross-check's) is :func:`settings_hash` of its parts; the random draws of a partition come from
:func:`eap_assets.core.eaps.partition_seed`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict


def settings_hash(*parts: object) -> str:
    """Short stable hash of JSON-able settings (dataclasses allowed)."""
    payload = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
