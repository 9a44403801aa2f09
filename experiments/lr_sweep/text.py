"""What an lr sweep shows, in sentences computed from its summary: report.md's opening and the
README's generated block (``readme``). Every number and every comparison word below is computed
from the summary, so no sentence can contradict the run it describes."""

from __future__ import annotations


def _pct(x: float) -> str:
    return f"{x:+.2%}" if abs(x) >= 1e-3 else f"{x:+.4%}"


def _opt(s: dict) -> str:
    return {"gd": "GD", "momentum": "momentum"}.get(s.get("optimizer", "gd"), s.get("optimizer"))


def theory_sentence(s: dict, data: str) -> str:
    lam, thr, bound = s["lambda_max"], s["threshold_theory"], s.get("theory_bound")
    rule = f" ({bound})" if bound and s.get("optimizer") != "gd" else ""
    if s["theory_kind"] == "exact":
        return (f"On {data} the loss is quadratic with top Hessian eigenvalue {lam:.4g}, so "
                f"{_opt(s)} converges exactly below lr = {thr:.4g}{rule}.")
    if s["theory_kind"] == "estimate":
        return (f"The sharpness at initialization is {lam:.4g}, so the quadratic threshold "
                f"{thr:.4g}{rule} is only a lower bound for this nonlinear model.")
    return (f"{_opt(s)} has no closed-form threshold on a quadratic; only the measurement is "
            "shown.")


def _vs(s: dict, ratio: float) -> str:
    """How a measured threshold compares with the theory's value."""
    if s["theory_kind"] == "estimate":
        return f"{ratio:.2f}x the lower bound"
    return f"{_pct(ratio - 1)} from theory"


def measured_sentence(s: dict) -> str:
    lo, hi = s["threshold_bracket"]
    n = len(s["lrs"])
    if s["threshold_measured"] is None:
        where = "no lr diverged" if lo else "every lr diverged"
        return f"Of {n} learning rates {where}: widen sweep.lr to bracket the threshold."
    out = (f"Of {n} learning rates, the largest where no seed diverged is {lo:.4g} and the "
           f"smallest where all did is {hi:.4g}: measured threshold {s['threshold_measured']:.4g}")
    if s["threshold_theory"]:
        out += f" ({_vs(s, s['measured_over_theory'])})"
    return out + "."


def refined_sentence(s: dict) -> str | None:
    if not s["refine_rounds"] or s["threshold_refined"] is None:
        return None
    lo, hi = s["refined_bracket"]
    steps = "/".join(str(x) for x in s["refine_steps"])
    rounds = f"{s['refine_rounds']} round{'s' if s['refine_rounds'] > 1 else ''}"
    out = (f"{rounds} of vectorized bisection ({steps} steps) narrow it to "
           f"{lo:.6g}-{hi:.6g}, refined threshold {s['threshold_refined']:.6g}")
    thr = s["threshold_theory"]
    if thr:
        out += f" ({_vs(s, s['refined_over_theory'])})"
    iv = s.get("threshold_interval")
    if iv and thr:
        holds = iv[0] <= thr <= iv[1] * (1 + 1e-12)
        out += (f"; the interval [{iv[0]:.6g}, {iv[1]:.6g}] that an lr a relative "
                f"{s['refined_resolution']:.1e} above the edge may still pass in "
                f"{s['refine_steps'][-1]} steps {'holds' if holds else 'misses'} the theory's "
                f"{thr:.6g}")
    return out + "."


def sharpness_sentence(s: dict) -> str | None:
    tr = s.get("sharpness_along_bracket")
    if not tr:
        return None
    lr = tr["lrs"][0]
    sh = tr["sharpness"]["lo"]
    fell = sh[-1] < 2 / lr
    return (f"Along GD at lr {lr:.4g} (seed {tr['seed']}) the sharpness goes from {sh[0]:.4g} to "
            f"{sh[-1]:.4g}, {'below' if fell else 'above'} 2/lr = {2 / lr:.4g}"
            + (": the loss's curvature adapted to the step (catapult, Lewkowycz et al. 2020)."
               if fell and sh[0] > 2 / lr else "."))


