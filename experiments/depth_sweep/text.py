"""The depth sweep's sentences, written from the summary alone: report.md's "What this run
shows" and the README block (``readme(record)``)."""

from __future__ import annotations

import math

from bpexp.report import fmt


def _deepest(s):
    Dm = s["depths"][-1]
    return Dm, {k: e["depths"][str(Dm)] for k, e in s["inits"].items()}


def bound_slack(s) -> tuple[float, float]:
    """(smallest, largest) median bound / measured ||dz_1|| / ||dz_L|| over inits and depths."""
    r = [d["bound_with_weight_norms"] / d["delta_attenuation"]
         for e in s["inits"].values() for d in e["depths"].values()
         if d["delta_attenuation"] and d["bound_with_weight_norms"]]
    return min(r), max(r)


def glorot_max_dev(s) -> float:
    """Largest |measured / Glorot - 1| of the per-layer dL/dz factor at the deepest depth."""
    _, at = _deepest(s)
    return max(abs(d["factor_measured_dz"] / d["factor_predicted"] - 1) for d in at.values())


def _loss(d) -> str:
    v = d["final_loss"]
    if v is None or not math.isfinite(v):
        return "diverged"
    lo, hi = d["final_loss_iqr"]
    return f"{v:.3g} (IQR {lo:.3g}-{hi:.3g})"


def shows(s) -> list[str]:
    """3-5 sentences: what this run shows, from its summary."""
    Dm, at = _deepest(s)
    fac = ", ".join(f"x{d['factor_measured_dz']:.3f} with the {k} init (Glorot predicts "
                    f"{d['factor_predicted']:.3f})" for k, d in at.items())
    out = [f"At init the back-propagated dL/dz of the {s['activation']} nets shrinks per layer "
           f"by {fac} at depth {Dm} (medians of {len(s['seeds'])} seeds): the Glorot factor "
           f"sqrt(n Var(W) E[f'^2]) holds within {glorot_max_dev(s):.1%}."]
    lo, hi = bound_slack(s)
    b = s["bound"]
    out.append(f"The bound ||dz_1|| / ||dz_L|| <= {b['fprime_max']:g}^D prod ||W_l||_2 holds "
               f"in {'every run' if b['holds_everywhere'] else 'NOT every run'} and is loose: "
               f"bound / measured from x{lo:.3g} to x{hi:.3g}.")
    ob = s.get("ratio_outside_band")
    if ob:
        by_init = ", ".join(f"{k} {v}" for k, v in ob["by_init"].items())
        first = ", ".join(f"{k} x{v:.2f}" for k, v in ob["first_pair_ratio_median"].items())
        out.append(f"Weight-gradient ratios ||dW_l|| / ||dW_l+1|| (which also carry "
                   f"||a_l-1|| / ||a_l||): {ob['count']} of {ob['total']} fall outside "
                   f"x{ob['band']:g} of their prediction (by init {by_init}), against "
                   f"{ob['dz_count']} of the dL/dz ratios; {ob['at_first']} of them are the "
                   f"first pair, where dW_1 = dz_1 X^T meets the z-scored input (every feature "
                   f"has mean 0 over the batch) while the sigmoid activations above share a "
                   f"positive mean, which the prediction's ||a_l-1|| / ||a_l|| does not see "
                   f"(median measured / predicted at the first pair: {first})"
                   f", {ob['at_last']} the last.")
    losses = ", ".join(f"{k} {_loss(d)}" for k, d in at.items())
    out.append(f"After {s['steps']} full-batch GD steps at lr {s['lr']:g}, depth {Dm}: {losses}; "
               f"the class entropy (the loss of predicting the class frequencies) is "
               f"{s['class_entropy']:.3f}, ln 10 = {math.log(10):.3f}.")
    return out


def readme(record) -> str:
    """The README block: the command and the table of the deepest depth, then :func:`shows`."""
    s = record["summary"]
    Dm, at = _deepest(s)
    lines = [f"`{record['command']}` ({len(s['seeds'])} seeds, width {s['width']}; no "
             "machine-dependent number here):", "",
             f"| init | n Var(W) | dL/dz factor, Glorot | measured | dW factor, predicted | "
             f"measured | ||dz_1|| / ||dz_L|| | bound | final loss D = {s['depths'][0]} | "
             f"D = {Dm} |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k, d in at.items():
        e = s["inits"][k]
        lines.append(f"| {k} | {e['n_var_w_hidden']:.3g} | {d['factor_predicted']:.3f} | "
                     f"{d['factor_measured_dz']:.3f} | {d['factor_predicted_weight']:.3f} | "
                     f"{d['factor_measured']:.3f} | {fmt(d['delta_attenuation'], 2)} | "
                     f"{fmt(d['bound_with_weight_norms'], 2)} | "
                     f"{_loss(e['depths'][str(s['depths'][0])])} | {_loss(d)} |")
    return "\n".join(lines + ["", " ".join(shows(s))])
