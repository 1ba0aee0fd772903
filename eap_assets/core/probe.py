"""Recording probes, and their contacts laid out as an image grid.

A probe is named by a *probe spec*: a MEAutility name (``SqMEA-10-15``, ``Neuropixels-384``,
``Neuronexus-32``), a probe this module builds with probeinterface (:data:`GENERATED_PROBES`:
``Neuropixels-1.0``), or the path of a probeinterface JSON file (``.json``) with one planar
probe.  Every probe is put in MEAutility's frame: contacts in the plane ``x = 0`` (the normal
is x), first main axis y, second z (a shank's long axis), so the EAP placement box, rotations
and media mean the same for every probe.  A probe's kind (MEA or shank) sets the medium and the
rotation set of the EAPs simulated for it by default (:data:`KIND_MEDIA`, :data:`KIND_ROTATIONS`).

Layouts that are not full grids (staggered columns, e.g. Neuropixels 1.0 or Neuronexus-32)
become images on the grid of their distinct contact coordinates; a grid cell without a contact
takes the mean of its contact-holding neighbours (:class:`Grid`), so a CNN sees a smooth image
and a full grid is placed exactly as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


class ProbeError(ValueError):
    """Unknown probe, a probe file that cannot be used, or contacts that make no image grid."""


#: Probes built with probeinterface's generators (name -> description); MEAutility names work too.
GENERATED_PROBES = {
    "Neuropixels-1.0": "Neuropixels 1.0 (NP1000), bank 0: 384 contacts in 4 staggered columns, 20 µm rows, 3.84 mm",
}
#: A layout whose long side is at least this many times its short side is a shank (else an MEA).
SHANK_ASPECT = 3.0
#: Medium of each probe kind by default: a planar MEA is a non-conducting plane under the tissue
#: (method of images, as MEArec does), a shank sits inside the tissue (infinite medium).
KIND_MEDIA = {"mea": "mea_plane", "shank": "infinite"}
#: Rotation set of each probe kind by default (:mod:`eap_assets.core.rotations`): a shank enters the
#: cortex along the cortical column, so pyramidal, bipolar and Martinotti cells keep their apical axis
#: near its long axis (``physrot``: tilt <= 15°, any spin; the other m-types any orientation); an MEA
#: under a slice or a culture has no preferred orientation to a cell (``3drot``).
KIND_ROTATIONS = {"mea": "3drot", "shank": "physrot"}


def layout_kind(plane: np.ndarray) -> str:
    """``"shank"`` when contacts at ``plane`` (C, 2), µm, span at least :data:`SHANK_ASPECT` times more
    along one axis than along the other (Neuropixels, Neuronexus), else ``"mea"`` (square MEAs, tetrodes)."""
    extent = np.ptp(np.asarray(plane, dtype=float), axis=0)
    short, long = sorted(float(e) for e in extent)
    return "shank" if long > 0 and long >= SHANK_ASPECT * short else "mea"


@dataclass(frozen=True)
class Probe:
    """Contact positions of a MEAutility probe.

    Attributes
    ----------
    name : str
        Name used in artefact keys and registered model names: the MEAutility or generated
        name, or for a file its stem and a hash of its contact positions (``my_probe-1a2b3c4d``).
    positions : ndarray, shape (n_contacts, 3)
        Contact centres, µm (point contacts).
    normal : ndarray, shape (3,)
        Unit normal of the probe plane.
    main_axes : ndarray, shape (2, 3)
        The two in-plane axes of the probe.
    """

    name: str
    positions: np.ndarray
    normal: np.ndarray
    main_axes: np.ndarray

    @property
    def n_contacts(self) -> int:
        return int(self.positions.shape[0])

    @property
    def plane_positions(self) -> np.ndarray:
        """Contact positions on the two main axes (C, 2), µm."""
        return self.positions @ self.main_axes.T

    @property
    def kind(self) -> str:
        """``"shank"`` or ``"mea"`` (:func:`layout_kind` of the contacts on the main axes)."""
        return layout_kind(self.plane_positions)

    @property
    def default_medium(self) -> str:
        """The medium of the probe's kind (:data:`KIND_MEDIA`)."""
        return KIND_MEDIA[self.kind]

    @property
    def default_rotation(self) -> str:
        """The rotation set of the probe's kind (:data:`KIND_ROTATIONS`); a shank's long axis is z, the
        axis ``physrot`` keeps polar cells along."""
        return KIND_ROTATIONS[self.kind]


