"""The optimizers experiment's figures."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from bpexp import optim, plots
from bpexp.plots import plt

COLORS = {k: plots.PALETTE[i % len(plots.PALETTE)] for i, k in enumerate(optim.NAMES)}


def fig_best_curves(names, steps, net, tol, quad, qtol, title_net, title_q, path):
    """Left: network loss at each optimizer's best lr (median over seeds, min-max band);
    right: quadratic loss at each best lr; dashed: the tolerances."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for n in names:
        if net[n].curve is None:
            continue
        c = plots.positive(net[n].curve)
        a1.plot(steps, np.nanmedian(c, axis=0), color=COLORS[n], lw=1.5,
                label=f"{n}, lr={net[n].best_lr:.3g}")
        a1.fill_between(steps, np.nanmin(c, axis=0), np.nanmax(c, axis=0), color=COLORS[n],
                        alpha=0.15)
    a1.axhline(tol, color="k", ls="--", lw=1, label=f"tolerance {tol:.3g}")
    a1.set_yscale("log")
    a1.set_xlabel("step (full-batch updates)")
    a1.set_ylabel("training loss, MSE (log)")
    a1.set_title(title_net, fontsize=9)
    a1.legend(fontsize=8)
    for n in names:
        if quad[n].curve is not None:
            a2.plot(np.arange(len(quad[n].curve)), plots.positive(quad[n].curve), color=COLORS[n],
                    lw=1.5, label=f"{n}, lr={quad[n].best_lr:.3g}")
    a2.axhline(qtol, color="k", ls="--", lw=1, label=f"tolerance {qtol:g}")
    a2.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel("f(w) = 0.5 w^T H w (log)")
    a2.set_title(title_q, fontsize=9)
    a2.legend(fontsize=8)
    fig.suptitle("Loss at each optimizer's best learning rate (hand-written; optax twins "
                 "coincide)", fontsize=10)
    return plots.save(fig, path)


def fig_final_vs_lr(names, net, quad, title_net, title_q, bounds, path):
    """Final loss vs lr per optimizer, log-log; diverged lrs as crosses at the top, the best lr
    as a star; on the quadratic each optimizer's stability bound (its row's) as a dotted
    line."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, fits, title in ((axes[0], net, title_net), (axes[1], quad, title_q)):
        fin_all = np.concatenate([plots.positive(np.where(f.diverged, np.nan, f.final))
                                  for f in fits.values()])
        top = np.nanmax(fin_all) * 3 if np.isfinite(fin_all).any() else 1.0
        for n in names:
            f = fits[n]
            ax.plot(f.lrs, plots.positive(np.where(f.diverged, np.nan, f.final)), "o-", ms=3,
                    color=COLORS[n], label=n)
            ax.plot(f.lrs[f.diverged], np.full(f.diverged.sum(), top), "x", color=COLORS[n], ms=7)
            if f.best is not None:
                ax.plot(f.lrs[f.best], f.final[f.best], "*", ms=13, color=COLORS[n], mec="k",
                        mew=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate (log)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("final training loss (median over seeds, log)")
    axes[1].set_ylabel("final f(w) (log)")
    for n in names:
        if bounds.get(n):
            axes[1].axvline(bounds[n], color=COLORS[n], ls=":", lw=1.2,
                            label=f"{n} bound = {bounds[n]:.3g}")
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        h += [Line2D([], [], ls="", marker="x", color="0.3"),
              Line2D([], [], ls="", marker="*", ms=10, color="0.3")]
        lab += ["diverged (drawn at top)", "best lr"]
        ax.legend(h, lab, fontsize=7)
    fig.suptitle("Final loss vs learning rate per optimizer", fontsize=10)
    return plots.save(fig, path)


def fig_paths(names, H, w0, quad, n_path, title, path):
    """One panel per optimizer: contours of 0.5 w^T H w and the first ``n_path`` steps of the
    path at its best lr from w0 (same start)."""
    paths = {n: None if quad[n].path is None else quad[n].path[: n_path + 1] for n in names}
    k = len(names)
    cols = 2 if k > 1 else 1
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 4.4 * rows), squeeze=False)
    r = 1.25 * float(np.max(np.abs(w0)))
    reach = [np.nanmax(np.abs(p[np.isfinite(p).all(axis=1)])) for p in paths.values()
             if p is not None]
    r = min(max([r, *(1.05 * x for x in reach)]), 3 * r)   # show early overshoots, not blow-ups
    g = np.linspace(-r, r, 241)
    W1, W2 = np.meshgrid(g, g)
    F = 0.5 * (H[0, 0] * W1 ** 2 + 2 * H[0, 1] * W1 * W2 + H[1, 1] * W2 ** 2)
    f0 = 0.5 * w0 @ H @ w0
    levels = f0 * np.geomspace(1e-3, 1, 9)
    for ax, n in zip(axes.ravel(), names):
        ax.contour(W1, W2, F, levels=levels, colors="0.6", linewidths=0.7)
        p = paths[n]
        if p is not None:
            p = np.where(np.abs(p) > 10 * r, np.nan, p)
            ax.plot(p[:, 0], p[:, 1], "-o", ms=2.2, lw=1, color=COLORS[n])
        ax.plot(*w0, "ks", ms=6, label=f"start ({w0[0]:g}, {w0[1]:g})")
        ax.plot(0, 0, "k*", ms=11, label="minimum (0, 0)")
        lr = "none converged" if quad[n].best is None else f"lr={quad[n].best_lr:.3g}"
        st = "" if quad[n].steps_to_tol is None else f", tol reached at step {quad[n].steps_to_tol}"
        ax.set_title(f"{n}: {lr}{st}", fontsize=9)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal")
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)
