"""Compile and load the NEURON mechanisms (.mod files) of a set of cell models.

The 13 BBP models ship 14 ``.mod`` files each, identical across models except that
interneurons use ``Ca.mod`` and pyramidal cells ``Ca_HVA.mod``.  The union is compiled
once with ``nrnivmodl`` into a cache directory keyed by a hash of the files' contents
and loaded once per process (never from the current working directory).

NEURON 9 cannot compile the two BBP *synapse* mechanisms (``ProbAMPANMDA_EMS``,
``ProbGABAAB_EMS``: their VERBATIM C blocks clash with NEURON 9's random-number API).
This project never instantiates synapses (cells are driven by a somatic current step),
so those mechanisms are left out of the compiled set and the cells are loaded without
their synapse code (see :mod:`eap_assets.core.cells`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Mechanisms that only the BBP synapse code uses; never compiled (see module docstring).
SYNAPSE_MECHANISMS: frozenset[str] = frozenset({"ProbAMPANMDA_EMS", "ProbGABAAB_EMS"})

#: Mechanisms built into NEURON (no .mod file needed for ``insert``).
BUILTIN_MECHANISMS: frozenset[str] = frozenset(
    {"pas", "hh", "extracellular", "fastpas", "capacitance", "morphology"}
)

_SUFFIX_RE = re.compile(r"^\s*(?:SUFFIX|POINT_PROCESS|ARTIFICIAL_CELL)\s+(\w+)", re.MULTILINE)

_loaded: dict[str, object] = {"dir": None, "names": frozenset()}


class MechanismError(RuntimeError):
    """A mechanism (.mod) file is missing, conflicting or fails to compile."""


def mechanism_name(mod_file: Path) -> str:
    """Return the mechanism name a .mod file defines (its SUFFIX / POINT_PROCESS).

    Parameters
    ----------
    mod_file : Path
        Path to a NMODL file.

    Returns
    -------
    str
        The name used by ``insert`` (density mechanisms) or ``new`` (point processes).
    """
    match = _SUFFIX_RE.search(mod_file.read_text(errors="replace"))
    if match is None:
        raise MechanismError(f"{mod_file}: no SUFFIX or POINT_PROCESS statement; not a NMODL file")
    return match.group(1)


def default_cache_dir() -> Path:
    """Directory holding compiled mechanism libraries.

    ``$EAP_ASSETS_CACHE`` if set, else ``~/.cache/eap_assets``.
    """
    root = os.environ.get("EAP_ASSETS_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "eap_assets"


def union_of_mod_files(sources: Mapping[str, Iterable[Path]]) -> dict[str, Path]:
    """Merge the .mod files of several models into one set keyed by file name.

    Parameters
    ----------
    sources : mapping of model name -> iterable of .mod paths
        The mechanisms each model ships.

    Returns
    -------
    dict
        File name -> path of one representative copy, synapse mechanisms excluded.

    Raises
    ------
    MechanismError
        If two models ship different contents under the same file name.
    """
    union: dict[str, tuple[Path, str, bytes]] = {}
    for model, files in sources.items():
        for path in files:
            path = Path(path)
            if path.stem in SYNAPSE_MECHANISMS:
                continue
            content = path.read_bytes()
            seen = union.get(path.name)
            if seen is None:
                union[path.name] = (path, model, content)
            elif seen[2] != content:
                raise MechanismError(
                    f"mechanism {path.name} differs between cell models {seen[1]!r} and {model!r}; "
                    "one compiled library cannot hold both"
                )
    return {name: entry[0] for name, entry in sorted(union.items())}


def mechanisms_hash(mod_files: Mapping[str, Path]) -> str:
    """Content hash of a set of .mod files (file names and bytes), 16 hex digits."""
    digest = hashlib.sha256()
    for name in sorted(mod_files):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(Path(mod_files[name]).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _nrnivmodl() -> str:
    beside_python = Path(sys.executable).parent / "nrnivmodl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nrnivmodl")
    if found is None:
        raise MechanismError("nrnivmodl not found: is the 'neuron' package installed in this environment?")
    return found


def _library_path(build_dir: Path) -> Path:
    for candidate in (build_dir / "x86_64" / "libnrnmech.so", build_dir / "x86_64" / ".libs" / "libnrnmech.so",
                      build_dir / "arm64" / "libnrnmech.so", build_dir / "aarch64" / "libnrnmech.so"):
        if candidate.exists():
            return candidate
    raise MechanismError(f"no libnrnmech.so under {build_dir}")


def _failing_files(log: str, names: Iterable[str]) -> list[str]:
    """Names of .mod files that the compiler output blames."""
    bad = []
    for name in names:
        stem = Path(name).stem
        pattern = re.compile(rf"\b{re.escape(stem)}\.(?:mod|cpp|c|o)\b[^\n]*(?:error|Error)|"
                             rf"(?:error|Error)[^\n]*\b{re.escape(stem)}\.(?:mod|cpp|c)\b")
        if pattern.search(log):
            bad.append(name)
    return bad


def _error_excerpt(log: str, lines: int = 25) -> str:
    """The compiler output from its first error on (colour codes removed), else its last lines."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log).strip().splitlines()
    first = next((i for i, line in enumerate(text) if re.search(r"\berror\b", line, re.IGNORECASE)), None)
    return "\n".join(text[-lines:] if first is None else text[max(first - 1, 0):first - 1 + lines])


