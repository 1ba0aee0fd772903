"""Recording probes from MEAutility, and their contacts laid out as an image grid."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


class ProbeError(ValueError):
    """Unknown probe name, or a probe whose contacts do not form a grid."""


@dataclass(frozen=True)
class Probe:
    """Contact positions of a MEAutility probe.

    Attributes
    ----------
    name : str
        MEAutility name, e.g. ``SqMEA-10-15``.
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


@lru_cache(maxsize=32)
def get_probe(name: str = "SqMEA-10-15") -> Probe:
    """Load a probe by its MEAutility name.

    Raises
    ------
    ProbeError
        If MEAutility does not know the name (the message lists the known ones).
    """
    import MEAutility as mu

    known = mu.return_mea_list()
    if name not in known:
        raise ProbeError(f"probe {name!r} is not a MEAutility probe; known probes: {', '.join(known)}")
    mea = mu.return_mea(name)
    positions = np.asarray(mea.positions, dtype=float)
    normal = np.asarray(mea.normal, dtype=float).reshape(-1, 3)[0]
    positions.setflags(write=False)
    return Probe(name=name, positions=positions, normal=normal / np.linalg.norm(normal),
                 main_axes=np.asarray(mea.main_axes, dtype=float))


@dataclass(frozen=True)
class Grid:
    """Where each contact sits in a (rows, cols) image.

    ``row`` indexes the probe's second main axis and ``col`` its first, both increasing
    with the coordinate (for ``SqMEA-10-15``: rows along z, columns along y), which is
    MEAutility's own ``RectMEA`` convention (linear id = ``dim[0] * col + row``).
    """

    shape: tuple[int, int]
    row: np.ndarray
    col: np.ndarray

    def to_image(self, values: np.ndarray) -> np.ndarray:
        """Place per-contact values (..., n_contacts) into images (..., rows, cols)."""
        values = np.asarray(values)
        image = np.zeros(values.shape[:-1] + self.shape, dtype=values.dtype)
        image[..., self.row, self.col] = values
        return image


@lru_cache(maxsize=32)
def probe_grid(name: str = "SqMEA-10-15", decimals: int = 3) -> Grid:
    """Grid layout of a probe's contacts, derived from their positions on the main axes.

    Raises
    ------
    ProbeError
        If the contacts do not fill a rectangular grid one contact per cell.
    """
    probe = get_probe(name)
    coords = np.round(probe.positions @ probe.main_axes.T, decimals)
    cols_u, col = np.unique(coords[:, 0], return_inverse=True)
    rows_u, row = np.unique(coords[:, 1], return_inverse=True)
    shape = (rows_u.size, cols_u.size)
    occupied = np.zeros(shape, dtype=int)
    np.add.at(occupied, (row, col), 1)
    if shape[0] * shape[1] != probe.n_contacts or not np.all(occupied == 1):
        raise ProbeError(
            f"probe {name!r}: its {probe.n_contacts} contacts do not form a grid "
            f"({rows_u.size} distinct rows x {cols_u.size} distinct columns); feature images need a grid probe"
        )
    return Grid(shape=shape, row=row.astype(int), col=col.astype(int))


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
    """Contact positions of a MEAutility probe on its main axes (C, 2), µm, in the probe's contact order."""
    probe = get_probe(name)
    return probe.positions @ probe.main_axes.T


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