def _probe_in_mea_frame(name: str, plane: np.ndarray) -> Probe:
    """A probe whose contacts lie at ``plane`` (C, 2) on the main axes y and z of the plane x = 0."""
    positions = np.zeros((len(plane), 3))
    positions[:, 1:] = plane
    positions.setflags(write=False)
    return Probe(name=name, positions=positions, normal=np.array([1.0, 0.0, 0.0]),
                 main_axes=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))


def _centred(plane: np.ndarray) -> np.ndarray:
    """Planar contact positions (C, 2) moved so that the layout's bounding box is centred on 0."""
    return plane - (plane.min(axis=0) + plane.max(axis=0)) / 2.0


def _generated_probe(name: str) -> Probe:
    from probeinterface.neuropixels_tools import build_neuropixels_probe

    if name == "Neuropixels-1.0":
        full = build_neuropixels_probe("NP1000")
        plane = np.asarray(full.contact_positions, dtype=float)[:384]  # electrodes 0-383 (bank 0), tip first
        return _probe_in_mea_frame(name, _centred(plane))
    raise ProbeError(f"no generator for probe {name!r}")


def _file_probe(path: Path) -> Probe:
    """A probe from a probeinterface JSON file (one probe, contacts in one plane)."""
    import probeinterface

    what = f"probe file {str(path)!r}"
    try:
        group = probeinterface.read_probeinterface(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's problem
        raise ProbeError(f"{what} could not be read as a probeinterface probe ({type(exc).__name__}: {exc})") from None
    if len(group.probes) != 1:
        raise ProbeError(f"{what} holds {len(group.probes)} probes; give a file with exactly one")
    positions = np.asarray(group.probes[0].contact_positions, dtype=float)
    try:
        plane = planar_positions(positions)
    except ProbeGeometryError as exc:
        raise ProbeError(f"{what}: {exc}") from None
    plane = _centred(plane)  # probeinterface itself refuses an empty probe and two contacts on one spot
    if layout_kind(plane) == "shank" and np.ptp(plane[:, 0]) > np.ptp(plane[:, 1]):
        plane = np.column_stack([plane[:, 1], -plane[:, 0]])  # a shank lying along x: turned so its long axis is z
    digest = hashlib.sha256(np.round(plane, 3).astype("<f8").tobytes()).hexdigest()[:8]
    return _probe_in_mea_frame(f"{path.stem}-{digest}", plane)


def is_probe_file(spec: str) -> bool:
    """Whether a probe spec names a file (a ``.json`` path) rather than a probe."""
    return str(spec).lower().endswith(".json")


def probe_name(spec: str) -> str:
    """The name a probe spec goes by in artefact keys and registered model names (:attr:`Probe.name`;
    a named probe is its own name, a file gives its stem and contact hash)."""
    return get_probe(spec).name if is_probe_file(spec) else str(spec)


def placement_box(spec: str, distance_um: tuple[float, float] = (10.0, 60.0),
                  overhang_um: float = 7.5) -> tuple[tuple[float, float], ...]:
    """Box of soma positions in front of a probe: ``distance_um`` from its plane (x) and the contacts'
    extent plus ``overhang_um`` along y and z.

    The defaults give the paper's box for SqMEA-10-15 (x 10-60 µm, y and z ±75 µm: contacts at
    ±67.5 µm plus 7.5 µm).

    Returns
    -------
    (x_range, y_range, z_range) : tuples (low, high), µm
    """
    low, high = (float(d) for d in distance_um)
    if not 0 <= low <= high:
        raise ValueError(f"distance_um must be (low, high) with 0 <= low <= high, got {distance_um!r}")
    if not overhang_um >= 0:
        raise ValueError(f"overhang_um must be >= 0, got {overhang_um!r}")
    positions = get_probe(spec).positions
    lows, highs = positions.min(axis=0) - overhang_um, positions.max(axis=0) + overhang_um
    return (low, high), (float(lows[1]), float(highs[1])), (float(lows[2]), float(highs[2]))


def get_probe(spec: str = "SqMEA-10-15") -> Probe:
    """The probe of a probe spec: a MEAutility name, a :data:`GENERATED_PROBES` name, or a
    probeinterface JSON file (read each time: the file may change; its name carries a hash of
    its contacts, so changed contacts give new artefact keys).

    Raises
    ------
    ProbeError
        For an unknown name (the message lists the known ones), a file that is missing, does not
        parse, holds several probes, has contacts out of one plane or sharing a position.
    """
    spec = str(spec)
    if is_probe_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ProbeError(f"probe file {spec!r} does not exist")
        return _file_probe(path)
    return _named_probe(spec)


@lru_cache(maxsize=32)
def _named_probe(name: str) -> Probe:
    import MEAutility as mu

    if name in GENERATED_PROBES:
        return _generated_probe(name)
    known = mu.return_mea_list()
    if name not in known:
        raise ProbeError(f"probe {name!r} is neither a MEAutility probe ({', '.join(known)}) nor one of "
                         f"{', '.join(GENERATED_PROBES)}; a probeinterface JSON file (path ending in .json) "
                         "works too")
    mea = mu.return_mea(name)
    positions = np.asarray(mea.positions, dtype=float)
    normal = np.asarray(mea.normal, dtype=float).reshape(-1, 3)[0]
    positions.setflags(write=False)
    probe = Probe(name=name, positions=positions, normal=normal / np.linalg.norm(normal),
                  main_axes=np.asarray(mea.main_axes, dtype=float))
    if not np.allclose(positions[:, 0], 0.0):  # not in the plane x = 0 (MEAutility's tetrode): put it there
        return _probe_in_mea_frame(name, probe.plane_positions)
    return probe


#: Largest (grid cells / contacts) of a layout made an image: a staggered layout has 2, a layout
#: with no common rows or columns far more (it makes no image; the feature models still apply).
MAX_GRID_FILL = 4


@dataclass(frozen=True)
class Grid:
    """Where each contact sits in a (rows, cols) image, and how the cells without a contact are filled.

    ``row`` indexes the probe's second main axis and ``col`` its first, both increasing
    with the coordinate (for ``SqMEA-10-15``: rows along z, columns along y), which is
    MEAutility's own ``RectMEA`` convention (linear id = ``dim[0] * col + row``).  A cell with
    no contact (staggered layouts) takes the mean of the contacts in its 4-neighbourhood (its
    8-neighbourhood when those are empty too): ``fill`` (n_contacts, n_holes) holds the weights.
    """

    shape: tuple[int, int]
    row: np.ndarray
    col: np.ndarray
    hole_row: np.ndarray
    hole_col: np.ndarray
    fill: np.ndarray

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Place per-contact values (..., n_contacts) into images (..., rows, cols)."""
        values = np.asarray(values)
        image = np.zeros(values.shape[:-1] + self.shape, dtype=values.dtype)
        image[..., self.row, self.col] = values
        if self.hole_row.size:
            image[..., self.hole_row, self.hole_col] = values @ self.fill.astype(values.dtype, copy=False)
        return image


def probe_grid(name: str = "SqMEA-10-15", decimals: int = 3) -> Grid:
    """Grid layout of a probe's contacts, from the distinct coordinates on its main axes.

    Raises
    ------
    ProbeError
        If two contacts share a cell, or the layout has more than :data:`MAX_GRID_FILL` cells per
        contact (no common rows and columns to make an image of).
    """
    plane = np.round(get_probe(name).plane_positions, decimals)
    return _layout_grid(str(name), plane.tobytes(), len(plane))


@lru_cache(maxsize=32)
def _layout_grid(name: str, plane_bytes: bytes, n_contacts: int) -> Grid:
    """:func:`probe_grid` of rounded plane positions (cached by content: a probe file may change)."""
    coords = np.frombuffer(plane_bytes, dtype=np.float64).reshape(n_contacts, 2)
    cols_u, col = np.unique(coords[:, 0], return_inverse=True)
    rows_u, row = np.unique(coords[:, 1], return_inverse=True)
    shape = (rows_u.size, cols_u.size)
    occupied = np.full(shape, -1, dtype=np.int64)
    occupied[row, col] = np.arange(n_contacts)
    if np.count_nonzero(occupied >= 0) != n_contacts or shape[0] * shape[1] > MAX_GRID_FILL * n_contacts:
        raise ProbeError(
            f"probe {name!r}: its {n_contacts} contacts make no image grid ({rows_u.size} distinct rows x "
            f"{cols_u.size} distinct columns); CNN images need contacts on common rows and columns (the "
            "feature-based models work on any layout)"
        )
    hole_row, hole_col = np.nonzero(occupied < 0)
    fill = np.zeros((n_contacts, hole_row.size))
    padded = np.pad(occupied, 1, constant_values=-1)
    cross = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    ring = cross + [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    for h, (r, c) in enumerate(zip(hole_row, hole_col)):
        for offsets in (cross, ring):
            neighbours = [padded[r + 1 + dr, c + 1 + dc] for dr, dc in offsets]
            neighbours = [n for n in neighbours if n >= 0]
            if neighbours:
                fill[neighbours, h] = 1.0 / len(neighbours)
                break
        else:
            raise ProbeError(f"probe {name!r}: grid cell (row {r}, column {c}) has no contact around it; the "
                             "layout is too sparse for an image")
    return Grid(shape=shape, row=row.astype(int), col=col.astype(int), hole_row=hole_row, hole_col=hole_col,
                fill=fill)


class ProbeGeometryError(ValueError):
    """A probe's contacts cannot be laid onto a model's probe (another layout, or not planar)."""


def planar_positions(positions: np.ndarray, tol_um: float = 1.0) -> np.ndarray:
    """Contact positions (C, 2) or (C, 3) as 2-D coordinates in the probe's plane, µm.

    3-D positions in a coordinate plane lose that coordinate; other 3-D positions are projected on
    their two principal directions (SVD of the centred positions); a third direction with a spread
    above ``tol_um`` means the contacts are not in one plane.

    Raises
    ------
    ProbeGeometryError
        For positions that are not (C, 2|3) finite numbers, or 3-D positions out of one plane.
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] not in (2, 3) or not len(positions):
        raise ProbeGeometryError(f"contact positions must have shape (contacts, 2 or 3), got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ProbeGeometryError("contact positions contain NaN or inf")
    if positions.shape[1] == 2:
        return positions
    flat_axes = np.flatnonzero(np.ptp(positions, axis=0) <= tol_um)
    if flat_axes.size:  # contacts in a coordinate plane (MEAutility's yz MEAs): keep the other two axes as they are
        return np.delete(positions, flat_axes[0], axis=1)
    centred = positions - positions.mean(axis=0)
    _, spread, axes = np.linalg.svd(centred, full_matrices=False)
    off_plane = float(np.abs(centred @ axes[2]).max()) if len(positions) > 2 else 0.0
    if off_plane > tol_um:
        raise ProbeGeometryError(f"the {len(positions)} contacts are not in one plane: they lie up to "
                                 f"{off_plane:.1f} µm off their best plane (tolerance {tol_um:g} µm)")
    return centred @ axes[:2].T


def model_plane_positions(name: str) -> np.ndarray:
    """Contact positions of a probe on its main axes (C, 2), µm, in the probe's contact order."""
    return get_probe(name).plane_positions


def match_contacts(positions: np.ndarray, probe: str, tol_um: float = 1.0) -> np.ndarray:
    """Which of a recording's channels sits on each contact of a model's probe.

    The recording's contacts (any channel order) may be the model probe translated, rotated by any
    angle in its plane, or mirrored (seen from the other side): the transform is found from the
    nearest-neighbour vectors of both layouts and checked on every contact. A symmetric layout (a
    square grid) fits in several ways; the one without mirror and with the smallest turn is taken
    (identical positions give the identity). Which one does not matter for models trained on
    randomly rotated cells (``3drot``).

    Parameters
    ----------
    positions : ndarray, shape (C, 2 or 3)
        The recording's contact positions, µm, in its channel order (e.g.
        ``SortingAnalyzer.get_channel_locations()``).
    probe : str
        MEAutility name of the model's probe.
    tol_um : float
        Largest distance between a transformed contact and its model contact.

    Returns
    -------
    ndarray of int, shape (n_model_contacts,)
        ``order[k]`` is the recording's channel on model contact ``k``: ``waveforms[:, order]`` puts
        them in the model's contact order.

    Raises
    ------
    ProbeGeometryError
        If the layouts differ (contact count, spacing, arrangement), naming both.
    """
    from scipy.spatial import cKDTree

    ours = planar_positions(positions, tol_um)
    model = model_plane_positions(probe)
    if len(ours) != len(model):
        raise ProbeGeometryError(f"the recording has {len(ours)} contacts, probe {probe!r} has {len(model)}")
    a = ours - ours.mean(axis=0)
    b = model - model.mean(axis=0)
    if len(a) == 1:
        return np.zeros(1, dtype=np.int64)
    tree_b = cKDTree(b)
    # reference vector of the recording: contact 0 to its nearest neighbour
    dist_a, nn_a = cKDTree(a).query(a[0], k=2)
    ref = a[nn_a[1]] - a[0]
    dist_b, nn_b = tree_b.query(b, k=2)
    candidates = b[nn_b[:, 1]] - b
    candidates = candidates[np.abs(dist_b[:, 1] - dist_a[1]) <= tol_um]
    for mirror in (False, True):  # a symmetric layout fits several ways: prefer no mirror, then the smallest turn
        flip = np.array([1.0, -1.0]) if mirror else np.ones(2)
        src, r = a * flip, ref * flip
        thetas = np.angle(np.exp(1j * (np.arctan2(candidates[:, 1], candidates[:, 0]) - np.arctan2(r[1], r[0]))))
        thetas = np.unique(np.round(thetas, 9))
        for theta in thetas[np.argsort(np.abs(thetas), kind="stable")]:
            rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
            distance, index = tree_b.query(src @ rotation.T)
            if distance.max() <= tol_um and np.unique(index).size == len(index):
                order = np.empty(len(model), dtype=np.int64)
                order[index] = np.arange(len(ours))
                return order
    raise ProbeGeometryError(f"the recording's {len(ours)} contacts (spacing {dist_a[1]:.1f} µm) do not lie on probe "
                             f"{probe!r}'s layout (spacing {np.median(dist_b[:, 1]):.1f} µm), translated, rotated or "
                             "mirrored")


def edge_contacts(name: str, tol_um: float = 1.0) -> np.ndarray:
    """Boolean mask of the contacts of a MEAutility probe that lie on the boundary of its layout
    (the outer ring of a grid; for a single column, every contact)."""
    from scipy.spatial import ConvexHull, QhullError

    points = model_plane_positions(name)
    try:
        hull = ConvexHull(points)
    except (QhullError, ValueError):  # collinear contacts: all on the boundary
        return np.ones(len(points), dtype=bool)
    # distance of every contact to each hull facet (a line a.x + b <= 0 inside)
    distance = np.abs(points @ hull.equations[:, :2].T + hull.equations[:, 2])
    return distance.min(axis=1) <= tol_um


#: Orientations tried when a model's layout is looked for inside a larger probe: turns by 0, 90, 180 and
#: 270 degrees, each also mirrored (probes are drawn axis-aligned; the first orientation that fits is kept).
_ORIENTATIONS = [np.array([[c, -s], [s, c]]) @ np.diag([1.0, m]) for m in (1.0, -1.0)
                 for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1))]


