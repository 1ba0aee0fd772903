"""All EAPs of one rotation across cells, addressed by row, read one cell at a time.

An :class:`EAPPool` joins the memory-mapped EAP datasets of several cells (e.g. the 13 BBP
models and their morphology variants, one rotation mode) under one row index -- cell, parent,
labels, EAP id and soma position -- without loading the waveforms: :meth:`EAPPool.map` reads
the requested rows cell by cell, optionally adds recording noise
(:mod:`eap_assets.core.noise`, keyed by cell, rotation, copy and EAP id, so a row's noise does
not depend on which other rows are read with it), and applies a function to each chunk.  A
paper-scale rotation with variants is ~5 GB of waveforms; a pass over it holds one cell's
(~90 MB) at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from eap_assets.core.eaps import EAPDataset
from eap_assets.core.noise import NoiseConfig, recording_noise

#: Index columns of a pool (one row per EAP).
INDEX_COLUMNS: tuple[str, ...] = ("cell", "parent", "mtype", "ei", "excitatory", "eap_id", "x", "y", "z")


class EAPPool:
    """EAP datasets of several cells of one rotation under one row index.

    Parameters
    ----------
    datasets : sequence of EAPDataset
        One per cell (``eaps`` may be memory-mapped); same rotation, probe, sampling step and
        waveform shape.
    labels : mapping
        Cell name -> ``(parent, mtype, excitatory)``; ``parent`` is the cell itself for an
        original model, the model it was derived from for a morphology variant.

    Attributes
    ----------
    index : DataFrame
        Columns :data:`INDEX_COLUMNS`, one row per EAP, cells in the given order, EAP ids ascending.
    rotation, probe : str
    dt : float
        Sampling step, ms.
    shape : (int, int)
        (contacts, samples) of every EAP.

    Raises
    ------
    ValueError
        No datasets, a cell given twice or without labels, datasets that differ in rotation,
        probe, ``dt`` or waveform shape.
    """

    def __init__(self, datasets: Sequence[EAPDataset], labels: Mapping[str, tuple[str, str, bool]]):
        if not datasets:
            raise ValueError("EAPPool needs at least one EAP dataset")
        names = [d.cell_name for d in datasets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"EAPPool: cells given twice: {twice}")
        missing = [n for n in names if n not in labels]
        if missing:
            raise ValueError(f"EAPPool: no (parent, mtype, excitatory) labels for {missing}")
        first = datasets[0]
        for d in datasets[1:]:
            for what, mine, theirs in (("rotation", d.rotation, first.rotation), ("probe", d.probe, first.probe),
                                       ("dt", d.dt, first.dt), ("EAP shape", d.eaps.shape[1:], first.eaps.shape[1:])):
                if mine != theirs:
                    raise ValueError(f"EAPPool: {d.cell_name} has {what} {mine!r}, {first.cell_name} {theirs!r}; "
                                     "a pool holds one rotation of one probe")
        self.datasets = {d.cell_name: d for d in datasets}
        self.rotation, self.probe, self.dt = first.rotation, first.probe, float(first.dt)
        self.shape = tuple(first.eaps.shape[1:])
        frames = []
        for d in datasets:
            parent, mtype, excitatory = labels[d.cell_name]
            positions = np.asarray(d.positions, dtype=np.float64)
            frames.append(pd.DataFrame({
                "cell": d.cell_name, "parent": parent, "mtype": mtype, "ei": "E" if excitatory else "I",
                "excitatory": bool(excitatory), "eap_id": np.arange(d.accepted, dtype=np.int64),
                "x": positions[:, 0], "y": positions[:, 1], "z": positions[:, 2]}))
        self.index = pd.concat(frames, ignore_index=True)

    def __len__(self) -> int:
        return len(self.index)

    def rows_of(self, cells: Sequence[str], eap_ids: Sequence[int]) -> np.ndarray:
        """Pool rows of ``(cell, eap_id)`` pairs (e.g. a feature table's rows), in their order.

        Raises
        ------
        ValueError
            Naming the first pair that is not in the pool.
        """
        position = pd.Series(np.arange(len(self.index)),
                             index=pd.MultiIndex.from_frame(self.index[["cell", "eap_id"]]))
        wanted = pd.MultiIndex.from_arrays([np.asarray(cells, dtype=object), np.asarray(eap_ids, dtype=np.int64)])
        found = position.reindex(wanted)
        if found.isna().any():
            bad = wanted[int(np.flatnonzero(found.isna().to_numpy())[0])]
            raise ValueError(f"EAPPool ({self.rotation}): no EAP {bad[1]} of cell {bad[0]!r}")
        return found.to_numpy(np.int64)

    def map(self, rows: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], noise: NoiseConfig | None = None,
            levels: float | np.ndarray = 0.0, copy: int = 0) -> np.ndarray:
        """``fn`` applied to the EAPs of ``rows``, one cell at a time; results stacked in ``rows`` order.

        Parameters
        ----------
        rows : ndarray of int
            Pool rows (any order, repeats allowed).
        fn : callable
            ``(n, contacts, samples) float32 µV -> (n, ...)``.
        noise : NoiseConfig, optional
            Kind, band and seed of the recording noise (its ``rms_uv`` is not used: see ``levels``);
            None: no noise.
        levels : float or ndarray, shape (len(rows),)
            Noise RMS of each row, µV (one number: every row).  Row ``r`` gets ``levels[r]`` times
            the unit-RMS noise of (seed, cell, rotation, ``copy``, EAP id): the same draw at every
            level, so a sweep over levels compares like with like, and ``noisy_eaps`` at a fixed
            RMS gives the same noise.
        copy : int
            Noise copy (augmentation copies are independent of each other and of copy 0).

        Returns
        -------
        ndarray, shape (len(rows), ...)
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self.index)):
            raise ValueError(f"EAPPool.map: rows must be in [0, {len(self.index)}), got {rows.min()}..{rows.max()}")
        levels = np.broadcast_to(np.asarray(levels, dtype=np.float64), rows.shape)
        if (levels < 0).any() or not np.isfinite(levels).all():
            raise ValueError("EAPPool.map: noise levels must be finite and >= 0 µV")
        cells = self.index["cell"].to_numpy()[rows]
        eap_ids = self.index["eap_id"].to_numpy()[rows]
        out = None
        for cell in pd.unique(cells):
            mine = np.flatnonzero(cells == cell)
            ids = eap_ids[mine]
            order = np.argsort(ids, kind="stable")  # ascending reads of the memory map
            data = self.datasets[cell]
            eaps = np.asarray(data.eaps[ids[order]], dtype=np.float32)
            level = levels[mine][order]
            if noise is not None and (level > 0).any():
                unit = recording_noise(len(ids), *self.shape, self.dt, replace(noise, rms_uv=1.0),
                                       keys=(cell, self.rotation), copy=copy, row_ids=ids[order])
                eaps += level.astype(np.float32)[:, None, None] * unit
            result = np.asarray(fn(eaps))
            if out is None:
                out = np.empty((rows.size, *result.shape[1:]), dtype=result.dtype)
            out[mine[order]] = result
        if out is None:  # no rows: shape from one EAP
            probe = np.asarray(fn(np.zeros((1, *self.shape), dtype=np.float32)))
            out = np.empty((0, *probe.shape[1:]), dtype=probe.dtype)
        return out

    def gather(self, rows: np.ndarray, noise: NoiseConfig | None = None, levels: float | np.ndarray = 0.0,
               copy: int = 0) -> np.ndarray:
        """The (optionally noisy) EAPs of ``rows``, float32 (len(rows), contacts, samples)."""
        return self.map(rows, lambda x: x, noise, levels, copy)
