"""The minibatch experiment's figures (bpexp.plots slide style; titles from text.py)."""

from __future__ import annotations

import numpy as np

from bpexp import plots
from bpexp.experiments.minibatch import text
from bpexp.experiments.minibatch.run import Result
from bpexp.experiments.minibatch.theory import lr_model, phi, steps_model

GREY = "0.45"


def _best(res, summary):
    out = []
    for b in res.batches:
        lr = summary["per_batch"][str(b)]["best_lr"]
        out.append(None if lr is None else int(np.argmin(np.abs(res.lrs - lr))))
    return out


def _steps_lines(ax, res, summary, bb, scale):
    """The two fitted models, the B_noise prediction (sampler's model) and perfect scaling."""
    f, p, m = summary["fit"], summary["prediction"], res.m
    wo, w = f["without_replacement"], f["with_replacement"]
    if wo["b_crit"] is not None:
        plots.theory_line(ax, bb, steps_model(bb, wo["s_min"], wo["b_crit"], m, False) * scale,
                          label=f"fit, phi = (m-B)/(m-1) (the sampler): B_crit "
                                f"{wo['b_crit']:.3g}, S_min {wo['s_min']:.3g}, max err "
                                f"{wo['max_rel_error']:.1%}")
    if w["b_crit"] is not None:
        ax.plot(bb, steps_model(bb, w["s_min"], w["b_crit"], m, True) * scale, lw=2,
                **plots.style(1), label=f"fit, phi = 1 (with replacement): B_crit "
                                        f"{w['b_crit']:.3g}, S_min {w['s_min']:.3g}, max err "
                                        f"{w['max_rel_error']:.1%}")
    if p is not None:
        q = p["without_replacement"]
        ax.plot(bb, steps_model(bb, q["s_min"], p["b_noise"], m, False) * scale, lw=2,
                **plots.style(2), label=f"no fit: measured B_noise {p['b_noise']:.3g}, phi = "
                                        f"(m-B)/(m-1), max err {q['max_rel_error']:.0%}")


def plot_steps(res: Result, summary, path):
    """Steps (left) and epochs (right) to the target at each batch size's best lr, log-log,
    with the seed range, both fitted models, the B_noise prediction and perfect scaling."""
    fig, axes = plots.slide(1, 2)
    b = np.asarray(res.batches, np.float64)
    idx = _best(res, summary)
    bb = np.geomspace(b.min(), b.max(), 200)
    for ax, what in ((axes[0], "steps"), (axes[1], "epochs")):
        sc, scc = (1.0, 1.0) if what == "steps" else (b / res.m, bb / res.m)
        med, lo, hi = (np.full(len(b), np.nan) for _ in range(3))
        for i, j in enumerate(idx):
            if j is not None:
                st = res.steps_to_target[i, j] * (sc if what == "steps" else sc[i])
                med[i], lo[i], hi[i] = np.median(st), st.min(), st.max()
        ax.fill_between(b, lo, hi, color=plots.PALETTE[0], alpha=0.2, label="range over seeds")
        ax.plot(b, med, "o", color=plots.PALETTE[0], ms=9, label="measured (median at the best lr)")
        _steps_lines(ax, res, summary, bb, scc)
        s0 = summary["per_batch"][str(res.batches[0])]["steps_to_target"]
        if s0 is not None:   # steps ~ 1/B: constant epochs
            ax.plot(bb, s0 * b[0] / bb * scc, ":", color=GREY, lw=1.5,
                    label=f"perfect scaling ~ 1/B from B = {int(b[0])}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(b.min() / 1.5, b.max() * 1.5)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"{what} to loss {summary['target']:g}")
    axes[0].set_title(text.fit_title(summary), fontsize=15)
    axes[1].set_title("Epochs = steps x B / m", fontsize=15)
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=2, fontsize=12,
               frameon=False)
    fig.suptitle(text.steps_title(summary))
    return plots.save(fig, path)


def plot_best_lr(res: Result, summary, path):
    """Best lr vs batch size, the smallest diverging lr, linear scaling from the smallest B and
    the one-step optimum eps_max / (1 + B_crit phi(B)/B) through the full batch's best lr."""
    fig, ax = plots.slide()
    b = np.asarray(res.batches, np.float64)
    lr = np.array([np.nan if summary["per_batch"][str(x)]["best_lr"] is None
                   else summary["per_batch"][str(x)]["best_lr"] for x in res.batches])
    for x in res.lrs:  # the grid the best lr is picked from
        ax.axhline(x, color="0.88", lw=0.8, zorder=0)
    ax.plot(b, lr, "o-", color=plots.PALETTE[0], ms=9, label="best lr (fewest steps)")
    div = [np.min(summary["per_batch"][str(x)]["diverged_lrs"] or [np.nan])
           for x in res.batches]
    ax.plot(b, div, "v", color=plots.PALETTE[3], ms=10, linestyle="none",
            label="smallest lr where a seed diverged")
    ok = np.isfinite(lr)
    bb = np.geomspace(b.min(), b.max(), 200)
    if ok.any():
        i0 = int(np.flatnonzero(ok)[0])
        ax.plot(bb, lr[i0] * bb / b[i0], ":", color=GREY, lw=1.5,
                label=f"linear scaling lr ~ B from B = {int(b[i0])}")
    g = summary["best_lr_growth"]
    th = None if g is None else g["theory"]
    if th is not None:
        top = lr_model(bb, th["lr_max"], th["b_noise_init"], res.m, False)
        low = lr_model(bb, th["lr_max"], th["b_noise"], res.m, False)
        ax.fill_between(bb, low, top, color="0.6", alpha=0.25, lw=0,
                        label=f"one-step optimum for B_noise from {th['b_noise_init']:.3g} "
                              f"(init) to {th['b_noise']:.3g}")
        plots.theory_line(ax, bb, low, label=f"one-step optimum eps_max / (1 + B_crit phi(B)/B)"
                                             f", B_crit = {th['b_noise']:.3g}")
        r = [v for k, v in th["measured_over_theory"].items() if int(k) < res.m]
        imp = th["implied_b_noise"]
        if r:
            plots.note(ax, f"measured best lr = x{min(r):.3g}..x{max(r):.3g} the optimum for\n"
                           "B_crit at B < m; it implies B_noise = "
                           + ", ".join(f"{v:.2g} (B = {k})" for k, v in imp.items())
                           + f"\neps_max = the full batch's best lr; grid spacing "
                             f"x{res.lrs[1] / res.lrs[0]:.2g}", loc="lower right")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(res.lrs.min() / 1.5, res.lrs.max() * 1.5)
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate (grey lines: the grid)")
    ax.set_title(text.lr_title(summary))
    plots.legend_outside(ax, "below", ncol=2, fontsize=13)
    return plots.save(fig, path)


