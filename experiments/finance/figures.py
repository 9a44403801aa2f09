"""The finance experiment's figures."""

from __future__ import annotations

import math

import numpy as np

from bpexp import plots
from bpexp.experiments.finance.run import Result
from bpexp.experiments.finance.theory import DAYS, TOL_SHARPE
from bpexp.plots import plt


def _vec(v):
    return "[" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + "]"


def fig_contours(res: Result, path):
    """Sharpe of the two-factor portfolio on the (w_i, w_j) plane: the contours are rays (S is
    scale-free); GD paths from the random starts and the tangency direction."""
    a, b = (res.assets[i] for i in res.pair)
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    g = res.pair_grid
    cs = ax.contourf(g, g, res.pair_surface, levels=21, cmap="RdBu_r")
    ax.contour(g, g, res.pair_surface, levels=21, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="annualized Sharpe ratio S(w)")
    lim = g[-1]
    u = res.pair_w_star
    ax.plot([0, lim * 1.5 * u[0]], [0, lim * 1.5 * u[1]], color="gold", lw=3,
            label=f"tangency direction Σ⁻¹μ (S* = {res.pair_s_star:.3f})")
    ax.plot([0, -lim * 1.5 * u[0]], [0, -lim * 1.5 * u[1]], color="gold", lw=1.5, ls=":",
            label="-Σ⁻¹μ (the minimum)")
    for k, p in enumerate(res.pair_path):
        ax.plot(p[:, 0], p[:, 1], ".-", color="k", ms=2.5, lw=0.9,
                label="GD paths from unit-norm starts" if k == 0 else None)
        ax.plot(*p[0], "o", color="w", mec="k", ms=6, zorder=5)
        ax.plot(*p[-1], "*", color="k", ms=9, zorder=5)
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.3", lw=0.8, ls="--", label="|w| = 1 (starts)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(f"weight on {a}")
    ax.set_ylabel(f"weight on {b}")
    ax.set_title(f"GD on -Sharpe of {a} + {b} (monthly, {res.months[0]}..{res.months[-1]}):\n"
                 f"contours are rays, each step is orthogonal to w, |w| grows (lr = 2/λmax)",
                 fontsize=10)
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.9)
    return plots.save(fig, path)


def fig_pf_gd(res: Result, path):
    """|S_t - S*|, |w_t| and the effective step (lr/|w_t|^2 in units of 2/lambda_max at |w| = 1)
    per learning rate and start, steps on a log axis (step + 1)."""
    gap = np.abs(res.pf_sharpe - res.s_star)
    x = np.arange(1, gap.shape[-1] + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(res.pf_lr)))
    for c, f, gp, nrm in zip(colors, res.pf_lr_frac, gap, res.pf_norm):
        for k in range(gp.shape[0]):
            lbl = f"lr = {f:g} x 2/λmax" if k == 0 else None
            done = np.flatnonzero(gp[k] < 1e-14)
            end = done[0] + 1 if done.size else gp.shape[-1]   # cut at rounding level
            axes[0].loglog(x[:end], gp[k, :end], color=c, lw=1, alpha=0.85, label=lbl)
            axes[1].semilogx(x, nrm[k], color=c, lw=1, alpha=0.85, label=lbl)
            axes[2].loglog(x, f / nrm[k] ** 2, color=c, lw=1, alpha=0.85, label=lbl)
    axes[0].axhline(TOL_SHARPE, color="tab:red", ls="--", lw=1, label="1e-6 target")
    axes[0].set_ylabel("|S(w_t) - S*|  (S* closed form)")
    axes[0].set_title(f"every start reaches S* = {res.s_star:.4f} (curves cut at 1e-14)",
                      fontsize=10)
    axes[1].set_ylabel("|w_t|  (|w_0| = 1)")
    axes[1].set_title("|w| only grows: each step is orthogonal to w", fontsize=10)
    axes[2].axhline(1.0, color="tab:red", ls="--", lw=1, label="stability edge at |w| = 1")
    axes[2].set_ylabel("effective step (lr/|w_t|²) / (2/λmax)")
    axes[2].set_title("the growing |w| shrinks the effective step below the edge", fontsize=10)
    for ax in axes:
        ax.set_xlabel("GD step + 1")
        ax.legend(fontsize=7.5)
    fig.suptitle(f"GD on -Sharpe of {', '.join(res.assets)} (3 weights, {len(res.w0)} random "
                 "unit-norm starts per lr): a scale-free loss slows itself down", fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)


