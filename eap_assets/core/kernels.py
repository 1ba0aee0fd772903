"""Compiled kernels (numba) of the EAP simulation's hot loops.

Imported where they are called, not at package import: loading numba takes ~0.25 s that the
serving path (``eap-assets classify``) never needs.  ``cache=True``: each worker process loads
the compiled code from ``__pycache__`` instead of compiling it again.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False, error_model="numpy")
def log_ratio(points: np.ndarray, frame: np.ndarray, half_length: np.ndarray, r2_min: np.ndarray,
              out: np.ndarray) -> None:
    """The argument of the log term of every (point, segment) pair, written into ``out`` (N, S).

    See :mod:`eap_assets.core.linesource` for the formula and
    :class:`~eap_assets.core.linesource.SegmentGeometry` for the arrays.
    Plain IEEE arithmetic (no fast-math: no reassociation, no fused multiply-add contraction),
    so the bits do not depend on the CPU's vector width; the loop over segments vectorises.
    """
    a0, a1, a2, a3 = frame[0, 0], frame[0, 1], frame[0, 2], frame[0, 3]
    u0, u1, u2, u3 = frame[1, 0], frame[1, 1], frame[1, 2], frame[1, 3]
    v0, v1, v2, v3 = frame[2, 0], frame[2, 1], frame[2, 2], frame[2, 3]
    for i in range(points.shape[0]):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        row = out[i]
        for s in range(half_length.shape[0]):
            a = x * a0[s] + y * a1[s] + z * a2[s] + a3[s]      # along the axis from the midpoint
            u = x * u0[s] + y * u1[s] + z * u2[s] + u3[s]      # two perpendicular coordinates
            v = x * v0[s] + y * v1[s] + z * v2[s] + v3[s]
            r2 = max(u * u + v * v, r2_min[s])
            m = abs(a)
            h = m - half_length[s]
            l_ = m + half_length[s]
            q_l = np.sqrt(l_ * l_ + r2) + l_                  # q(l) + l
            q_h = np.sqrt(h * h + r2) + abs(h)                 # q(h) + |h|
            row[s] = q_l * q_h / r2 if h < 0 else q_l / q_h   # h < 0: contact beside the segment


@numba.njit(cache=True, nogil=True, boundscheck=False)
def max_peak_to_peak(eaps: np.ndarray) -> np.ndarray:
    """:func:`eap_assets.core.eaps.peak_to_peak` in one pass over the data (3x faster than numpy's max and min).

    Eight running maxima and minima per trace: independent accumulators that the compiler
    turns into vector registers (a single running max/min is a serial dependency chain).
    """
    n, n_contacts, n_samples = eaps.shape
    out = np.empty(n, dtype=eaps.dtype)
    whole = n_samples - n_samples % 8
    for i in range(n):
        best = eaps.dtype.type(0)
        for j in range(n_contacts):
            row = eaps[i, j]
            h0 = h1 = h2 = h3 = h4 = h5 = h6 = h7 = row[0]
            l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = row[0]
            for k in range(0, whole, 8):
                h0, l0 = max(h0, row[k]), min(l0, row[k])
                h1, l1 = max(h1, row[k + 1]), min(l1, row[k + 1])
                h2, l2 = max(h2, row[k + 2]), min(l2, row[k + 2])
                h3, l3 = max(h3, row[k + 3]), min(l3, row[k + 3])
                h4, l4 = max(h4, row[k + 4]), min(l4, row[k + 4])
                h5, l5 = max(h5, row[k + 5]), min(l5, row[k + 5])
                h6, l6 = max(h6, row[k + 6]), min(l6, row[k + 6])
                h7, l7 = max(h7, row[k + 7]), min(l7, row[k + 7])
            for k in range(whole, n_samples):
                h0, l0 = max(h0, row[k]), min(l0, row[k])
            high = max(max(max(h0, h1), max(h2, h3)), max(max(h4, h5), max(h6, h7)))
            low = min(min(min(l0, l1), min(l2, l3)), min(min(l4, l5), min(l6, l7)))
            best = max(best, high - low)
        out[i] = best
    return out
