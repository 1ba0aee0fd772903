"""Rotations of a cell about its soma for the paper's four datasets (and MEArec's ``physrot``).

Every rotation starts from the model aligned with its apical axis along +z.  BBP morphologies
have the apical dendrite along +y, so :data:`ALIGN_BBP` (+90° about x) is applied first.

- ``norot``: no further rotation;
- ``zrot``: uniform angle about z (apical axis stays along z);
- ``xrot``: uniform angle about x (the probe normal);
- ``3drot``: uniformly random rotation (Haar measure; scipy ``Rotation.random``);
- ``physrot``: as MEArec: polar cells (pyramidal, BP, MC) get a uniform spin about z and a tilt
  of at most 15° in a random direction; the others a uniformly random rotation.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

ROTATION_MODES: tuple[str, ...] = ("norot", "zrot", "xrot", "3drot", "physrot")
PAPER_ROTATIONS: tuple[str, ...] = ("norot", "zrot", "xrot", "3drot")
#: m-types with a preferred dendritic orientation, tilted only a little under ``physrot``.
POLAR_MTYPES: frozenset[str] = frozenset({"STPC", "TTPC1", "TTPC2", "UTPC", "PC", "TPC", "BP", "MC"})


def axis_rotation(axis: str, angles: np.ndarray) -> np.ndarray:
    """Rotation matrices about a coordinate axis.

    Parameters
    ----------
    axis : {'x', 'y', 'z'}
    angles : ndarray, shape (n,)
        Angles in radians (right-hand rule).

    Returns
    -------
    ndarray, shape (n, 3, 3)
    """
    return Rotation.from_euler(axis, np.asarray(angles, dtype=float).reshape(-1, 1)).as_matrix()


#: +90° about x: maps the BBP apical axis (+y) onto +z.
ALIGN_BBP: np.ndarray = axis_rotation("x", np.array([np.pi / 2]))[0]


def _check_mode(mode: str) -> None:
    if mode not in ROTATION_MODES:
        raise ValueError(f"rotation mode {mode!r} unknown; choose one of {', '.join(ROTATION_MODES)}")


def random_rotations(
    mode: str, n: int, rng: np.random.Generator, mtype: str | None = None, max_tilt_deg: float = 15.0
) -> np.ndarray:
    """Draw ``n`` rotations (applied after :data:`ALIGN_BBP`) for a rotation mode.

    Parameters
    ----------
    mode : str
        One of :data:`ROTATION_MODES`.
    n : int
        Number of rotations.
    rng : numpy.random.Generator
        Source of randomness (seeded by the caller).
    mtype : str, optional
        m-type of the cell; needed by ``physrot`` only.
    max_tilt_deg : float
        Largest tilt of polar cells under ``physrot``, degrees.

    Returns
    -------
    ndarray, shape (n, 3, 3)
        Rotation matrices R, acting on column vectors (``p' = R @ p``).
    """
    _check_mode(mode)
    if mode == "norot":
        return np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    if mode == "zrot":
        return axis_rotation("z", rng.uniform(0.0, 2 * np.pi, n))
    if mode == "xrot":
        return axis_rotation("x", rng.uniform(0.0, 2 * np.pi, n))
    if mode == "3drot" or (mode == "physrot" and mtype not in POLAR_MTYPES):
        if mode == "physrot" and mtype is None:
            raise ValueError("rotation mode 'physrot' needs the cell's m-type")
        return Rotation.random(n, rng=rng).as_matrix()
    # physrot, polar cell: tilt uniform on the spherical cap of half-angle max_tilt, then spin about z
    spin = rng.uniform(0.0, 2 * np.pi, n)
    cos_tilt = rng.uniform(np.cos(np.deg2rad(max_tilt_deg)), 1.0, n)
    direction = rng.uniform(0.0, 2 * np.pi, n)
    tilt_axes = np.column_stack([np.cos(direction), np.sin(direction), np.zeros(n)])
    tilt = Rotation.from_rotvec(tilt_axes * np.arccos(cos_tilt)[:, None])
    return tilt.as_matrix() @ axis_rotation("z", spin)


def full_rotations(mode: str, n: int, rng: np.random.Generator, mtype: str | None = None,
                   align: np.ndarray = ALIGN_BBP) -> np.ndarray:
    """Random rotation of each placement composed with the alignment: ``R = R_mode @ align``."""
    return random_rotations(mode, n, rng, mtype=mtype) @ align
