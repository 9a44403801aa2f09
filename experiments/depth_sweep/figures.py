"""The depth sweep's figures."""

from __future__ import annotations

import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker
import numpy as np

from bpexp import plots
from bpexp.experiments.depth_sweep.theory import fprime_max
from bpexp.plots import plt


def _end_ratios(res, wi, di, ii, D):
    """Per seed [seed]: ||dW_1||/||dW_L|| and ||dz_1||/||dz_L|| at init and after training."""
    ix = (wi, di, ii)
    g0, gT = res.grad_norm_init[ix], res.grad_norm_final[ix]
    d0, dT = res.delta_norm_init[ix], res.delta_norm_final[ix]
    return g0[:, 0] / g0[:, D], gT[:, 0] / gT[:, D], d0[:, 0] / d0[:, D], dT[:, 0] / dT[:, D]


def _subplots(rows, cols, **kw):
    return plt.subplots(rows, cols, squeeze=False, **kw)


def _log_ticks(axis):
    """Decade ticks only: minor log ticks on many decades make the figures slow to lay out."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(numticks=8))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def plot_activation(activation, path):
    """sigma and sigma' (max 1/4 marked); the chosen activation beside it when it is not the
    sigmoid (its f' max is 1)."""
    z = np.linspace(-8, 8, 801)
    sig = 1 / (1 + np.exp(-z))
    curves = [("sigmoid", sig, sig * (1 - sig), 0.25)]
    if activation == "tanh":
        curves.append(("tanh", np.tanh(z), 1 - np.tanh(z) ** 2, 1.0))
    elif activation == "relu":
        curves.append(("relu", np.maximum(z, 0), (z > 0).astype(float), 1.0))
    fig, axes = _subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8))
    for ax, (name, f, fp, mx) in zip(axes[0], curves):
        ax.plot(z, f, color="tab:blue", label=f"{name}(z)")
        ax.plot(z, fp, color="tab:red", label=f"{name}'(z)")
        ax.axhline(mx, color="tab:red", ls="--", lw=1, label=f"max {name}' = {mx:g}")
        ax.plot([0 if name != "relu" else 0.2], [mx], "o", color="tab:red")
        if name == "relu":
            ax.set_ylim(-0.3, 4)
        ax.set_xlabel("pre-activation z")
        ax.set_ylabel("value")
        ax.set_title(f"{name} and its derivative (max {mx:g} at z = 0)" if name != "relu"
                     else "relu and its derivative (1 for z > 0)", fontsize=10)
        ax.legend(fontsize=8, loc="center right" if name == "tanh" else "upper left")
    return plots.save(fig, path)


def plot_grad_norms(depths, inits, g0, gT, pred_w, activation, steps, width, path):
    """``g0, gT[depth, init, seed, layer]``: median ||dL/dW_l|| over seeds against k = layers
    below the output (log y), one curve per depth, one column per init; top row at init with
    fmax^k (dashed) and the Glorot prediction for the deepest net (dotted), bottom row after
    training."""
    fmax = fprime_max(activation)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(vmin=min(depths), vmax=max(depths))
    fig, axes = _subplots(2, len(inits), figsize=(4.4 * len(inits) + 1, 7.6), sharey="row")
    kk = np.arange(max(depths) + 1)
    for row, (G, when) in enumerate(((g0, "at init"), (gT, f"after {steps} GD steps"))):
        for c, scheme in enumerate(inits):
            ax, tops = axes[row, c], []
            for di, D in enumerate(depths):
                g = np.median(G[di, c], axis=0)[: D + 1]            # layers 1..L
                ax.plot(np.arange(D + 1)[::-1], np.where(g > 0, g, np.nan), "o-", ms=3, lw=1.2,
                        color=cmap(norm(D)))
                tops.append(g[-1])
            if row == 0:
                D = depths[-1]
                anchor = float(np.median(tops))
                ax.plot(kk, anchor * fmax ** kk, "--", color="0.25", lw=1.2,
                        label=f"{fmax:g}^k x median ||dW_L|| (f'max only)")
                r = np.median(pred_w[-1, c], axis=0)[:D]            # ratio (l, l+1), l = 1..D
                cum = tops[-1] * np.concatenate([[1.0], np.cumprod(r[::-1])])
                ax.plot(np.arange(D + 1), cum, ":", color="tab:red", lw=2,
                        label=f"Glorot prediction (D={D})")
                ax.legend(fontsize=7, loc="lower left")
            else:
                ax.set_xlabel("k = layers below the output")
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.set_xticks(kk)
            if c == 0:
                ax.set_ylabel(f"||dL/dW_l||_F {when} (log)")
            ax.set_title(f"init = {scheme}, {when}", fontsize=10)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
                 label="depth D (hidden layers)", shrink=0.8)
    fig.suptitle(f"Per-layer weight-gradient norms, {activation} MLP width {width}: one curve per "
                 "depth D, median over seeds\nk = 0 is the output layer W_L, k = D the input layer "
                 f"W_1; dashed: {fmax:g}^k (the rigorous bound is on dL/dz and includes "
                 "prod ||W_l||_2)",
                 fontsize=11)
    return plots.save(fig, path)


