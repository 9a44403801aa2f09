"""Edge of stability: does full-batch GD drive the sharpness up to 2/lr and hold it there?

Question: train a tanh MLP with MSE on digits by full-batch GD at a few learning rates and
track the sharpness (largest eigenvalue of the loss Hessian) along the way. Where does it go?
Theory (Cohen et al., ICLR 2021): on a quadratic, GD is stable iff sharpness < 2/lr. For
neural nets with MSE the sharpness first rises ("progressive sharpening") until it reaches
about 2/lr, then hovers at or just above 2/lr ("edge of stability") while the loss keeps
falling, non-monotonically, over long horizons.
Measurement: the top two Hessian eigenvalues by Lanczos (bpexp.theory.lanczos, full
reorthogonalization) on Hessian-vector products (forward-over-reverse, jvp of grad) every
``every`` steps, warm-started from the previous top Ritz vector, with the residual
||H y - theta y|| that bounds each value's error; one jitted lax.scan vmapped over the
learning rates and seeds (one compile). A cold Lanczos run at the end checks the warm ones.
Expected: each sharpness curve climbs to its dashed 2/lr line and then hovers around it: the
median of sharpness * lr / 2 over the last third of training is close to 1 (about 0.9-1.1)
for every lr and seed; the top two eigenvalues are close, so power iteration would mix them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from bpexp import make, plots, report, train
from bpexp.errors import UserError
from bpexp.experiments._common import load_data, question
from bpexp.experiments.sharpness import text
from bpexp.experiments.sharpness.text import readme  # noqa: F401  (README's block)

USES = ("model", "data", "optimizer", "train")  # make.check builds them first
INT32_MAX = 2**31 - 1


@dataclass
class Params:
    name: str = "sharpness"
    lrs: Any = field(default_factory=lambda: [0.1, 0.15, 0.25, 0.35])
    seeds: int = 3           # initializations per lr: seed, seed + 1, ...
    every: int = 20          # measure the sharpness every k GD steps
    lanczos_iters: int = 20  # warm-started Lanczos steps per measurement
    check_iters: int = 100   # cold Lanczos steps at the final parameters (accuracy check)
    late_fraction: float = 0.3333  # the "late" window: last fraction of training


def validate(cfg):
    P = cfg.experiment
    # distinct: the summary's per-lr dicts are keyed by str(lr)
    if not (P.lrs and all(0 < x < math.inf for x in P.lrs)
            and len(set(P.lrs)) == len(P.lrs)):
        raise UserError(f"experiment.lrs={P.lrs!r} is not allowed; allowed: a non-empty list of "
                        "distinct finite learning rates > 0")
    if P.every < 1 or cfg.train.steps % P.every:
        raise UserError(f"experiment.every={P.every} is not allowed; allowed: an int >= 1 that "
                        f"divides train.steps={cfg.train.steps}")
    if not 1 <= P.seeds <= 64:
        raise UserError(f"experiment.seeds={P.seeds} is not allowed; allowed: an int in [1, 64]")
    for key in ("lanczos_iters", "check_iters"):  # Krylov dimensions
        if not 2 <= getattr(P, key) <= 1000:
            raise UserError(f"experiment.{key}={getattr(P, key)} is not allowed; "
                            "allowed: an int in [2, 1000]")
    if not 0 < P.late_fraction <= 1:
        raise UserError(f"experiment.late_fraction={P.late_fraction!r} is not allowed; "
                        "allowed: a number in (0, 1]")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not allowed; sharpness trains "
                        "with gd (edge of stability is a GD effect)")
    if cfg.train.batch_size != 0:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not allowed; sharpness needs "
                        "full-batch GD (0)")


def late_mask(steps, late_fraction):
    """[measurement] bool from ``steps[measurement]``: the measurements in the last
    ``late_fraction`` of training, steps >= (1 - f) * last step (with a rounding margin, so
    that e.g. step 60 of 90 counts for f = 1/3)."""
    steps = np.asarray(steps, np.float64)
    return steps >= (1 - late_fraction) * steps[-1] - 1e-9 * max(steps[-1], 1.0)


def late_ratio_median(sharpness, steps, lr, late_fraction):
    """median of sharpness * lr / 2 (``sharpness``, ``steps``: [measurement]) over the
    measurements in the last ``late_fraction`` of training (steps >= (1 - late_fraction) *
    last step); NaN if none is finite."""
    late = late_mask(steps, late_fraction)
    r = np.asarray(sharpness, np.float64)[late] * lr / 2
    r = r[np.isfinite(r)]
    return float(np.median(r)) if r.size else float("nan")


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    n: int                      # features
    m: int                      # examples
    lrs: np.ndarray             # [lr]
    s_steps: np.ndarray         # [measurement] the step of each sharpness measurement
    l_steps: np.ndarray         # [step] 0..train.steps
    seeds: np.ndarray           # [seed]
    sharpness: np.ndarray       # [lr, seed, measurement] top eigenvalue (warm Lanczos)
    second: np.ndarray          # [lr, seed, measurement] second eigenvalue
    residual: np.ndarray        # [lr, seed, measurement] ||H y - theta y|| of the top one
    loss: np.ndarray            # [lr, seed, step] full-batch training loss
    check: np.ndarray           # [lr, seed] cold Lanczos at the final parameters
    check_residual: np.ndarray  # [lr, seed]
    late_ratio: np.ndarray      # [lr, seed] median of sharpness * lr / 2 over the late window
    first_hit: list             # [lr][seed] first step with sharpness >= 0.9 * 2/lr, or None
    compile_s: float            # the one compile
    run_s: float                # the compiled call


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = load_data(cfg, run)
    model = make.model(cfg)
    dtype = make.dtype(cfg)
    lrs = np.asarray(P.lrs, np.float64)
    hp = make.model_hparams(cfg, model)

    def init_fn(key):                                              # as in train.make_run
        return model.init(key, ds.n, ds.d_out, init_scale=cfg.model.init_scale, dtype=dtype,
                          **hp)

    grad_fn = model.grad if cfg.train.grad == "manual" else jax.grad(model.loss)
    one = train.gd_with_sharpness(model.loss, grad_fn, init_fn, cfg.train.steps, P.every,
                                 P.lanczos_iters, P.check_iters)
    f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, None, None)),   # seeds
                         in_axes=(0, None, None, None)))                   # lrs
    seeds = cfg.seed + np.arange(P.seeds)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.int32))
    args = (jnp.asarray(lrs, dtype), keys, jnp.asarray(ds.X, dtype), jnp.asarray(ds.Y, dtype))
    with run.timed("compile"):
        t0 = time.perf_counter()
        compiled = f.lower(*args).compile()
        compile_s = time.perf_counter() - t0
    with run.timed("train"):
        t0 = time.perf_counter()
        out = jax.tree_util.tree_map(np.asarray, compiled(*args))
        run_s = time.perf_counter() - t0

    sharp, loss = out["sharpness"], out["loss"]            # [lr, seed, ...]
    s_steps = np.arange(sharp.shape[-1]) * P.every
    first_hit = [[_first(s_steps, sharp[i, j] >= 0.9 * 2 / lr) for j in range(len(seeds))]
                 for i, lr in enumerate(lrs)]
    ratio = np.array([[late_ratio_median(sharp[i, j], s_steps, lr, P.late_fraction)
                       for j in range(len(seeds))] for i, lr in enumerate(lrs)])
    return Result(n=ds.n, m=ds.m, lrs=lrs, s_steps=s_steps, l_steps=np.arange(loss.shape[-1]),
                  seeds=seeds, sharpness=sharp, second=out["second"], residual=out["residual"],
                  loss=loss, check=out["end_check"], check_residual=out["end_check_residual"],
                  late_ratio=ratio, first_hit=first_hit, compile_s=compile_s, run_s=run_s)


def _first(steps, hit):
    idx = np.nonzero(hit)[0]
    return int(steps[idx[0]]) if idx.size else None


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    # two step axes: the loss at every GD step (dim ``step``), the eigenvalues every
    # ``experiment.every`` steps (dim ``measurement_step``, its coordinate the step number)
    per, at_end = ("lr", "seed", "measurement_step"), ("lr", "seed")
    run.save_metrics(xr.Dataset(
        {"sharpness": (per, res.sharpness), "second": (per, res.second),
         "residual": (per, res.residual), "loss": (("lr", "seed", "step"), res.loss),
         "end_check": (at_end, res.check), "end_check_residual": (at_end, res.check_residual)},
        coords={"lr": res.lrs, "seed": res.seeds, "measurement_step": res.s_steps,
                "step": res.l_steps}))
    keys = [str(float(lr)) for lr in res.lrs]
    late = late_mask(res.s_steps, cfg.experiment.late_fraction)
    gap = (res.sharpness - res.second)[..., late] / res.sharpness[..., late]
    return {"lrs": res.lrs, "two_over_lr": 2 / res.lrs, "seeds": res.seeds, "steps": res.s_steps,
            "sharpness": dict(zip(keys, res.sharpness)),        # [seed][measurement]
            "second_eigenvalue": dict(zip(keys, res.second)),
            "loss_steps": res.l_steps, "loss": dict(zip(keys, res.loss)),
            "late_fraction": cfg.experiment.late_fraction,
            "late_ratio": dict(zip(keys, res.late_ratio)),       # [seed]
            "late_ratio_median": {k: float(np.nanmedian(r)) for k, r in zip(keys, res.late_ratio)},
            "late_ratio_range": {k: [float(np.nanmin(r)), float(np.nanmax(r))]
                                 for k, r in zip(keys, res.late_ratio)},
            "late_top2_gap_median": {k: float(np.nanmedian(g)) for k, g in zip(keys, gap)},
            "first_step_sharpness_ge_0.9_2_over_lr": dict(zip(keys, res.first_hit)),
            "sharpness_end_check": dict(zip(keys, res.check)),
            "max_rel_residual": float(np.nanmax(res.residual / np.abs(res.sharpness))),
            "lanczos_iters": cfg.experiment.lanczos_iters, "m": res.m,
            "compile_s": res.compile_s, "run_s": res.run_s}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, mc, lrs, S = cfg.experiment, cfg.model, res.lrs, summary
    figs = ["sharpness.png"]
    title = (f"{mc.name} ({mc.activation}, {mc.output}, hidden {mc.hidden} x {mc.depth}) on "
             f"{cfg.data.name} (m={res.m}), full-batch GD, {len(res.seeds)} seeds")
    fig_sharpness(res.s_steps, res.sharpness, res.l_steps, res.loss, lrs, title,
                  run.figure(figs[0]), headline=text.title(summary))

    header = ["lr", "2/lr (theory)", "sharpness at init", "first step >= 0.9 x 2/lr",
              "late ratio lr*S/2 (median)", "late ratio range over seeds",
              "(l1 - l2)/l1 late", "final loss (median)", "end: warm vs cold"]
    rows = []
    for i, lr in enumerate(lrs):
        k = str(float(lr))
        lo, hi = S["late_ratio_range"][k]
        rows.append([float(lr), 2 / lr, float(np.median(res.sharpness[i, :, 0])),
                     " ".join(str(h) for h in res.first_hit[i]), S["late_ratio_median"][k],
                     f"{lo:.3f} - {hi:.3f}", S["late_top2_gap_median"][k],
                     float(np.median(res.loss[i, :, -1])),
                     f"{res.sharpness[i, 0, -1]:.5g} vs {res.check[i, 0]:.5g}"])
    report.print_table("sharpness: edge of stability (theory: late ratio ~ 1)", header, rows)
    run.save_report(report.report(
        "Edge of stability: sharpness under full-batch GD",
        question(__doc__), run.reproduce(),
        [("Setup", f"model `{mc.name}` (activation {mc.activation}, output {mc.output}, hidden "
                   f"{mc.hidden}, depth {mc.depth}, init {mc.init}), data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, one-hot targets), loss (1/m) sum (Yhat - Y)^2, "
                   f"full-batch GD for {cfg.train.steps} steps at lr in "
                   f"{', '.join(f'{x:g}' for x in lrs)}, seeds "
                   f"{', '.join(str(int(x)) for x in res.seeds)}, {cfg.precision}. "
                   f"Every {P.every} steps the top two Hessian eigenvalues by {P.lanczos_iters} "
                   "Lanczos steps (full reorthogonalization) on Hessian-vector products, "
                   "warm-started from the previous top Ritz vector; the largest residual "
                   f"||H y - theta y|| / theta over all measurements is "
                   f"{S['max_rel_residual']:.1e}, which bounds the error of every value. Late "
                   f"window: the last {P.late_fraction:.3g} of training. The last column "
                   "compares the warm estimate at the end (first seed) with a cold "
                   f"{P.check_iters}-step Lanczos run. (l1 - l2)/l1: the relative gap between "
                   "the top two eigenvalues late in training (small: power iteration would "
                   f"mix them). One compile ({S['compile_s']:.2f} s), run {S['run_s']:.2f} s."),
         ("Theory vs measurement", report.markdown_table(header, rows))],
        figs, shows=text.shows(summary)))


def fig_sharpness(s_steps, sharp, l_steps, loss, lrs, title, path, headline):
    """Top: ``sharp[lr, seed, measurement]`` vs ``s_steps``, every seed, per lr of ``lrs[lr]``
    with its 2/lr as a theory line of the same colour; bottom: the training loss
    ``loss[lr, seed, step]`` (log) vs ``l_steps``; ``headline`` (the computed takeaway) on top."""
    fig, (a1, a2) = plots.slide(2, 1, sharex=True, height_ratios=[3, 2])
    for i, lr in enumerate(lrs):
        st = plots.style(i)
        for j in range(sharp.shape[1]):
            a1.plot(s_steps, sharp[i, j], color=st["color"], lw=1.6, alpha=0.85,
                    label=f"lr = {lr:g}" if j == 0 else None)
            a2.plot(l_steps, plots.positive(loss[i, j]), color=st["color"], lw=1.2, alpha=0.8)
        plots.theory_line(a1, y=2 / lr, color=st["color"], label=f"2/lr = {2 / lr:.3g}")
    top = np.nanmax(np.where(np.isfinite(sharp), sharp, np.nan))
    a1.set_ylim(0, 1.15 * max(top, 2 / np.min(lrs)))
    a1.set_ylabel("sharpness")
    plots.legend_outside(a1, ncol=1)
    a2.set_yscale("log")
    a2.set_ylabel("training loss (log)")
    a2.set_xlabel("step (full-batch GD)")
    plots.note(a2, title, "lower left")
    fig.suptitle(headline)
    return plots.save(fig, path)


from bpexp.experiments.sharpness.page import page  # noqa: E402,F401  (the run page's figures)
