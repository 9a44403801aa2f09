"""The remedies' figures (slides: at most four panels, theory black dashed on top, legends
outside, titles computed from the summary by remedies.text)."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

from bpexp import plots
from bpexp.experiments.depth_sweep.figures import _log_ticks
from bpexp.experiments.remedies import text, width
from bpexp.experiments.remedies.theory import REMEDIES

GROUPS = (("sigmoid", "xavier"), ("relu_he",), ("residual",), ("batchnorm",))


def _fig_legend(fig, axes, ncol=3):
    """One legend under the panels, each label once."""
    seen = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol,
               frameon=False, fontsize=12)


def dz_title(s) -> str:
    Dm = s["depths"][-1]
    R = s["remedies"]
    parts = []
    if "sigmoid" in R:
        parts.append(f"{text.fmt(R['sigmoid']['depths'][str(Dm)]['dz_ratio_first_last'], 1)} "
                     "with no remedy")
    rest = [R[k]["depths"][str(Dm)]["dz_ratio_first_last"] for k in R if k not in
            ("sigmoid", "xavier")]
    if rest:
        parts.append(f"{text.fmt(min(rest), 2)} to {text.fmt(max(rest), 2)} with a remedy")
    if not parts:
        return f"Depth {Dm}: dL/dz per layer at init, each remedy beside its theory"
    return f"Depth {Dm}: dL/dz at layer 1 over layer L is " + ", ".join(parts)


def plot_remedy_norms(res, s, path):
    """Per-unit RMS of dL/dz_l at init against k = layers below the output, deepest net (median
    over seeds), each remedy beside its theory anchored at the output layer; ReLU + He also
    with the finite-width law, batch norm with its measured transfer."""
    names, Dm = res.remedies, res.depths[-1]
    groups = [[n for n in g if n in names] for g in GROUPS]
    groups = [g for g in groups if g]
    fig, axes = plots.slide(2, 2, sharex=True) if len(groups) > 2 else plots.slide(1, len(groups))
    axes = np.atleast_1d(axes).ravel()
    kk = np.arange(Dm + 1)
    for ax, g in zip(axes, groups):
        for name in g:
            c = names.index(name)
            y = np.median(res.dz_rms_init[c, -1], axis=0)[: Dm + 1][::-1]     # k = 0 output
            ax.plot(kk, plots.positive(y), label=REMEDIES[name].label, **plots.style(c))
            pred = np.median(res.ratio_predicted_dz[c, -1], axis=0)[:Dm][::-1]
            plots.theory_line(ax, kk, y[0] * np.concatenate([[1.0], np.cumprod(pred)]),
                              label="theory: per-layer factor (mean field)")
            if name == "relu_he" and s.get("relu_width") and str(res.width) in \
                    s["relu_width"]["widths"]:
                f = s["relu_width"]["widths"][str(res.width)]["theory"]["factor_per_example"]
                ax.plot(kk, y[0] * np.concatenate([[1.0], np.cumprod(pred * f)]), color="0.35",
                        linestyle=":", lw=2.2, zorder=9,
                        label="theory at finite width (median, per example)")
            if name == "relu_he":
                plots.note(ax, "measured: batch (Frobenius) norms, between\nthe mean field and "
                               "the per-example law", loc="lower left")
            if name == "batchnorm" and s.get("bn_parts"):
                b = s["bn_parts"]
                plots.note(ax, f"estimate assumes dz independent of W;\nmeasured ||W^T dz|| "
                               f"x{b['transfer']:.3f}/layer -> x{text.bn_compound(s):.0f} "
                               f"at k = {Dm}", loc="upper left")
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        lo, hi = ax.get_ylim()
        if "batchnorm" in g and s.get("bn_parts"):   # room for the note above the curves
            hi *= 30
        if "relu_he" in g:                            # ... and below them
            lo /= 5
        ax.set_ylim(lo, hi)
        if hi / lo < 100:    # less than two decades: label 1-2-5 ticks too
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(
                labelOnlyBase=False))
        ax.set_title(" vs ".join(REMEDIES[n].label for n in g), fontsize=14)
        ax.set_ylabel("RMS dL/dz_l per unit")
        ax.set_xlabel("k = layers below the output")
    fig.suptitle(dz_title(s), fontsize=17)
    _fig_legend(fig, axes)
    return plots.save(fig, path)


def plot_remedy_dw(res, path):
    """Appendix: ||dL/dW_l|| at init per layer, deepest net, every remedy (median of seeds)."""
    names, Dm = res.remedies, res.depths[-1]
    fig, ax = plots.slide()
    kk = np.arange(Dm + 1)
    for c, name in enumerate(names):
        y = np.median(res.grad_norm_init[c, -1], axis=0)[: Dm + 1][::-1]
        ax.plot(kk, plots.positive(y), label=REMEDIES[name].label, **plots.style(c))
    ax.set_yscale("log")
    _log_ticks(ax.yaxis)
    ax.set_xlabel("k = layers below the output (k = 0: output layer W_L)")
    ax.set_ylabel("||dL/dW_l||_F at init")
    lo = {n: np.median(res.ratio_first_last[c, -1]) for c, n in enumerate(names)}
    worst = min(lo, key=lo.get)
    ax.set_title(f"Weight gradients at depth {Dm}: the first layer gets {text.fmt(lo[worst], 1)}"
                 f" of the last's with {REMEDIES[worst].label}", fontsize=15)
    plots.legend_outside(ax)
    return plots.save(fig, path)


def plot_remedy_summary(res, s, path):
    """Against depth: RMS dz_1 / dz_L (measured markers, theory black dashed), ||dW_1|| /
    ||dW_L|| (median, IQR band) and the loss after training (median, IQR band; diverged seeds
    marked with their count), ln 10 and the class entropy drawn."""
    fig, axes = plots.slide(2, 2)
    (a0, a1), (a2, a3) = axes
    d = np.asarray(res.depths, np.float64)
    n = len(res.seeds)
    top = 3 * np.log(10)
    for c, name in enumerate(res.remedies):
        st, lab = plots.style(c), REMEDIES[name].label
        a0.plot(d, np.median(res.dz_first_last[c], axis=1), marker="o", linestyle="none",
                color=st["color"], label=lab)
        plots.theory_line(a0, d, np.median(res.dz_first_last_predicted[c], axis=1),
                          label="theory (each remedy; batch norm: independence estimate)",
                          linewidth=1.4)
        r = res.ratio_first_last[c]
        a1.fill_between(d, np.percentile(r, 25, axis=1), np.percentile(r, 75, axis=1),
                        color=st["color"], alpha=0.15)
        a1.plot(d, np.median(r, axis=1), marker="o", **st)
        fin = res.loss[c, :, :, -1]
        med = np.median(np.where(np.isfinite(fin), fin, np.inf), axis=1)
        a2.fill_between(d, np.nanpercentile(fin, 25, axis=1), np.nanpercentile(fin, 75, axis=1),
                        color=st["color"], alpha=0.15)
        a2.plot(d, np.where(np.isfinite(med) & (med <= top), med, np.nan), marker="o", **st)
        plots.mark_offscale(a2, d[np.isfinite(med)], med[np.isfinite(med)], top,
                            label=f"median above {top:.1f} (off scale)", color=st["color"])
        k = np.sum(~np.isfinite(fin), axis=1)
        for x, kk in zip(d[k > 0], k[k > 0]):
            a2.plot([x], [top], marker="x", color=st["color"], ms=12, mew=3, linestyle="none",
                    clip_on=False, zorder=11, label=f"x: seeds diverged (count of {n})")
            a2.annotate(f"{kk}/{n}", (x, top), textcoords="offset points", xytext=(6, -4),
                        fontsize=12, color=st["color"])
    a2.axhline(np.log(10), color="0.3", lw=1.2, linestyle="--", label="ln 10 (uniform guess)")
    a2.axhline(s["class_entropy"], color="0.5", lw=1.2, linestyle=":",
               label=f"class entropy {s['class_entropy']:.3f} (prior guess)")
    lo = np.nanmin(np.where(np.isfinite(res.loss[..., -1]), res.loss[..., -1], np.nan))
    a2.set_ylim(min(lo, s["class_entropy"]) / 1.5, top * 1.15)
    for ax, yl, t in ((a0, "RMS dz_1 / RMS dz_L", "dL/dz, first / last layer, at init"),
                      (a1, "||dW_1|| / ||dW_L||", "weight gradients, first / last, at init"),
                      (a2, "loss", f"loss after {res.loss.shape[-1] - 1} GD steps (IQR band)")):
        ax.set_title(t, fontsize=13)
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        ax.set_xlabel("depth D (hidden layers)")
        ax.set_ylabel(yl, fontsize=13)
    a0.set_ylim(bottom=np.nanmin(res.dz_first_last) / 1e9)   # room for the note below
    a3.axis("off")
    seen = {}
    for ax in (a0, a1, a2):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    a3.legend(list(seen.values()), list(seen), loc="center", frameon=False, fontsize=12)
    if s.get("bn_parts"):
        b = s["bn_parts"]
        plots.note(a0, f"batch norm: the estimate assumes dz\nindependent of W; batch norm "
                       f"ties them\n(||W^T dz|| x{b['transfer']:.3f}/layer): "
                       f"x{text.bn_compound(s):.0f} too high at D = {b['depth']}",
                   loc="lower left")
    div = text.diverged_text(s)
    fig.suptitle(f"Remedies vs depth (lr {res.lr:g}): "
                 + (div if div else "no run diverged"), fontsize=14 if div else 17)
    return plots.save(fig, path)


def plot_width(s, path):
    """ReLU + He at the deepest depth against width: the per-layer factor per example
    (measured, 2 SE) beside the finite-width law and the mean-field 1, the batch factor and
    the mean of R; right: the hidden end-to-end ratio per example (median, +-1 log-sd) beside
    the theory's median and spread."""
    rw = s["relu_width"]
    hs = np.array([int(h) for h in rw["widths"]], np.float64)
    T = [rw["widths"][h]["theory"] for h in rw["widths"]]
    M = [rw["widths"][h]["measured"] for h in rw["widths"]]
    fig, (a0, a1) = plots.slide(1, 2)
    hh = np.geomspace(hs.min(), hs.max(), 50)
    hi = np.arange(int(hs.min()), int(hs.max()) + 1)
    plots.theory_line(a0, hi, [np.exp(width.relu_log_ratio_moments(int(h))[0] / 2) for h in hi],
                      label="theory: exp(E[log R]/2), R = (2/h) chi2_K")
    a0.plot(hh, np.exp(-5 / (4 * hh)), color="0.5", linestyle=":", label="large-h: 1 - 5/(4h)")
    a0.axhline(1.0, color="0.3", lw=1.2, label="mean field: sqrt(E[R]) = 1")
    f = np.array([m["factor_per_example"] for m in M])
    a0.errorbar(hs, f, yerr=2 * f * np.array([m["log_factor_se"] for m in M]), marker="o",
                linestyle="none", capsize=5, label="measured per example (2 SE)",
                color=plots.PALETTE[0])
    a0.plot(hs, [m["factor_batch"] for m in M], marker="s", linestyle="none",
            color=plots.PALETTE[1], label="measured, batch Frobenius norm")
    a0.plot(hs, np.sqrt([m["mean_sq_ratio"] for m in M]), marker="^", linestyle="none",
            color=plots.PALETTE[2], label="measured sqrt(mean of R)")
    a0.set_ylabel("per-layer factor of dL/dz")
    med = np.array([m["hidden_end_to_end_median"] for m in M])
    sd = np.array([m["hidden_end_to_end_log_sd"] for m in M])
    a1.fill_between(hs, med * np.exp(-sd), med * np.exp(sd), color=plots.PALETTE[0], alpha=0.2,
                    label="measured +-1 log-sd")
    a1.plot(hs, med, marker="o", linestyle="none", color=plots.PALETTE[0],
            label="measured geometric mean per example")
    tm = np.array([t["hidden_end_to_end_median"] for t in T])
    tsd = np.array([t["hidden_end_to_end_log_sd"] for t in T])
    plots.theory_line(a1, hs, tm, label="theory exp((D-1) E[log R]/2)")
    plots.theory_line(a1, hs, tm * np.exp(-tsd), linewidth=1.2, label="theory +-1 log-sd")
    plots.theory_line(a1, hs, tm * np.exp(tsd), linewidth=1.2)
    a1.axhline(1.0, color="0.3", lw=1.2)
    a1.set_yscale("log")
    a1.set_ylabel(f"RMS dz_1 / RMS dz_{rw['depth']} per example")
    for ax in (a0, a1):
        ax.set_xscale("log", base=2)
        ax.set_xticks(hs, [str(int(h)) for h in hs])
        ax.minorticks_off()
        ax.set_xlabel("width h")
    fig.suptitle(text.width_title(s), fontsize=14)
    _fig_legend(fig, (a0, a1), ncol=3)
    return plots.save(fig, path)
