"""Vectorised line-source model of the extracellular potential (Holt 1998; LFPy / lfpykit).

Each segment is a line of uniform current density in an infinite, homogeneous, isotropic
medium of conductivity ``sigma``.  The potential at contact ``c`` from segment ``s`` is
``M[c, s] * I[s]`` with

    M = 1 / (4 pi sigma dS) * log((sqrt(l^2 + r^2) + l) / (sqrt(h^2 + r^2) + h)),

``h`` the signed distance from the segment's end to the foot of the perpendicular from the
contact, ``l = h + dS`` and ``r`` the perpendicular distance.  Segments whose axis passes
closer to a contact than their radius get ``r`` = radius, as lfpykit's
``calc_lfp_linesource`` does.

Numerics.  The log term is symmetric under ``(h, l) -> (-l, -h)`` (lfpykit's case
``h, l < 0`` is the mirror image of ``h, l >= 0``, and its case ``h < 0 <= l`` is invariant),
so only the distance ``m = |a|`` of the contact's foot from the segment *midpoint* matters:
``h = m - dS/2``, ``l = m + dS/2``.  With ``q(x) = sqrt(x^2 + r^2)`` the term is

    log((q(l) + l) / (q(h) + |h|))                if h >= 0,
    log((q(l) + l) * (q(h) + |h|) / r^2)          if h <  0 (contact beside the segment),

free of cancellation in both cases.  ``a`` and the two coordinates of the contact
perpendicular to the axis (``r^2`` is their sum of squares) are the contact's homogeneous
coordinates times a per-segment frame (:class:`SegmentGeometry`), so no difference vectors
are formed and ``r^2`` is not the difference of two large numbers.  One fused, compiled
pass (numba, :mod:`eap_assets.core.kernels`) computes the log's argument per (contact,
segment) element with no temporaries; numpy's vectorised ``log`` follows on the same
cache-sized block.  The frame depends on the cell only: for a rotated and moved cell the
contacts are moved into the cell's frame instead (:meth:`SegmentGeometry.to_local`).

Units: µm for distances, S/m for ``sigma``, nA for currents -> mV (x 1000 for µV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Potential scale for a probe in an infinite medium, and for contacts on an insulating MEA
#: plane (method of images: the half-space potential is doubled, as MEArec does).
MEDIUM_FACTORS: dict[str, float] = {"infinite": 1.0, "mea_plane": 2.0}
#: Elements (contacts x segments) of one block of the element-wise stage: the block stays in the
#: L2 cache between the fused pass and the log.  A speed setting only: results do not depend on it.
BLOCK_ELEMENTS = 32_768


def medium_factor(medium: str) -> float:
    """Scale of the potential for a medium name; raises ValueError for an unknown one."""
    try:
        return MEDIUM_FACTORS[medium]
    except KeyError:
        raise ValueError(f"medium {medium!r} unknown; choose one of {', '.join(MEDIUM_FACTORS)}") from None


def _perpendicular_frame(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors per row of ``unit`` (S, 3) completing it to an orthonormal frame."""
    helper = np.zeros_like(unit)
    use_x = np.abs(unit[:, 0]) < 0.9
    helper[use_x, 0] = 1.0
    helper[~use_x, 1] = 1.0
    first = helper - np.einsum("sk,sk->s", helper, unit)[:, None] * unit
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    return first, np.cross(unit, first)


