"""The units of a user's recording, as SpikeInterface or MEArec hand them over, and the answers given back.

:func:`read_units` takes what a person who sorted a recording has:

* a SpikeInterface ``SortingAnalyzer`` (object, binary folder or ``.zarr``): its ``templates``
  extension (average), or templates computed from its ``waveforms`` extension when only those
  exist; sampling rate, channel locations (probeinterface, in the analyzer's channel order),
  whether the recording was filtered, and each unit's spike count;
* a SpikeInterface ``Templates`` object (or its ``.zarr`` folder);
* a MEArec file: a recording (``.h5`` with ``recordings``: read with SpikeInterface's
  ``read_mearec`` and averaged per ground-truth unit) or a templates file (noise-free,
  unfiltered templates in MEArec's own layout);
* a ``.npy`` array (units, channels, samples) in µV with its sampling rate, whether it is
  band-passed, and its probe: a MEAutility name or a probeinterface JSON file.

It returns :class:`Units`: templates (units, channels, samples) in µV, channel positions, sampling
rate, whether band-passed, and the units that cannot be classified with the reason (no spikes,
NaN, an empty template) -- the others are classified all the same. :func:`write_answers` writes
one row per unit as CSV or Parquet, and :func:`annotate_analyzer` stores the answers as unit
properties of the analyzer's sorting, so that SpikeInterface's own tools show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eap_assets.core.recording import InputError

#: ms of template kept around the detection time when units are averaged here (MEArec recordings):
#: more than any model's window, so that re-alignment on the negative peak has room.
AVERAGE_MS_BEFORE = 2.0
AVERAGE_MS_AFTER = 3.0


@dataclass
class Units:
    """Templates of a recording's units, ready to be mapped onto a model's input.

    Attributes
    ----------
    source : str
        What they were read from (file, folder or object), for messages.
    unit_ids : ndarray
        The units' ids as the source has them.
    templates : ndarray, shape (units, channels, samples), float32
        Average waveforms, µV; channels in the order of ``positions``.
    fs_hz : float
        Sampling rate, Hz.
    positions : ndarray, shape (channels, 2 or 3)
        Contact positions, µm.
    filtered : bool
        Whether the templates are band-passed already (a sorted recording's are).
    problems : dict
        Unit id (as str) -> why that unit cannot be classified.
    analyzer : SortingAnalyzer or None
        The analyzer they came from (answers can be written back to it).
    truth : DataFrame or None
        Ground truth when the source knows it (MEArec): ``unit_id``, ``cell``.
    """

    source: str
    unit_ids: np.ndarray
    templates: np.ndarray
    fs_hz: float
    positions: np.ndarray
    filtered: bool
    problems: dict[str, str] = field(default_factory=dict)
    analyzer: object | None = None
    truth: pd.DataFrame | None = None

    @property
    def valid(self) -> np.ndarray:
        """Boolean mask of the units that can be classified."""
        return np.array([str(u) not in self.problems for u in self.unit_ids], dtype=bool)

    def __post_init__(self) -> None:
        self.templates = np.asarray(self.templates)
        self.unit_ids = np.asarray(self.unit_ids)
        if self.templates.ndim != 3:
            raise InputError(f"{self.source}: templates must have shape (units, channels, samples), got "
                             f"{self.templates.shape}")
        if not len(self.unit_ids):
            raise InputError(f"{self.source}: no units to classify (an empty sorting)")
        if len(self.unit_ids) != len(self.templates):
            raise InputError(f"{self.source}: {len(self.unit_ids)} unit ids for {len(self.templates)} templates")
        if len(self.positions) != self.templates.shape[1]:
            raise InputError(f"{self.source}: templates have {self.templates.shape[1]} channels but the probe has "
                             f"{len(self.positions)} contacts")
        if not self.templates.shape[2] >= 2:
            raise InputError(f"{self.source}: templates have {self.templates.shape[2]} samples")
        for i, unit in enumerate(self.unit_ids):
            template = self.templates[i]
            if not np.all(np.isfinite(template)):
                self.problems.setdefault(str(unit), "its template contains NaN or inf")
            elif not np.any(template):
                self.problems.setdefault(str(unit), "its template is all zeros")
        self.templates = np.where(np.isfinite(self.templates), self.templates, 0).astype(np.float32)


def read_units(source, probe: str | Path | None = None, fs_hz: float | None = None,
               filtered: bool | None = None) -> Units:
    """Read a recording's units from any of the supported sources (see the module docstring).

    Parameters
    ----------
    source : SortingAnalyzer, Templates, str or Path
        An analyzer or ``Templates`` object, an analyzer folder / ``.zarr``, a ``Templates``
        ``.zarr``, a MEArec ``.h5`` (recording or templates) or a ``.npy`` array.
    probe : str or Path, optional
        ``.npy`` only (required): a MEAutility probe name or a probeinterface JSON file.
    fs_hz : float, optional
        ``.npy`` only (required): sampling rate, Hz.
    filtered : bool, optional
        ``.npy`` only (required): whether the templates are band-passed. For the other sources it
        is read from them; given, it overrides what they say.

    Raises
    ------
    InputError
        A file that does not exist or has an unknown format, an empty analyzer, an analyzer without
        templates (nor waveforms), a ``.npy`` without its probe / rate / filter state, a probe file
        that does not parse: each naming the source and what is wrong.
    """
    kind = type(source).__name__
    if kind == "SortingAnalyzer":
        units = from_analyzer(source, str(getattr(source, "folder", None) or "SortingAnalyzer"))
    elif kind == "Templates":
        units = from_templates(source, "Templates")
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.suffix in (".h5", ".hdf5"):
            units = from_mearec(path)
        elif path.suffix == ".npy":
            units = from_npy(path, probe, fs_hz, filtered)
        elif path.is_dir():
            units = _from_folder(path)
        else:
            raise InputError(f"{path}: not a SortingAnalyzer folder / .zarr, a Templates .zarr, a MEArec .h5 or a "
                             f".npy file (suffix {path.suffix!r})")
    if filtered is not None:
        units.filtered = bool(filtered)
    return units


def _from_folder(path: Path) -> Units:
    import spikeinterface.core as si  # not .full: its extractors and sorters are not needed here (~0.7 s)

    try:
        analyzer = si.load_sorting_analyzer(path)
    except Exception as analyzer_error:  # not an analyzer: perhaps a Templates zarr
        try:
            from spikeinterface.core import Templates

            return from_templates(Templates.from_zarr(path), str(path))
        except Exception:
            raise InputError(f"{path}: not a SortingAnalyzer folder or a Templates .zarr "
                             f"({type(analyzer_error).__name__}: {analyzer_error})") from None
    return from_analyzer(analyzer, str(path))


def from_analyzer(analyzer, source: str) -> Units:
    """Units of a ``SortingAnalyzer``: its ``templates`` extension (average), or templates computed
    (not saved) from its ``waveforms`` extension."""
    if analyzer.get_num_units() == 0:
        raise InputError(f"{source}: the analyzer has no units")
    if analyzer.has_extension("templates"):
        extension = analyzer.get_extension("templates")
    elif analyzer.has_extension("waveforms"):
        extension = analyzer.compute("templates", save=False)
    else:
        raise InputError(f"{source}: the analyzer has no 'templates' extension (nor 'waveforms' to compute it "
                         "from): run analyzer.compute(['random_spikes', 'templates']) first")
    data = np.asarray(extension.get_data(operator="average"))                 # (units, samples, channels)
    templates = np.transpose(data, (0, 2, 1)).astype(np.float32)
    if not getattr(analyzer, "return_in_uV", True):
        gains = _recording_property(analyzer, "gain_to_uV")
        if gains is None:
            raise InputError(f"{source}: the templates are not in µV (return_in_uV=False) and the recording has no "
                             "gain_to_uV to convert them")
        offsets = _recording_property(analyzer, "offset_to_uV")
        templates = templates * gains[None, :, None] + (0 if offsets is None else offsets[None, :, None])
    spikes = analyzer.sorting.count_num_spikes_per_unit(outputs="array")
    problems = {str(u): "it has no spikes" for u, n in zip(analyzer.unit_ids, spikes) if n == 0}
    return Units(source=source, unit_ids=np.asarray(analyzer.unit_ids), templates=templates,
                 fs_hz=float(analyzer.sampling_frequency), positions=np.asarray(analyzer.get_channel_locations()),
                 filtered=bool(analyzer.is_filtered()), problems=problems, analyzer=analyzer)


def _recording_property(analyzer, key: str) -> np.ndarray | None:
    try:
        values = analyzer.get_recording_property(key)
    except Exception:  # not stored
        return None
    return None if values is None else np.asarray(values, dtype=np.float32)


def from_templates(templates, source: str) -> Units:
    """Units of a SpikeInterface ``Templates`` object (dense templates; probe from the object)."""
    if templates.probe is None:
        raise InputError(f"{source}: the Templates object has no probe (set templates.probe to a probeinterface "
                         "Probe, e.g. from the analyzer)")
    dense = np.transpose(np.asarray(templates.get_dense_templates()), (0, 2, 1)).astype(np.float32)
    if not templates.is_in_uV:
        raise InputError(f"{source}: the templates are not in µV (is_in_uV=False)")
    return Units(source=source, unit_ids=np.asarray(templates.unit_ids), templates=dense,
                 fs_hz=float(templates.sampling_frequency), positions=np.asarray(templates.get_channel_locations()),
                 filtered=True)


def from_mearec(path: Path) -> Units:
    """Units of a MEArec file: a recording (averaged per ground-truth unit with SpikeInterface) or templates."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            keys = set(handle.keys())
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    if "recordings" in keys:
        return _from_mearec_recording(path)
    if "templates" in keys:
        return _from_mearec_templates(path)
    raise InputError(f"{path}: an HDF5 file without MEArec 'recordings' or 'templates' (keys: {sorted(keys)})")


def _from_mearec_templates(path: Path) -> Units:
    import MEArec
    import MEAutility as mu

    generator = MEArec.load_templates(str(path), return_h5_objects=False, verbose=False)
    data = np.asarray(generator.templates)
    while data.ndim > 3:  # drifting / jittered templates: the first position
        data = data[:, 0]
    info = generator.info
    name = info["electrodes"].get("electrode_name")
    mea = mu.return_mea(name) if name in mu.return_mea_list() else mu.return_mea(info=info["electrodes"])
    positions = np.asarray(mea.positions)
    ids = np.arange(len(data))
    truth = pd.DataFrame({"unit_id": ids, "cell": np.asarray(generator.celltypes).astype(str)})
    return Units(source=str(path), unit_ids=ids, templates=data.astype(np.float32),
                 fs_hz=1000.0 / float(info["params"]["dt"]), positions=positions, filtered=False, truth=truth)


def _from_mearec_recording(path: Path) -> Units:
    import MEArec
    import spikeinterface.full as si

    recording, sorting = si.read_mearec(str(path))
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    analyzer.compute("random_spikes", max_spikes_per_unit=500, seed=0)
    analyzer.compute("templates", ms_before=AVERAGE_MS_BEFORE, ms_after=AVERAGE_MS_AFTER)
    units = from_analyzer(analyzer, str(path))
    units.analyzer = None  # built here: nothing of the user's to write back to
    generator = MEArec.load_recordings(str(path), return_h5_objects=False, load=["info"], verbose=False)
    units.filtered = bool(generator.info["recordings"]["filter"])
    from eap_assets.core.crosscheck import ground_truth

    truth = ground_truth(path)
    units.truth = truth[["unit_id", "cell"]] if "cell" in truth else None
    return units


def from_npy(path: Path, probe: str | Path | None, fs_hz: float | None, filtered: bool | None) -> Units:
    """Units of a ``.npy`` array (units, channels, samples) in µV."""
    missing = [name for name, value in (("probe", probe), ("sampling rate (fs_hz)", fs_hz),
                                        ("whether the templates are band-passed (filtered)", filtered))
               if value is None]
    if missing:
        raise InputError(f"{path}: a .npy file needs its {', '.join(missing)}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if data.ndim != 3:
        raise InputError(f"{path}: templates must have shape (units, channels, samples), got {data.shape}")
    return Units(source=str(path), unit_ids=np.arange(len(data)), templates=data.astype(np.float32),
                 fs_hz=float(fs_hz), positions=probe_positions(probe), filtered=bool(filtered))


def probe_positions(probe: str | Path) -> np.ndarray:
    """Contact positions (channels, 2) of a probe given as a MEAutility name or a probeinterface JSON
    file (channel order: the device channel indices when the file sets them, else contact order).

    Raises
    ------
    InputError
        For a file that does not parse, holds no probe, or a name MEAutility does not know.
    """
    from eap_assets.core.probe import ProbeError, model_plane_positions

    path = Path(probe)
    if path.suffix == ".json" or path.exists():
        import probeinterface

        try:
            group = probeinterface.read_probeinterface(path)
        except Exception as exc:
            raise InputError(f"{path}: not a probeinterface probe file ({type(exc).__name__}: {exc})") from None
        if not group.probes:
            raise InputError(f"{path}: the probe file holds no probe")
        positions = np.concatenate([p.contact_positions for p in group.probes])
        device = group.get_global_device_channel_indices()["device_channel_indices"]
        if np.all(device >= 0):
            order = np.argsort(device)
            positions = positions[order]
        return np.asarray(positions, dtype=np.float64)
    try:
        return model_plane_positions(str(probe))
    except ProbeError as exc:
        raise InputError(f"probe {probe!r}: not a probeinterface JSON file nor a MEAutility probe ({exc})") from None


def write_answers(frame: pd.DataFrame, out: str | Path) -> Path:
    """One row per unit as ``.csv`` or ``.parquet``, written atomically."""
    from eap_assets.core.storage import atomic_path

    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise InputError(f"{out}: answers are written as .csv or .parquet")
    with atomic_path(out) as tmp:
        frame.to_parquet(tmp, index=False) if out.suffix == ".parquet" else frame.to_csv(tmp, index=False)
    return out


#: Answer columns stored as unit properties of an analyzer's sorting (property name: ``eap_<column>``).
PROPERTY_COLUMNS = ("predicted", "confidence", "abstained", "ood", "ood_reason", "error", "model", "version", "alias")


def annotate_analyzer(analyzer, frame: pd.DataFrame, prefix: str = "eap_") -> list[str]:
    """Store the answers as unit properties of the analyzer's sorting (saved with it when it is on disk).

    ``frame`` has one row per unit (``unit_id``) and the columns of :data:`PROPERTY_COLUMNS`, each
    possibly prefixed by a task (``binary_predicted`` ...). Returns the property names set.
    """
    by_unit = frame.set_index(frame["unit_id"].astype(str))
    ids = [str(u) for u in analyzer.unit_ids]
    names = []
    for column in frame.columns:
        if not any(column == c or column.endswith(f"_{c}") for c in PROPERTY_COLUMNS):
            continue
        values = by_unit[column].reindex(ids).to_numpy()
        if values.dtype == object:
            values = np.array(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values])
        analyzer.set_sorting_property(f"{prefix}{column}", values, save=analyzer.format != "memory")
        names.append(f"{prefix}{column}")
    return names
