"""Classify the units of a user's recording with registered classifiers: ``eap_assets.classify`` and
``eap-assets classify``.

1. read the units (:func:`eap_assets.core.units.read_units`: a SortingAnalyzer, Templates, a
   MEArec file, a ``.npy`` with its probe);
2. per task, pick the classifier: the one named, or the champion of the served classifier
   (``unit_classifier_<probe>_<rotation>_<task>``) whose probe the recording's contacts match by
   geometry (translated, rotated or mirrored: :func:`eap_assets.core.probe.match_contacts`);
3. put the channels in the model's contact order and map every valid unit onto the model's input
   as its stored spec says (:func:`eap_assets.core.recording.to_model_input`: resample, band-pass
   if unfiltered, align on the negative peak, the model's window);
4. answer per unit (:meth:`eap_assets.core.classifier.UnitClassifier.predict`): predicted type,
   calibrated confidence, abstained, out-of-distribution flag and reason, class probabilities,
   the model's name, version and alias; units that cannot be classified get the reason in
   ``error`` and no prediction -- the others are classified all the same;
5. write the answers as CSV / Parquet and, for an analyzer on disk, as unit properties of its sorting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from eap_assets import registry
from eap_assets.core.eaps import contact_peak_to_peak
from eap_assets.core.models import TASKS
from eap_assets.core.probe import (KIND_ROTATIONS, ProbeGeometryError, is_probe_file, layout_kind, match_contacts,
                                   model_plane_positions, planar_positions, unit_windows, window_orders)
from eap_assets.core.recording import to_model_input
from eap_assets.core.units import Units, annotate_analyzer, read_units, write_answers

Log = Callable[[str], None]


def _describe(probe: str) -> str:
    positions = model_plane_positions(probe)
    return f"{probe} ({len(positions)} contacts)"


def _model_probe(name: str, probe: str) -> str:
    """A registered classifier's probe spec (its ``probe`` tag), or, for a probe file that is not where
    it was at training (another machine, a moved file), the copy the model carries."""
    if not is_probe_file(probe) or Path(probe).is_file():
        return probe
    return registry.load_classifier(name).classifier.spec.probe


def rotation_preference(units: Units) -> list[str]:
    """The rotation sets to look for a classifier in, best first: the one of the recording's probe kind
    (``physrot`` on a shank, ``3drot`` on an MEA: :data:`eap_assets.core.probe.KIND_ROTATIONS`), then
    ``3drot`` (any orientation, so right for any probe)."""
    try:
        kind = layout_kind(planar_positions(units.positions))
    except ProbeGeometryError:
        kind = "mea"  # matching the contacts says what is wrong with them
    return list(dict.fromkeys([KIND_ROTATIONS[kind], "3drot"]))


def pick_classifier(units: Units, task: str, rotation: str | None = None) -> str:
    """The name of the served classifier for ``task`` whose probe the units' contacts match.

    ``rotation``: the classifiers of that rotation set only; ``None``: of :func:`rotation_preference`'s
    sets, the first with a classifier that fits, then any other rotation set.

    Raises
    ------
    RegistryError
        No served classifier for this rotation and task at all (saying how to train one).
    ProbeGeometryError
        Served classifiers exist, but none for a probe with the units' layout (listing their probes).
    """
    found = registry.registered_classifiers(rotation=rotation, task=task)
    if found.empty:
        which = f"rotation {rotation!r} and " if rotation else ""
        raise registry.RegistryError(
            f"no unit classifier for {which}task {task!r} is registered (with a champion): train one with "
            f"`make run` (the unit_classifier asset; its rotations follow the probe, EAP_ASSETS_RECORDING_ROTATIONS "
            f"overrides them)")
    if rotation is None:  # the probe kind's rotation set first, then any orientation, then the rest
        rank = {r: i for i, r in enumerate(rotation_preference(units))}
        found = found.assign(rank=[rank.get(r, len(rank)) for r in found["rotation"]]).sort_values(
            ["rank", "rotation", "name"], kind="stable")
    found["probe"] = [_model_probe(name, probe) for name, probe in zip(found["name"], found["probe"])]
    for fits in (match_contacts, window_orders):  # the probe itself first, then a window of a longer probe
        for name, probe in zip(found["name"], found["probe"]):
            try:
                fits(units.positions, probe)
                return name
            except ProbeGeometryError:
                continue
    probes = ", ".join(_describe(p) for p in sorted(set(found["probe"])))
    raise ProbeGeometryError(
        f"{units.source}: no registered classifier knows this probe ({len(units.positions)} contacts); classifiers "
        f"exist for: {probes}. Train one for your probe with `make run RUN_ARGS=\"--probe <MEAutility name or "
        f"probeinterface .json file>\"`")


def classify_units(units: Units, loaded: registry.LoadedClassifier, mapped: dict | None = None) -> pd.DataFrame:
    """One row per unit of ``units`` answered by one classifier (columns without a task prefix).

    ``mapped``: a dict kept across the classifiers of one input, so that the units are mapped onto a
    model's input (resampled, filtered, aligned) once per input spec and contact order, not once per task.

    Raises
    ------
    ProbeGeometryError
        If the units' contacts do not match the model's probe.
    InputError
        If the sampling rate is too low for the model's band (the whole input: no unit can be mapped).
    """
    classifier = loaded.classifier
    spec = classifier.spec
    order, windows_ = None, None
    try:
        if len(units.positions) == len(model_plane_positions(spec.probe)):
            order = match_contacts(units.positions, spec.probe)
        else:  # a longer probe: each unit is read on the window of the model's layout that holds its signal
            windows_ = window_orders(units.positions, spec.probe)
    except ProbeGeometryError as exc:
        raise ProbeGeometryError(f"{units.source}: model {loaded.name} v{loaded.version} is for probe "
                                 f"{_describe(spec.probe)}: {exc}") from None
    valid = units.valid
    frame = pd.DataFrame({"unit_id": units.unit_ids,
                          "error": [units.problems.get(str(u), "") for u in units.unit_ids]})
    if valid.any():
        templates = units.templates[valid]
        channels = (np.broadcast_to(order, (len(templates), order.size)) if order is not None
                    else unit_windows(contact_peak_to_peak(templates), windows_))
        mapped = {} if mapped is None else mapped
        key = (spec, channels.tobytes())
        if key not in mapped:
            on_model = templates[:, order] if order is not None else np.take_along_axis(
                templates, channels[:, :, None], axis=1)
            mapped[key] = to_model_input(on_model, units.fs_hz, spec, units.filtered)
        windows, info = mapped[key]
        answers = classifier.predict(windows, info)
        answers.insert(0, "amplitude_uv", info["peak_to_peak_uv"])
        answers.insert(1, "peak_contact", info["peak_channel"])
        answers.insert(2, "peak_channel", channels[np.arange(len(channels)), info["peak_channel"]])
        answers.insert(3, "window_padded", info["padded"])
        if windows_ is not None:
            answers.insert(4, "window_channels", [",".join(map(str, row)) for row in channels])
        answers.index = np.flatnonzero(valid)
        frame = frame.join(answers)
    frame["model"], frame["version"], frame["alias"] = loaded.name, loaded.version, loaded.alias or ""
    return frame


def classify(source, tasks: Sequence[str] = TASKS, rotation: str | None = None, model: str | None = None,
             alias: str = registry.CHAMPION, version: str | None = None, probe: str | Path | None = None,
             fs_hz: float | None = None, filtered: bool | None = None, tracking_uri: str | None = None,
             data_dir: str | Path = "data", out: str | Path | None = None, write_properties: bool = True,
             log: Log | None = None) -> pd.DataFrame:
    """Classify every unit of a recording with registered classifiers.

    Parameters
    ----------
    source : SortingAnalyzer, Templates, str or Path
        See :func:`eap_assets.core.units.read_units`.
    tasks : sequence of str
        ``binary`` (E/I) and / or ``mtype`` (the 13 m-types); ignored when ``model`` is given.
    rotation : str, optional
        The orientation set of the classifiers (``3drot``: any orientation; ``physrot``: cells along a
        shank). Default: the recording's probe kind's set if a classifier of it fits the probe, else
        ``3drot``, else any (:func:`pick_classifier`).
    model : str, optional
        A registered model to use instead (a served classifier, or a per-kind ``paper_*`` /
        ``recording_*`` model: then uncalibrated, no OOD reference).
    alias, version : str
        Which version of the model(s) (default: the champion).
    probe, fs_hz, filtered
        For ``.npy`` input (see :func:`~eap_assets.core.units.read_units`); ``filtered`` also
        overrides what an analyzer / MEArec file says.
    tracking_uri : str, optional
        MLflow tracking / registry (default: the sqlite store under ``data_dir``).
    out : str or Path, optional
        Write the answers there (``.csv`` or ``.parquet``).
    write_properties : bool
        For an analyzer: store the answers as unit properties of its sorting (``eap_<task>_predicted`` ...).

    Returns
    -------
    DataFrame
        One row per unit: ``unit_id``, ``error`` (why a unit could not be classified; empty
        otherwise), ``truth_cell`` when the source knows it, then per task ``<task>_predicted``,
        ``_confidence``, ``_abstained``, ``_ood``, ``_ood_reason``, ``_p_<class>``, ``_model``,
        ``_version``, ``_alias`` and the mapping's ``_amplitude_uv``, ``_peak_contact`` (on the
        model's probe), ``_peak_channel`` (the input's channel index), ``_window_padded`` and, on a
        probe longer than the model's, ``_window_channels`` (the input channels the unit was read on).
    """
    log = log or (lambda message: None)
    start = time.perf_counter()
    registry.use_store(tracking_uri or registry.default_tracking_uri(Path(data_dir).expanduser().resolve()))
    units = read_units(source, probe=probe, fs_hz=fs_hz, filtered=filtered)
    if units.problems:
        for unit, problem in units.problems.items():
            log(f"{units.source}: unit {unit}: {problem}; not classified")
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        raise ValueError(f"unknown task(s) {bad}; choose from {', '.join(TASKS)}")
    names = [model] if model else [pick_classifier(units, task, rotation) for task in tasks]
    frame = pd.DataFrame({"unit_id": units.unit_ids,
                          "error": [units.problems.get(str(u), "") for u in units.unit_ids]})
    if units.truth is not None:
        frame["truth_cell"] = units.truth.set_index(units.truth["unit_id"].astype(str))["cell"].reindex(
            [str(u) for u in units.unit_ids]).to_numpy()
    mapped: dict = {}
    for name in names:
        loaded = registry.load_classifier(name, alias=alias, version=version)
        answers = classify_units(units, loaded, mapped).drop(columns=["unit_id", "error"])
        task = loaded.classifier.task
        frame = frame.join(answers.add_prefix(f"{task}_"))
        log(f"{task}: {name} v{loaded.version}" + (f" ({loaded.alias})" if loaded.alias else ""))
    if out is not None:
        log(f"answers written to {write_answers(frame, out)}")
    if write_properties and units.analyzer is not None:
        try:
            written = annotate_analyzer(units.analyzer, frame)
            log(f"{len(written)} unit properties set on the analyzer's sorting (e.g. {written[0]})")
        except Exception as exc:  # a read-only analyzer: the answers are still returned and written
            log(f"could not store the answers in the analyzer ({type(exc).__name__}: {exc})")
    log(f"{int(units.valid.sum())} of {len(frame)} units classified in {time.perf_counter() - start:.1f} s")
    return frame