def window_orders(positions: np.ndarray, probe: str, tol_um: float = 1.0) -> np.ndarray:
    """Every placement of a (smaller) model probe's layout inside a recording's contacts, by translation.

    A long shank (Neuropixels 1.0: 384 contacts over 3.84 mm) is classified window by window with a
    model trained on a section of its layout (``Neuropixels-24``: 12 rows of the same staggered
    columns); each placement is a candidate window for a unit.

    Parameters
    ----------
    positions : ndarray, shape (C, 2 or 3)
        The recording's contact positions, µm, in its channel order.
    probe : str
        Probe spec of the model.
    tol_um : float
        Largest distance between a placed model contact and its recording contact.

    Returns
    -------
    ndarray of int, shape (K, n_model_contacts)
        ``orders[k, j]``: the recording channel on model contact ``j`` in window ``k``.

    Raises
    ------
    ProbeGeometryError
        If the model's layout fits nowhere in the recording's (in none of the orientations).
    """
    from scipy.spatial import cKDTree

    ours = planar_positions(positions, tol_um)
    model = model_plane_positions(probe)
    if len(ours) < len(model):
        raise ProbeGeometryError(f"the recording has {len(ours)} contacts, probe {probe!r} has {len(model)}: "
                                 "a model reads a recording whose probe holds its whole layout")
    tree = cKDTree(ours)
    for orientation in _ORIENTATIONS:
        placed = model @ orientation.T
        shifts = ours - placed[0]                          # model contact 0 on each recording contact
        distance, index = tree.query(placed[None] + shifts[:, None])
        fits = np.all(distance <= tol_um, axis=1)
        if fits.any():
            return index[fits].astype(np.int64)
    raise ProbeGeometryError(f"probe {probe!r} ({len(model)} contacts) fits nowhere among the recording's "
                             f"{len(ours)} contacts (translated, turned by a multiple of 90 degrees or mirrored)")


def unit_windows(amplitude: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Per unit, the window (a row of :func:`window_orders`) that holds most of its signal.

    Parameters
    ----------
    amplitude : ndarray, shape (U, C)
        Each unit's peak-to-peak on every recording channel
        (:func:`eap_assets.core.eaps.contact_peak_to_peak` of its template).
    orders : ndarray of int, shape (K, M)

    Returns
    -------
    ndarray of int, shape (U, M)
        The recording channels of each unit's window, in the model's contact order: the window with
        the largest sum of squared amplitudes above the unit's noise floor (the median over all
        channels: most channels of a long probe see only noise, which must not pull the window
        away from the unit); ties to the earlier row of ``orders``.
    """
    power = np.asarray(amplitude, dtype=np.float64) ** 2
    signal = np.maximum(power - np.median(power, axis=1, keepdims=True), 0.0)
    return orders[np.argmax(signal[:, orders].sum(axis=-1), axis=1)]
