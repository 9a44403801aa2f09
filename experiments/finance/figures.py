"""The finance experiment's figures (bpexp.plots' slide style), each titled with its takeaway
from :func:`takeaways` (computed from the summary alone, so a test can check every claim)."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from bpexp import plots
from bpexp.experiments.finance.run import Result
from bpexp.experiments.finance.theory import DAYS, TOL_SHARPE

FLOOR = 1e-16   # |S - S*| below this (rounding) is drawn at it


def _vec(v):
    return "[" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + "]"


def headline_windows(per_window: list) -> dict:
    """The equity figure's windows, index -> tag: the worst, the median and the best out of
    sample minus buy and hold, and the latest (at most four, fewer when they coincide)."""
    edge = [w["out_sharpe"] - w["buy_hold_out"] for w in per_window]
    order = [int(i) for i in np.argsort(edge, kind="stable")]
    out: dict = {}
    for i, tag in ((order[0], "worst vs B&H"), (order[len(order) // 2], "median vs B&H"),
                   (order[-1], "best vs B&H"), (len(edge) - 1, "latest")):
        out[i] = f"{out[i]}, {tag}" if i in out else tag
    return dict(sorted(out.items()))


def takeaways(summary: dict) -> dict:
    """Figure name -> its title, each a claim computed from ``summary`` (summary.json)."""
    pf, st = summary["portfolio"], summary["strategy"]
    gd, pair = pf["gd"], pf["pair"]
    other = [a for a in pf["assets"] if a not in pair["assets"]]
    on = ("every GD path ends on" if pair["final_cosine_min"] > 1 - 1e-6
          else f"GD paths end within cosine {pair['final_cosine_min']:.4f} of")
    out = {"portfolio_contours": (
        f"{' + '.join(pair['assets'])}: {on} the ray of Σ⁻¹μ, the Sharpe "
        f"maximum S* = {pair['tangency_sharpe']:.3f}\n(two factors; with {', '.join(other)} "
        f"too S* = {pf['tangency_sharpe_closed_form']:.3f})")}
    med, fr = gd["steps_to_1e-6_median"], gd["lr_times_lambda_max_over_2"]
    ok = [i for i, m in enumerate(med) if m is not None]
    verb = "reaches" if gd["reached"] else "does not always reach"
    out["portfolio_gd"] = (
        f"GD {verb} S* from every start at every lr up to {max(fr):g} x 2/λmax"
        + (f": a larger lr slows it (median {med[ok[0]]:g} steps at {fr[ok[0]]:g}x, "
           f"{med[ok[-1]]:g} at {fr[ok[-1]]:g}x)" if len(ok) > 1 else ""))
    b, lrs = st["by_lr"], st["lrs"]
    i_in, i_out = int(np.argmax(b["in_sharpe_mean"])), int(np.argmax(b["out_sharpe_mean"]))
    bh = st["buy_hold_out_mean"]
    beat = sum(o > bh for o in b["out_sharpe_mean"])
    out["sharpe_vs_lr"] = (
        f"In sample the Sharpe is highest at lr {lrs[i_in]:g} ({b['in_sharpe_mean'][i_in]:.2f}); "
        f"out of sample at lr {lrs[i_out]:g} ({b['out_sharpe_mean'][i_out]:.3f}),\n"
        f"and {beat} of {len(lrs)} lrs beat buy and hold ({bh:.3f})")
    gi, go = b["in_sharpe_gain_mean"], b["out_sharpe_gain_mean"]
    out["sharpe_vs_step"] = (
        f"{st['steps']} GD steps raise the in-sample Sharpe by {min(gi):+.2f}..{max(gi):+.2f}; "
        f"out of sample it changes by {min(go):+.2f}..{max(go):+.2f}")
    pw = st["per_window"]
    wins = sum(w["out_sharpe"] > w["buy_hold_out"] for w in pw)
    out["equity_curves"] = (
        f"Out of sample the rule beats buy and hold in {wins} of {len(pw)} test years "
        f"(lr {st['lr']:g}, Sharpe = mean of {st['seeds']} seeds)")
    wins_in = sum(w["in_sharpe"] > w["buy_hold_in"] for w in pw)
    out["equity_windows"] = (f"Every window: the rule beats buy and hold in {wins_in} of "
                             f"{len(pw)} fits, out of sample in {wins} of {len(pw)}")
    return out


def fig_contours(res: Result, title, path):
    """Sharpe of the two-factor portfolio on the (w_i, w_j) plane: the contours are rays (S is
    scale-free); GD paths from the random starts; +Σ⁻¹μ (S = S*, the loss's minimum) and
    -Σ⁻¹μ (S = -S*, the loss's maximum)."""
    a, b = (res.assets[i] for i in res.pair)
    fig, ax = plots.slide()
    g = res.pair_grid
    cs = ax.contourf(g, g, res.pair_surface, levels=21, cmap="RdBu_r")
    fig.colorbar(cs, ax=ax, label="annualized Sharpe ratio S(w)", shrink=0.9)
    lim = g[-1]
    u = res.pair_w_star
    ray = np.array([0.0, lim * 1.5])
    for sgn, lw, lab in ((1, 2.4, f"+Σ⁻¹μ (closed form): S = S* = {res.pair_s_star:.3f}\n"
                                   "(Sharpe max = loss min)"),
                         (-1, 1.6, "-Σ⁻¹μ: S = -S*\n(Sharpe min = loss max)")):
        if sgn > 0:                                   # a halo so the ray shows on dark red
            ax.plot(ray * u[0], ray * u[1], color="#F0E442", lw=7, alpha=0.8, zorder=3)
        plots.theory_line(ax, sgn * ray * u[0], sgn * ray * u[1], label=lab, linewidth=lw,
                          **({} if sgn > 0 else {"linestyle": (0, (1, 2))}))
    for k, p in enumerate(res.pair_path):
        ax.plot(p[:, 0], p[:, 1], "-", color="k", lw=1.2, zorder=4,
                label="GD paths (lr = 2/λmax)" if k == 0 else None)
        ax.plot(*p[0], "o", color="w", mec="k", ms=8, zorder=5,
                label="start (|w| = 1)" if k == 0 else None)
        ax.plot(*p[-1], "*", color="k", ms=13, zorder=5, label="end" if k == 0 else None)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(f"weight on {a}")
    ax.set_ylabel(f"weight on {b}")
    ax.grid(False)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False)
    ax.set_title(title, fontsize=16)
    return plots.save(fig, path)


def fig_pf_gd(res: Result, first, title, path):
    """Per learning rate, over the random starts (median line, min-max band): |S_t - S*|,
    |w_t|, the effective step lr/|w_t|^2 against the edge; and steps to |S - S*| < 1e-6."""
    gap = np.maximum(np.abs(res.pf_sharpe - res.s_star), FLOOR)
    x = np.arange(1, gap.shape[-1] + 1)
    fig, axes = plots.slide(2, 2)
    (a0, a1), (a2, a3) = axes
    for i, (f, gp, nrm) in enumerate(zip(res.pf_lr_frac, gap, res.pf_norm)):
        st = plots.style(i)
        lbl = f"lr = {f:g} x 2/λmax"
        for ax, y in ((a0, gp), (a1, nrm), (a2, f / nrm ** 2)):
            ax.plot(x, np.median(y, 0), **st, label=lbl if ax is a0 else None)
            ax.fill_between(x, y.min(0), y.max(0), color=st["color"], alpha=0.15)
        md = np.median(first[i][first[i] >= 0]) if (first[i] >= 0).any() else np.nan
        a3.plot(np.full(len(first[i]), i), np.where(first[i] >= 0, first[i], np.nan), "o",
                color=st["color"], alpha=0.6, ms=8)
        a3.plot(i, md, "_", color="k", ms=30, mew=3)
    plots.theory_line(a0, y=TOL_SHARPE, linewidth=1.8)
    a0.annotate("target 1e-6", (1.0, TOL_SHARPE), xycoords=("axes fraction", "data"),
                ha="right", va="bottom", fontsize=12)
    plots.note(a0, f"below {FLOOR:g} (rounding):\ndrawn at {FLOOR:g}", "upper right")
    a0.set_ylabel("|S(w_t) - S*|")
    a1.set_ylabel("|w_t|  (|w_0| = 1)")
    plots.theory_line(a2, y=1.0, linewidth=1.8)
    a2.annotate("stability edge at |w| = 1 (theory)", (1.0, 1.0),
                xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=12)
    a2.set_ylabel("(lr/|w_t|²) / (2/λmax)")
    for ax in (a0, a1, a2):
        ax.set_xscale("log")
        ax.set_xlabel("GD step + 1")
    for ax in (a0, a2):
        ax.set_yscale("log")
    a3.set_yscale("log")
    a3.set_xticks(range(len(res.pf_lr_frac)), [f"{f:g}x" for f in res.pf_lr_frac])
    a3.set_xlabel("lr / (2/λmax)")
    a3.set_ylabel("steps to |S - S*| < 1e-6")
    a3.set_title("each start (dots), median (bar)", fontsize=14)
    h, lab = a0.get_legend_handles_labels()
    fig.legend(h, lab, loc="outside right center", frameon=False)
    fig.suptitle(title + f"\n({len(res.w0)} random unit-norm starts per lr: median, band min-max)",
                 fontsize=17)
    return plots.save(fig, path)


def _np_net(pos, r, cost, prev):
    return pos * r - cost * np.abs(np.diff(pos, prepend=prev))


def _np_sharpe(r):
    return float(np.sqrt(DAYS) * r.mean() / r.std())


def fig_equity(res: Result, P, windows: dict, title, path):
    """Cumulative log return in and out of sample of the chosen windows, every seed (thin),
    against buy and hold; panel titles: Sharpe ratios as means over the seeds."""
    fig, axes = plots.slide(*((1, len(windows)) if len(windows) <= 2 else (2, 2)), squeeze=False)
    cost = P.cost
    for ax, (k, tag) in zip(axes.ravel(), windows.items()):
        n_in, n_out = res.r_in.shape[1], res.r_out.shape[1]
        x = np.arange(n_in + n_out)
        bh = np.cumsum(np.log1p(np.concatenate([res.r_in[k], res.r_out[k]])))
        ax.plot(x, 100 * bh, color="0.45", lw=1.6, label="buy & hold")
        s_in, s_out = [], []
        for s in range(res.pos_in.shape[1]):
            net_in = _np_net(res.pos_in[k, s], res.r_in[k], cost, 0.0)
            net_out = _np_net(res.pos_out[k, s], res.r_out[k], cost, res.pos_in[k, s, -1])
            eq_in = np.cumsum(np.log1p(net_in))
            ax.plot(x[:n_in], 100 * eq_in, **plots.style(0), lw=1.2,
                    label="rule in sample (each seed)" if s == 0 else None)
            ax.plot(x[n_in:], 100 * (eq_in[-1] + np.cumsum(np.log1p(net_out))),
                    color=plots.style(3)["color"], lw=1.4,
                    label="rule out of sample (each seed)" if s == 0 else None)
            s_in.append(_np_sharpe(net_in))
            s_out.append(_np_sharpe(net_out))
        ax.axvline(n_in, color="k", lw=0.8, ls=":")
        _, b, c = res.windows[k]
        ax.set_title(f"{tag}: test {res.days[b][:7]}..{res.days[c - 1][:7]}\nSharpe out "
                     f"{np.mean(s_out):.2f} vs B&H {res.bh_out[k]:.2f} (in {np.mean(s_in):.2f})",
                     fontsize=13)
        ax.set_xlabel("trading day of the window")
        ax.set_ylabel("cum. log return (%)")
    for ax in axes.ravel()[len(windows):]:
        ax.axis("off")
    h, lab = axes.ravel()[0].get_legend_handles_labels()
    h.append(Line2D([], [], color="k", lw=0.8, ls=":"))
    lab.append("end of the fit window")
    fig.legend(h, lab, loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(title, fontsize=17)
    return plots.save(fig, path)


def fig_windows(res: Result, summary, title, path):
    """Appendix: every window's in- and out-of-sample Sharpe (mean over seeds, seed range as a
    bar) against buy and hold."""
    st = summary["strategy"]
    li = int(np.argmin(np.abs(res.lrs - st["lr"])))
    fig, axes = plots.slide(2, 1, sharex=True)
    k = np.arange(len(res.windows))
    for ax, arr, bh, where in ((axes[0], res.ins, res.bh_in, "in sample (fit)"),
                               (axes[1], res.outs, res.bh_out, "out of sample (next year)")):
        v = arr[:, li, :, 1, -1]                                      # [K, S]
        ax.errorbar(k, v.mean(1), yerr=[v.mean(1) - v.min(1), v.max(1) - v.mean(1)], fmt="o",
                    ms=8, capsize=4, **{"color": plots.style(0)["color"]},
                    label="rule: mean of seeds (bar: range)")
        ax.plot(k, bh, "s", ms=8, color="0.45", label="buy & hold")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("net Sharpe")
        ax.set_title(where, fontsize=14)
    axes[1].set_xticks(k, [res.days[b][:4] for _, b, _ in res.windows], rotation=45)
    axes[1].set_xlabel("test year (start)")
    plots.legend_outside(axes[0], "right")
    fig.suptitle(title + f"\n(appendix; lr {st['lr']:g}, mean of {st['seeds']} seeds, net of "
                         f"{st['cost']:g}/unit turnover)", fontsize=17)
    return plots.save(fig, path)


def fig_sharpe_vs_lr(res: Result, title, path):
    fin_in, fin_out = res.ins[..., -1], res.outs[..., -1]     # [K, L, S, C]
    fig, ax = plots.slide()
    for j, (c, name) in enumerate(((1, "trained with cost"), (0, "trained without cost"))):
        for arr, i, where in ((fin_in, 0, "in sample"), (fin_out, 3, "out of sample")):
            per = arr[..., c].mean(2)                         # [K, L] mean over seeds
            st = plots.style(i)
            ax.plot(res.lrs, per.mean(0), color=st["color"], ls=("-", "--")[j], marker="os"[j],
                    ms=7, label=f"{where}, {name}")
            if c == 1:
                lo, hi = np.percentile(per, [25, 75], axis=0)
                ax.fill_between(res.lrs, lo, hi, color=st["color"], alpha=0.12)
    ax.axhline(float(res.bh_out.mean()), color="0.45", lw=2, ls=":",
               label="buy & hold, out of sample")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (how aggressively the strategy changes)")
    ax.set_ylabel("annualized Sharpe of net returns")
    plots.note(ax, f"mean over {len(res.windows)} windows and the seeds; band: IQR over "
                   f"windows; {res.record[-1]} GD steps", "lower left")
    plots.legend_outside(ax, "right")
    ax.set_title(title, fontsize=16)
    return plots.save(fig, path)


def fig_sharpe_vs_step(res: Result, title, path):
    fig, axes = plots.slide(1, 2, sharey=True)
    for ax, arr, bh, where in ((axes[0], res.ins, res.bh_in, "in sample"),
                               (axes[1], res.outs, res.bh_out, "out of sample")):
        for i, (lr, a) in enumerate(zip(res.lrs, np.moveaxis(arr[..., 1, :], 1, 0))):
            st = plots.style(i) if i % 7 < 6 else {"color": "#882255", "linestyle": (0, (1, 1))}
            ax.plot(res.record, a.mean((0, 1)), **st, label=f"lr {lr:g}")   # no pale yellow
        ax.axhline(float(bh.mean()), color="0.45", ls=":", lw=2,
                   label="buy & hold (same windows)")
        ax.set_xlabel("GD steps taken (0 = the start θ0)")
        ax.set_title(where, fontsize=14)
    axes[0].set_ylabel("annualized net Sharpe")
    plots.note(axes[0], "step 0: the same random θ0 at every lr", "lower right")
    plots.legend_outside(axes[1], "right")
    fig.suptitle(title + "\n(net Sharpe, mean over windows and seeds; trained with the cost)",
                 fontsize=17)
    return plots.save(fig, path)
