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


def label_points(ax, points: list[tuple[float, float, str, str]], *,
                 lines: list[tuple[list, list]] = (), fontsize: float = 8) -> list:
    """Write each point's label beside it: no two labels overlap, none covers a marker, a drawn
    line (`lines`, data coordinates, markers at its vertices) or the legend, and all stay inside
    the axes.

    `points`: (x, y, text, colour) in data coordinates. Greedy: each label takes the first of a
    ring of offsets (nearest first) whose box is clear; a label placed away from its point gets a
    thin leader line. Returns the `Annotation`s, in the order of `points` (`.xy` is the point).
    """
    import numpy as np
    from matplotlib.text import Text

    fig = ax.figure
    fig.canvas.draw()  # fixes the axes limits and the transform to display pixels
    renderer = fig.canvas.get_renderer()
    to_px = ax.transData.transform
    r = 4 * fig.dpi / 72  # a marker's half-size, pixels
    taken = []  # pixel boxes (x0, y0, x1, y1) to keep clear
    for x, y, _, _ in points:
        mx, my = to_px((x, y))
        taken.append((mx - r, my - r, mx + r, my + r))
    for xs, ys in lines:  # its markers, then a chain of small boxes, one every 3 pixels
        px = to_px(np.column_stack([xs, ys]))
        taken.extend((mx - r, my - r, mx + r, my + r) for mx, my in px)
        for a, b in zip(px[:-1], px[1:]):
            for t in np.linspace(0, 1, max(2, int(np.hypot(*(b - a)) / 3))):
                cx, cy = a + t * (b - a)
                taken.append((cx - 1, cy - 1, cx + 1, cy + 1))
    legend = ax.get_legend()
    if legend is not None:
        lb = legend.get_window_extent(renderer)
        taken.append((lb.x0, lb.y0, lb.x1, lb.y1))
    inside = ax.get_window_extent()
    angles = np.deg2rad([45, 135, -45, -135, 90, -90, 0, 180, 22, 158, -22, -158, 68, 112, -68,
                         -112])  # diagonals first: a label there leaves the line free
    offsets = [(d * np.cos(a), d * np.sin(a)) for d in (5, 10, 16, 24, 34, 46, 60, 76)
               for a in angles]

    def place(x, y, text, colour, dx, dy, leader):
        return ax.annotate(
            text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
            color=colour, ha="left" if dx > 1 else "right" if dx < -1 else "center",
            va="bottom" if dy > 1 else "top" if dy < -1 else "center",
            arrowprops=dict(arrowstyle="-", color=colour, lw=0.8, shrinkA=1, shrinkB=2)
            if leader else None,
        )

    def clear(box):
        x0, y0, x1, y1 = box.x0 - 1, box.y0 - 1, box.x1 + 1, box.y1 + 1
        if x0 < inside.x0 or x1 > inside.x1 or y0 < inside.y0 or y1 > inside.y1:
            return False
        return all(x1 <= a0 or x0 >= a1 or y1 <= b0 or y0 >= b1 for a0, b0, a1, b1 in taken)

    # crowded points first, so they get the spots nearest to them
    px = to_px(np.array([(x, y) for x, y, _, _ in points], dtype=float).reshape(-1, 2))
    near = (np.hypot(*(px[:, None] - px[None]).transpose(2, 0, 1)) < 40).sum(1)
    out = [None] * len(points)
    for i in np.argsort(-near, kind="stable"):
        x, y, text, colour = points[i]
        chosen = (8.0, 8.0)  # nowhere clear: beside the point, overlap and all (never dropped)
        for dx, dy in offsets:
            trial = place(x, y, text, colour, dx, dy, leader=False)
            trial.update_positions(renderer)
            ok = clear(Text.get_window_extent(trial, renderer))  # the text, not its leader
            trial.remove()
            if ok:
                chosen = (dx, dy)
                break
        ann = place(x, y, text, colour, *chosen, leader=bool(np.hypot(*chosen) > 8))
        ann.update_positions(renderer)
        box = Text.get_window_extent(ann, renderer)
        taken.append((box.x0, box.y0, box.x1, box.y1))
        out[i] = ann
    return out


def scatter_figure(points: dict[str, tuple[list, list]], *, xlabel: str = "", ylabel: str = "",
                   title: str = "", connect: bool = True, point_labels: dict | None = None,
                   figsize: tuple[float, float] = (6, 4)):
    """The figure of `plot_scatter`, unsaved: returns (fig, ax, label annotations).

    `point_labels`: {name: [text per point]} writes each point's text beside it, in its curve's
    colour (`label_points`); names without labels get none.
    """
    fig, ax = plt.subplots(figsize=figsize, dpi=120)
    colours = {}
    for name, (x, y) in points.items():
        (line,) = ax.plot(x, y, "o-" if connect else "o", label=name, ms=4 if point_labels else 6)
        colours[name] = line.get_color()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    if point_labels:
        ax.margins(0.12)
    fig.tight_layout()
    annotations = []
    if point_labels:
        todo = [
            (float(x), float(y), str(t), colours[name])
            for name, texts in point_labels.items()
            for x, y, t in zip(*points[name], texts, strict=True)
        ]
        annotations = label_points(ax, todo, lines=list(points.values()))
    return fig, ax, annotations


def plot_scatter(points: dict[str, tuple[list, list]], path: str | Path, *, xlabel: str = "",
                 ylabel: str = "", title: str = "", connect: bool = True,
                 point_labels: dict | None = None,
                 figsize: tuple[float, float] = (6, 4)) -> Path:
    """Scatter (optionally connected) of named point sets, e.g. a relevance-diversity trade-off;
    `point_labels` writes each point's parameter beside it (see `scatter_figure`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, _, _ = scatter_figure(points, xlabel=xlabel, ylabel=ylabel, title=title, connect=connect,
                               point_labels=point_labels, figsize=figsize)
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
