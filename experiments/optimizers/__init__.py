"""GD, momentum, RMSprop and Adam, each at its own best learning rate, hand-written and optax.

Question: on a small network (two_layer_sigmoid on digits, MSE on one-hot targets) and on an
ill-conditioned 2-D quadratic, how do the four CS230 optimizers compare when each gets the
learning rate that suits it, and do the hand-written transformations (bpexp.optim) trace the
same trajectories as their optax twins?
Theory: on f(w) = 0.5 w^T H w with eigenvalues 1 and kappa, GD contracts the error by
rho = max|1 - lr lambda| per step, at best (kappa - 1)/(kappa + 1) at lr = 2/(1 + kappa), and
diverges for lr > 2/kappa. CS230 momentum with lr in the band where the roots of
z^2 - (1 + b - lr (1 - b) lambda) z + b are complex for both eigenvalues contracts by sqrt(b)
per step whatever kappa is (possible for kappa < ((1 + sqrt b)/(1 - sqrt b))^2), so it beats
GD once (kappa - 1)/(kappa + 1) > sqrt(b): kappa > 38 for b = 0.9. Adam and RMSprop have no
such rate; their first steps have size ~lr (Adam: lr sign(g) up to eps, lr |g| / (|g| + eps)).
Each optax twin is the same update written differently (see bpexp.optim), so the two differ
by rounding (one ulp per operation): ~1e-6 relative in float32, ~1e-15 in float64, as long as
the run is stable. A run whose loss spikes far above its start (an unstable transient near the
stability edge that still ends below its start) amplifies any perturbation by about the spike's
growth factor or more, rounding included, so there the twins differ by far more than an ulp
(the summary's manual_vs_optax splits the lrs at a 10x loss growth).
Expected: on the quadratic GD zig-zags across the valley and needs about its predicted
ln(tol/f0) / (2 ln rho) steps; momentum (and, at the defaults, Adam) reach the tolerance in
fewer; on digits plain GD, capped by its stability bound, ends with the highest loss and Adam
with the lowest; manual vs optax differences are at rounding level wherever the loss stays
near its start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpexp import optim, report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.optimizers.figures import (
    fig_best_curves,
    fig_final_vs_lr,
    fig_paths,
    fig_twins,
    takeaways,
)
from bpexp.experiments.optimizers.page import page  # noqa: F401  (the run page's figures)
from bpexp.experiments.optimizers.run import (
    Fit,
    Result,
    compute,  # noqa: F401  (the experiment contract)
    dataset,
    twin_summary,
)
from bpexp.experiments.optimizers.theory import NAMES

USES = ("model", "data", "optimizer", "train", "sweep")


@dataclass
class Params:
    name: str = "optimizers"
    optimizers: Any = field(default_factory=lambda: list(NAMES))
    # per optimizer [start, stop] of a log-spaced lr grid with lr_num points
    lr_range: Any = field(default_factory=lambda: {
        k: list(r.lr_range) for k, r in optim.OPTIMIZERS.items()})
    lr_num: int = 10
    tol_factor: float = 1.05        # digits tolerance: tol_factor x best final loss of all
    divergence_factor: float = 1.0  # also diverged: final loss > factor x initial loss
    quad_kappa: float = 50.0
    quad_angle: float = 30.0        # degrees the eigenvectors are rotated by
    quad_start: Any = field(default_factory=lambda: [2.5, 2.0])
    quad_steps: int = 300
    quad_lr_range: Any = field(default_factory=lambda: {
        k: list(r.quad_lr_range) for k, r in optim.OPTIMIZERS.items()})
    quad_lr_num: int = 24
    quad_tol: float = 1e-6          # quadratic tolerance: absolute loss
    path_steps: int = 80            # steps of each path drawn on the contours


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(cfg):
    P = cfg.experiment
    opts = P.optimizers
    if not opts or any(o not in NAMES for o in opts) or len(set(opts)) < len(opts):
        raise UserError(f"experiment.optimizers={opts!r} must be a non-empty list of distinct "
                        f"optimizers; allowed: {', '.join(NAMES)}")
    for key in ("lr_range", "quad_lr_range"):
        ranges = getattr(P, key)
        unknown = [k for k in ranges if k not in NAMES]
        if unknown:
            raise UserError(f"experiment.{key}.{unknown[0]} is not an optimizer; allowed keys: "
                            f"{', '.join(NAMES)}")
        for o in opts:
            r = ranges.get(o)
            if not (isinstance(r, list) and len(r) == 2 and all(map(_number, r))
                    and 0 < r[0] <= r[1] < math.inf):
                raise UserError(f"experiment.{key}.{o}={r!r} must be [start, stop], finite "
                                f"numbers with 0 < start <= stop")
    for key in ("lr_num", "quad_lr_num", "quad_steps", "path_steps"):
        if getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} must be >= 1")
    for key in ("tol_factor", "quad_tol"):
        if not 0 < getattr(P, key) < math.inf:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} must be finite and > 0")
    if not P.divergence_factor > 0:
        raise UserError(f"experiment.divergence_factor={P.divergence_factor!r} must be > 0")
    if not 1 <= P.quad_kappa < math.inf:
        raise UserError(f"experiment.quad_kappa={P.quad_kappa!r} must be finite and >= 1")
    if not math.isfinite(P.quad_angle):
        raise UserError(f"experiment.quad_angle={P.quad_angle!r} must be finite (degrees)")
    w0 = P.quad_start
    # nearer the minimum (0, 0), the contours drawn at f(w0) x 1e-3 .. f(w0) underflow to 0
    if not (isinstance(w0, list) and len(w0) == 2 and all(map(_number, w0))
            and all(map(math.isfinite, w0)) and max(map(abs, w0)) >= 1e-100):
        raise UserError(f"experiment.quad_start={w0!r} must be 2 finite numbers [w1, w2] with "
                        f"max(|w1|, |w2|) >= 1e-100 (the minimum is (0, 0))")


# ---------------------------------------------------------------- the quadratic: one compile


# ---------------------------------------------------------------- compute


# ---------------------------------------------------------------- save


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    run.save_metrics(dataset(res))

    def entry(f: Fit, extra):
        return {"best_lr": f.best_lr, "final_loss": f.final_loss, "steps_to_tol": f.steps_to_tol,
                "max_abs_diff_manual_vs_optax": f.diff[0],
                "max_rel_diff_manual_vs_optax": f.diff[1],
                "max_abs_diff_manual_vs_optax_all_lrs": f.diff_grid[0],
                "max_abs_diff_manual_vs_optax_per_lr": f.diff_lr,
                "max_rel_diff_manual_vs_optax_per_lr": f.rel_lr, "loss_growth_per_lr": f.growth_lr,
                **extra}

    data, names, net, quad = cfg.data.name, res.names, res.net, res.quad
    stats = res.sweeps[(names[0], "manual")].stats  # shared by all: one compiled call
    return {
        "problems": {
            data: {n: entry(net[n], {"lrs": net[n].lrs, "final_loss_median": net[n].final,
                                     "diverged": net[n].diverged}) for n in names},
            "quadratic": {n: entry(quad[n], {"lrs": quad[n].lrs, "final_loss_per_lr": quad[n].final,
                                             "diverged": quad[n].diverged,
                                             "rate_theory": quad[n].rate_theory,
                                             "steps_to_tol_theory": quad[n].steps_theory,
                                             "stability_bound": res.bounds[n]})
                          for n in names}},
        "manual_vs_optax": twin_summary({data: net, "quadratic": quad}),
        "tolerance": {data: res.tol, "quadratic": P.quad_tol,
                      "definition": f"{data}: first step where the median (over seeds) loss at "
                                    f"the best lr <= {P.tol_factor} x the lowest best final loss "
                                    f"of all optimizers; quadratic: first step with loss <= "
                                    f"{P.quad_tol:g} (absolute)"},
        "quadratic": {"kappa": P.quad_kappa, "angle_deg": P.quad_angle, "eigenvalues": res.lams,
                      "start": res.w0, "f0": res.f0, "gd_threshold": res.gd_threshold,
                      "gd_best_lr_theory": res.gd_best_lr,
                      "momentum_threshold": res.momentum_threshold},
        "network_compile_s": stats["compile_s"], "network_run_s": stats["run_s"],
        "runs": sum(r.stats["runs"] for r in res.sweeps.values()),
        "precision": cfg.precision, "steps": cfg.train.steps, "seeds": res.seeds, "m": res.m,
    }


# ---------------------------------------------------------------- present


def present(cfg, run, res: Result, summary: dict) -> None:
    """Long because it writes the terminal table and report.md's sections in reading order;
    each section is a few lines over the same values."""
    P, o = cfg.experiment, cfg.optimizer
    names, net, quad, lams, w0 = res.names, res.net, res.quad, res.lams, res.w0
    data, tw = cfg.data.name, summary["manual_vs_optax"]
    titles = takeaways(summary, data)
    title_net = (f"{cfg.model.name} on {data} (m={res.m}), {len(res.seeds)} seeds, "
                 f"median")
    title_q = f"quadratic, kappa={P.quad_kappa:g}, rotated {P.quad_angle:g} deg"
    figs = ["loss_at_best_lr.png", "final_loss_vs_lr.png", "manual_vs_optax.png"]
    fig_best_curves(names, res.steps, net, res.tol, quad, P.quad_tol, res.f0, title_net, title_q,
                    titles["loss_at_best_lr"], run.figure(figs[0]))
    fig_final_vs_lr(names, net, quad, title_net, title_q, res.bounds, titles["final_loss_vs_lr"],
                    run.figure(figs[1]))
    fig_twins(names, data, net, quad, tw["loss_growth_limit"], titles["manual_vs_optax"],
              run.figure(figs[2]))
    n_path = min(P.path_steps, P.quad_steps)
    for k in range(0, len(names), 4):                 # four panels a figure
        figs.append("quadratic_paths.png" if k == 0 else f"quadratic_paths_{k // 4 + 1}.png")
        fig_paths(names[k:k + 4], res.H, w0, quad, n_path,
                  f"{titles['quadratic_paths']}\n(first {n_path} steps at each best lr)",
                  run.figure(figs[-1]))

    header = ["problem", "optimizer", "best lr", "final loss", "steps to tol", "theory steps",
              "max|manual-optax|", "relative"]
    rows = [[cfg.data.name, n, net[n].best_lr, net[n].final_loss, _steps(net[n].steps_to_tol), "-",
             *net[n].diff] for n in names]
    rows += [["quadratic", n, quad[n].best_lr, quad[n].final_loss, _steps(quad[n].steps_to_tol),
              "-" if quad[n].steps_theory is None else round(quad[n].steps_theory), *quad[n].diff]
             for n in names]
    report.print_table(f"optimizers: each at its best lr ({cfg.precision}); tol {cfg.data.name} = "
                       f"{report.fmt(res.tol)}, quadratic = {P.quad_tol:g}", header, rows)
    theory_rows = [["GD stable iff lr < 2/kappa", res.gd_threshold,
                    "measured: " + _first_diverged(quad.get("gd"))],
                   ["GD best lr 2/(1+kappa), rate (kappa-1)/(kappa+1)", res.gd_best_lr,
                    f"rate {(lams[-1] - lams[0]) / (lams[-1] + lams[0]):.4f}"],
                   ["momentum stable iff lr < 2(1+b)/((1-b) kappa)", res.momentum_threshold,
                    "measured: " + _first_diverged(quad.get("momentum"))],
                   ["momentum best rate sqrt(beta)", math.sqrt(o.beta),
                    "beats GD iff (kappa-1)/(kappa+1) > sqrt(beta)"]]
    theory_rows += [[f"theory rate at the measured best lr, {n}", quad[n].rate_theory,
                     f"lr {report.fmt(quad[n].best_lr)}"] for n in names if n in ("gd", "momentum")]
    report.print_table(f"quadratic (kappa={P.quad_kappa:g}): theory", ["quantity", "value", "note"],
                       theory_rows)
    batch = "" if res.batch == res.m else f" (batch {res.batch})"
    run.save_report(report.report(
        "Optimizers at their best learning rates, hand-written vs optax",
        question(__doc__), run.reproduce(),
        [("Setup", f"network: model `{cfg.model.name}` (hidden {cfg.model.hidden}), data "
                   f"`{cfg.data.name}` (n={res.n}, m={res.m}), full-batch{batch}, "
                   f"{cfg.train.steps} steps, {P.lr_num} lrs x {len(res.seeds)} seeds per "
                   f"optimizer, {cfg.precision}; beta={o.beta}, beta1={o.beta1}, "
                   f"beta2={o.beta2}, eps={o.eps}.\n"
                   f"Quadratic: f = 0.5 w^T H w, eigenvalues {lams[0]:g} and {lams[-1]:g}, start "
                   f"({w0[0]:g}, {w0[1]:g}) (f0 = {res.f0:.4g}), {P.quad_steps} steps, "
                   f"{P.quad_lr_num} lrs per optimizer.\n"
                   f"Best lr: lowest median final loss among lrs where no seed diverged "
                   f"(non-finite, or final > {P.divergence_factor:g} x initial). Tolerance: "
                   f"network {P.tol_factor:g} x the lowest best final loss of all optimizers = "
                   f"{res.tol:.4g} (first step where the median curve reaches it); quadratic "
                   f"absolute {P.quad_tol:g}. max|manual-optax|: loss curves at the best lr "
                   f"(network, all seeds), parameters along the path (quadratic); relative = "
                   f"divided by the largest |value|."),
         ("Measured", report.markdown_table(header, rows)),
         ("Theory on the quadratic", report.markdown_table(["quantity", "value", "note"],
                                                          theory_rows)),
         ("Manual vs optax over every lr of the grid", _twin_words(tw, cfg.precision) + "\n\n"
          + report.markdown_table(
              ["problem", "optimizer", "lr", "lr / bound", "loss growth max_t L_t/L_0",
               "max|manual-optax|", "relative"],
              [[p, n, float(f.lrs[i]),
                "-" if not res.bounds.get(n) or p != "quadratic" else f.lrs[i] / res.bounds[n],
                f.growth_lr[i], f.diff_lr[i], f.rel_lr[i]]
               for p, fits in ((data, net), ("quadratic", quad)) for n in names
               for i, f in ((i, fits[n]) for i in range(len(fits[n].lrs)))]))],
        figs, shows=shows(summary, data)))


def _steps(v) -> int | str:
    return "not reached" if v is None else v


def _first_diverged(q: Fit | None) -> str:
    """'X ok, Y diverged' at the first diverged lr of a quadratic fit (or 'none diverged')."""
    if q is None or not q.diverged.any():
        return "none diverged in the grid"
    i = int(np.argmax(q.diverged))
    below = f"{q.lrs[i - 1]:.3g} ok, " if i > 0 else ""
    return f"{below}{q.lrs[i]:.3g} diverged"




# ---------------------------------------------------------------- words from the summary


def _twin_words(tw: dict, precision: str, left_out: bool = True) -> str:
    """The exact manual-vs-optax claim of one run (its summary's ``manual_vs_optax``)."""
    if tw["calm_max_abs"] is None:
        return "No lr ran without diverging: nothing to compare."
    out = (f"In {precision}, the hand-written optimizers equal their optax twins to "
           f"{tw['calm_max_abs']:.1e} ({tw['calm_max_rel']:.1e} relative) at all "
           f"{tw['calm_lrs']} lrs where the loss never rises above {tw['loss_growth_limit']:g}x "
           f"its start.")
    w = tw["worst"]
    if w is not None:
        per = [f"{v:.3g} on {p}" + (f" ({w['optimizer']}, lr {w['lr']:.3g}, loss growth "
                                     f"{w['loss_growth']:.2g}x)" if p == w["problem"] else "")
               for p, v in tw["spiking_max_abs_by_problem"].items() if v is not None]
        out += (f" At the {tw['spiking_lrs']} lrs where it spikes higher (unstable transients "
                f"that still end below the start, so not counted as diverged) the difference "
                f"reaches {' and '.join(per)}: the two write the same update in a different "
                f"order, and an unstable run can amplify that one-ulp rounding difference by "
                f"orders of magnitude.")
    return out + (f" {tw['lrs_left_out_diverged']} lrs where every run diverged are left out "
                  f"(both implementations overflow)." if left_out else "")


def shows(summary: dict, data: str) -> list[str]:
    """report.md's "What this run shows": sentences computed from the summary."""
    net, quad, qs = summary["problems"][data], summary["problems"]["quadratic"], \
        summary["quadratic"]
    out = []
    reached = {n: v["steps_to_tol"] for n, v in quad.items() if v["steps_to_tol"] is not None}
    gd = quad.get("gd")
    if reached:
        fast = min(reached, key=reached.get)
        s = (f"On the kappa={qs['kappa']:g} quadratic {fast} reaches f <= "
             f"{summary['tolerance']['quadratic']:g} first ({reached[fast]} steps)")
        if gd and gd["steps_to_tol"] is not None and gd["steps_to_tol_theory"]:
            miss = gd["steps_to_tol"] / gd["steps_to_tol_theory"] - 1
            s += (f"; GD needs {gd['steps_to_tol']}, {abs(miss):.0%} "
                  f"{'fewer' if miss < 0 else 'more'} than the {gd['steps_to_tol_theory']:.0f} of "
                  f"its rate {gd['rate_theory']:.4f}, because the estimate puts all of f0 in the "
                  f"slowest eigendirection")
        out.append(s + ".")
    div = [bool(x) for x in gd["diverged"]] if gd else []
    if any(div):
        i = div.index(True)
        ok = f"{gd['lrs'][i - 1]:.3g} converges and " if i > 0 else ""
        out.append(f"GD is stable iff lr < 2/kappa = {qs['gd_threshold']:.3g}: on the grid "
                   f"{ok}{gd['lrs'][i]:.3g} diverges.")
    fin = {n: v["final_loss"] for n, v in net.items() if v["final_loss"] is not None}
    if fin:
        lo, hi = min(fin, key=fin.get), max(fin, key=fin.get)
        out.append(f"On {data}, at each optimizer's best lr, {lo} ends lowest ({fin[lo]:.3g}) "
                   f"and {hi} highest ({fin[hi]:.3g}).")
    out.append(_twin_words(summary["manual_vs_optax"], summary["precision"], left_out=False))
    return out


def readme(record: dict) -> str:
    """The README's block: the recorded run's numbers (float32: the table and the claims;
    float64: the manual-vs-optax claim)."""
    s = record["summary"]
    data = next(k for k in s["problems"] if k != "quadratic")
    if s["precision"] != "float32":
        return (f"`{record['command']}`: " + _twin_words(s["manual_vs_optax"], s["precision"]))
    rows = [[p, n, v["best_lr"], v["final_loss"], _steps(v["steps_to_tol"]),
             "-" if not v.get("steps_to_tol_theory") else round(v["steps_to_tol_theory"]),
             v["max_abs_diff_manual_vs_optax"]]
            for p in (data, "quadratic") for n, v in s["problems"][p].items()]
    table = report.markdown_table(["problem", "optimizer", "best lr", "final loss",
                                   "steps to tol", "theory", "max|manual-optax| at best lr"],
                                  rows)
    return (f"Measured by `{record['command']}` ({s['precision']}, {s['runs']} runs):\n\n"
            + table + "\n" + " ".join(shows(s, data)))
