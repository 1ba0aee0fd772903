"""Vectorised line-source model of the extracellular potential (Holt 1998; LFPy / lfpykit).

Each segment is a line of uniform current density in an infinite, homogeneous, isotropic
medium of conductivity ``sigma``.  The potential at contact ``c`` from segment ``s`` is
``M[c, s] * I[s]`` with

    M = 1 / (4 pi sigma dS) * log((sqrt(l^2 + r^2) + l) / (sqrt(h^2 + r^2) + h)),

``h`` the signed distance from the segment's end to the foot of the perpendicular from the
contact, ``l = h + dS`` and ``r`` the perpendicular distance.  Segments whose axis passes
closer to a contact than their radius get ``r`` = radius, as lfpykit's
``calc_lfp_linesource`` does.  lfpykit splits the log into three cases for numerical
stability; here the case ``h, l < 0`` is mapped onto ``h, l >= 0`` by symmetry and the
remaining case uses ``sqrt(h^2 + r^2) + h = r^2 / (sqrt(h^2 + r^2) - h)`` for ``h < 0``,
which gives the same values without per-case indexing.

Units: µm for distances, S/m for ``sigma``, nA for currents -> mV (x 1000 for µV).
Everything is batched over placements: geometry ``(B, S, 3)``, contacts ``(C, 3)`` ->
matrices ``(B, C, S)``.
"""

from __future__ import annotations

import numpy as np

#: Potential scale for a probe in an infinite medium, and for contacts on an insulating MEA
#: plane (method of images: the half-space potential is doubled, as MEArec does).
MEDIUM_FACTORS: dict[str, float] = {"infinite": 1.0, "mea_plane": 2.0}


def medium_factor(medium: str) -> float:
    """Scale of the potential for a medium name; raises ValueError for an unknown one."""
    try:
        return MEDIUM_FACTORS[medium]
    except KeyError:
        raise ValueError(f"medium {medium!r} unknown; choose one of {', '.join(MEDIUM_FACTORS)}") from None


def linesource_matrix(
    seg_start: np.ndarray,
    seg_end: np.ndarray,
    r_limit: np.ndarray,
    contacts: np.ndarray,
    sigma: float = 0.3,
    dtype: type = np.float64,
) -> np.ndarray:
    """Line-source transfer matrices for a batch of cell placements.

    Parameters
    ----------
    seg_start, seg_end : ndarray, shape (B, S, 3) or (S, 3)
        Segment end points of each placement, µm.
    r_limit : ndarray, shape (S,)
        Smallest allowed perpendicular distance per segment (its radius), µm.
    contacts : ndarray, shape (C, 3)
        Contact positions, µm.
    sigma : float
        Extracellular conductivity, S/m.
    dtype : numpy dtype
        Precision of the computation.

    Returns
    -------
    ndarray, shape (B, C, S) (or (C, S) for unbatched input)
        Potential per unit current, mV/nA.
    """
    start = np.asarray(seg_start, dtype=dtype)
    end = np.asarray(seg_end, dtype=dtype)
    squeeze = start.ndim == 2
    if squeeze:
        start, end = start[None], end[None]
    contacts = np.asarray(contacts, dtype=dtype)
    axis = end - start                                     # (B, S, 3)
    length = np.sqrt(np.einsum("bsk,bsk->bs", axis, axis))  # (B, S)
    unit = axis / length[..., None]
    # h = (contact - end) . unit and |contact - end|^2, from coordinate differences (no cancellation)
    h = np.zeros((start.shape[0], contacts.shape[0], start.shape[1]), dtype=dtype)
    dist2 = np.zeros_like(h)
    for k in range(3):
        diff = contacts[None, :, k, None] - end[:, None, :, k]
        h += diff * unit[:, None, :, k]
        dist2 += diff * diff
    r2 = np.abs(dist2 - h * h)
    np.maximum(r2, np.asarray(r_limit, dtype=dtype)[None, None, :] ** 2, out=r2)
    l_ = h + length[:, None, :]
    # case h < 0 and l < 0 is the mirror image of h, l >= 0: (h, l) -> (-l, -h)
    mirror = l_ < 0
    h, l_ = np.where(mirror, -l_, h), np.where(mirror, -h, l_)
    root_l = np.sqrt(l_ * l_ + r2)
    root_h = np.sqrt(h * h + r2)
    denom = np.where(h >= 0, root_h + h, r2 / (root_h - h))
    mapping = np.log((root_l + l_) / denom)
    mapping /= (4.0 * np.pi * sigma) * length[:, None, :]
    return mapping[0] if squeeze else mapping


def place_segments(
    seg_start: np.ndarray,
    seg_end: np.ndarray,
    origin: np.ndarray,
    rotations: np.ndarray,
    positions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a cell about ``origin`` (its soma) and move ``origin`` to each position.

    Parameters
    ----------
    seg_start, seg_end : ndarray, shape (S, 3)
        Segment end points in the morphology frame, µm.
    origin : ndarray, shape (3,)
        Rotation centre (soma midpoint), µm.
    rotations : ndarray, shape (B, 3, 3)
        Rotation matrices acting on column vectors.
    positions : ndarray, shape (B, 3)
        Where the soma goes, µm.

    Returns
    -------
    (start, end) : ndarrays, shape (B, S, 3)
    """
    rel_start = np.asarray(seg_start) - origin
    rel_end = np.asarray(seg_end) - origin
    start = np.einsum("bij,sj->bsi", rotations, rel_start) + positions[:, None, :]
    end = np.einsum("bij,sj->bsi", rotations, rel_end) + positions[:, None, :]
    return start, end
