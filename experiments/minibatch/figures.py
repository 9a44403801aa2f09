"""The minibatch experiment's figures."""

from __future__ import annotations

import numpy as np

from bpexp import plots
from bpexp.experiments.minibatch.run import Result
from bpexp.plots import plt


def _best(res, summary):
    out = []
    for b in res.batches:
        lr = summary["per_batch"][str(b)]["best_lr"]
        out.append(None if lr is None else int(np.argmin(np.abs(res.lrs - lr))))
    return out


def _mark_noise(ax, summary):
    bn, fit = summary["b_noise"], summary["fit"]
    for val, ls, c, lab in ((bn["init"], ":", "tab:green", "B_noise at init"),
                            (bn["geomean_to_target"], "-", "tab:green",
                             "B_noise, geometric mean to the target"),
                            (bn["at_target"], "-.", "tab:green", "B_noise at the target"),
                            (fit["b_crit"], "--", "tab:purple", "B_crit fitted")):
        if val is not None:
            ax.axvline(val, color=c, ls=ls, lw=1.3, label=f"{lab} = {val:.3g}")


def plot_steps(res: Result, summary, path):
    """Steps (left) and epochs (right) to the target at each batch size's best lr, log-log,
    with seed ranges, the McCandlish form S_min (1 + B/B) and the noise scales marked."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    b = np.asarray(res.batches, np.float64)
    idx = _best(res, summary)
    bn, fit = summary["b_noise"], summary["fit"]
    bb = np.geomspace(b.min(), b.max(), 100)
    for ax, what in ((axes[0], "steps"), (axes[1], "epochs")):
        sc = np.ones_like(b) if what == "steps" else b / res.m
        scc = np.ones_like(bb) if what == "steps" else bb / res.m
        med, lo, hi = (np.full(len(b), np.nan) for _ in range(3))
        for i, j in enumerate(idx):
            if j is not None:
                st = res.steps_to_target[i, j] * sc[i]
                med[i], lo[i], hi[i] = np.median(st), st.min(), st.max()
        ax.fill_between(b, lo, hi, color="tab:blue", alpha=0.2, label="range over seeds")
        ax.plot(b, med, "o", color="tab:blue", ms=7, label="measured (median), best lr per B")
        if summary["prediction"]:
            p = summary["prediction"]
            ax.plot(bb, p["s_min"] * (1 + p["b_noise"] / bb) * scc, "-", color="tab:green",
                    lw=1.3, label=f"S_min (1 + B_noise/B), B_noise = {p['b_noise']:.3g}")
        if fit["b_crit"] is not None:
            ax.plot(bb, fit["s_min"] * (1 + fit["b_crit"] / bb) * scc, "--", color="tab:purple",
                    lw=1.3, label=f"fit S_min (1 + B_crit/B), B_crit = {fit['b_crit']:.3g}")
        if what == "steps" and np.isfinite(med[0]):
            ax.plot(bb, med[0] * b[0] / bb, ":", color="0.4", label="perfect scaling ~ 1/B")
        _mark_noise(ax, summary)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(b.min() / 1.5, b.max() * 1.5)
        ax.set_xlabel("batch size B (log2)")
        ax.set_ylabel(f"{what} to loss {summary['target']:g}")
        ax.grid(alpha=0.3)
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9)
    axes[0].set_title("Steps to the target: ~1/B for small B, flat past the critical batch",
                      fontsize=10)
    axes[1].set_title("Epochs to the target: small batches use the data best", fontsize=10)
    fig.suptitle(f"Mini-batch GD on m = {res.m} examples, {len(res.seeds)} seeds; B_noise = "
                 f"tr(Sigma)/|G|^2 from per-example gradients along full-batch GD "
                 f"({bn['init']:.2g} at init, {bn['at_target']:.3g} at the target)", fontsize=10)
    return plots.save(fig, path)


def plot_best_lr(res: Result, summary, path):
    """Best lr vs batch size with the linear scaling rule and lr_max / (1 + B_noise/B)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    b = np.asarray(res.batches, np.float64)
    lr = np.array([np.nan if summary["per_batch"][str(x)]["best_lr"] is None
                   else summary["per_batch"][str(x)]["best_lr"] for x in res.batches])
    ax.plot(b, lr, "o-", color="tab:blue", ms=7, label="best lr (fewest steps to the target)")
    div = [np.min(summary["per_batch"][str(x)]["diverged_lrs"] or [np.nan])
           for x in res.batches]
    ax.plot(b, div, "v", color="tab:red", ms=7, label="smallest lr where a seed diverged")
    ok = np.isfinite(lr)
    bb = np.geomspace(b.min(), b.max(), 100)
    if ok.any():
        i0 = int(np.flatnonzero(ok)[0])
        ax.plot(bb, lr[i0] * bb / b[i0], ":", color="0.4", label="linear scaling lr ~ B")
        bc = summary["fit"]["b_crit"]
        if bc is not None and np.isfinite(lr[-1]):
            lr_max = lr[-1] * (1 + bc / b[-1])
            ax.plot(bb, lr_max / (1 + bc / bb), "--", color="tab:purple",
                    label=f"lr_max / (1 + B_crit/B), B_crit = {bc:.3g} (fitted to steps)")
        _mark_noise(ax, summary)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(res.lrs.min() / 1.5, res.lrs.max() * 1.5)
    for x in res.lrs:  # the grid the best lr is picked from
        ax.axhline(x, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel("batch size B (log2)")
    ax.set_ylabel("learning rate (grey lines: the grid)")
    ax.set_title("Best lr vs batch size: linear scaling, then saturation", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return plots.save(fig, path)


def plot_curves(res: Result, summary, target, path):
    """Smoothed training loss at each batch size's best lr: median over seeds with the
    min-max band, against steps (left) and epochs (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    idx = _best(res, summary)
    t = np.arange(res.loss.shape[-1])
    for i, (b, j) in enumerate(zip(res.batches, idx)):
        if j is None:
            continue
        c = cmap(i / max(len(res.batches) - 1, 1))
        cur = res.smoothed[i, j]
        for ax, x in ((axes[0], t + 1), (axes[1], (t + 1) * b / res.m)):
            ax.fill_between(x, cur.min(0), cur.max(0), color=c, alpha=0.2)
            ax.plot(x, np.median(cur, 0), color=c, lw=1.4,
                    label=f"B = {b}, lr {res.lrs[j]:.3g}")
    for ax, xl in ((axes[0], "step (log)"), (axes[1], "epoch (log)")):
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss (trailing mean of batch losses)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Loss vs steps at each B's best lr (band: min-max over seeds)",
                      fontsize=10)
    axes[1].set_title("Loss vs epochs (examples seen / m)", fontsize=10)
    return plots.save(fig, path)


def plot_noise(res: Result, summary, target, path):
    """B_noise, tr(Sigma) and |G|^2 along full-batch GD, with the full loss."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    s = res.noise_steps
    ax = axes[0]
    ax.plot(s, res.b_noise, "o-", color="tab:green", ms=3, label="B_noise = tr(Sigma)/|G|^2")
    ax.set_yscale("log")
    ax.set_xlabel("full-batch GD step")
    ax.set_ylabel("B_noise (examples)")
    k = summary["b_noise"]["at_target_step"]
    ax.axvline(k, color="k", ls="--", lw=1, label=f"loss reaches {target:g} (step {k})")
    ax.axhline(res.m, color="0.5", ls=":", lw=1, label=f"m = {res.m}")
    if summary["fit"]["b_crit"] is not None:
        ax.axhline(summary["fit"]["b_crit"], color="tab:purple", ls="--", lw=1.2,
                   label=f"B_crit fitted to the steps = {summary['fit']['b_crit']:.3g}")
    ax.legend(fontsize=8)
    ax.set_title(f"Gradient noise scale along full-batch GD, lr {res.noise_lr:.3g}", fontsize=10)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(s, res.trace_sigma, color="tab:purple", label="tr(Sigma)")
    ax.plot(s, res.grad_sq, color="tab:orange", label="|G|^2")
    ax.plot(s, res.noise_loss, color="k", lw=1, label="full loss")
    ax.set_yscale("log")
    ax.set_xlabel("full-batch GD step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Per-example gradient variance and squared mean gradient", fontsize=10)
    return plots.save(fig, path)
