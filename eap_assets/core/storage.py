"""Atomic file writes: every artefact is written to a temporary file in the target folder and
renamed into place, so a crash or a failed write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_META_KEY = "__meta_json__"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_save_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
    """Save arrays (and a JSON-able ``meta`` dict) to an uncompressed ``.npz`` atomically."""
    payload = dict(arrays)
    if meta is not None:
        payload[_META_KEY] = np.array(json.dumps(meta, default=_json_default))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    return Path(path)


def load_npz(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Load a file written by :func:`atomic_save_npz`: (arrays, meta)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != _META_KEY}
        meta = json.loads(str(data[_META_KEY])) if _META_KEY in data.files else {}
    return arrays, meta


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save one array as ``.npy`` (memory-mappable with ``np.load(..., mmap_mode='r')``) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array))
    return Path(path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
