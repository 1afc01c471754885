"""Pictures: reconstruction and retrieval grids (PIL), curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hashing.core.atomic import atomic_path


def _save_png(img, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def image_grid(rows: Sequence[Sequence[np.ndarray | None]], scale: int | None = None, pad: int = 2,
               borders: Sequence[Sequence[str | None]] | None = None):
    """Rows of uint8 (H, W) or (H, W, 3) images -> a PIL image; None leaves a blank cell.

    borders[r][c] is a colour name drawn round that cell (green = same label, ...). `scale`
    (default: about 84 pixels a cell) enlarges small images with visible pixels.
    """
    from PIL import Image, ImageDraw

    h, w = next(im.shape[:2] for row in rows for im in row if im is not None)
    scale = scale or max(1, 84 // max(h, w))
    ncol = max(len(r) for r in rows)
    ch, cw = h * scale + 2 * pad, w * scale + 2 * pad
    canvas = Image.new("RGB", (ncol * cw, len(rows) * ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            if im is None:
                continue
            tile = Image.fromarray(np.asarray(im, dtype=np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile.convert("RGB"), (c * cw + pad, r * ch + pad))
            colour = borders[r][c] if borders is not None else None
            if colour:
                draw.rectangle([c * cw, r * ch, (c + 1) * cw - 1, (r + 1) * ch - 1], outline=colour, width=pad)
    return canvas


def reconstructions(originals: np.ndarray, recons: np.ndarray, path: str | Path, per_row: int = 16) -> None:
    """Originals above their reconstructions, in pairs of rows (uint8 (N, H, W) each)."""
    rows = []
    for start in range(0, len(originals), per_row):
        rows.append(list(originals[start:start + per_row]))
        rows.append(list(recons[start:start + per_row]))
    _save_png(image_grid(rows), path)


def retrieval_grid(queries: Sequence[np.ndarray], neighbours: Sequence[Sequence[np.ndarray]], path: str | Path,
                   match: Sequence[Sequence[bool | None]] | None = None) -> None:
    """One row per query: the query (blue frame), then its neighbours (green/red frame
    when their label matches the query's / does not; no frame when unknown)."""
    rows, borders = [], []
    for i, (q, ns) in enumerate(zip(queries, neighbours)):
        rows.append([q, None] + list(ns))
        m = match[i] if match is not None else [None] * len(ns)
        borders.append(["blue", None] + [None if v is None else ("green" if v else "red") for v in m])
    _save_png(image_grid(rows, borders=borders), path)


def copies_grid(sources: Sequence[np.ndarray], copies: Sequence[Sequence[np.ndarray]], path: str | Path) -> None:
    """One row per source image (blue frame), then its edited copies."""
    rows = [[src, None, *cs] for src, cs in zip(sources, copies)]
    borders = [["blue"] + [None] * (len(r) - 1) for r in rows]
    _save_png(image_grid(rows, borders=borders), path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, xlabel: str,
              ylabel: str, title: str = "", logx: bool = False) -> None:
    """Several named (x, y) curves on one figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) <= 20 else None, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log", base=2)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def estimator_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path) -> None:
    """One panel per estimator: forward value and backward gradient against the input."""
    plt = _pyplot()
    n = len(curves)
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, (x, fwd, grad)) in zip(axes.flat, curves.items()):
        ax.plot(x, fwd, label="forward E[h(x)]")
        ax.plot(x, grad, label="backward dh/dx", linestyle="--")
        ax.set_title(name, fontsize=10)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_ylim(-0.6, 1.6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


def bar_groups(series: dict[str, Sequence[float]], groups: Sequence[str], path: str | Path, ylabel: str,
               title: str = "") -> None:
    """Grouped bars: for each group (x), one bar per named series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 1), 4.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.02)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
