"""Figures of each stage (matplotlib, no display needed): the cell over the MEA (paper Fig. 2),
somatic spikes (Fig. 1A), one EAP on the probe, amplitude versus width (Fig. 1C).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders it.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from eap_assets.core import linesource, rotations  # noqa: E402
from eap_assets.core.probe import Probe  # noqa: E402

#: Paper colours: excitatory blue, inhibitory red.
EI_COLORS = {"E": "tab:blue", "I": "tab:red"}


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def cell_on_probe(geometry: dict[str, np.ndarray], soma_pos: np.ndarray, probe: Probe, name: str,
                  soma_at: tuple[float, float, float] = (50.0, 0.0, 0.0)) -> Figure:
    """The cell aligned as in the ``norot`` dataset (apical axis along z), soma at ``soma_at``.

    Parameters
    ----------
    geometry : dict
        ``seg_start``, ``seg_end`` (S, 3) and ``seg_diam`` (S,), µm, morphology frame.
    soma_pos : ndarray, shape (3,)
        Soma midpoint in the morphology frame, µm.
    probe : Probe
        The MEA (contacts in the plane x = 0 for MEAutility's default placement).
    name : str
        Title.
    soma_at : tuple
        Soma position relative to the probe, µm (paper Fig. 2: (50, 0, 0)).
    """
    start, end = linesource.place_segments(geometry["seg_start"], geometry["seg_end"], soma_pos,
                                           rotations.ALIGN_BBP[None], np.asarray([soma_at], dtype=float))
    start, end = start[0], end[0]
    widths = np.clip(geometry["seg_diam"] / 2.0, 0.4, 6.0)
    fig, axes = plt.subplots(1, 2, figsize=(9, 5), gridspec_kw={"width_ratios": [1, 1]})
    for ax, (i, j), title in zip(axes, [(1, 2), (0, 2)], ["facing the MEA (y-z)", "side view (x-z)"]):
        ax.add_collection(LineCollection(np.stack([start[:, [i, j]], end[:, [i, j]]], axis=1), linewidths=widths,
                                         colors="k"))
        c = probe.positions
        if i == 1:
            ax.scatter(c[:, 1], c[:, 2], marker="s", s=12, color="tab:orange", label=f"{probe.name} contacts")
            ax.legend(loc="lower right", fontsize=7)
        else:
            ax.plot([c[:, 0].min()] * 2, [c[:, 2].min(), c[:, 2].max()], color="tab:orange", lw=4, label="MEA")
        ax.autoscale()
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"{'xyz'[i]} (µm)")
        ax.set_ylabel(f"{'xyz'[j]} (µm)")
    fig.suptitle(f"{name}: soma at {soma_at} µm, apical axis along z")
    return fig


def somatic_spikes(t_ms: np.ndarray, vsoma: np.ndarray, isoma: np.ndarray, name: str) -> Figure:
    """Soma membrane potential and somatic membrane current of the kept spikes (paper Fig. 1A).

    Parameters
    ----------
    t_ms : ndarray, shape (T,)
        Time relative to the somatic peak, ms.
    vsoma : ndarray, shape (K, T)
        Soma potential, mV.
    isoma : ndarray, shape (K, T)
        Membrane current of the soma segment, nA.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(t_ms, vsoma.T, lw=0.8)
    a.set(xlabel="time from peak (ms)", ylabel="soma Vm (mV)", title=f"{len(vsoma)} kept spikes")
    b.plot(t_ms, isoma.T, lw=0.8)
    b.set(xlabel="time from peak (ms)", ylabel="somatic membrane current (nA)", title="soma segment i_mem")
    fig.suptitle(name)
    fig.tight_layout()
    return fig


def eap_on_probe(eap: np.ndarray, dt: float, probe: Probe, title: str) -> Figure:
    """One EAP drawn as a waveform at each contact's place on the probe face.

    Parameters
    ----------
    eap : ndarray, shape (n_contacts, T)
        Potential, µV.
    dt : float
        Sampling step, ms.
    """
    coords = probe.positions @ probe.main_axes.T
    spacing = np.min(np.diff(np.unique(np.round(coords[:, 0], 3)))) if coords.shape[0] > 1 else 1.0
    t = np.linspace(-0.45, 0.45, eap.shape[1]) * spacing
    scale = 0.45 * spacing / max(np.abs(eap).max(), 1e-9)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    lines = [np.column_stack([x + t, y + w * scale]) for (x, y), w in zip(coords, eap)]
    strength = np.ptp(eap, axis=1) / max(np.ptp(eap, axis=1).max(), 1e-9)
    ax.add_collection(LineCollection(lines, linewidths=0.8, colors=plt.cm.viridis(strength)))
    ax.autoscale()
    ax.set_aspect("equal")
    ax.set(xlabel="probe axis 1 (µm)", ylabel="probe axis 2 (µm)",
           title=f"{title}\npeak-to-peak {np.ptp(eap, axis=1).max():.0f} µV, {eap.shape[1] * dt:.1f} ms per trace")
    return fig


def amplitude_vs_width(amplitude: np.ndarray, width: np.ndarray, ei: np.ndarray, title: str) -> Figure:
    """Spike amplitude versus width of every EAP, excitatory blue and inhibitory red (paper Fig. 1C)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label in ("I", "E"):
        sel = np.asarray(ei) == label
        ax.scatter(np.asarray(width)[sel], np.asarray(amplitude)[sel], s=3, alpha=0.35, color=EI_COLORS[label],
                   label=f"{'excitatory' if label == 'E' else 'inhibitory'} ({sel.sum()})")
    ax.set_yscale("log")
    ax.set(xlabel="width: trough to peak (ms)", ylabel="amplitude (µV)", title=title)
    ax.legend(markerscale=4)
    return fig