def plot_final_loss(depths, inits, loss0, lossT, output, steps, lr, width, path):
    """``loss0, lossT[depth, init, seed]``: final loss vs depth per init (median, min-max band),
    initial loss dotted, ln 10 for softmax_ce."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    colors = plt.get_cmap("tab10")
    d = np.asarray(depths)
    for c, scheme in enumerate(inits):
        fin = np.where(np.isfinite(lossT[:, c]), lossT[:, c], np.inf)   # diverged = worst
        lo, hi, med = (np.where(np.isfinite(v), v, np.nan) for v in
                       (fin.min(1), fin.max(1), np.median(fin, 1)))
        ax.fill_between(d, lo, hi, color=colors(c), alpha=0.15)
        ax.plot(d, med, "o-", color=colors(c), label=f"{scheme}: after {steps} steps")
        bad = ~np.all(np.isfinite(lossT[:, c]), axis=1)
        if bad.any():
            ax.plot(d[bad], np.full(bad.sum(), np.log(10) * 3), "x", color=colors(c), ms=9,
                    label=f"{scheme}: some runs diverged")
        ax.plot(d, np.nanmedian(loss0[:, c], 1), ":", color=colors(c), lw=1,
                label=f"{scheme}: at init")
    if output == "softmax_ce":
        ax.axhline(np.log(10), color="k", lw=0.8, ls="--", label="ln 10 (uniform prediction)")
    ax.set_yscale("log")
    ax.set_xticks(d)
    ax.set_xlabel("depth D (hidden layers)")
    ax.set_ylabel(f"training loss ({output}, log)")
    ax.set_title(f"Final loss vs depth, full-batch GD lr {lr:g}, width {width} "
                 "(median, band = min-max over seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return plots.save(fig, path)


def plot_ratios(inits, meas_dz, glorot, meas_w, pred_w, activation, width, path):
    """Measured vs predicted per-layer ratios at init, every depth, layer pair and seed
    (``[depth, init, seed, pair]``), log-log with y = x and a factor-2 band: left the per-unit
    RMS of dL/dz against sqrt(n Var(W) E[f'^2]), right ||dW_l|| / ||dW_{l+1}|| against the
    weight-gradient prediction."""
    fig, axes = _subplots(1, 2, figsize=(11, 5))
    colors = plt.get_cmap("tab10")
    panels = [(meas_dz, glorot, "dL/dz: RMS(dz_l) / RMS(dz_{l+1})", "sqrt(n Var(W) E[f'(z)^2])"),
              (meas_w, pred_w, "dL/dW: ||dW_l|| / ||dW_{l+1}||",
               "sqrt(n Var(W) E[f'^2]) x sqrt(h/n) ||a_{l-1}||/||a_l||")]
    for ax, (meas, pred, what, xl) in zip(axes[0], panels):
        vals = []
        for c, scheme in enumerate(inits):
            x, y = pred[:, c].ravel(), meas[:, c].ravel()
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            ax.loglog(x[ok], y[ok], ".", ms=4, alpha=0.6, color=colors(c), label=scheme)
            vals += [x[ok], y[ok]]
        v = np.concatenate(vals)
        if not v.size:  # no finite positive ratio (e.g. all units dead): a default frame
            v = np.array([0.1, 1.0])
        lo, hi = v.min() / 2, v.max() * 2
        t = np.geomspace(lo, hi, 10)
        ax.plot(t, t, "k-", lw=1, label="measured = predicted")
        ax.fill_between(t, t / 2, t * 2, color="0.5", alpha=0.15, label="within a factor 2")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _log_ticks(ax.xaxis)
        _log_ticks(ax.yaxis)
        ax.set_xlabel(f"predicted: {xl}", fontsize=8)
        ax.set_ylabel(f"measured {what}", fontsize=8)
        ax.set_title(what, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Per-layer gradient ratios at init, {activation} width {width}: every depth, "
                 "layer pair and seed", fontsize=10)
    return plots.save(fig, path)
