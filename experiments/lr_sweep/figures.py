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


def loss_curves_by_lr(steps, loss, lrs, path, title="Loss per learning rate", thr=None):
    """``loss[lr, step]`` as curves coloured by ``lrs[lr]`` (log colour scale) against
    ``steps[step]``, log loss axis; the threshold ``thr`` marked on the colour bar; curves that
    leave the top (diverging) are clipped there and said so."""
    cmap, norm = _lr_colors(lrs)
    fig, ax = plots.slide()
    # at most 96 curves stay readable
    keep = np.unique(np.linspace(0, len(lrs) - 1, min(len(lrs), 96)).round().astype(int))
    for lr, curve in zip(np.asarray(lrs)[keep], np.asarray(loss)[keep]):
        ax.plot(steps, plots.positive(curve), color=cmap(norm(lr)), lw=1.2, ls="-")
    ax.set_yscale("log")
    start = plots.positive(np.asarray(loss)[:, 0])
    if np.any(np.isfinite(start)):  # diverging curves leave the top; converging ones stay readable
        lo, top = np.nanmin(plots.positive(loss)), np.nanmax(start) * 1e3
        ax.set_ylim(lo / 2, top)
        final = np.asarray(loss, np.float64)[keep, -1]
        clipped = int(np.sum(~np.isfinite(final) | (final > top)))
        if clipped:
            plots.note(ax, f"{clipped} of {len(keep)} curves leave the top (loss > {top:.2g} "
                           "or non-finite): clipped", "upper left")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.set_title(title)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=ax, label="learning rate (log)")
    if thr and norm.vmin < thr < norm.vmax:
        cb.ax.axhline(thr, color="black", lw=3, ls="--")
        cb.ax.text(-0.2, thr, "threshold", transform=cb.ax.get_yaxis_transform(), ha="right",
                   va="center", fontsize=13)
    return plots.save(fig, path)


def final_vs_lr(lrs, conv, frac, thr_theory, kind, thr_measured, path, thr_refined=None,
                title="Final loss vs lr", bracket=None):
    """Long because it draws three panels that share one story: the median and min-max of the
    final loss over the converged runs per lr (``conv[0|1|2, lr]``) with the lrs where runs
    diverged on a strip of their own above it (never at an invented height); the diverged
    fraction ``frac[lr]`` below; a zoom on the edge (lr / theory in [1/1.5, 1.5]) with the
    theory, the coarse measurement and the refined value with its ``bracket``."""
    fig = plt.figure(figsize=plots.SLIDE, constrained_layout=True)
    gs = fig.add_gridspec(3, 2, width_ratios=[1.7, 1], height_ratios=[0.35, 3, 1.1])
    ax = fig.add_subplot(gs[1, 0])
    strip, ax2 = fig.add_subplot(gs[0, 0], sharex=ax), fig.add_subplot(gs[2, 0], sharex=ax)
    zoom = fig.add_subplot(gs[:, 1])
    lo, med, hi = conv
    ax.fill_between(lrs, lo, hi, alpha=0.25, color=plots.PALETTE[0],
                    label="min-max, converged runs")
    ax.plot(lrs, med, "o-", ms=4, color=plots.PALETTE[0], label="median, converged runs")
    ok = np.isfinite(med)
    if ok.any():   # the converged band fills the panel: its own range, not the diverged ones'
        span = np.nanmax(hi[ok]) / np.nanmin(lo[ok])
        pad = max(span ** 0.08, 1.02)
        ax.set_ylim(np.nanmin(lo[ok]) / pad, np.nanmax(hi[ok]) * pad)
    bad = frac > 0
    strip.plot(lrs[bad], np.zeros(bad.sum()), "x", ms=9, color=plots.PALETTE[3])
    strip.set_yticks([])
    strip.set_ylabel("diverged", rotation=0, ha="right", va="center")
    strip.set_title(title)
    edge = {"theory": thr_theory, "measured": thr_measured, "refined": thr_refined}
    styles = {"theory": plots.THEORY, "measured": dict(color=plots.PALETTE[3], ls=":", lw=2.2),
              "refined": dict(color=plots.PALETTE[4], ls="-.", lw=2.2)}
    names = {"theory": f"theory{' (lower bound)' if kind == 'estimate' else ''}",
             "measured": "measured (coarse grid)", "refined": "refined (bisection)"}
    for a in (strip, ax, ax2):
        a.set_xscale("log")
        for k, x in edge.items():
            if x:
                a.axvline(x, **styles[k])
    ax.set_yscale("log")
    ax.set_ylabel("final training loss")
    ax.tick_params(labelbottom=False)
    strip.tick_params(labelbottom=False)
    ax2.plot(lrs, frac, "s-", ms=4, color=plots.PALETTE[3])
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("diverged\nfraction")
    ax2.set_xlabel("learning rate (log)")
    _zoom(zoom, lrs, frac, edge, styles, names, bracket)
    return plots.save(fig, path)


