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
    fig, axes = plots.slide(1, len(curves), squeeze=False)
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
                     else "relu and its derivative (1 for z > 0)", fontsize=14)
        ax.legend(fontsize=12, loc="center right" if name == "tanh" else "upper left")
    fig.suptitle("sigma'(z) <= 1/4: each sigmoid layer passes back at most a quarter of the "
                 "gradient" + (f"; {activation}' <= 1" if activation != "sigmoid" else ""),
                 fontsize=15)
    return plots.save(fig, path)


def grad_title(summary) -> str:
    """The headline's takeaway: the measured per-layer factor of ||dL/dW_l|| at the deepest
    depth per init (geometric mean over the layers, median over seeds) beside its prediction."""
    Dm = summary["depths"][-1]
    at = {k: e["depths"][str(Dm)] for k, e in summary["inits"].items()}
    parts = [f"x{d['factor_measured']:.2f} {k} (theory {d['factor_predicted_weight']:.2f})"
             for k, d in at.items()]
    return f"At init (D = {Dm}), ||dL/dW_l|| shrinks per layer by " + ", ".join(parts)


def plot_grad_norms(depths, inits, G, pred_w, activation, when, width, title, path):
    """``G[depth, init, seed, layer]``: median ||dL/dW_l|| over seeds against k = layers below
    the output (log y), one curve per depth, one panel per init (at most 4); with ``pred_w``
    (at init) the Glorot prediction for the deepest net anchored at its output layer (theory
    style, on top) and fmax^k (grey)."""
    fmax = fprime_max(activation)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(vmin=min(depths), vmax=max(depths))
    inits = list(inits)[: plots.MAX_PANELS]
    fig, axes = plots.slide(1, len(inits), sharey=True, squeeze=False)
    kk = np.arange(max(depths) + 1)
    D = depths[-1]
    for c, scheme in enumerate(inits):
        ax = axes[0, c]
        for di, Dd in enumerate(depths):
            g = np.median(G[di, c], axis=0)[: Dd + 1]            # layers 1..L
            ax.plot(np.arange(Dd + 1)[::-1], plots.positive(g), marker="o", ms=3, lw=1.2,
                    linestyle="-", color=cmap(norm(Dd)))
        top = np.median(G[-1, c], axis=0)[D]
        if pred_w is not None:
            ax.plot(kk, top * fmax ** kk, color="0.55", lw=1.5, linestyle=":",
                    label=f"{fmax:g}^k (largest f' per layer)")
            r = np.median(pred_w[-1, c], axis=0)[:D]             # ratio (l, l+1), l = 1..D
            plots.theory_line(ax, kk, top * np.concatenate([[1.0], np.cumprod(r[::-1])]),
                              label=f"theory for D = {D}: x sqrt(n Var(W) E[f'^2]) per layer")
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        ax.set_xticks(kk[:: max(1, len(kk) // 6)])
        ax.set_xlabel("k = layers below the output")
        ax.set_title(f"init {scheme}", fontsize=15)
    axes[0, 0].set_ylabel(f"||dL/dW_l|| {when}")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[0, -1],
                 label="depth D", shrink=0.8)
    if pred_w is not None:
        h, lab = axes[0, 0].get_legend_handles_labels()
        fig.legend(h, lab, loc="outside lower center", ncol=2, frameon=False, fontsize=13)
    fig.suptitle(title, fontsize=15)
    return plots.save(fig, path)


def after_title(summary) -> str:
    """The appendix's takeaway: ||dW_1|| / ||dW_L|| of the deepest net after training beside
    its value at init, per init (medians over seeds of each layer, as the summary holds)."""
    Dm = summary["depths"][-1]
    parts = []
    for k, e in summary["inits"].items():
        d = e["depths"][str(Dm)]
        g0, gT = d["grad_norms_init"], d["grad_norms_final"]
        parts.append(f"{k} {gT[0] / gT[-1]:.2g} (init {g0[0] / g0[-1]:.2g})")
    return (f"After {summary['steps']} GD steps, ||dW_1|| / ||dW_L|| at D = {Dm}: "
            + ", ".join(parts))


def loss_title(summary) -> str:
    Dm, H = summary["depths"][-1], summary["class_entropy"]
    at = {k: e["depths"][str(Dm)]["final_loss"] for k, e in summary["inits"].items()}
    stuck = [k for k, v in at.items() if v is not None and abs(v - H) < 0.01]
    best = min(at, key=lambda k: at[k] if at[k] is not None else np.inf)
    head = (f"Depth {Dm}: {', '.join(stuck)} stay at the class entropy {H:.3f}; "
            if stuck else f"Depth {Dm}: ")
    return head + f"{best} reaches {at[best]:.3g}"


def plot_final_loss(depths, inits, loss0, lossT, output, steps, lr, class_entropy, title,
                    path):
    """``loss0, lossT[depth, init, seed]``: final loss vs depth per init (median, min-max
    band), the initial loss as open markers, ln 10 and the class entropy (the loss of the
    prior guess) for softmax_ce; diverged runs marked at the top edge."""
    fig, ax = plots.slide()
    d = np.asarray(depths, np.float64)
    top = 3 * np.log(10)
    for c, scheme in enumerate(inits):
        st = plots.style(c)
        fin = np.where(np.isfinite(lossT[:, c]), lossT[:, c], np.inf)   # diverged = worst
        lo, hi, med = (np.where(np.isfinite(v), v, np.nan) for v in
                       (fin.min(1), fin.max(1), np.median(fin, 1)))
        ax.fill_between(d, lo, np.minimum(hi, top), color=st["color"], alpha=0.15)
        ax.plot(d, med, marker="o", label=f"{scheme}: after {steps} steps", **st)
        ax.plot(d, np.nanmedian(loss0[:, c], 1), marker="o", mfc="none", linestyle="none",
                color=st["color"], ms=10, mew=1.5, label=f"{scheme}: at init")
        bad = ~np.all(np.isfinite(lossT[:, c]), axis=1)
        plots.mark_offscale(ax, d[bad], np.full(bad.sum(), np.inf), top,
                            label=f"{scheme}: some runs diverged", color=st["color"])
    if output == "softmax_ce":
        ax.axhline(np.log(10), color="0.3", lw=1.2, linestyle="--",
                   label="ln 10 = 2.303 (uniform guess)")
        ax.axhline(class_entropy, color="0.5", lw=1.2, linestyle=":",
                   label=f"class entropy {class_entropy:.3f} (prior guess)")
    ax.set_yscale("log")
    for axis in (ax.yaxis,):
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xticks(d)
    ax.set_xlabel("depth D (hidden layers)")
    ax.set_ylabel(f"training loss ({output})")
    if output == "softmax_ce":   # the two levels are 0.01 apart: a zoom shows which one
        _zoom(ax, d, lossT, inits, class_entropy)
    ax.set_title(title, fontsize=16)
    plots.note(ax, f"full-batch GD lr {lr:g}; band: min-max over seeds", loc="lower left")
    plots.legend_outside(ax, fontsize=12)
    return plots.save(fig, path)


def _zoom(ax, d, lossT, inits, class_entropy):
    """An inset around ln 10 and the class entropy with the median final losses near them."""
    lo, hi = class_entropy - 0.012, np.log(10) + 0.008
    ins = ax.inset_axes([1.12, 0.06, 0.42, 0.36])     # beside the axes, under the legend
    for c, _ in enumerate(inits):
        med = np.median(np.where(np.isfinite(lossT[:, c]), lossT[:, c], np.inf), 1)
        near = (med > lo) & (med < hi)
        ins.plot(d[near], med[near], marker="o", ms=4, **plots.style(c))
    ins.axhline(np.log(10), color="0.3", lw=1.2, linestyle="--")
    ins.axhline(class_entropy, color="0.5", lw=1.2, linestyle=":")
    ins.set_ylim(lo, hi)
    ins.set_xlim(d.min() - 0.5, d.max() + 0.5)
    ins.tick_params(labelsize=10)
    ins.set_title("zoom: ln 10 (dashed) vs class entropy (dotted)", fontsize=11, pad=4)
    ins.set_xlabel("depth D", fontsize=11)


def first_note(summary) -> str:
    """The first pair's story: dW_1 = dz_1 X^T with z-scored X."""
    r = summary["ratio_outside_band"]["first_pair_ratio_median"]
    return ("right panel, hollow = first pair:\ndW_1 = dz_1 X^T, X z-scored (mean 0\nper "
            "feature); the activations above\nhave a positive mean, which the\nprediction "
            "ignores. Median\nmeasured / predicted:\n"
            + "\n".join(f"{k} x{v:.2f}" for k, v in r.items()))


def ratio_title(summary) -> str:
    """How many points fall outside the x2 band, and where."""
    o = summary["ratio_outside_band"]
    dz = "all" if o["dz_count"] == 0 else f"all but {o['dz_count']}"
    return (f"dL/dz: {dz} within x{o['band']:g} of Glorot; dW: {o['count']} of {o['total']} "
            f"outside, {o['at_first']} of them the first layer pair")


def plot_ratios(inits, meas_dz, glorot, meas_w, pred_w, activation, width, title, path,
                first_note=""):
    """Measured vs predicted per-layer ratios at init, every depth, layer pair and seed
    (``[depth, init, seed, pair]``), log-log with y = x and a factor-2 band: left the per-unit
    RMS of dL/dz against sqrt(n Var(W) E[f'^2]), right ||dW_l|| / ||dW_{l+1}|| against the
    weight-gradient prediction; the first pair (dW_1 = dz_1 X^T, the input X) drawn hollow,
    the last (below the output) as crosses, with ``first_note`` explaining the first."""
    fig, axes = plots.slide(1, 2, squeeze=False)
    panels = [(meas_dz, glorot, "dL/dz: RMS(dz_l) / RMS(dz_l+1)"),
              (meas_w, pred_w, "dL/dW: ||dW_l|| / ||dW_l+1||")]
    for ax, (meas, pred, what) in zip(axes[0], panels):
        vals = []
        for c, scheme in enumerate(inits):
            col = plots.PALETTE[c % len(plots.PALETTE)]
            x, y = pred[:, c], meas[:, c]                          # [depth, seed, pair]
            first, last = np.zeros(x.shape, bool), np.zeros(x.shape, bool)
            for di in range(x.shape[0]):
                D = int(np.sum(np.isfinite(x[di, 0])))
                first[di, :, 0] = D > 0
                last[di, :, D - 1] = D > 1
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            mid = ok & ~first & ~last
            ax.loglog(x[mid], y[mid], ".", ms=5, alpha=0.6, color=col,
                      label=f"{scheme}: hidden pairs")
            ax.loglog(x[ok & first], y[ok & first], "o", ms=6, mfc="none", alpha=0.7,
                      color=col, label=f"{scheme}: first pair (input X)")
            ax.loglog(x[ok & last], y[ok & last], "x", ms=5, alpha=0.7, color=col,
                      label=f"{scheme}: last pair (output)")
            vals += [x[ok], y[ok]]
        v = np.concatenate(vals) if vals else np.array([])
        if not v.size:  # no finite positive ratio (e.g. all units dead): a default frame
            v = np.array([0.1, 1.0])
        lo, hi = v.min() / 2, v.max() * 2
        t = np.geomspace(lo, hi, 10)
        ax.fill_between(t, t / 2, t * 2, color="0.5", alpha=0.15, label="within a factor 2")
        plots.theory_line(ax, t, t, label="measured = predicted", linewidth=1.5)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _log_ticks(ax.xaxis)
        _log_ticks(ax.yaxis)
        ax.set_xlabel("predicted")
        ax.set_ylabel("measured")
        ax.set_title(what, fontsize=14)
    if first_note:
        plots.note(axes[0, 0], first_note, loc="upper left")
    h, lab = axes[0, 1].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=4, frameon=False, fontsize=11)
    fig.suptitle(title, fontsize=14)
    return plots.save(fig, path)
