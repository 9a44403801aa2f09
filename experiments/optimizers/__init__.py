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
Each optax twin is the same update written differently (see bpexp.optim), so trajectories
agree to rounding: ~1e-6 relative in float32, ~1e-15 in float64.
Expected: on the quadratic GD zig-zags across the valley and needs about its predicted
ln(tol/f0) / (2 ln rho) steps; momentum (and, at the defaults, Adam) reach the tolerance in
fewer; on digits plain GD, capped by its stability bound, ends with the highest loss and Adam
with the lowest; manual vs optax differences are at rounding level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpexp import optim, report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.optimizers.figures import fig_best_curves, fig_final_vs_lr, fig_paths
from bpexp.experiments.optimizers.page import page  # noqa: F401  (the run page's figures)
from bpexp.experiments.optimizers.run import (
    Fit,
    Result,
    compute,  # noqa: F401  (the experiment contract)
    dataset,
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
                "max_abs_diff_manual_vs_optax_all_lrs": f.diff_grid[0], **extra}

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
    figs = ["loss_at_best_lr.png", "final_loss_vs_lr.png", "quadratic_paths.png"]
    title_net = (f"{cfg.model.name} on {cfg.data.name} (m={res.m}), {len(res.seeds)} seeds, "
                 f"median")
    title_q = f"quadratic, kappa={P.quad_kappa:g}, rotated {P.quad_angle:g} deg"
    fig_best_curves(names, res.steps, net, res.tol, quad, P.quad_tol, title_net, title_q,
                    run.figure(figs[0]))
    fig_final_vs_lr(names, net, quad, title_net, title_q, res.bounds, run.figure(figs[1]))
    n_path = min(P.path_steps, P.quad_steps)
    fig_paths(names, res.H, w0, quad, n_path,
              f"{title_q}: first {n_path} steps at each optimizer's best lr", run.figure(figs[2]))

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
         ("Manual vs optax over every lr of the grid",
          "The largest |manual - optax| over all lrs where neither diverged. In float32 it grows "
          "at lrs near the stability edge, where the dynamics amplify 1-ulp rounding differences "
          "(the two write the same update in a different order); in float64 it stays tiny.\n\n"
          + report.markdown_table(
              ["problem", "optimizer", "max|manual-optax| (all lrs)", "at best lr"],
              [[cfg.data.name, n, net[n].diff_grid[0], net[n].diff[0]] for n in names]
              + [["quadratic", n, quad[n].diff_grid[0], quad[n].diff[0]] for n in names]))],
        figs))


def _steps(v) -> int | str:
    return "not reached" if v is None else v


def _first_diverged(q: Fit | None) -> str:
    """'X ok, Y diverged' at the first diverged lr of a quadratic fit (or 'none diverged')."""
    if q is None or not q.diverged.any():
        return "none diverged in the grid"
    i = int(np.argmax(q.diverged))
    below = f"{q.lrs[i - 1]:.3g} ok, " if i > 0 else ""
    return f"{below}{q.lrs[i]:.3g} diverged"


