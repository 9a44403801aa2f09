"""The remedies' figures."""

from __future__ import annotations

import matplotlib.cm
import matplotlib.colors
import numpy as np

from bpexp import plots
from bpexp.experiments.depth_sweep.figures import _log_ticks, _subplots
from bpexp.experiments.depth_sweep.run import _factor
from bpexp.experiments.remedies.theory import REMEDIES
from bpexp.plots import plt


def _theory_label(name, factor):
    """The legend of a remedy's theory line; ``factor``: its geometric-mean prediction."""
    return {"sigmoid": f"Glorot sqrt(n Var(W) E f'^2)\n= {factor:.3f} per layer",
            "relu_he": f"Glorot sqrt(2 x 1/2) = 1\n({factor:.3f} with E f'^2 measured)",
            "xavier": f"Glorot sqrt(E sigma'^2)\n= {factor:.3f} per layer",
            "residual": f"dL/da x sqrt(1 + n Var(W) E f'^2)\n(I + W^T diag f'), {factor:.3f}/layer",
            "batchnorm": f"sqrt(n Var(W) E[(f'/sigma_B)^2])\n= {factor:.3f} per layer (upper)",
            }[name]


def plot_remedy_norms(res, path):
    """Top: median ||dL/dW_l||_F at init against k = layers below the output, one curve per
    depth; bottom: the per-unit RMS of dL/dz_l with the remedy's prediction (dotted) for the
    deepest net. One column per remedy, shared axes per row."""
    names, depths = res.remedies, res.depths
    cmap = plt.get_cmap("viridis")
    cnorm = matplotlib.colors.Normalize(vmin=min(depths), vmax=max(depths))
    fig, axes = _subplots(2, len(names), figsize=(3.6 * len(names) + 1.2, 7.8), sharey="row",
                          sharex=True)
    Dm = depths[-1]
    for c, name in enumerate(names):
        for row, arr in enumerate((res.grad_norm_init, res.dz_rms_init)):
            ax = axes[row, c]
            for di, D in enumerate(depths):
                g = np.median(arr[c, di], axis=0)[: D + 1]
                ax.plot(np.arange(D + 1)[::-1], np.where(g > 0, g, np.nan), "-", lw=1.2,
                        color=cmap(cnorm(D)))
            g = np.median(arr[c, -1], axis=0)[: Dm + 1]
            kk = np.arange(Dm + 1)
            if row == 0 and name == "sigmoid":
                ax.plot(kk, g[-1] * 0.25 ** kk, "--", color="0.2", lw=1.2,
                        label="0.25^k (sigma' <= 1/4)")
            if row == 1:
                pred = np.median(res.ratio_predicted_dz[c, -1], axis=0)[:Dm]  # pair l = 1..D
                cum = g[-1] * np.concatenate([[1.0], np.cumprod(pred[::-1])])
                ax.plot(kk, cum, ":", color="tab:red", lw=2.2,
                        label=_theory_label(name, _factor(res.ratio_predicted_dz[c, -1], Dm)))
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.grid(alpha=0.3)
            if row == 1 or (row == 0 and name == "sigmoid"):
                ax.legend(fontsize=7.5, loc="lower left")
            if c == 0:
                ax.set_ylabel("||dL/dW_l||_F at init" if row == 0 else
                              "RMS of dL/dz_l per unit at init")
            if row == 1:
                ax.set_xlabel("k = layers below the output")
        axes[0, c].set_title(REMEDIES[name].label, fontsize=11)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=axes,
                 label="depth D (hidden layers)", shrink=0.8)
    fig.suptitle(f"Vanishing-gradient remedies, width {res.width}, medians of {len(res.seeds)} "
                 "seeds: per-layer gradient norms at init, one curve per depth\n"
                 f"k = 0 is the output layer, k = D the input layer; dotted red: the remedy's "
                 f"theory for D = {Dm}, anchored at the output", fontsize=11)
    return plots.save(fig, path)


def plot_remedy_summary(res, output, path):
    """Per remedy against depth: measured (markers) and predicted (line) RMS dz_1 / RMS dz_L,
    the weight-gradient ratio ||dW_1|| / ||dW_L||, and the loss after training (median, IQR
    band)."""
    fig, axes = _subplots(1, 3, figsize=(16, 4.8))
    colors = plt.get_cmap("tab10")
    d = np.asarray(res.depths)
    for c, name in enumerate(res.remedies):
        col, lab = colors(c), REMEDIES[name].label
        ax = axes[0, 0]
        ax.plot(d, np.median(res.dz_first_last[c], axis=1), "o", color=col, ms=5, label=lab)
        ax.plot(d, np.median(res.dz_first_last_predicted[c], axis=1), "-", color=col, lw=1.2)
        ax = axes[0, 1]
        r = res.ratio_first_last[c]
        ax.fill_between(d, np.percentile(r, 25, axis=1), np.percentile(r, 75, axis=1),
                        color=col, alpha=0.15)
        ax.plot(d, np.median(r, axis=1), "o-", color=col, ms=4, label=lab)
        ax = axes[0, 2]
        fin = res.loss[c, :, :, -1]
        finf = np.where(np.isfinite(fin), fin, np.inf)
        med = np.median(finf, axis=1)
        ax.fill_between(d, np.nanpercentile(fin, 25, axis=1), np.nanpercentile(fin, 75, axis=1),
                        color=col, alpha=0.15)
        ax.plot(d, np.where(np.isfinite(med), med, np.nan), "o-", color=col, ms=4, label=lab)
        bad = ~np.all(np.isfinite(fin), axis=1)
        if bad.any():   # diverged runs: an x at the top of the panel
            ax.plot(d[bad], np.full(bad.sum(), 2 * np.log(10)), "x", color=col, ms=10, mew=2,
                    label=f"{lab}: some runs diverged")
    axes[0, 0].plot([], [], "k-", lw=1.2, label="lines: theory (batch norm: upper estimate)")
    dm = float(max(d))
    axes[0, 0].plot(d, 0.25 ** d.astype(float), "k--", lw=1, label="0.25^D")
    for ax, yl, t in ((axes[0, 0], "RMS(dL/dz_1) / RMS(dL/dz_L) at init",
                       "Back-propagated signal, first / last layer"),
                      (axes[0, 1], "||dL/dW_1|| / ||dL/dW_L|| at init",
                       "Weight gradients, first / last layer (IQR band)"),
                      (axes[0, 2], f"training loss after {res.loss.shape[-1] - 1} steps",
                       f"Loss after full-batch GD lr {res.lr:g} (IQR band)")):
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        ax.set_xlabel("depth D (hidden layers)")
        ax.set_ylabel(yl)
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, dm + 1)
    axes[0, 0].set_ylim(bottom=np.nanmin(res.dz_first_last) / 10)
    if output == "softmax_ce":
        axes[0, 2].axhline(np.log(10), color="k", lw=0.8, ls="--", label="ln 10")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    axes[0, 2].legend(fontsize=8)
    fig.suptitle(f"Remedies vs depth, width {res.width}, medians over {len(res.seeds)} seeds",
                 fontsize=11)
    return plots.save(fig, path)
