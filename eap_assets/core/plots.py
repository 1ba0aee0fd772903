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


def _label_color(label: str) -> str:
    """Paper colour of a class / cell-type label: E and excitatory m-types blue, I and inhibitory red."""
    from eap_assets.core.cells import EXCITATORY_MTYPES, INHIBITORY_MTYPES

    if label in EI_COLORS:
        return EI_COLORS[label]
    if label in EXCITATORY_MTYPES:
        return EI_COLORS["E"]
    if label in INHIBITORY_MTYPES:
        return EI_COLORS["I"]
    return "black"


def confusion_matrix_figure(confusion, title: str) -> Figure:
    """Confusion of true cell types (rows) with predicted classes (columns), % of each row (paper Fig. 4).

    Parameters
    ----------
    confusion : DataFrame
        Row-normalised percentages (``Evaluation.confusion``); labels coloured blue for
        excitatory, red for inhibitory types.
    title : str
    """
    values = np.asarray(confusion.to_numpy(), dtype=float)
    rows, cols = [str(r) for r in confusion.index], [str(c) for c in confusion.columns]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * max(len(cols), 4) + 1.5, 1.0 + 0.45 * max(len(rows), 4)))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=100.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="% of true cell type")
    small = len(cols) * len(rows) <= 400
    for i in range(len(rows)):
        for j in range(len(cols)):
            if small and values[i, j] >= 0.5:
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if values[i, j] > 60 else "white")
    ax.set_xticks(range(len(cols)), cols, rotation=90 if len(cols) > 4 else 0)
    ax.set_yticks(range(len(rows)), rows)
    for tick, label in zip(ax.get_xticklabels(), cols):
        tick.set_color(_label_color(label))
    for tick, label in zip(ax.get_yticklabels(), rows):
        tick.set_color(_label_color(label))
    ax.set(xlabel="predicted", ylabel="true cell type", title=title)
    fig.tight_layout()
    return fig


def training_curve_figure(history, title: str) -> Figure:
    """Training record: losses (left) and accuracies (right) against step / iteration.

    Parameters
    ----------
    history : DataFrame
        ``TrainedModel.history``: a ``step`` or ``iteration`` column and metric columns; those
        with ``loss`` in the name go left, those with ``accuracy`` right.
    title : str
    """
    x_col = "step" if "step" in history.columns else "iteration" if "iteration" in history.columns else None
    x = history[x_col].to_numpy() if x_col else np.arange(1, len(history) + 1)
    losses = [c for c in history.columns if "loss" in str(c)]
    accuracies = [c for c in history.columns if "accuracy" in str(c)]
    panels = [p for p in ((losses, "loss"), (accuracies, "accuracy")) if p[0]] or [([], "value")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, (columns, ylabel) in zip(axes[0], panels):
        for column in columns:
            ax.plot(x, history[column].to_numpy(dtype=float), label=str(column))
        if ylabel == "loss" and columns and np.nanmin(history[columns].to_numpy(dtype=float)) > 0:
            ax.set_yscale("log")
        ax.set(xlabel=x_col or "evaluation", ylabel=ylabel)
        if columns:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Line style of each generalisation protocol (accuracy-vs-noise plots).
PROTOCOL_STYLES = {"in_distribution": "-", "unseen_variants": "--", "unseen_distances": ":", "hold_out_type": "-."}


def accuracy_vs_noise(summary, title: str, target: float | None = None) -> Figure:
    """Accuracy (%) against recording-noise RMS (µV): one line per protocol x model kind.

    Parameters
    ----------
    summary : DataFrame
        Index (protocol, kind), columns the noise levels (µV), values accuracy in % (as
        :meth:`eap_assets.core.generalisation.GeneralisationResult.summary`).
    title : str
    target : float, optional
        A target accuracy drawn as a horizontal line.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    kinds = sorted({kind for _, kind in summary.index})
    colours = {kind: f"C{i}" for i, kind in enumerate(kinds)}
    levels = np.asarray(summary.columns, dtype=float)
    for (protocol, kind), row in summary.iterrows():
        ax.plot(levels, row.to_numpy(dtype=float), PROTOCOL_STYLES.get(protocol, "-"), marker="o", ms=3,
                color=colours[kind], label=f"{kind}, {protocol.replace('_', ' ')}")
    if target is not None:
        ax.axhline(target, color="0.5", lw=0.8)
    ax.set_xlabel("noise RMS (µV)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def reliability_figure(tables: dict[str, object], title: str) -> Figure:
    """Reliability diagram: accuracy against mean confidence per confidence bin, one line per table
    (e.g. ``{"uncalibrated": ..., "calibrated": ...}`` of :func:`eap_assets.core.calibration.reliability`),
    the diagonal for a perfectly calibrated model, and the share of rows per bin as bars."""
    fig, (ax, share) = plt.subplots(2, 1, figsize=(5.2, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfectly calibrated")
    width = 1.0 / max(len(next(iter(tables.values()))), 1) / (len(tables) + 1)
    for i, (label, table) in enumerate(tables.items()):
        filled = table[table["rows"] > 0]
        ax.plot(filled["confidence"], filled["accuracy"], marker="o", ms=3, color=f"C{i}", label=label)
        centres = (table["low"] + table["high"]) / 2 + (i - (len(tables) - 1) / 2) * width
        share.bar(centres, table["rows"] / max(table["rows"].sum(), 1), width=width, color=f"C{i}", alpha=0.7)
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    share.set(xlabel="confidence (largest class probability)", ylabel="share of units")
    fig.tight_layout()
    return fig