def compile_mechanisms(
    mod_files: Mapping[str, Path],
    cache_dir: Path | None = None,
    owners: Mapping[str, list[str]] | None = None,
) -> Path:
    """Compile a set of .mod files with ``nrnivmodl``, once per content hash.

    Parameters
    ----------
    mod_files : mapping of file name -> path
        The mechanisms to compile (typically from :func:`union_of_mod_files`).
    cache_dir : Path, optional
        Cache root (default :func:`default_cache_dir`). The library lands in
        ``<cache_dir>/mechanisms/<hash>/``.
    owners : mapping of file name -> model names, optional
        Used only to name the models in error messages.

    Returns
    -------
    Path
        The build directory (pass it to :func:`load_mechanisms`).

    Raises
    ------
    MechanismError
        If ``nrnivmodl`` fails; the message names the failing files and their models.
    """
    if not mod_files:
        raise MechanismError("no .mod files to compile")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "mechanisms" / mechanisms_hash(mod_files)
    if (target / "COMPLETE").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        for name, path in mod_files.items():
            shutil.copyfile(path, work / name)
        proc = subprocess.run([_nrnivmodl()], cwd=work, capture_output=True, text=True)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            bad = _failing_files(log, mod_files) or sorted(mod_files)
            blamed = ", ".join(
                f"{name} (cell models: {', '.join(owners.get(name, ['?']))})" if owners else name for name in bad
            )
            raise MechanismError(f"nrnivmodl failed to compile {blamed}:\n{_error_excerpt(log)}")
        _library_path(work)
        (work / "COMPLETE").write_text(",".join(sorted(mod_files)))
        try:
            work.rename(target)
        except OSError:  # another process finished the same build first
            if not (target / "COMPLETE").exists():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def load_mechanisms(build_dir: Path) -> None:
    """Load a compiled mechanism library into this process's NEURON, once.

    Loading the same directory again is a no-op. A second, different library is
    accepted only if it defines no mechanism beyond those already loaded (NEURON
    cannot unload or redefine a mechanism in a running process).

    Raises
    ------
    MechanismError
        If a different, incompatible library is already loaded.
    """
    from neuron import h

    build_dir = Path(build_dir).resolve()
    names = frozenset(mechanism_name(p) for p in build_dir.glob("*.mod"))
    if _loaded["dir"] == build_dir:
        return
    if _loaded["dir"] is not None:
        missing = names - _loaded["names"]
        if missing:
            raise MechanismError(
                f"mechanisms {sorted(missing)} are not in the library already loaded in this process "
                f"({_loaded['dir']}); NEURON cannot load a second library. Start a new process."
            )
        return
    ok = h.nrn_load_dll(str(_library_path(build_dir)))
    if not ok:
        raise MechanismError(f"NEURON could not load {_library_path(build_dir)}")
    _loaded["dir"] = build_dir
    _loaded["names"] = names


def build_and_load(sources: Mapping[str, Iterable[Path]], cache_dir: Path | None = None) -> Path:
    """Union of several models' .mod files -> compiled (cached) -> loaded in this process.

    Parameters
    ----------
    sources : mapping of model name -> iterable of .mod paths
    cache_dir : Path, optional
        Cache root (default :func:`default_cache_dir`).

    Returns
    -------
    Path
        The build directory of the compiled library.
    """
    sources = {model: [Path(p) for p in files] for model, files in sources.items()}
    owners: dict[str, list[str]] = {}
    for model, files in sources.items():
        for path in files:
            owners.setdefault(path.name, []).append(model)
    build = compile_mechanisms(union_of_mod_files(sources), cache_dir=cache_dir, owners=owners)
    load_mechanisms(build)
    return build


def loaded_mechanisms() -> frozenset[str]:
    """Names of the mechanisms loaded by :func:`load_mechanisms` in this process."""
    return frozenset(_loaded["names"])  # type: ignore[arg-type]
