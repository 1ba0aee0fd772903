"""EAP datasets: a cell's spike templates placed at random positions and rotations in front of
a probe, the extracellular potential computed by the vectorised line-source model, and only
sizeable spikes kept (paper: peak-to-peak >= 30 µV on at least one contact), until N are
accepted.

Candidates are drawn in fixed chunks of :data:`DRAW_CHUNK` from generators seeded by
``(seed, cell, rotation)``, so a partition's data depend on nothing else (not on the order in
which partitions run, nor on the compute batch size: that changes the computed potentials in
the last bits of float32 at most).

The engine works in float32 by default, with each spike's currents replaced by a low-rank
factorisation (:func:`low_rank_factors`); the EAPs agree with the exact float64 computation
to ~1e-5 of their peak (tests), far below the 30 µV rule's resolution.  Pass
``dtype=np.float64`` for the exact reference computation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation
from threadpoolctl import threadpool_limits

from eap_assets.core import linesource, rotations
from eap_assets.core.intracellular import SpikeTemplates
from eap_assets.core.probe import get_probe
from eap_assets.core.storage import atomic_dir

#: Version of the EAP sampling and line-source code (see intracellular.CODE_VERSION).
CODE_VERSION = "eaps-3"
#: Candidates drawn at a time. Part of the sampling algorithm: changing it changes the data.
DRAW_CHUNK = 256
#: Default working precision of the engine (float64 is kept for reference comparisons).
DEFAULT_DTYPE = np.float32
#: Candidates computed at a time once fewer than a chunk are still wanted (speed only).
FINAL_STEP = 64
#: Relative singular-value cut-off of the spike currents in float32 (see :func:`low_rank_factors`).
LOW_RANK_TOL = 1e-7
#: Upper bound of elements of the (placements x contacts, segments) matrix of one matrix product.
_GEMM_ELEMENTS = 1_000_000


class AcceptanceError(RuntimeError):
    """Too few candidate placements passed the amplitude rule within the allowed tries."""


@dataclass(frozen=True)
class EAPConfig:
    """Settings of one EAP dataset.

    Attributes
    ----------
    probe : str
        Probe spec (:func:`eap_assets.core.probe.get_probe`: MEAutility name, generated probe or JSON file).
    n_eaps : int
        Accepted EAPs wanted (paper: 1000).
    rotation : str
        One of :data:`eap_assets.core.rotations.ROTATION_MODES`.
    x_range, y_range, z_range : (float, float)
        Soma position box, µm (paper text: x 10-60, y and z ±75; published code: x 10-80, ±105).
    min_amplitude : float
        Peak-to-peak needed on at least one contact, µV (paper: 30).
    sigma : float
        Extracellular conductivity, S/m.
    medium : str
        ``"infinite"`` (paper code: plain LFPy) or ``"mea_plane"`` (insulating MEA plane:
        potential doubled, as MEArec).
    max_tries : int, optional
        Bound on candidate placements; default ``50 * n_eaps``.
    seed : int
        Root seed of the random draws.
    """

    probe: str = "SqMEA-10-15"
    n_eaps: int = 1000
    rotation: str = "norot"
    x_range: tuple[float, float] = (10.0, 60.0)
    y_range: tuple[float, float] = (-75.0, 75.0)
    z_range: tuple[float, float] = (-75.0, 75.0)
    min_amplitude: float = 30.0
    sigma: float = 0.3
    medium: str = "infinite"
    max_tries: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_eaps < 1:
            raise ValueError(f"n_eaps must be >= 1, got {self.n_eaps}")
        if self.rotation not in rotations.ROTATION_MODES:
            raise ValueError(f"rotation {self.rotation!r} unknown; choose one of {', '.join(rotations.ROTATION_MODES)}")
        linesource.medium_factor(self.medium)
        for name in ("x_range", "y_range", "z_range"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")

    @property
    def tries_bound(self) -> int:
        return self.max_tries if self.max_tries is not None else 50 * self.n_eaps


@dataclass
class EAPDataset:
    """Accepted EAPs of one cell and rotation mode.

    Attributes
    ----------
    cell_name, rotation, probe : str
    eaps : ndarray, shape (N, n_contacts, n_samples), float32
        Extracellular potentials, µV.
    positions : ndarray, shape (N, 3)
        Soma positions, µm.
    rotations : ndarray, shape (N, 3, 3)
        Rotation applied to the morphology (alignment included), column-vector convention.
    spike_index : ndarray, shape (N,)
        Which of the cell's spike templates each EAP uses.
    candidate_index : ndarray, shape (N,)
        Position of each accepted EAP in the candidate sequence.
    tries : int
        Candidates evaluated until the N-th was accepted.
    dt : float
        Sampling step, ms.
    provenance : dict
    """

    cell_name: str
    rotation: str
    probe: str
    eaps: np.ndarray
    positions: np.ndarray
    rotations: np.ndarray
    spike_index: np.ndarray
    candidate_index: np.ndarray
    tries: int
    dt: float
    provenance: dict = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return int(self.eaps.shape[0])

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.tries if self.tries else 0.0

    def index_frame(self) -> pd.DataFrame:
        """One row per EAP: id, spike index, soma position and rotation (quaternion, scalar last)."""
        quat = Rotation.from_matrix(self.rotations).as_quat()
        return pd.DataFrame({
            "eap_id": np.arange(self.accepted, dtype=np.int64),
            "candidate_index": self.candidate_index.astype(np.int64),
            "spike_index": self.spike_index.astype(np.int16),
            "x": self.positions[:, 0], "y": self.positions[:, 1], "z": self.positions[:, 2],
            "qx": quat[:, 0], "qy": quat[:, 1], "qz": quat[:, 2], "qw": quat[:, 3],
        })

    def save(self, folder: str | Path) -> Path:
        """Write ``eaps.npy`` (memory-mappable), ``index.parquet`` and ``meta.json`` as one atomic
        folder: a failed or killed write leaves the previous dataset (or none), never a mix."""
        folder = Path(folder)
        meta = {"cell_name": self.cell_name, "rotation": self.rotation, "probe": self.probe, "tries": self.tries,
                "accepted": self.accepted, "acceptance_rate": self.acceptance_rate, "dt": self.dt,
                "provenance": self.provenance}
        with atomic_dir(folder) as tmp:
            with open(tmp / "eaps.npy", "wb") as fh:
                np.save(fh, np.ascontiguousarray(self.eaps))
            self.index_frame().to_parquet(tmp / "index.parquet", index=False)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> EAPDataset:
        """Read a dataset written by :meth:`save` (EAPs memory-mapped by default).

        Raises
        ------
        FileNotFoundError
            If the folder has no ``meta.json``.
        ValueError
            If a file of it is missing or unreadable (naming the folder and the file).
        """
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise FileNotFoundError(f"EAP dataset {folder} does not exist (no meta.json)")
        name = "meta.json"
        try:
            meta = json.loads((folder / name).read_text())
            name = "index.parquet"
            index = pd.read_parquet(folder / name)
            quat = index[["qx", "qy", "qz", "qw"]].to_numpy()
            name = "eaps.npy"
            eaps = np.load(folder / name, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"EAP dataset {folder}: {name} is missing or unreadable ({type(exc).__name__}: {exc}); "
                             "re-materialise eap_dataset for it") from exc
        return cls(
            cell_name=meta["cell_name"], rotation=meta["rotation"], probe=meta["probe"], eaps=eaps,
            positions=index[["x", "y", "z"]].to_numpy(), rotations=Rotation.from_quat(quat).as_matrix(),
            spike_index=index["spike_index"].to_numpy(), candidate_index=index["candidate_index"].to_numpy(),
            tries=int(meta["tries"]), dt=float(meta["dt"]), provenance=meta["provenance"],
        )


def partition_seed(seed: int, *keys: str) -> np.random.SeedSequence:
    """Seed sequence from ``seed`` and string keys (stable across processes and Python versions)."""
    words = [int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little") for k in keys]
    return np.random.SeedSequence([int(seed), *words])


def derived_seed(seed: int, *keys: str, int31: bool = False) -> int:
    """One integer seed from ``seed`` and string keys (the first word of :func:`partition_seed`).

    ``int31``: below ``2**31 - 1``, for libraries that take a signed 32-bit seed (LightGBM,
    TensorFlow, MEArec's ``np.random.seed``)."""
    value = int(partition_seed(seed, *keys).generate_state(1)[0])
    return value % (2**31 - 1) if int31 else value


def row_rng(entropy: Sequence[int], *spawn_key: int) -> np.random.Generator:
    """The generator of one row (e.g. ``(copy, eap_id)``) under a partition's entropy
    (``partition_seed(...).entropy``): a row's draws never depend on which other rows are drawn."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=tuple(int(k) for k in spawn_key)))


def low_rank_factors(currents: np.ndarray, rank_tol: float, dtype: type) -> tuple[np.ndarray, ...]:
    """Factors whose product is ``currents`` (S, T), truncated to a relative singular-value cut-off.

    The currents of one spike have a low numerical rank (BBP cells: 30-65 at 1e-7 of the
    largest singular value, of 224 samples), so ``(terms @ A) @ B`` needs 3-4x fewer
    operations than ``terms @ currents``.  ``B`` holds the right singular vectors whose
    singular values exceed ``rank_tol`` times the largest and ``A = currents @ B.T``: the
    product is the projection of the currents onto them, and its error is bounded by the
    dropped singular values.  The vectors come from the eigendecomposition of the small
    (T, T) Gram matrix (4x faster than an SVD, which matters once per partition); the
    singular values deciding the cut are recomputed as the norms of ``A``'s columns, exact
    to float64 rounding of the largest.

    Parameters
    ----------
    currents : ndarray, shape (S, T)
    rank_tol : float
        Relative cut-off; 0 keeps the currents as they are.
    dtype : numpy dtype
        Precision of the factors.

    Returns
    -------
    tuple of ndarrays
        ``(currents,)`` or ``(A, B)`` with shapes (S, r) and (r, T), whichever needs fewer
        operations.
    """
    currents = np.asarray(currents, dtype=np.float64)
    n_seg, n_samples = currents.shape
    if rank_tol > 0:
        eigenvalues, vectors = np.linalg.eigh(currents.T @ currents)  # squared singular values, ascending
        # a generous first cut: eigenvalues near eps * largest are imprecise
        vectors = vectors[:, eigenvalues > (0.01 * rank_tol) ** 2 * eigenvalues[-1]]
        projected = currents @ vectors                                  # columns: singular value x left vector
        norms = np.linalg.norm(projected, axis=0)
        keep = norms > rank_tol * norms.max()
        if np.count_nonzero(keep) * (n_seg + n_samples) < n_seg * n_samples:
            return (np.ascontiguousarray(projected[:, keep], dtype=dtype),
                    np.ascontiguousarray(vectors[:, keep].T, dtype=dtype))
    return (currents.astype(dtype),)


class EAPEngine:
    """Computes EAPs of one cell's spike templates for batches of placements.

    Per-cell work is done once here: the segments' frames (:class:`linesource.SegmentGeometry`)
    and the currents scaled by each segment's ``1 / (4 pi sigma dS)``, the unit factor and the
    medium factor, in the working precision (as low-rank factors in float32, see
    :func:`low_rank_factors`).  :meth:`compute` moves the probe's contacts into the frame of
    each placed cell, sorts the placements by spike, builds the dimensionless line-source log
    terms of a batch of placements at once and multiplies the rows of each spike with that
    spike's currents, one matrix product per factor.

    Parameters
    ----------
    templates : SpikeTemplates
    probe : str
        Probe spec (:func:`eap_assets.core.probe.get_probe`: MEAutility name, generated probe or JSON file).
    sigma : float
        Conductivity, S/m.
    medium : str
        Key of :data:`eap_assets.core.linesource.MEDIUM_FACTORS`.
    dtype : numpy dtype
        Working precision: float32 (default, fast) or float64 (reference comparisons).
    rank_tol : float, optional
        Relative singular-value cut-off of the currents; default :data:`LOW_RANK_TOL` in
        float32 (below float32's own rounding, see the tests) and 0 (exact) in float64.
    """

    def __init__(self, templates: SpikeTemplates, probe: str = "SqMEA-10-15", sigma: float = 0.3,
                 medium: str = "infinite", dtype: type = DEFAULT_DTYPE, rank_tol: float | None = None) -> None:
        self.templates = templates
        self.contacts = get_probe(probe).positions
        self.sigma = sigma
        self.dtype = np.dtype(dtype)
        self.rank_tol = (LOW_RANK_TOL if self.dtype == np.float32 else 0.0) if rank_tol is None else rank_tol
        scale = 1000.0 * linesource.medium_factor(medium)  # mV -> µV, image charge
        try:
            self.geometry = linesource.SegmentGeometry.from_segments(
                templates.seg_start, templates.seg_end, np.asarray(templates.seg_diam, dtype=float) / 2.0, sigma,
                origin=templates.soma_pos, dtype=self.dtype)
        except ValueError as err:
            raise ValueError(f"spike templates of {templates.cell_name!r}: {err}") from None
        weighted = np.asarray(templates.imem, dtype=float) * (scale * self.geometry.weight)[None, :, None]
        #: per spike, factors whose product is its currents in µV per unit log term, (S, T)
        self.factors = [low_rank_factors(w, self.rank_tol, self.dtype) for w in weighted]
        self.batch = max(1, _GEMM_ELEMENTS // (self.contacts.shape[0] * templates.n_segments))

    def compute(self, rotations_: np.ndarray, positions: np.ndarray, spike_index: np.ndarray) -> np.ndarray:
        """EAPs for placements: rotation (B, 3, 3) about the soma, soma position (B, 3), spike (B,).

        Returns
        -------
        ndarray, shape (B, n_contacts, n_samples), µV, in the working precision.
        """
        by_spike, order = self.compute_by_spike(rotations_, positions, spike_index)
        out = np.empty_like(by_spike)
        out[order] = by_spike
        return out

    def compute_by_spike(self, rotations_: np.ndarray, positions: np.ndarray,
                         spike_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`compute` with the placements sorted by spike (stable), saving the copy back.

        Returns
        -------
        eaps : ndarray, shape (B, n_contacts, n_samples)
            ``eaps[k]`` is the EAP of placement ``order[k]``.
        order : ndarray of int, shape (B,)
        """
        n_contacts, n_samples = self.contacts.shape[0], self.templates.n_samples
        local = self.geometry.to_local(self.contacts, rotations_, positions)  # (B, C, 3)
        spike_index = np.asarray(spike_index)
        order = np.argsort(spike_index, kind="stable")  # placements of the same spike next to each other
        out = np.empty((len(positions), n_contacts, n_samples), dtype=self.dtype)
        rows_out = out.reshape(-1, n_samples)
        buffer = np.empty((min(self.batch, len(positions)) * n_contacts, self.templates.n_segments), dtype=self.dtype)
        for lo in range(0, order.size, self.batch):
            sel = order[lo:lo + self.batch]
            terms = self.geometry.log_term(local[sel].reshape(-1, 3), out=buffer[: sel.size * n_contacts])
            spikes = spike_index[sel]
            for run in np.split(np.arange(sel.size), np.flatnonzero(np.diff(spikes)) + 1):
                product = terms[run[0] * n_contacts:(run[-1] + 1) * n_contacts]
                *inner, last = self.factors[spikes[run[0]]]
                for factor in inner:
                    product = product @ factor
                np.matmul(product, last, out=rows_out[(lo + run[0]) * n_contacts:(lo + run[-1] + 1) * n_contacts])
        return out, order


def contact_peak_to_peak(eaps: np.ndarray, time_axis: int = -1) -> np.ndarray:
    """Peak-to-peak of every contact's trace (max - min along ``time_axis``), same units: (N, C, T) -> (N, C)."""
    eaps = np.asarray(eaps)
    return eaps.max(axis=time_axis) - eaps.min(axis=time_axis)


def peak_to_peak(eaps: np.ndarray) -> np.ndarray:
    """Largest peak-to-peak over contacts of each EAP (N, C, T) -> (N,), same units (the amplitude rule's).

    Raises
    ------
    ValueError
        If ``eaps`` is not three-dimensional or has no samples.
    """
    eaps = np.asarray(eaps)
    if eaps.ndim != 3 or eaps.shape[1] == 0 or eaps.shape[2] == 0:
        raise ValueError(f"peak_to_peak needs EAPs of shape (N, contacts, samples) with contacts and samples; "
                         f"got shape {eaps.shape}")
    from eap_assets.core.kernels import max_peak_to_peak  # numba loads on first use, not on import

    return max_peak_to_peak(np.ascontiguousarray(eaps))


#: One BLAS thread: float32 matrix products round differently with another thread count, and the
#: same seed must give the same bits wherever a partition runs (make run, the UI, a test).
@threadpool_limits.wrap(limits=1, user_api="blas")
def simulate_eap_dataset(templates: SpikeTemplates, config: EAPConfig, mtype: str | None = None,
                         dtype: type = DEFAULT_DTYPE, log=None) -> EAPDataset:
    """Draw placements until ``config.n_eaps`` EAPs pass the amplitude rule.

    Parameters
    ----------
    templates : SpikeTemplates
        The cell's spike templates.
    config : EAPConfig
        Probe, box, rotation mode, rule, medium, bound on tries and seed.
    mtype : str, optional
        The cell's m-type (needed by ``physrot``).
    dtype : numpy dtype
        Working precision (default float32); the stored EAPs are float32 either way.
    log : callable, optional
        Progress messages.

    Returns
    -------
    EAPDataset

    Raises
    ------
    AcceptanceError
        If fewer than ``n_eaps`` are accepted within ``config.tries_bound`` candidates.
    """
    engine = EAPEngine(templates, config.probe, config.sigma, config.medium, dtype)
    streams = partition_seed(config.seed, templates.cell_name, config.rotation).spawn(3)
    rng_pos, rng_rot, rng_spike = (np.random.default_rng(s) for s in streams)
    lows = np.array([config.x_range[0], config.y_range[0], config.z_range[0]])
    highs = np.array([config.x_range[1], config.y_range[1], config.z_range[1]])
    accepted = np.empty((config.n_eaps, len(engine.contacts), templates.n_samples), dtype=np.float32)
    kept: list[tuple[np.ndarray, ...]] = []
    n_kept, tries = 0, 0
    while n_kept < config.n_eaps:
        if tries >= config.tries_bound:
            raise AcceptanceError(
                f"cell {templates.cell_name!r}, rotation {config.rotation!r}: only {n_kept} of {config.n_eaps} "
                f"placements reached {config.min_amplitude:g} µV peak-to-peak within {tries} tries "
                f"(acceptance {n_kept / max(tries, 1):.1%}); widen the bound (max_tries) or the amplitude rule"
            )
        k = min(DRAW_CHUNK, config.tries_bound - tries)
        positions = rng_pos.uniform(lows, highs, size=(k, 3))
        rots = rotations.full_rotations(config.rotation, k, rng_rot, mtype=mtype)
        spikes = rng_spike.integers(0, templates.n_spikes, size=k)
        # near the end, compute the chunk in steps and stop once enough are accepted (same draws, less waste)
        step = k if config.n_eaps - n_kept >= k else FINAL_STEP
        for lo in range(0, k, step):
            hi = min(k, lo + step)
            eaps, order = engine.compute_by_spike(rots[lo:hi], positions[lo:hi], spikes[lo:hi])
            amplitude = np.empty(order.size, dtype=eaps.dtype)
            amplitude[order] = peak_to_peak(eaps)
            ok = np.flatnonzero(amplitude >= config.min_amplitude)[: config.n_eaps - n_kept]  # in draw order
            row_of = np.empty_like(order)
            row_of[order] = np.arange(order.size)
            accepted[n_kept:n_kept + ok.size] = eaps[row_of[ok]]
            kept.append((positions[lo + ok], rots[lo + ok], spikes[lo + ok], tries + lo + ok))
            n_kept += ok.size
            if n_kept == config.n_eaps:
                tries += lo + int(ok[-1]) + 1
                break
        else:
            tries += k
        if log is not None:
            log(f"{templates.cell_name} {config.rotation}: {n_kept}/{config.n_eaps} accepted of {tries} tries")
    positions, rots, spikes, candidates = (np.concatenate(parts) for parts in zip(*kept))
    return EAPDataset(
        cell_name=templates.cell_name, rotation=config.rotation, probe=config.probe, eaps=accepted,
        positions=positions, rotations=rots, spike_index=spikes, candidate_index=candidates, tries=tries,
        dt=templates.dt, provenance={**asdict(config), "draw_chunk": DRAW_CHUNK, "dtype": np.dtype(dtype).name,
                                     "rank_tol": engine.rank_tol, "templates": templates.provenance},
    )
