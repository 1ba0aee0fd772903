"""Atomic file writes and per-artefact locks.

Every artefact is written to a temporary file (or folder) beside its target and renamed into
place, so a crash, a full disk or a killed process never leaves a half-written artefact behind:
the target holds either its previous content or the new one.  Temporary names carry the host and
process id of the writer (``.<name>.<host>-<pid>.<random>.tmp``); one left behind by a process
that was killed (SIGKILL skips every clean-up) is removed by the next write of the same target.

:func:`file_lock` serialises "check whether it is up to date, else compute and write" per
artefact across processes (``fcntl.flock`` on ``.<name>.lock`` beside it), so two runs that
materialise the same partition at once compute it once: the second waits and then reuses it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_META_KEY = "__meta_json__"
_HOST = re.sub(r"[^A-Za-z0-9]", "-", socket.gethostname()) or "host"


def _writer_tag() -> str:
    return f"{_HOST}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove temporary files / folders of ``path`` left by dead writers on this host.

    Only names written by this module (``.<name>.<host>-<pid>.<random>.tmp``) whose host is this
    one and whose process no longer exists are removed: a live writer's file is never touched,
    nor one from another host sharing the file system. Returns what was removed.
    """
    target = Path(path)
    removed = []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.{re.escape(_HOST)}-(\d+)\..*\.tmp$")
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


#: Errors of the write itself (disk full, quota, file too large, I/O error, read-only file system).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


@contextlib.contextmanager
def _naming_target(target: Path) -> Iterator[None]:
    """Re-raise a write error (same class and errno) with the artefact in its message."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        raise type(exc)(exc.errno, f"could not write {target}: {exc.strerror or os.strerror(exc.errno)}") from exc


def _umask() -> int:
    """The process's file-creation mask (read without changing it, from /proc where available)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _give_default_mode(path: Path, directory: bool) -> None:
    """Give a temporary (created 0600 / 0700 by ``tempfile``) the mode an ordinary ``open`` or
    ``mkdir`` would have, so that artefacts are readable by the deployment's other users."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed and ``path`` is left as it was; an OSError
    (e.g. ENOSPC, disk full) is re-raised with the target's path in its message.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming_target(target):
            yield tmp_path
            _give_default_mode(tmp_path, directory=tmp_path.is_dir())
            os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; swap it in for ``path`` if the block succeeds.

    For artefacts made of several files that must change together (an EAP dataset: EAPs, index
    and the meta file with its key). A failed write leaves ``path`` as it was. A process killed
    between the two renames of the swap leaves no ``path`` (so it is recomputed, never half-old,
    half-new) and a stale temporary folder that the next write removes.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_writer_tag()}.", suffix=".tmp", dir=target.parent))
    old = tmp.with_name(tmp.name[: -len(".tmp")] + ".old.tmp")
    try:
        with _naming_target(target):
            yield tmp
            _give_default_mode(tmp, directory=True)
            if target.exists():
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except OSError:
                    os.rename(old, target)  # put the previous artefact back
                    raise
            else:
                os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on the artefact ``path`` (the file ``.<name>.lock`` beside it).

    Exclusive by default (one writer: check, compute, write); ``shared=True`` for readers, who
    then never see a multi-file artefact in the middle of being replaced. Blocks until granted.
    Do not nest two locks of the same artefact in one process.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """Load a file written by :func:`atomic_save_npz`: (arrays, meta).

    Raises
    ------
    FileNotFoundError
        If it does not exist.
    ValueError
        If it is not a readable ``.npz`` file (naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != _META_KEY}
            meta = json.loads(str(data[_META_KEY])) if _META_KEY in data.files else {}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
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
