"""The lr_sweep figures."""

from __future__ import annotations

import matplotlib
import numpy as np

from bpexp import plots
from bpexp.plots import plt


def _lr_colors(lrs):
    """(colour map, log norm) spanning ``lrs`` [lr]."""
    norm = matplotlib.colors.LogNorm(vmin=float(np.min(lrs)), vmax=float(np.max(lrs)))
    return plt.get_cmap("viridis"), norm


def loss_curves_by_lr(steps, loss, lrs, path, title="Loss per learning rate"):
    """``loss[lr, step]`` as curves coloured by ``lrs[lr]`` (log colour scale) against
    ``steps[step]``, log loss axis; a diverged curve ends where its loss stops being finite."""
    cmap, norm = _lr_colors(lrs)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # at most 96 curves stay readable
    keep = np.unique(np.linspace(0, len(lrs) - 1, min(len(lrs), 96)).round().astype(int))
    for lr, curve in zip(np.asarray(lrs)[keep], np.asarray(loss)[keep]):
        ax.plot(steps, plots.positive(curve), color=cmap(norm(lr)), lw=1)
    ax.set_yscale("log")
    start = plots.positive(np.asarray(loss)[:, 0])
    if np.any(np.isfinite(start)):  # diverging curves leave the top; converging ones stay readable
        lo = np.nanmin(plots.positive(loss))
        ax.set_ylim(lo / 2, np.nanmax(start) * 1e3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.set_title(title, fontsize=10)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="learning rate (log)")
    return plots.save(fig, path)


def final_vs_lr(lrs, conv, frac, thr_theory, kind, thr_measured, path, thr_refined=None,
                title="Final loss vs lr"):
    """Median and spread (``conv[0|1|2, lr]``: min, median, max) of the final loss over the
    runs that did not diverge, per lr of ``lrs[lr]``; lrs with diverged runs (``frac[lr]`` >
    0) marked at the top; vertical lines at the theoretical and measured thresholds; the
    diverged fraction below."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True, height_ratios=[3, 1])
    lo, med, hi = conv
    ok = np.isfinite(med)
    ax.fill_between(lrs, lo, hi, alpha=0.2, color="tab:blue", label="min-max over converged runs")
    ax.plot(lrs, med, "o-", ms=3, color="tab:blue", label="median final loss (converged runs)")
    top = np.nanmax(hi) * 2 if np.any(ok) else 1.0
    bad = frac > 0
    ax.plot(lrs[bad], np.full(bad.sum(), top), "x", color="tab:red", label="lr with diverged runs")
    if thr_theory:
        ax.axvline(thr_theory, color="k", ls="--",
                   label=f"theory 2/lambda_max ({kind}) = {thr_theory:.4g}")
        ax2.axvline(thr_theory, color="k", ls="--")
    if thr_measured:
        ax.axvline(thr_measured, color="tab:red", ls=":", label=f"measured = {thr_measured:.4g}")
        ax2.axvline(thr_measured, color="tab:red", ls=":")
    if thr_refined:
        ax.axvline(thr_refined, color="tab:purple", ls="-.", lw=1,
                   label=f"refined (bisection) = {thr_refined:.5g}")
        ax2.axvline(thr_refined, color="tab:purple", ls="-.", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("final training loss (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax2.plot(lrs, frac, "s-", ms=3, color="tab:red")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("diverged\nfraction")
    ax2.set_xlabel("learning rate (log)")
    return plots.save(fig, path)


def three_lrs(steps, losses, lrs, thr, path):
    """The lecture's "too small / good / too large" chart from real runs: ``losses`` is a list of
    three ``[run, step]`` arrays, ``lrs`` their three learning rates, ``steps`` [step]."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=False)
    names = ["too small", "good", "too large"]
    colors = ["tab:orange", "tab:green", "tab:red"]
    for ax, name, lr, L, c in zip(axes, names, lrs, losses, colors):
        for curve in L:
            ax.plot(steps, plots.positive(curve), color=c, lw=1, alpha=0.7)
        ax.set_yscale("log")
        rel = f" = {lr / thr:.3g} x theory threshold" if thr else ""
        ax.set_title(f"{name}: lr = {lr:.3g}{rel}", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (log)")
    fig.suptitle("Learning rate too small / good / too large (real runs, every seed)", fontsize=10)
    return plots.save(fig, path)


def fig_track(track, lam0, path, title):
    """Sharpness vs step of the GD runs at the two bracketing lrs (``track``: lrs, steps,
    sharpness [2, measurement]) with each 2/lr and the sharpness at init."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (lr, sh), c, name in zip(zip(track["lrs"], track["sharpness"]), ("tab:green", "tab:red"),
                                 ("largest lr where no run diverged",
                                  "smallest lr where every run diverged")):
        ax.plot(track["steps"], plots.positive(sh), color=c, lw=1.5, marker=".",
                label=f"lr = {lr:.4g} ({name})")
        ax.axhline(2 / lr, color=c, ls="--", lw=1, label=f"2/lr = {2 / lr:.4g}")
    ax.axhline(lam0, color="k", ls=":", lw=1, label=f"sharpness at init (median) = {lam0:.4g}")
    lo_run = plots.positive(track["sharpness"][0])
    bottom = np.nanmin(np.append(lo_run, [2 / max(track["lrs"]), lam0]))
    ax.set_yscale("log")   # a diverging run leaves the top; the surviving one stays readable
    ax.set_ylim(bottom / 2, 10 * max(lam0, 2 / min(track["lrs"]), np.nanmax(lo_run)))
    ax.set_xlabel("step (full-batch GD)")
    ax.set_ylabel("top Hessian eigenvalue (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return plots.save(fig, path)