def plot_curves(res: Result, summary, target, path):
    """Smoothed training loss at each batch size's best lr: median over seeds with the
    min-max band, against steps (left) and epochs (right)."""
    fig, axes = plots.slide(1, 2, sharey=True)
    idx = _best(res, summary)
    t = np.arange(res.loss.shape[-1])
    for i, (b, j) in enumerate(zip(res.batches, idx)):
        if j is None:
            continue
        st = plots.style(i)
        cur = res.smoothed[i, j]
        for ax, x in ((axes[0], t + 1), (axes[1], (t + 1) * b / res.m)):
            ax.fill_between(x, cur.min(0), cur.max(0), color=st["color"], alpha=0.15)
            ax.plot(x, np.median(cur, 0), lw=2, **st, label=f"B = {b}, lr {res.lrs[j]:.3g}")
    for ax, xl in ((axes[0], "step"), (axes[1], "epoch (examples seen / m)")):
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
    axes[0].set_ylabel("training loss (trailing mean)")
    axes[0].set_title("vs steps (band: min-max over seeds)", fontsize=15)
    axes[1].set_title("vs epochs", fontsize=15)
    plots.legend_outside(axes[1], "right", fontsize=13)
    fig.suptitle(text.curves_title(summary))
    return plots.save(fig, path)


def plot_noise(res: Result, summary, target, path):
    """Along full-batch GD (the first seed): B_noise (left), tr(Sigma), |G|^2 and the loss
    (middle); at the step where the loss reaches the target, the batch gradient's noise
    phi(B) tr(Sigma)/B with and without replacement against |G|^2 (right)."""
    fig, axes = plots.slide(1, 3)
    s, bn = res.noise_steps, summary["b_noise"]
    k = bn["at_target_step"]
    ax = axes[0]
    ax.plot(s, res.b_noise, marker="o", ms=3, **plots.style(2), label="B_noise = tr(Sigma)/|G|^2")
    ax.set_yscale("log")
    ax.set_ylabel("examples")
    ax.axhline(res.m, color=GREY, ls=":", lw=1.5, label=f"m = {res.m}")
    if summary["fit"]["b_crit"] is not None:
        plots.theory_line(ax, y=summary["fit"]["b_crit"],
                          label=f"B_crit fitted to the steps = {summary['fit']['b_crit']:.3g}")
    ax.set_title(f"lr {res.noise_lr:.3g}, seed {bn['seed']}", fontsize=15)
    ax = axes[1]
    ax.plot(s, res.trace_sigma, **plots.style(4), label="tr(Sigma)")
    ax.plot(s, res.grad_sq, **plots.style(1), label="|G|^2")
    ax.plot(s, res.noise_loss, color="k", lw=1.5, label="full loss")
    ax.set_yscale("log")
    ax.set_title("Variance and squared mean", fontsize=15)
    for ax in axes[:2]:
        ax.axvline(k, color="k", ls=":", lw=1.5,
                   label=f"seed {bn['seed']}'s loss reaches {target:g} (step {k})")
        ax.set_xlabel("full-batch GD step")
    ax = axes[2]
    kk = int(np.searchsorted(s, k))
    bb = np.geomspace(1, res.m, 400)
    for i, rep in enumerate((True, False)):
        v = res.trace_sigma[kk] * phi(bb, res.m, rep) / bb
        ax.plot(bb, plots.positive(v), lw=2, **plots.style(i),
                label=f"phi(B) tr(Sigma)/B, {'with' if rep else 'without'} replacement")
    bk = res.b_noise[kk]          # phi(B) tr/B = |G|^2 at B = B_noise, or this without
    ax.axhline(res.grad_sq[kk], color="k", lw=1.5,
               label=f"|G|^2: crossed at B = {bk:.0f} (with), {bk * res.m / (res.m - 1 + bk):.0f}"
                     " (without)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_title(f"Batch noise at step {k}", fontsize=15)
    for ax in axes:
        plots.legend_outside(ax, "below", ncol=1, fontsize=12)
    fig.suptitle(text.noise_title(summary))
    return plots.save(fig, path)
