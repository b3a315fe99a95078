"""Figures: image grids with one row per class (paper Figs. 2/3) and line plots for the report."""
from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from natinv.io import atomic_write_bytes


def grid_indices(labels: np.ndarray, num_classes: int, per_class: int = 8) -> np.ndarray:
    """The images class_grid shows, in order: the first `per_class` of each class."""
    return np.sort(np.concatenate([np.flatnonzero(labels == cls)[:per_class] for cls in range(num_classes)] or [np.zeros(0, int)]))


def class_grid(images: np.ndarray, labels: np.ndarray, num_classes: int, per_class: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 NCHW images -> one HxWxC uint8 picture: row c holds the first `per_class` images of class c (blank if fewer).
    Passing only the images at grid_indices (and their labels) gives the same picture."""
    _, c, h, w = images.shape
    grid = np.full((num_classes * (h + pad) + pad, per_class * (w + pad) + pad, c), 255, dtype=np.uint8)
    for cls in range(num_classes):
        for j, idx in enumerate(np.flatnonzero(labels == cls)[:per_class]):
            top, left = pad + cls * (h + pad), pad + j * (w + pad)
            grid[top:top + h, left:left + w] = images[idx].transpose(1, 2, 0)
    return grid


def grids_side_by_side(grids: Mapping[str, np.ndarray], class_names: list[str], image_size: int, path: Path,
                       pad: int = 2) -> None:
    """class_grid pictures (same layout) side by side, one panel per title (real images first, then each method), the
    class names beside the rows of the first panel. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(grids.values()))
    height = 1.3 + first.shape[0] / 60  # inches: the picture and room for the titles above it
    fig, axes = plt.subplots(1, len(grids), figsize=(1.2 + len(grids) * height * first.shape[1] / first.shape[0], height),
                             squeeze=False, layout="constrained")
    rows = [pad + k * (image_size + pad) + image_size / 2 for k in range(len(class_names))]
    for k, (ax, (title, picture)) in enumerate(zip(axes[0], grids.items())):
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks(rows if k == 0 else [])
        if k == 0:
            ax.set_yticklabels(class_names, fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
    _save(fig, path)


def save_png(picture: np.ndarray, path: Path, scale: int = 2) -> None:
    from PIL import Image

    img = Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def curve_plot(panels: Mapping[str, Mapping[str, np.ndarray]], path: Path, xlabel: str, log_y: bool = False,
               colors: Mapping[str, str] | None = None) -> None:
    """One panel per title; per label an array (runs, steps): every run as a thin line, their mean bold, in the label's
    colour (natinv.palette). Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for k, (label, runs) in enumerate(lines.items()):
            runs = np.atleast_2d(np.asarray(runs, dtype=np.float64))
            steps = np.arange(1, runs.shape[1] + 1)
            color = (colors or {}).get(label, f"C{k}")
            if len(runs) > 1:
                ax.plot(steps, runs.T, color=color, alpha=0.2, linewidth=0.7)
            ax.plot(steps, runs.mean(0), color=color, linewidth=2, label=label if len(runs) == 1 else f"{label} (mean of {len(runs)})")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def scatter_panels(panels: Mapping[str, Mapping[str, np.ndarray]], colors: list[str], path: Path) -> None:
    """One panel per title; per label (N, 2) points in its colour. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, (title, groups) in zip(axes[0], panels.items()):
        for color, (label, pts) in zip(colors, groups.items()):
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, color=color, label=f"{label} ({len(pts)})", linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def xy_plot(lines: Mapping[str, list[tuple[float, float]]], path: Path, xlabel: str, ylabel: str, title: str,
            colors: Mapping[str, str] | None = None) -> None:
    """One line with markers per label through its (x, y) points (sorted by x), in the label's colour. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for k, (label, pts) in enumerate(lines.items()):
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", color=(colors or {}).get(label, f"C{k}"), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
