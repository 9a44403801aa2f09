"""The adaptive-EoS figures (slide style, bpexp.plots), drawn from summary.json alone; each
title states a takeaway computed from the numbers (:func:`takeaway`)."""

from __future__ import annotations

import numpy as np

from bpexp import plots
from bpexp.experiments.adaptive_eos.run import finite, fmt

TITLE = {"adam": "Adam", "rmsprop": "RMSprop", "momentum": "Momentum"}
MEASURED = {"adam": "preconditioned", "rmsprop": "preconditioned", "momentum": "raw"}
FIELD = {"adam": "precond_sharpness", "rmsprop": "precond_sharpness",
         "momentum": "raw_sharpness"}   # the summary's array of the measured sharpness


def rows_of(summary: dict, name: str) -> list[str]:
    return [k for k in summary["labels"] if summary["runs"][k]["optimizer"] == name]


def takeaway(summary: dict, name: str) -> str:
    """One line: how many of optimizer ``name``'s runs hover at their threshold, the range of
    their late mean ratios and, for the adaptive ones, how far the raw sharpness is from 2/lr."""
    runs = [summary["runs"][k] for k in rows_of(summary, name)]
    regimes = [g for r in runs for g in r["regime"]]
    at, n = regimes.count("at the edge"), len(regimes)
    late = finite(x for r in runs for x in r["late_ratio"])
    who = "all runs hover" if at == n else f"{at} of {n} runs hover"
    raw = finite(x for r in runs for x in r["late_raw_over_2_over_lr"]) or [float("nan")]
    tail = (f"raw sharpness only {fmt(max(raw), '.2g')} x 2/lr" if name != "momentum"
            else f"{fmt(min(raw), '.0f')}-{fmt(max(raw), '.0f')} x GD's 2/lr")
    span = (f"late mean {min(late):.2f}-{max(late):.2f} x threshold" if late
            else "no finite late mean")
    if len(late) < n:
        span += f" ({n - len(late)} diverged)"
    return (f"{TITLE[name]}: {who} at the threshold ({MEASURED[name]} sharpness)\n"
            f"{span}; {tail}")


def headline(summary: dict) -> str:
    raw = summary["adaptive_raw_ratio_max"]
    tail = f"; adaptive runs' raw sharpness <= {fmt(raw, '.2g')} x 2/lr" if raw is not None \
        else ""
    return (f"{summary['runs_at_edge']} of {summary['runs_total']} runs hover within "
            f"{100 * summary['edge_tol']:.0f}% of their threshold{tail}")


def _seeds(ax, steps, curves, i, label):
    for j, y in enumerate(np.asarray(curves, np.float64)):
        ax.plot(steps, plots.positive(y), **plots.style(i), lw=2.0 if j == 0 else 1.0,
                alpha=1.0 if j == 0 else 0.6, label=label if j == 0 else None)