def regime_sentence(s: dict) -> str | None:
    """Which regime (bpexp.regimes: lazy / catapult / divergent, read off each run's loss
    curve) the runs below the measured threshold are in, with the lrs in units of 2/lambda."""
    R, u = s.get("regimes"), s.get("lr_over_2_over_lambda")
    edge = s["threshold_refined"] or s["threshold_measured"]
    if not R or not u or edge is None or not s["lambda_max"]:
        return None
    cat = [x for x, c in zip(u, R["catapult"]) if c > 0]
    if s["theory_kind"] == "exact":
        return ("Every converging run is lazy: its loss never rose above its start, as on any "
                "quadratic below its threshold." if not cat else
                f"{sum(R['catapult'])} converging runs rose before converging (at lr "
                f"{min(cat):.3g}-{max(cat):.3g} x 2/lambda_max).")
    at = edge * s["lambda_max"] / 2
    out = (f"In units of 2/lambda at init the measured threshold is {at:.2f}, where the "
           "quadratic theory says 1: ")
    above = sum(1 for x in cat if x > at)
    out += (f"{sum(R['catapult'])} runs at {len(cat)} lrs ({min(cat):.2f}-{max(cat):.2f} x "
            "2/lambda) are in the catapult regime (the loss rises, then converges; Lewkowycz "
            "et al. 2020, s.2)" + (f", {above} of those lrs above the measured threshold, where "
                                   "other seeds diverged" if above else "") if cat else
            "no run rose above 1.05x its initial loss on the way (no catapult seen)")
    return out + (f"; wide-network theory puts the divergence edge at 2 in these units for the "
                  f"two-layer linear net and near 6 for ReLU nets ({'above' if at > 2 else 'below'}"
                  " the linear net's here; see +experiment=catapult).")


def best_sentence(s: dict) -> str:
    out = f"The lowest median final loss is reached at lr {s['best_lr']:.4g}"
    edge = s["threshold_refined"] or s["threshold_measured"]
    if edge:
        out += f", {s['best_lr'] / edge:.2f}x the measured threshold"
    return out + "."


def shows(s: dict, data: str) -> list[str]:
    """3-6 sentences for report.md's "What this run shows"."""
    out = [theory_sentence(s, data), measured_sentence(s), refined_sentence(s),
           regime_sentence(s), sharpness_sentence(s), best_sentence(s)]
    return [x for x in out if x]


def readme(record: dict) -> str:
    """The README's block for one recorded lr_sweep run: its command and what it shows."""
    s, cfg = record["summary"], record["config"]
    data = cfg["data"]["name"]
    body = " ".join(x for x in (theory_sentence(s, data), measured_sentence(s),
                                refined_sentence(s), regime_sentence(s),
                                sharpness_sentence(s)) if x)
    return f"- `{record['command']}`: {body}\n"


def final_title(s: dict) -> str:
    """The takeaway of final_loss_vs_lr.png, computed from the summary."""
    thr, meas = s["threshold_theory"], s["threshold_refined"] or s["threshold_measured"]
    opt = _opt(s)
    if meas is None:
        return f"{opt}: no divergence threshold inside the swept lrs"
    if thr and s["theory_kind"] == "exact":
        return (f"{opt} diverges above lr = {meas:.5g}, {_pct(meas / thr - 1)} from theory "
                f"{thr:.5g}")
    if thr:
        return (f"{opt} survives up to lr = {meas:.3g}, {meas / thr:.2f}x the lower bound "
                f"{thr:.3g} from the sharpness at init")
    return f"{opt} diverges above lr = {meas:.3g} (no closed-form threshold)"


def curves_title(s: dict, model: str, data: str, seed: int) -> str:
    """The takeaway of loss_curves.png: how many lrs diverge, from which lr."""
    frac, lrs = s["diverged_fraction"], s["lrs"]
    n_div = sum(f > 0 for f in frac)
    first = next((lr for lr, f in zip(lrs, frac) if f > 0), None)
    tail = f": {n_div} of {len(lrs)} lrs diverge, from lr {first:.3g}" if first else \
        f": none of {len(lrs)} lrs diverges"
    return f"{model} on {data}, {_opt(s)}, seed {seed}{tail}"
