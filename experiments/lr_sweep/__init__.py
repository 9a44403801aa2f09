"""Where does gradient descent stop converging as the learning rate grows?

Question: sweep the learning rate over several decades (x several seeds) and find the largest
one that still converges; compare it with the theory.
Theory: on a quadratic loss (linear models + MSE) with Hessian H = (2/m) Xt Xt^T, GD moves each
eigendirection by a factor 1 - lr*lambda, so it converges iff lr < 2/lambda_max(H) (exact).
CS230 momentum is stable iff lr (1 - beta) lambda_max < 2 (1 + beta). For nonlinear models
the same bound with the sharpness (top Hessian eigenvalue, by Lanczos in float64) at
initialization is only a lower bound: at large lr the sharpness falls early in training
(catapult dynamics), so GD survives above it; the sharpness is tracked along the runs at the
bracket to show it.
Divergence: a run diverged if its loss became non-finite, ended above divergence_factor x its
initial loss, or grew by more than growth_factor over the last growth_window of training. On a
quadratic, an lr a fraction d above 2/lambda_max multiplies the loss by about e^(4d) per step,
so the growth rule resolves d >= ln(growth_factor) / (4 x window steps) once the unstable mode
dominates (the summary reports it); the final-vs-initial rule alone is biased upward on short
runs, where the other modes' decay hides the growth.
Expected: runs below the threshold converge, runs above it blow up; the measured threshold
(geometric midpoint between the largest lr where no seed diverged and the smallest where
all did) lies within one grid step of the theory when the theory is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bpexp import render, report
from bpexp.errors import UserError
from bpexp.experiments.lr_sweep.page import page  # noqa: F401  (the run page's figures)
from bpexp.experiments.lr_sweep.text import (  # noqa: F401  (readme: README's block)
    curves_title,
    final_title,
    readme,
    shows,
)
if TYPE_CHECKING:
    from bpexp.experiments.lr_sweep.run import Result

# the computation (JAX) loads on first use, so the figure helper that draws this experiment's
# PNGs (bpexp.render) imports matplotlib and this package without JAX
_RUN = ("Result", "compute", "interval", "refined", "refine", "refine_spec", "summarize",
        "track_sharpness")


def __getattr__(name):
    if name in _RUN:
        from bpexp.experiments.lr_sweep import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

USES = ("model", "data", "optimizer", "train", "sweep")  # make.check builds them first
# the numbers a comparison table shows for a run (bpexp.compare)
HEADLINE = ("threshold_theory", "threshold_measured", "threshold_refined", "best_lr")
STREAMS = True   # the grid streams into metrics.zarr chunk by chunk: resumable, shardable


@dataclass
class Params:
    name: str = "lr_sweep"
    lanczos_iters: int = 60      # Lanczos steps for the nonlinear sharpness (float64)
    divergence_factor: float = 1.0  # diverged: final loss > factor * initial loss
    growth_factor: float = 2.0   # diverged: loss grew > this over the last growth_window
    growth_window: float = 0.25  # fraction of training at its end
    track_every: int = 0         # nonlinear gd: sharpness along the bracket runs every k steps
                                 # (0: steps / 25)
    refine_rounds: int = 3       # vectorized bisection rounds inside the coarse bracket
    refine_tol: float = 0.002    # stop once hi / lo - 1 <= this
    refine_max_steps: int = 2500   # a round trains up to this long to resolve its lr spacing


def _finite_above(lo):
    return lambda x: math.isfinite(x) and x > lo


# experiment key -> (test, what is allowed); inf would turn a divergence rule off
RULES = {
    "lanczos_iters": (lambda x: 2 <= x <= 1000, "an int in [2, 1000]"),
    "divergence_factor": (_finite_above(0), "a finite number > 0"),
    "growth_factor": (_finite_above(1), "a finite number > 1"),
    "growth_window": (lambda x: 0 < x <= 1, "a number in (0, 1]"),
    "refine_rounds": (lambda x: 0 <= x <= 20, "an int in [0, 20]"),
    "refine_max_steps": (lambda x: 1 <= x <= 10**6, "an int in [1, 1000000]"),
    "refine_tol": (_finite_above(0), "a finite number > 0"),
}


def validate(cfg):
    """The shared sections (every optimizer of the table has a row here) are checked by
    config/make; these are the experiment's own keys."""
    P = cfg.experiment
    for key, (ok, allowed) in RULES.items():
        if not ok(getattr(P, key)):
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; "
                            f"allowed: {allowed}")
    if P.track_every < 0 or (P.track_every and cfg.train.steps % P.track_every):
        raise UserError(f"experiment.track_every={P.track_every} is not allowed; allowed: 0 or "
                        f"an int >= 1 that divides train.steps={cfg.train.steps}")


