"""Where does gradient descent stop converging as the learning rate grows?

Question: sweep the learning rate over several decades (x several seeds) and find the largest
one that still converges; compare it with the theory.
Theory: on a quadratic loss (linear models + MSE) with Hessian H = (2/m) Xt Xt^T, GD moves each
eigendirection by a factor 1 - lr*lambda, so it converges iff lr < 2/lambda_max(H) (exact).
CS230 momentum is stable iff lr (1 - beta) lambda_max < 2 (1 + beta). For nonlinear models
the same bound with the sharpness (top Hessian eigenvalue) at initialization is an estimate.
Expected: runs below the threshold converge, runs above it blow up; the measured threshold
(geometric midpoint between the largest lr where no seed diverged and the smallest where
all did) lies within one grid step of the theory when the theory is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from bpexp import make, plots, report, sweep, theory
from bpexp.errors import UserError
from bpexp.experiments._common import best_lr_index, command, diverged_mask, finite_median, load_data, question


USES = ("model", "data", "optimizer", "train", "sweep")  # config sections read (make.check builds them first)


@dataclass
class Params:
    name: str = "lr_sweep"
    sharpness_iters: int = 100   # power-iteration steps for the nonlinear estimate
    divergence_factor: float = 1.0  # also diverged: final loss > factor * initial loss


def validate(cfg):
    if cfg.optimizer.name not in ("gd", "momentum", "rmsprop", "adam"):
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not supported by lr_sweep")


def threshold_theory(cfg, ds, model, spec, seeds, iters):
    """(lambda_max, threshold, kind); kind is exact | estimate | none."""
    quadratic = cfg.model.name in ("univariate", "multivariate")
    if quadratic:
        lam, kind = theory.lambda_max_quadratic(ds.X), "exact"
    else:
        # sharpness at init, median over the sweep's seeds (same init as train.make_run)
        X, Y = np.asarray(ds.X, np.float64), np.asarray(ds.Y, np.float64)
        lams = []
        for s in seeds:
            p = make.init_params(cfg, model, ds, int(s), dtype_=np.float64)
            lams.append(float(theory.sharpness(model.loss, p, X, Y, key=jax.random.PRNGKey(0),
                                               iters=iters)[0]))
        lam, kind = float(np.median(lams)), "estimate"
    o = cfg.optimizer
    if o.name == "gd":
        return lam, theory.gd_threshold(lam), kind
    if o.name == "momentum":
        return lam, theory.momentum_threshold(lam, o.beta), kind
    return lam, None, "none"  # rmsprop / adam: no classical step-size bound


def measured_threshold(lrs, frac):
    """Geometric midpoint between the largest lr where no seed diverged (below the first lr
    where all did) and the smallest lr where all seeds diverged."""
    all_bad = np.nonzero(frac >= 1.0)[0]
    if all_bad.size == 0:
        return None, None, None
    hi = lrs[all_bad[0]]
    ok = np.nonzero((frac == 0) & (lrs < hi))[0]
    if ok.size == 0:
        return None, None, float(hi)
    lo = lrs[ok[-1]]
    return float(np.sqrt(lo * hi)), float(lo), float(hi)


def run(cfg, run):
    P = cfg.experiment
    ds = load_data(cfg, run)
    model = make.model(cfg)
    spec = make.spec(cfg, ds)
    grid, fixed = make.grid(cfg)
    with run.timed("sweep"):
        res = sweep.run_grid(spec, ds.X, ds.Y, grid, fixed, devices=sweep.devices_for(cfg.device),
                             chunk_size=cfg.sweep.chunk_size, progress=cfg.sweep.progress, label="lr_sweep")
    with run.timed("theory"):
        lam, thr, kind = threshold_theory(cfg, ds, model, spec, grid.axes["seed"], P.sharpness_iters)

    lrs = grid.axes["lr"]
    loss, final = res.metrics["loss"], res.metrics["final_loss"]     # [lr, seed, (...), step]
    loss = loss.reshape(len(lrs), -1, loss.shape[-1])                 # other axes pooled as seeds
    final = final.reshape(len(lrs), -1)
    diverged = diverged_mask(loss, final, res.metrics["first_nonfinite"].reshape(len(lrs), -1),
                             P.divergence_factor)
    frac = diverged.mean(axis=1)
    med = finite_median(final, axis=1)
    thr_meas, lo, hi = measured_threshold(lrs, frac)
    step = float(lrs[1] / lrs[0]) if len(lrs) > 1 and cfg.sweep.lr is not None and not isinstance(cfg.sweep.lr, list) else None

    run.save_metrics(**res.npz(), diverged=diverged.reshape(res.metrics["final_loss"].shape),
                     diverged__dims=np.array(res.dims["final_loss"]))

    # ---- figures
    figs = ["loss_curves.png", "final_loss_vs_lr.png", "too_small_good_too_large.png"]
    steps = res.coords["step"]
    plots.loss_curves_by_lr(steps, loss[:, 0], lrs, run.figure(figs[0]),
                            title=f"{cfg.model.name} on {cfg.data.name}, {cfg.optimizer.name}: loss per lr (seed {int(grid.axes['seed'][0])})")
    plots.final_vs_lr(lrs, final, diverged, thr, kind, thr_meas, run.figure(figs[1]),
                      title=f"Final loss vs learning rate ({final.shape[1]} runs per lr)")
    good = best_lr_index(final, diverged) or 0  # every lr diverged: show the smallest
    small = int(np.argmin(np.abs(np.log(lrs) - np.log(lrs[good] / 30))))
    above = np.nonzero((frac > 0) & (lrs > lrs[good]))[0]
    large = int(above[0]) if above.size else len(lrs) - 1
    plots.three_lrs(steps, [loss[small], loss[good], loss[large]],
                    [lrs[small], lrs[good], lrs[large]], thr, run.figure(figs[2]))

    # ---- table and report
    rows = [["lambda_max of the loss Hessian", lam, kind],
            ["threshold, theory (2/lambda_max" + (", momentum bound" if cfg.optimizer.name == "momentum" else "") + ")", thr, kind],
            ["threshold, measured (geometric midpoint)", thr_meas, f"between {report.fmt(lo)} and {report.fmt(hi)}"],
            ["measured / theory", (thr_meas / thr) if thr and thr_meas else None,
             f"grid step x{step:.3f}" if step else ""],
            ["best lr (lowest median final loss)", float(lrs[good]), f"final loss {report.fmt(float(med[good]))}"],
            ["runs", res.stats["runs"], f"{res.stats['run_s']:.2f} s after {res.stats['compile_s']:.2f} s compile"]]
    report.print_table("lr_sweep: theory vs measurement", ["quantity", "value", "note"], rows)
    per_lr = [[float(a), float(b), float(c)] for a, b, c in zip(lrs, frac, med)]
    run.save_report(report.report(
        "Learning-rate sweep", question(__doc__), command(cfg),
        [("Setup", f"model `{cfg.model.name}`, data `{cfg.data.name}` (n={ds.n}, m={ds.m}), optimizer "
                   f"`{cfg.optimizer.name}` ({cfg.optimizer.impl}), {cfg.train.steps} steps, "
                   f"{len(lrs)} learning rates x {final.shape[1]} runs, batch "
                   f"{'full' if spec.batch == ds.m else spec.batch}, {cfg.precision}."),
         ("Theory vs measurement", report.markdown_table(["quantity", "value", "note"], rows)),
         ("Per learning rate", report.markdown_table(["lr", "diverged fraction", "median final loss"], per_lr))],
        figs))
    return {"lrs": lrs, "diverged_fraction": frac, "final_loss_median": med, "lambda_max": lam,
            "threshold_theory": thr, "threshold_measured": thr_meas, "theory_kind": kind,
            "threshold_bracket": [lo, hi], "grid_step_ratio": step, "best_lr": float(lrs[good]),
            "runs": res.stats["runs"], "sweep_s": res.stats["run_s"], "compile_s": res.stats["compile_s"]}