def _zoom(ax, lrs, frac, edge, styles, names, bracket):
    """The edge up close: diverged fraction vs lr near the threshold, every threshold line
    labelled with its value."""
    ref = edge["theory"] or edge["refined"] or edge["measured"]
    if not ref:
        ax.set_axis_off()
        return
    win = (lrs >= ref / 1.5) & (lrs <= ref * 1.5)
    ax.plot(lrs[win], frac[win], "s", ms=8, color=plots.PALETTE[3], label="coarse grid")
    for k, x in edge.items():
        if x:
            ax.axvline(x, label=f"{names[k]} {x:.6g}", **styles[k])
    if bracket and bracket[0] and bracket[1]:
        ax.axvspan(bracket[0], bracket[1], color=plots.PALETTE[4], alpha=0.3, lw=0)
        plots.note(ax, f"refined bracket\n{bracket[0]:.6g} -\n{bracket[1]:.6g}\n"
                       f"(width {bracket[1] / bracket[0] - 1:.1e})", "upper left")
    ax.set_xlim(ref / 1.5, ref * 1.5)
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("the edge, zoomed")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("diverged fraction")
    plots.legend_outside(ax, "below", ncol=1, fontsize=12)


def three_lrs(steps, losses, lrs, thr, path, best_final=None):
    """The lecture's "too small / good / too large" chart from real runs: ``losses`` is a list of
    three ``[run, step]`` arrays, ``lrs`` their three learning rates, ``steps`` [step]. The first
    two panels share their loss axis; the diverging third has its own, said so."""
    fig, axes = plots.slide(1, 3)
    names = ["too small", "good", "too large"]
    share = [plots.positive(L) for L in losses[:2]]
    lo = np.nanmin([np.nanmin(x) for x in share])
    hi = np.nanmax([np.nanmax(x) for x in share])
    for i, (ax, name, lr, L) in enumerate(zip(axes, names, lrs, losses)):
        for curve in L:
            ax.plot(steps, plots.positive(curve), lw=1.5, alpha=0.8, **plots.style(i))
        ax.set_yscale("log")
        if i < 2:
            ax.set_ylim(lo / 1.1, hi * 1.1)
        rel = f"\n{lr / thr:.3g} x threshold" if thr else ""
        fin = np.nanmedian(np.asarray(L, np.float64)[:, -1])
        end = f"\nfinal {fin:.3g}" if np.isfinite(fin) else "\ndiverges"
        ax.set_title(f"{name}: lr {lr:.3g}{rel}{end}", fontsize=15)
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (log)")
    axes[2].set_ylabel("its own axis (log): the loss explodes")
    fig.suptitle("Learning rate too small / good / too large: every seed of three real lrs")
    return plots.save(fig, path)


def fig_track(track, lam0, path, title):
    """Sharpness vs step of the GD runs at the two bracketing lrs (``track``: lrs, steps,
    sharpness [2, measurement]) with each 2/lr and the sharpness at init; a curve that leaves
    the plot or stops being finite is marked where it does."""
    fig, ax = plots.slide()
    lo_run = plots.positive(track["sharpness"][0])
    top = 10 * max(lam0, 2 / min(track["lrs"]), np.nanmax(lo_run))
    bottom = np.nanmin(np.append(lo_run, [2 / max(track["lrs"]), lam0]))
    for i, ((lr, sh), name) in enumerate(zip(zip(track["lrs"], track["sharpness"]),
                                             ("largest lr where no run diverged",
                                              "smallest lr where every run diverged"))):
        st = plots.style(i)
        y = np.asarray(sh, np.float64)
        ax.plot(track["steps"], np.minimum(plots.positive(y), top), marker=".",
                label=f"lr = {lr:.4g} ({name})", **st)
        ax.axhline(2 / lr, color=st["color"], ls=(0, (1, 1)), lw=1.8, label=f"2/lr = {2 / lr:.4g}")
        off = ~np.isfinite(y) | (y > top)
        if off.any():
            k = int(np.argmax(off))
            ax.plot(track["steps"][k], top, marker=r"$\uparrow$", ms=18, color=st["color"],
                    ls="none", clip_on=False, zorder=11,
                    label=f"off scale or non-finite from step {int(track['steps'][k])}")
    plots.theory_line(ax, y=lam0, label=f"sharpness at init (median) = {lam0:.4g}")
    ax.set_yscale("log")   # a diverging run leaves the top; the surviving one stays readable
    ax.set_ylim(bottom / 2, top)
    ax.set_xlabel("step (full-batch GD)")
    ax.set_ylabel("top Hessian eigenvalue (log)")
    ax.set_title(title)
    plots.legend_outside(ax, "below", ncol=2)
    return plots.save(fig, path)
