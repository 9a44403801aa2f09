"""Matplotlib (Agg) figures drawn from saved arrays and numbers only, never from JAX calls.

Every function takes plain numpy arrays / floats and a path, and writes one PNG atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bpexp.outputs import _atomic_bytes

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False})


def save(fig, path) -> Path:
    """PNG to a temporary name, then renamed; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    _atomic_bytes(Path(path), buf.getvalue())
    return Path(path)


def backprop_flow(nodes, edges, path, title="Backprop flow", *, height=1.6,
                  backward_label="backward dL/d(node)", title_size=12):
    """Computation graph left to right. ``nodes``: list of (label, forward_text, backward_text);
    ``edges``: list of (i, j, label) drawn as arrows i -> j. Forward values above each node,
    dL/d(node) below, from a real pass. ``height`` is the half-height of the drawing: raise it
    for multi-line (vector) node texts."""
    fig, ax = plt.subplots(figsize=(2.6 * len(nodes) + 1, 2.25 * height + 0.5))
    xs = np.arange(len(nodes)) * 2.6
    for x, (label, fwd, bwd) in zip(xs, nodes):
        ax.add_patch(plt.Circle((x, 0), 0.42, color="#dbe9f6", ec="tab:blue", lw=1.5, zorder=2))
        ax.text(x, 0, label, ha="center", va="center", fontsize=12, zorder=3)
        ax.text(x, 0.62, fwd, ha="center", va="bottom", fontsize=8.5, color="tab:blue")
        ax.text(x, -0.62, bwd, ha="center", va="top", fontsize=8.5, color="tab:red")
    for i, j, label in edges:
        ax.annotate("", xy=(xs[j] - 0.45, 0), xytext=(xs[i] + 0.45, 0),
                    arrowprops=dict(arrowstyle="->", lw=1.4, color="0.3"))
        ax.text((xs[i] + xs[j]) / 2, 0.1, label, ha="center", va="bottom", fontsize=7.5,
                color="0.25")
    ax.text(xs[0] - 1.2, height - 0.1, "forward", color="tab:blue", fontsize=9, ha="left", va="top")
    ax.text(xs[0] - 1.2, -height + 0.1, backward_label, color="tab:red", fontsize=9, ha="left",
            va="bottom")
    ax.set_xlim(xs[0] - 1.3, xs[-1] + 1.3)
    ax.set_ylim(-height, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=title_size)
    return save(fig, path)


def positive(a):
    """Non-finite or non-positive values masked so log axes draw what is defined."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)
