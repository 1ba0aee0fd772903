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
