"""Matplotlib (Agg) figures drawn from saved arrays and numbers only, never from JAX calls.

Every function takes plain numpy arrays / floats and a path, and writes one PNG atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bpexp.outputs import _atomic_bytes  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                     "axes.spines.top": False, "axes.spines.right": False})


def save(fig, path) -> Path:
    """PNG to a temporary name, then renamed; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    _atomic_bytes(Path(path), buf.getvalue())
    return Path(path)


def gradcheck_errors(names, err_ad, err_fd, tol_ad, tol_fd, path):
    """Horizontal bars: relative error of the manual gradient vs autodiff and vs finite
    differences per model (log scale), with the pass thresholds."""
    names = list(names)
    y = np.arange(len(names))
    floor = 1e-18  # exact zeros drawn at the floor so they stay visible on a log axis
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.6))
    ax.barh(y - 0.2, np.maximum(err_ad, floor), 0.4, label="vs jax.grad (float64)", color="tab:blue")
    ax.barh(y + 0.2, np.maximum(err_fd, floor), 0.4, label="vs central finite differences", color="tab:orange")
    ax.axvline(tol_ad, color="tab:blue", ls="--", lw=1, label=f"autodiff tolerance {tol_ad:g}")
    ax.axvline(tol_fd, color="tab:orange", ls="--", lw=1, label=f"finite-difference tolerance {tol_fd:g}")
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relative error ||g_manual - g_ref|| / ||g_ref||  (bars at 1e-18 are exact zeros)")
    ax.set_title("Hand-derived gradients vs references, per model")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def backprop_flow(nodes, edges, path, title="Backprop flow"):
    """Computation graph left to right. ``nodes``: list of (label, forward_text, backward_text);
    ``edges``: list of (i, j, label) drawn as arrows i -> j. Forward values above each node,
    dL/d(node) below, from a real pass."""
    fig, ax = plt.subplots(figsize=(2.6 * len(nodes) + 1, 3.6))
    xs = np.arange(len(nodes)) * 2.6
    for x, (label, fwd, bwd) in zip(xs, nodes):
        ax.add_patch(plt.Circle((x, 0), 0.42, color="#dbe9f6", ec="tab:blue", lw=1.5, zorder=2))
        ax.text(x, 0, label, ha="center", va="center", fontsize=12, zorder=3)
        ax.text(x, 0.62, fwd, ha="center", va="bottom", fontsize=8.5, color="tab:blue")
        ax.text(x, -0.62, bwd, ha="center", va="top", fontsize=8.5, color="tab:red")
    for i, j, label in edges:
        ax.annotate("", xy=(xs[j] - 0.45, 0), xytext=(xs[i] + 0.45, 0),
                    arrowprops=dict(arrowstyle="->", lw=1.4, color="0.3"))
        ax.text((xs[i] + xs[j]) / 2, 0.1, label, ha="center", va="bottom", fontsize=7.5, color="0.25")
    ax.text(xs[0] - 1.2, 0.85, "forward", color="tab:blue", fontsize=9, ha="left")
    ax.text(xs[0] - 1.2, -1.35, "backward dL/d(node)", color="tab:red", fontsize=9, ha="left")
    ax.set_xlim(xs[0] - 1.3, xs[-1] + 1.3)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return save(fig, path)
