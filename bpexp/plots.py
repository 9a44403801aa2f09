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
        ax.text((xs[i] + xs[j]) / 2, 0.1, label, ha="center", va="bottom", fontsize=7.5, color="0.25")
    ax.text(xs[0] - 1.2, height - 0.1, "forward", color="tab:blue", fontsize=9, ha="left", va="top")
    ax.text(xs[0] - 1.2, -height + 0.1, backward_label, color="tab:red", fontsize=9, ha="left", va="bottom")
    ax.set_xlim(xs[0] - 1.3, xs[-1] + 1.3)
    ax.set_ylim(-height, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=title_size)
    return save(fig, path)


def _lr_colors(lrs):
    norm = matplotlib.colors.LogNorm(vmin=float(np.min(lrs)), vmax=float(np.max(lrs)))
    return plt.get_cmap("viridis"), norm


def positive(a):
    """Non-finite or non-positive values masked so log axes draw what is defined."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)


def loss_curves_by_lr(steps, loss, lrs, path, title="Loss per learning rate"):
    """``loss[lr, step]`` as curves coloured by lr (log colour scale), log loss axis; a
    diverged curve ends where its loss stops being finite."""
    cmap, norm = _lr_colors(lrs)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    keep = np.unique(np.linspace(0, len(lrs) - 1, min(len(lrs), 96)).round().astype(int))  # readable
    for lr, curve in zip(np.asarray(lrs)[keep], np.asarray(loss)[keep]):
        ax.plot(steps, positive(curve), color=cmap(norm(lr)), lw=1)
    ax.set_yscale("log")
    start = positive(np.asarray(loss)[:, 0])
    if np.any(np.isfinite(start)):  # diverging curves leave the top: keep the converging ones readable
        lo = np.nanmin(positive(loss))
        ax.set_ylim(lo / 2, np.nanmax(start) * 1e3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.set_title(title, fontsize=10)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="learning rate (log)")
    return save(fig, path)


def final_vs_lr(lrs, final, diverged, thr_theory, kind, thr_measured, path, title="Final loss vs lr"):
    """Median and spread of the final loss over the runs that did not diverge, per lr; lrs with
    diverged runs marked at the top; vertical lines at the theoretical and measured thresholds;
    the diverged fraction below."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True, height_ratios=[3, 1])
    fin = np.where(diverged, np.nan, positive(final))
    ok = ~np.all(np.isnan(fin), axis=1)
    lo, hi = np.full(len(lrs), np.nan), np.full(len(lrs), np.nan)
    med = np.full(len(lrs), np.nan)
    lo[ok], hi[ok], med[ok] = np.nanmin(fin[ok], 1), np.nanmax(fin[ok], 1), np.nanmedian(fin[ok], 1)
    ax.fill_between(lrs, lo, hi, alpha=0.2, color="tab:blue", label="min-max over converged runs")
    ax.plot(lrs, med, "o-", ms=3, color="tab:blue", label="median final loss (converged runs)")
    top = np.nanmax(hi) * 2 if np.any(ok) else 1.0
    frac = np.mean(diverged, axis=1)
    bad = frac > 0
    ax.plot(lrs[bad], np.full(bad.sum(), top), "x", color="tab:red", label="lr with diverged runs")
    if thr_theory:
        ax.axvline(thr_theory, color="k", ls="--", label=f"theory 2/lambda_max ({kind}) = {thr_theory:.4g}")
        ax2.axvline(thr_theory, color="k", ls="--")
    if thr_measured:
        ax.axvline(thr_measured, color="tab:red", ls=":", label=f"measured = {thr_measured:.4g}")
        ax2.axvline(thr_measured, color="tab:red", ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("final training loss (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax2.plot(lrs, frac, "s-", ms=3, color="tab:red")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("diverged\nfraction")
    ax2.set_xlabel("learning rate (log)")
    return save(fig, path)


def three_lrs(steps, losses, lrs, thr, path):
    """The lecture's "too small / good / too large" chart from real runs: ``losses`` is a list of
    three ``[run, step]`` arrays."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=False)
    names = ["too small", "good", "too large"]
    colors = ["tab:orange", "tab:green", "tab:red"]
    for ax, name, lr, L, c in zip(axes, names, lrs, losses, colors):
        for curve in L:
            ax.plot(steps, positive(curve), color=c, lw=1, alpha=0.7)
        ax.set_yscale("log")
        rel = f" = {lr / thr:.3g} x theory threshold" if thr else ""
        ax.set_title(f"{name}: lr = {lr:.3g}{rel}", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (log)")
    fig.suptitle("Learning rate too small / good / too large (real runs, every seed)", fontsize=10)
    return save(fig, path)


def bench_times(times: dict, scaling: list, path, title="bench"):
    """Bars of wall seconds per method; beside it, seconds vs number of runs (log-log) with a
    linear-cost reference line."""
    fig, axes = plt.subplots(1, 2 if scaling else 1, figsize=(11 if scaling else 6, 4))
    ax = axes[0] if scaling else axes
    names = list(times)
    ax.barh(names, [times[k] for k in names], color=["tab:green", "tab:blue", "tab:orange", "tab:purple"][:len(names)])
    for i, k in enumerate(names):
        ax.text(times[k], i, f" {times[k]:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(times.values()) * 1.2)  # room for the labels
    ax.set_xlabel("wall seconds for the whole grid (median)")
    ax.set_title(title, fontsize=9)
    if scaling:
        ax2 = axes[1]
        r = np.array([s["runs"] for s in scaling], float)
        t = np.array([s["seconds"] for s in scaling], float)
        ax2.loglog(r, t, "o-", label="engine")
        ax2.loglog(r, t[-1] * r / r[-1], "k--", lw=1, label="linear in runs")
        ax2.set_xlabel("runs in the grid (log)")
        ax2.set_ylabel("wall seconds (log)")
        ax2.set_title("Cost vs number of runs (small model)", fontsize=9)
        ax2.legend(fontsize=8)
    return save(fig, path)
