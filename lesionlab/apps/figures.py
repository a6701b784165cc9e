"""Figures a person would rather look at than read: overlays of predictions on MRI slices, training curves."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionlab.utils import save_figure

__all__ = ["lesion_overlay_figure", "pick_slices", "plot_confusion_matrix", "plot_engine_confusion_matrix"]


def pick_slices(label: np.ndarray, pred: np.ndarray | None = None, n: int = 3) -> list[int]:
    """``n`` axial slice indices (last axis) through the lesion: the largest cross-section, then slices spread over
    the lesion's extent (at least an ``n``-th of the extent apart where the extent allows, so that two panels do not
    show the same section); the middle slices when there is no lesion."""
    mask = label > 0 if label.any() or pred is None else pred > 0
    depth = label.shape[-1]
    if not mask.any():
        return sorted({int(round(depth * f)) for f in np.linspace(0.35, 0.65, n)})
    area = mask.reshape(-1, depth).sum(0)
    nz = np.flatnonzero(area)
    picks = [int(np.argmax(area))]
    candidates = [int(nz[round(q * (len(nz) - 1))]) for q in (0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6)]
    for gap in (max(1, (nz[-1] - nz[0]) // n), 1):  # spread first; any distinct lesion slice if that runs out
        for z in candidates:
            if len(picks) < n and min(abs(z - p) for p in picks) >= gap:
                picks.append(z)
    return sorted(picks)


def lesion_overlay_figure(
    image: np.ndarray,
    label: np.ndarray | None,
    pred: np.ndarray,
    out_png: str,
    history_json: str | None = None,
    title: str = "",
    slices: Sequence[int] | None = None,
    footnote: str = "",
) -> str:
    """Save a PNG: axial T1 slices with ground truth (green) and prediction (red) outlines, plus training curves.

    Args:
        image: T1 volume (X, Y, Z).
        label: ground-truth mask (X, Y, Z) or ``None``.
        pred: predicted mask (X, Y, Z).
        out_png: output file (written atomically).
        history_json: ``history.json`` of :class:`~lesionlab.pipelines.handlers.HistoryHandler` for the curves.
        title: figure title.
        slices: axial slice indices; picked through the lesion when ``None``.
        footnote: small text at the bottom (e.g. a data copyright notice).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = list(slices) if slices is not None else pick_slices(label if label is not None else pred, pred)
    history = None
    if history_json and os.path.exists(history_json):
        with open(history_json) as f:
            history = json.load(f).get("epochs", [])
    ncols = len(slices) + (1 if history else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 4.6), squeeze=False)
    axes = axes[0]
    lo, hi = np.percentile(image, [1, 99.5])
    for ax, z in zip(axes, slices):
        # radiological display: rows = anterior-posterior (y), columns = x, superior up
        ax.imshow(np.rot90(image[..., z]), cmap="gray", vmin=lo, vmax=hi)
        if label is not None and label[..., z].any():
            ax.contour(np.rot90(label[..., z] > 0), levels=[0.5], colors=["lime"], linewidths=1.2)
        if pred[..., z].any():
            ax.contour(np.rot90(pred[..., z] > 0), levels=[0.5], colors=["red"], linewidths=1.2)
        ax.set_title(f"axial slice {z}")
        ax.axis("off")
    if history:
        ax = axes[-1]
        ep = [h["epoch"] for h in history]
        ax.plot(ep, [h["loss"] for h in history], "o-", label="training loss (EML)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        val = [(h["epoch"], h["val_mean_dice"]) for h in history if "val_mean_dice" in h]
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), "s--", color="tab:green", label="validation Dice")
            ax2.set_ylabel("Dice")
            ax2.set_ylim(0, 1)
            ax2.legend(loc="upper right")
        ax.legend(loc="upper left")
        ax.set_title("training curves")
    handles = [plt.Line2D([], [], color="lime", label="ground truth"),
               plt.Line2D([], [], color="red", label="prediction")]
    fig.legend(handles=handles, loc="lower left", ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    if footnote:
        fig.text(0.99, 0.01, footnote, ha="right", va="bottom", fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    save_figure(fig, out_png, dpi=110)
    return out_png


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], out_png: str, title: str = "", normalize: bool = True
) -> str:
    """Write a confusion-matrix heatmap (rows truth, columns prediction) as PNG, atomically.

    Each cell shows the row-normalised fraction (the share of a true class predicted as each class) when
    ``normalize``, with the raw count beneath it; the colour follows the fraction, so rare classes are as readable as
    common ones.

    Args:
        cm: ``C x C`` counts (rows truth, columns prediction).
        class_names: ``C`` class names.
        out_png: output path.
        title: figure title.
        normalize: colour by row fractions (otherwise by counts).

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(cm, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ValueError(f"a {len(class_names)}-class confusion matrix must be square, got shape {counts.shape}.")
    rows = counts.sum(1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    shown = frac if normalize else counts
    n = len(class_names)
    size = 1.2 + 0.75 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(n), [str(c) for c in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(n):
        for j in range(n):
            dark = shown[i, j] > (0.5 if normalize else 0.5 * shown.max())
            text = f"{frac[i, j]:.2f}\n{int(counts[i, j])}" if normalize else f"{int(counts[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalize else "pixels")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=120)
    return out_png


def plot_paired_bars(names: Sequence[str], series: dict[str, Sequence[float]], out_png: str, ylabel: str = "",
                     title: str = "") -> str:
    """Grouped bar chart: one group per name, one bar per series (e.g. this run vs a paper); NaN bars are empty.

    Returns:
        ``out_png`` (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(names) + 2), 4))
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    return out_png


def plot_engine_confusion_matrix(
    engine: Any, class_names: Sequence[str], out_png: str, title: str = "", key: str = "confusion_matrix"
) -> str:
    """Bundle helper: :func:`plot_confusion_matrix` of the matrix an evaluator left in ``engine.state.metrics[key]``."""
    return plot_confusion_matrix(np.asarray(engine.state.metrics[key]), class_names, out_png, title=title)
