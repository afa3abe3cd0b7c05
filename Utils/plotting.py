"""Plotting helpers (matplotlib, Agg backend: works without a screen)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(curves: dict[str, tuple[list, list]], path: str | Path, *, xlabel: str = "epoch",
                ylabel: str = "", title: str = "", logy: bool = False, logx: bool = False) -> Path:
    """Line plot of named (x, y) curves, saved as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scatter(points: dict[str, tuple[list, list]], path: str | Path, *, xlabel: str = "",
                 ylabel: str = "", title: str = "", connect: bool = True) -> Path:
    """Scatter (optionally connected) of named point sets, e.g. a relevance-diversity trade-off."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (x, y) in points.items():
        ax.plot(x, y, "o-" if connect else "o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(matrix, path: str | Path, *, xlabels: list | None = None, ylabels: list | None = None,
                 xlabel: str = "", ylabel: str = "", title: str = "", cmap: str = "viridis",
                 annotate: bool = False, fmt: str = ".2f", colorbar_label: str = "") -> Path:
    """Heatmap of a 2-D array (attention, routing weights, gates, a kernel), saved as PNG.

    `matrix` is anything `numpy.asarray` takes, shape (rows, cols); tick labels are optional and long
    labels are cut to 40 characters. `annotate` writes each value in its cell (small matrices only).
    """
    import numpy as np

    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"plot_heatmap expects a 2-D matrix, got shape {m.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = m.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.45 * cols, 14), min(1.5 + 0.4 * rows, 12)), dpi=120)
    im = ax.imshow(m, cmap=cmap, aspect="auto")
    cb = fig.colorbar(im, ax=ax)
    if colorbar_label:
        cb.set_label(colorbar_label)
    if xlabels is not None:
        ax.set_xticks(range(cols), [str(s)[:40] for s in xlabels], rotation=60, ha="right", fontsize=7)
    if ylabels is not None:
        ax.set_yticks(range(rows), [str(s)[:40] for s in ylabels], fontsize=7)
    if annotate:
        mid = (np.nanmax(m) + np.nanmin(m)) / 2
        for r in range(rows):
            for c in range(cols):
                ax.text(c, r, format(m[r, c], fmt), ha="center", va="center", fontsize=6,
                        color="white" if m[r, c] < mid else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