@dataclass(frozen=True)
class SegmentGeometry:
    """Per-segment quantities of one cell, computed once, for line-source matrices.

    Points (contacts) are given in the cell's own frame relative to ``origin``; the frame of
    segment ``s`` is its axis (origin at its midpoint) and two perpendicular unit vectors.

    Attributes
    ----------
    frame : ndarray, shape (3, 4, S)
        ``[x, y, z, 1] @ frame[j]`` is the coordinate of a point along the axis (j = 0) and the
        two perpendicular directions (j = 1, 2) of every segment.
    half_length : ndarray, shape (S,)
        Half the segment lengths, µm.
    r2_min : ndarray, shape (S,)
        Squared smallest perpendicular distance (the radius), µm².
    weight : ndarray, shape (S,), float64
        ``1 / (4 pi sigma dS)``: the log term times this is the matrix in mV/nA.
    origin : ndarray, shape (3,), float64
        Rotation centre the points are relative to, µm.
    """

    frame: np.ndarray
    half_length: np.ndarray
    r2_min: np.ndarray
    weight: np.ndarray
    origin: np.ndarray

    @classmethod
    def from_segments(cls, seg_start: np.ndarray, seg_end: np.ndarray, r_limit: np.ndarray, sigma: float = 0.3,
                      origin: np.ndarray | None = None, dtype: type = np.float64) -> SegmentGeometry:
        """Precompute the per-segment frame.

        Parameters
        ----------
        seg_start, seg_end : ndarray, shape (S, 3)
            Segment end points, µm.
        r_limit : ndarray, shape (S,)
            Smallest allowed perpendicular distance per segment (its radius), µm.
        sigma : float
            Extracellular conductivity, S/m.
        origin : ndarray, shape (3,), optional
            Point the contacts will be given relative to (default: the coordinate origin).
        dtype : numpy dtype
            Working precision of :meth:`log_term`.

        Raises
        ------
        ValueError
            If a segment has zero length.
        """
        origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=float)
        start = np.asarray(seg_start, dtype=float) - origin
        end = np.asarray(seg_end, dtype=float) - origin
        axis = end - start
        length = np.linalg.norm(axis, axis=1)
        if np.any(length == 0):
            raise ValueError(f"segments {np.flatnonzero(length == 0)[:10].tolist()} have zero length; the "
                             "line-source model needs segments of positive length")
        unit = axis / length[:, None]
        perp1, perp2 = _perpendicular_frame(unit)
        mid = (start + end) / 2.0
        frame = np.empty((3, 4, len(length)))
        for j, direction in enumerate((unit, perp1, perp2)):
            frame[j, :3] = direction.T
            frame[j, 3] = -np.einsum("sk,sk->s", mid, direction)
        return cls(frame=frame.astype(dtype), half_length=(length / 2.0).astype(dtype),
                   r2_min=(np.asarray(r_limit, dtype=float) ** 2).astype(dtype),
                   weight=1.0 / (4.0 * np.pi * sigma * length), origin=origin)

    @property
    def n_segments(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return self.frame.dtype

    def to_local(self, points: np.ndarray, rotations: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Points (C, 3) as seen from the cell rotated about ``origin`` and moved there.

        The cell is placed as by :func:`place_segments`: ``p' = R (p - origin) + position``;
        a point ``x`` then sits at ``R^T (x - position)`` relative to ``origin`` in the
        cell's frame.

        Parameters
        ----------
        points : ndarray, shape (C, 3)
        rotations : ndarray, shape (B, 3, 3)
        positions : ndarray, shape (B, 3)

        Returns
        -------
        ndarray, shape (B, C, 3), float64
        """
        rel = np.asarray(points, dtype=float)[None] - np.asarray(positions, dtype=float)[:, None, :]
        return np.einsum("bci,bij->bcj", rel, rotations)

    def log_term(self, points: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The dimensionless log term of every (point, segment) pair.

        One fused pass (:func:`eap_assets.core.kernels.log_ratio`, compiled by numba) per block
        of rows computes the log's argument with no temporaries; numpy's vectorised ``log`` then
        runs over the block while it is still in the cache.

        Parameters
        ----------
        points : ndarray, shape (N, 3)
            Points relative to ``origin`` in the cell's frame, µm.
        out : ndarray, shape (N, S), optional
            C-contiguous array of the working dtype to write into.

        Returns
        -------
        ndarray, shape (N, S)
            Multiply by :attr:`weight` for the matrix in mV/nA.
        """
        from eap_assets.core.kernels import log_ratio  # numba loads on first use, not on import

        points = np.ascontiguousarray(points, dtype=self.dtype)
        n, n_seg = len(points), self.n_segments
        if out is None:
            out = np.empty((n, n_seg), dtype=self.dtype)
        rows = max(1, BLOCK_ELEMENTS // n_seg)
        for lo in range(0, n, rows):
            block = out[lo:lo + rows]
            log_ratio(points[lo:lo + rows], self.frame, self.half_length, self.r2_min, block)
            np.log(block, out=block)
        return out

    def matrix(self, points: np.ndarray) -> np.ndarray:
        """Line-source matrix (N, S) of points relative to ``origin``, mV/nA, working dtype."""
        res = self.log_term(points)
        res *= self.weight.astype(self.dtype)
        return res


def linesource_matrix(
    seg_start: np.ndarray,
    seg_end: np.ndarray,
    r_limit: np.ndarray,
    contacts: np.ndarray,
    sigma: float = 0.3,
    dtype: type = np.float64,
) -> np.ndarray:
    """Line-source transfer matrices for a batch of (already placed) cell geometries.

    For many placements of one cell, :class:`SegmentGeometry` with
    :meth:`SegmentGeometry.to_local` is faster: it prepares the segments once.

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
    start, end = np.asarray(seg_start, dtype=float), np.asarray(seg_end, dtype=float)
    if start.ndim == 2:
        return linesource_matrix(start[None], end[None], r_limit, contacts, sigma, dtype)[0]
    contacts = np.asarray(contacts, dtype=float)
    return np.stack([SegmentGeometry.from_segments(s, e, r_limit, sigma, dtype=dtype).matrix(contacts)
                     for s, e in zip(start, end)])


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