def _np_net(pos, r, cost, prev):
    return pos * r - cost * np.abs(np.diff(pos, prepend=prev))


def _np_sharpe(r):
    return float(np.sqrt(DAYS) * r.mean() / r.std())


def fig_equity(res: Result, P, path):
    K = len(res.windows)
    cols = min(4, K)
    rows = math.ceil(K / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows + 0.6), squeeze=False)
    cost = P.cost
    for k, ax in enumerate(axes.ravel()):
        if k >= K:
            ax.axis("off")
            continue
        net_in = _np_net(res.pos_in[k], res.r_in[k], cost, 0.0)
        net_out = _np_net(res.pos_out[k], res.r_out[k], cost, res.pos_in[k][-1])
        eq_in = np.cumsum(np.log1p(net_in))
        eq_out = eq_in[-1] + np.cumsum(np.log1p(net_out))
        bh = np.cumsum(np.log1p(np.concatenate([res.r_in[k], res.r_out[k]])))
        n_in = len(net_in)
        x = np.arange(n_in + len(net_out))
        ax.plot(x, 100 * bh, color="0.6", lw=0.8, label="buy & hold")
        ax.plot(x[:n_in], 100 * eq_in, color="tab:blue", lw=1, label="strategy in sample")
        ax.plot(x[n_in:], 100 * eq_out, color="tab:red", lw=1.2, label="out of sample")
        ax.axvline(n_in, color="k", lw=0.6, ls=":")
        s_in, s_out = _np_sharpe(net_in), _np_sharpe(net_out)
        _, b, c = res.windows[k]
        ax.set_title(f"test {res.days[b][:7]}..{res.days[c - 1][:7]}\nS in {s_in:.2f}, "
                     f"out {s_out:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        if k % cols == 0:
            ax.set_ylabel("cum. log return (%)", fontsize=8)
        if k >= K - cols:
            ax.set_xlabel("trading day of the window", fontsize=8)
        if k == 0:
            ax.legend(fontsize=6.5, loc="upper left")
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    fig.suptitle(f"S&P 500 walk-forward: equity of position = tanh(θ·z) net of {cost:g}/unit "
                 f"turnover (lr {res.lrs[li]:g}, seed 0); blue fitted, red the next "
                 f"{P.test_days} days", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, path)


def fig_sharpe_vs_lr(res: Result, summary, path):
    fin_in, fin_out = res.ins[..., -1], res.outs[..., -1]     # [K, L, S, C]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for c, ls, name in ((1, "-", "trained with cost"), (0, "--", "trained without cost")):
        for arr, color, where in ((fin_in, "tab:blue", "in sample"),
                                  (fin_out, "tab:red", "out of sample")):
            per = arr[..., c].mean(2)                         # [K, L] mean over seeds
            ax.plot(res.lrs, per.mean(0), ls, color=color, marker="o", ms=4,
                    label=f"{where}, {name}")
            if c == 1:
                lo, hi = np.percentile(per, [25, 75], axis=0)
                ax.fill_between(res.lrs, lo, hi, color=color, alpha=0.12)
    ax.axhline(float(res.bh_out.mean()), color="0.4", lw=1, ls=":",
               label="buy & hold, out of sample")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (how aggressively the strategy changes)")
    ax.set_ylabel("annualized Sharpe of net returns")
    ax.set_title(f"Sharpe vs learning rate after {res.record[-1]} GD steps: mean over "
                 f"{len(res.windows)} windows (band: IQR over windows)", fontsize=10)
    ax.legend(fontsize=7.5)
    return plots.save(fig, path)


def fig_sharpe_vs_step(res: Result, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(res.lrs)))
    for ax, arr, where in ((axes[0], res.ins, "in sample"), (axes[1], res.outs,
                                                             "out of sample")):
        for c, lr, a in zip(colors, res.lrs, np.moveaxis(arr[..., 1, :], 1, 0)):
            ax.plot(res.record, a.mean((0, 1)), color=c, lw=1.4, label=f"lr {lr:g}")
        ax.axhline(float((res.bh_in if where == "in sample" else res.bh_out).mean()),
                   color="0.4", ls=":", lw=1, label="buy & hold")
        ax.set_xlabel("GD step")
        ax.set_title(f"{where}: mean over windows and seeds", fontsize=10)
    axes[0].set_ylabel("annualized net Sharpe")
    axes[1].legend(fontsize=7.5)
    fig.suptitle("Training raises the in-sample Sharpe; out of sample it does not follow",
                 fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)