# ---------------------------------------------------------------- compute


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    """The grid is already in metrics.zarr (streamed; ``diverged`` added by summarize)."""
    from bpexp import optim
    from bpexp.experiments.lr_sweep.run import interval, refined

    g = res.stats
    held, resolution = interval(res, cfg.experiment)
    return {"lrs": res.lrs, "diverged_fraction": res.frac, "final_loss_median": res.med,
            "optimizer": cfg.optimizer.name,
            "theory_bound": optim.OPTIMIZERS[cfg.optimizer.name].bound_doc or None,
            "lambda_max": res.lam, "threshold_theory": res.thr,
            "threshold_measured": res.thr_meas, "theory_kind": res.kind,
            "threshold_bracket": res.bracket, "grid_step_ratio": res.step_ratio,
            "measured_over_theory": (res.thr_meas / res.thr) if res.thr and res.thr_meas else None,
            "threshold_refined": refined(res), "refined_bracket": list(res.rounds[-1][:2])
            if res.rounds else res.bracket, "refine_rounds": len(res.rounds),
            "refine_steps": [int(r[2]) for r in res.rounds],
            # the growth rule's resolution holds on quadratic losses only
            "threshold_interval": held if res.kind == "exact" else None,
            "refined_resolution": resolution,
            "refined_over_theory": (refined(res) / res.thr) if res.thr and refined(res) else None,
            "steps_to_resolve_refine_tol": math.log(cfg.experiment.growth_factor) / (
                4 * cfg.experiment.refine_tol * cfg.experiment.growth_window),
            "divergence_rule": {"factor": cfg.experiment.divergence_factor,
                                "growth_factor": cfg.experiment.growth_factor,
                                "growth_window": cfg.experiment.growth_window,
                                "quadratic_resolution": res.resolution},
            "sharpness_along_bracket": None if res.track is None else {
                "seed": int(res.seeds[0]), "lrs": res.track["lrs"], "steps": res.track["steps"],
                "sharpness": dict(zip(("lo", "hi"), res.track["sharpness"])),
                "final_over_2_over_lr": dict(zip(("lo", "hi"), [
                    float(sh[-1] * lr / 2) for sh, lr in zip(res.track["sharpness"],
                                                             res.track["lrs"])]))},
            "regimes": {k: v.tolist() for k, v in res.regimes.items()},   # runs per lr
            "lr_over_2_over_lambda": (np.asarray(res.lrs) * res.lam / 2).tolist(),
            "best_lr": float(res.lrs[res.best]), "runs": g["runs"], "chunks": g["chunks"],
            "runs_per_chunk": g["layout"]["runs_per_chunk"],
            "chunks_computed_by_finalizer": g["chunks_computed"],
            "sweep_s": g["run_s"], "compile_s": g["compile_s"],
            # the refinement rounds' engine seconds (their sweeps and any compile)
            "refine_sweep_s": res.refine_s.get("run_s", 0.0),
            "refine_compile_s": res.refine_s.get("compile_s", 0.0)}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    """Long because it writes the terminal table and report.md's sections in reading order;
    each section is a few lines over the same values."""
    from bpexp.experiments._common import question

    s, lrs, good = summary, res.lrs, res.best
    # too_small_good_too_large.png (run.THREE_LRS_PNG) is drawn by compute, before the
    # refinement; these by the figure helper when one runs (bpexp.render) while the report is
    # written
    figs = ["loss_curves.png", "final_loss_vs_lr.png", "too_small_good_too_large.png"]
    draw = "bpexp.experiments.lr_sweep.figures:"
    render.draw(draw + "loss_curves_by_lr", res.steps, res.curves, lrs, run.figure(figs[0]),
                title=curves_title(s, cfg.model.name, cfg.data.name, int(res.seeds[0])),
                thr=s["threshold_refined"] or res.thr)
    render.draw(draw + "final_vs_lr", lrs, res.conv, res.frac, res.thr, res.kind, res.thr_meas,
                run.figure(figs[1]), s["threshold_refined"] if res.rounds else None,
                title=final_title(s), bracket=s["refined_bracket"] if res.rounds else None)

    if res.track is not None:
        figs.append("sharpness_at_bracket.png")
        render.draw(draw + "fig_track", res.track, res.lam, run.figure(figs[-1]),
                    title=f"{cfg.model.name} on {cfg.data.name}: sharpness along GD at the "
                          f"bracket (seed {int(res.seeds[0])}, float64)")
    lo, hi = res.bracket
    bound = ", momentum bound" if cfg.optimizer.name == "momentum" else ""
    label = {"exact": "exact", "estimate": "lower bound (sharpness at init)", "none": "none"}
    rows = [["lambda_max of the loss Hessian", res.lam, label[res.kind]],
            [f"threshold, theory (2/lambda_max{bound})", res.thr, label[res.kind]],
            ["threshold, measured (geometric midpoint)", res.thr_meas,
             f"between {report.fmt(lo)} and {report.fmt(hi)}"],
            ["measured / theory", (res.thr_meas / res.thr) if res.thr and res.thr_meas else None,
             f"bracket ratio x{res.step_ratio:.3f}" if res.step_ratio else ""],
            ["threshold, refined (vectorized bisection)", s["threshold_refined"],
             f"{s['refine_rounds']} rounds ({'/'.join(map(str, s['refine_steps']))} steps), "
             f"bracket {s['refined_bracket'][0]:.6g} - {s['refined_bracket'][1]:.6g}"
             if s["refined_bracket"][0] and s["refined_bracket"][1] else ""],
            ["refined / theory", s["refined_over_theory"],
             f"threshold in [{s['threshold_interval'][0]:.6g}, {s['threshold_interval'][1]:.6g}]"
             f" (growth rule resolves {s['refined_resolution']:.1e})"
             if s["threshold_interval"] and s["threshold_interval"][0] else ""],
            ["best lr (lowest median final loss)", s["best_lr"],
             f"final loss {report.fmt(float(res.med[good]))}"],
            ["runs", s["runs"], f"{s['sweep_s']:.2f} s after {s['compile_s']:.2f} s compile"]]
    if res.track is not None:
        for name, lr, sh in zip(("lo", "hi"), res.track["lrs"], res.track["sharpness"]):
            rows.append([f"sharpness along GD at lr {lr:.4g} ({name})",
                         float(np.nanmax(sh)), f"init {sh[0]:.4g} -> end {sh[-1]:.4g}; "
                                               f"2/lr = {2 / lr:.4g}"])
    report.print_table("lr_sweep: theory vs measurement", ["quantity", "value", "note"], rows)
    per_lr = [[float(a), float(b), float(c)] for a, b, c in zip(lrs, res.frac, res.med)]
    batch = "full" if res.batch == res.m else res.batch
    run.save_report(report.report(
        "Learning-rate sweep", question(__doc__), run.reproduce(),
        [("Setup", f"model `{cfg.model.name}`, data `{cfg.data.name}` (n={res.n}, m={res.m}), "
                   f"optimizer `{cfg.optimizer.name}` ({cfg.optimizer.impl}), {cfg.train.steps} "
                   f"steps, {len(lrs)} learning rates x {res.runs_per_lr} runs, batch {batch}, "
                   f"{cfg.precision} (theory always float64). A run diverged if its loss became "
                   "non-finite, ended above "
                   f"{cfg.experiment.divergence_factor:g} x its initial loss, or grew by more "
                   f"than x{cfg.experiment.growth_factor:g} over the last "
                   f"{cfg.experiment.growth_window:g} of training (on a quadratic this resolves "
                   f"lr / threshold - 1 >= {res.resolution:.2g}). For nonlinear models the "
                   "threshold from the sharpness at initialization is a lower bound: at large "
                   "lr the sharpness falls early in training (catapult), see the tracked "
                   "sharpness."),
         ("Theory vs measurement", report.markdown_table(["quantity", "value", "note"], rows)),
         ("Per learning rate", report.markdown_table(["lr", "diverged fraction",
                                                       "median final loss"], per_lr))],
        figs, shows=shows(s, cfg.data.name)))