def fig_optimizer(summary: dict, name: str, path, loss=None):
    """2 x 2: the measured sharpness with each row's threshold (theory, dashed), measured /
    threshold with the late window shaded, the raw sharpness x lr / 2 (1 = GD's 2/lr), the loss
    (``loss``: {label: [seed, step + 1]} at every step, else the summary's at the measurement
    steps); every seed (the first thick)."""
    S, keys = summary, rows_of(summary, name)
    steps = np.asarray(S["steps"])
    fig, ax = plots.slide(2, 2, sharex=True)
    (a, b), (c, d) = ax
    for i, k in enumerate(keys):
        r = S["runs"][k]
        meas = np.asarray(r[FIELD[name]], np.float64)
        _seeds(a, steps, meas, i, k.removeprefix(name + " "))
        plots.theory_line(a, y=r["threshold"], label="threshold " + r["threshold_formula"]
                          if i == 0 else None)
        a.annotate(f"{r['threshold']:.0f}" if r["threshold"] >= 100 else
                   f"{r['threshold']:.3g}", (steps[-1], r["threshold"]), ha="right",
                   va="bottom", fontsize=11, zorder=12)
        _seeds(b, steps, meas / r["threshold"], i, None)
        _seeds(c, steps, np.asarray(r["raw_sharpness"], np.float64) * r["lr"] / 2, i, None)
        if loss is None:
            _seeds(d, steps, r["loss"], i, None)
        else:
            _seeds(d, np.arange(np.shape(loss[k])[-1]), loss[k], i, None)
    start = steps[-1] * (1 - S["late_fraction"])
    b.axvspan(start, steps[-1], color="0.9", zorder=0, label="late window (averaged)")
    plots.theory_line(b, y=1.0)
    plots.theory_line(c, y=1.0, label="raw sharpness = GD's edge 2/lr")
    meas = np.concatenate([np.ravel(S["runs"][k][FIELD[name]]) for k in keys]).astype(float)
    meas = meas[np.isfinite(meas) & (meas > 0)]
    if meas.size and meas.max() > 20 * meas.min():
        a.set_yscale("log")
    a.set_ylabel(f"{MEASURED[name]} sharpness")
    b.set_ylabel("measured / threshold")
    top = np.nanmax([np.nanmax(np.asarray(S["runs"][k][FIELD[name]], np.float64)
                               / S["runs"][k]["threshold"]) for k in keys])
    if top > 2.5:
        b.set_ylim(0, 2.5)
        plots.note(b, f"clipped: up to {top:.3g} in the first steps\n(moments start at 0:"
                   " the first P is tiny)", loc="lower right")
    c.set_yscale("log")
    c.set_ylabel("raw sharpness x lr / 2")
    d.set_yscale("log")
    d.set_ylabel("training loss (MSE)")
    c.set_xlabel("step")
    d.set_xlabel("step")
    h, lab = [], []
    for x in (a, b, c):
        hx, lx = x.get_legend_handles_labels()
        h, lab = h + hx, lab + lx
    fig.legend(h, lab, loc="outside lower center", ncol=4, frameon=False, fontsize=13)
    fig.suptitle(takeaway(S, name), fontsize=16)
    return plots.save(fig, path)


def fig_ratios(summary: dict, path):
    """Left: each run's late mean of measured / threshold (every seed a dot) against theory 1
    with the +-edge_tol band; right: the late raw sharpness x lr / 2 (log), 1 = GD's 2/lr."""
    S = summary
    fig, (a, b) = plots.slide(1, 2)
    x = np.arange(len(S["labels"]))
    names = list(dict.fromkeys(S["runs"][k]["optimizer"] for k in S["labels"]))
    for i, k in enumerate(S["labels"]):
        r = S["runs"][k]
        st = plots.style(names.index(r["optimizer"]))
        first = k == rows_of(S, r["optimizer"])[0]
        lab = TITLE[r["optimizer"]] if first else None
        late = np.asarray(r["late_ratio"], np.float64)             # null (diverged) -> nan
        a.plot([i] * len(late), late, "o", color=st["color"], label=lab)
        b.plot([i] * len(late), np.asarray(r["late_raw_over_2_over_lr"], np.float64), "o",
               color=st["color"], label=lab)
        if not np.all(np.isfinite(late)):
            a.annotate("diverged", (i, 1.0), rotation=90, ha="center", va="center",
                       fontsize=11, color=st["color"])
    tol = S["edge_tol"]
    a.axhspan(1 - tol, 1 + tol, color="0.9", zorder=0, label=f"+-{100 * tol:.0f}%")
    plots.theory_line(a, y=1.0, label="theory")
    plots.theory_line(b, y=1.0, label="GD's edge 2/lr")
    a.legend(loc="lower left", frameon=False, fontsize=12)
    b.set_yscale("log")
    for ax in (a, b):
        ax.set_xticks(x, [k.replace(" lr=", "\nlr=") for k in S["labels"]], fontsize=11,
                      rotation=90)
    a.set_ylabel("late mean: measured / threshold")
    b.set_ylabel("late mean: raw sharpness x lr / 2")
    plots.legend_outside(b)
    fig.suptitle(headline(S), fontsize=16)
    return plots.save(fig, path)
