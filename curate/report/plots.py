"""Matplotlib figures rendered to inline ``<img>`` tags, so a report needs no network or files beside it.

Figures are built with ``matplotlib.figure.Figure`` (Agg canvas) rather than pyplot: no global figure
state, no GUI backend chosen from the environment (reports are written on headless CI machines and in
scheduled runs), and nothing to close.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _to_img(fig: Figure, alt: str) -> str:
    """Encode a figure as a base64 PNG ``<img>`` (inline, so the page stays one file)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def funnel_chart(labels: Sequence[str], rows_in: Sequence[int], rows_out: Sequence[int]) -> str:
    """Grouped bars of rows in and out per stage: where the data shrinks is visible at a glance."""
    fig = Figure(figsize=(max(5.0, 1.2 * len(labels)), 3.2))
    ax = fig.subplots()
    x = np.arange(len(labels))
    ax.bar(x - 0.2, rows_in, 0.4, label="rows in", color=COLORS[0])
    ax.bar(x + 0.2, rows_out, 0.4, label="rows out", color=COLORS[1])
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    return _to_img(fig, "rows in and out per stage")


def histograms(series: dict[str, Sequence[float]], title: str, xlabel: str, *, log: bool = False) -> str:
    """Overlaid histograms on shared bins (e.g. before vs after) so the shapes compare directly."""
    fig = Figure(figsize=(6.0, 3.0))
    ax = fig.subplots()
    arrays = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    arrays = {k: a[np.isfinite(a)] for k, a in arrays.items()}
    pooled = np.concatenate([a for a in arrays.values() if a.size]) if arrays else np.array([])
    if pooled.size:
        lo, hi = float(pooled.min()), float(pooled.max())
        if log and lo > 0:
            bins = np.geomspace(lo, max(hi, lo * 1.01), 31)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 31)
        for (name, arr), color in zip(arrays.items(), COLORS, strict=False):
            ax.hist(arr, bins=bins, alpha=0.55, label=f"{name} (n={arr.size})", color=color)
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _to_img(fig, title)


def horizontal_bars(labels: Sequence[str], values: Sequence[float], title: str, *, xlabel: str = "",
                    color: str = COLORS[2]) -> str:
    """One horizontal bar per label (language mix, seconds per stage); long labels stay readable."""
    fig = Figure(figsize=(6.0, max(1.8, 0.3 * len(labels) + 0.8)))
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, values, color=color)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return _to_img(fig, title)


def scatter_groups(points: np.ndarray, groups: Sequence[str], title: str) -> str:
    """A 2-D scatter with one colour per group (kept vs removed, or source), largest group drawn first."""
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    labels = np.asarray(groups)
    names, counts = np.unique(labels, return_counts=True)
    for (name, count), color in zip(sorted(zip(names, counts, strict=True), key=lambda t: -t[1]),
                                    COLORS * 4, strict=False):
        mask = labels == name
        ax.scatter(points[mask, 0], points[mask, 1], s=16, alpha=0.6, color=color, label=f"{name} ({count})",
                   linewidths=0)
    ax.legend(fontsize=8, markerscale=2)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    return _to_img(fig, title)
