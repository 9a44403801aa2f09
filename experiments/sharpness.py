"""Edge of stability: does full-batch GD drive the sharpness up to 2/lr and hold it there?

Question: train a tanh MLP with MSE on digits by full-batch GD at a few learning rates and
track the sharpness (largest eigenvalue of the loss Hessian) along the way. Where does it go?
Theory (Cohen et al., ICLR 2021): on a quadratic, GD is stable iff sharpness < 2/lr. For
neural nets with MSE the sharpness first rises ("progressive sharpening") until it reaches
about 2/lr, then hovers at or just above 2/lr ("edge of stability") while the loss keeps
falling, non-monotonically, over long horizons.
Measurement: sharpness by power iteration on Hessian-vector products (forward-over-reverse,
jvp of grad, as in bpexp.theory.sharpness), every ``every`` steps, warm-started from the
previous eigenvector, inside one jitted lax.scan vmapped over the learning rates (one compile).
Expected: each sharpness curve climbs to its dashed 2/lr line and then hovers around it: the
median of sharpness * lr / 2 over the last third of training is close to 1 (about 0.9-1.1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from bpexp import make, plots, report
from bpexp.errors import UserError
from bpexp.experiments._common import command, load_data, question
from bpexp.plots import plt

USES = ("model", "data", "optimizer", "train")  # make.check builds them first
INT32_MAX = 2**31 - 1


@dataclass
class Params:
    name: str = "sharpness"
    lrs: Any = field(default_factory=lambda: [0.15, 0.25, 0.35])
    every: int = 10          # measure the sharpness every k GD steps
    power_iters: int = 10    # warm-started power-iteration steps per measurement
    check_iters: int = 200   # cold power iteration at the final parameters (accuracy check)
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
    for key in ("power_iters", "check_iters"):  # loop bounds enter the scan as int32
        if not 1 <= getattr(P, key) <= INT32_MAX:
            raise UserError(f"experiment.{key}={getattr(P, key)} is not allowed; "
                            f"allowed: an int in [1, {INT32_MAX}]")
    if not 0 < P.late_fraction <= 1:
        raise UserError(f"experiment.late_fraction={P.late_fraction!r} is not allowed; "
                        "allowed: a number in (0, 1]")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not allowed; sharpness trains "
                        "with gd (edge of stability is a GD effect)")
    if cfg.train.batch_size != 0:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not allowed; sharpness needs "
                        "full-batch GD (0)")


def power_iteration(hvp, v, iters):
    """``iters`` (may be traced) steps of v <- Hv / ||Hv|| from ``v`` (warm start), then
    (v^T H v, v). Converges to the eigenvalue of largest magnitude at rate
    |lambda_2 / lambda_1| per step."""
    def body(_, v):
        w = hvp(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(w.dtype).tiny)

    v = lax.fori_loop(0, iters, body, v / jnp.linalg.norm(v))
    return jnp.vdot(v, hvp(v)), v


def make_gd_with_sharpness(loss_fn, grad_fn, init_fn, steps, every, iters, check_iters):
    """``run(lr, key, X, Y) -> dict`` for ONE learning rate, X: (n, m), Y: (d_out, m): params
    from ``init_fn(key)``, full-batch GD for ``steps`` steps, the loss at every step and the
    sharpness (Rayleigh quotient after ``iters`` power-iteration steps warm-started from the
    previous eigenvector) at steps 0, every, ..., steps. ``grad_fn`` is the training gradient
    (hand-derived); the Hessian-vector product is jvp of jax.grad. One more measurement at the
    final parameters starts cold (random vector) and runs ``check_iters`` steps: the accuracy
    check of the warm start. All measurements share one call site (blocks with lr 0 at the
    end), so XLA compiles the power iteration once. Returns sharpness [steps / every + 1],
    loss [steps + 1] and sharpness_end_check (a scalar)."""
    n_blocks = steps // every

    def run(lr, key, X, Y):
        k_init, k_v = jax.random.split(key)
        p0 = init_fn(k_init)
        flat0, unravel = ravel_pytree(p0)
        v0 = jax.random.normal(k_v, flat0.shape, flat0.dtype)

        def f(x):
            return loss_fn(unravel(x), X, Y)

        g = jax.grad(f)

        def gd_step(carry, _):
            x, a = carry
            p = unravel(x)
            grad, _ = ravel_pytree(grad_fn(p, X, Y))
            return (x - a * grad, a), loss_fn(p, X, Y)   # w -= lr g

        def block(carry, xs):
            x, v = carry
            train, n_iter, cold = xs
            lam, v = power_iteration(lambda u: jax.jvp(g, (x,), (u,))[1],   # H u
                                     jnp.where(cold, v0, v), n_iter)
            a = jnp.where(train, lr, 0).astype(x.dtype)  # the trailing blocks only measure
            (x, _), losses = lax.scan(gd_step, (x, a), None, length=every)
            return (x, v), (lam, losses)

        idx = jnp.arange(n_blocks + 2)
        xs = (idx < n_blocks, jnp.where(idx <= n_blocks, iters, check_iters),
              idx == n_blocks + 1)
        _, (lam, losses) = lax.scan(block, (flat0, v0), xs)
        loss = losses[: n_blocks + 1].reshape(-1)[: steps + 1]   # step 0..steps
        return {"sharpness": lam[: n_blocks + 1], "loss": loss, "sharpness_end_check": lam[-1]}

    return run


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
    sharpness: np.ndarray       # [lr, measurement] warm-started power iteration
    loss: np.ndarray            # [lr, step] full-batch training loss
    check: np.ndarray           # [lr] cold power iteration at the final parameters
    late_median: np.ndarray     # [lr] median sharpness over the late window
    late_ratio: np.ndarray      # [lr] median of sharpness * lr / 2 over the late window
    first_hit: list             # [lr] first step with sharpness >= 0.9 * 2/lr, or None
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
    one = make_gd_with_sharpness(model.loss, grad_fn, init_fn, cfg.train.steps, P.every,
                                 P.power_iters, P.check_iters)
    f = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))
    args = (jnp.asarray(lrs, dtype), jax.random.PRNGKey(cfg.seed), jnp.asarray(ds.X, dtype),
            jnp.asarray(ds.Y, dtype))
    with run.timed("compile"):
        t0 = time.perf_counter()
        compiled = f.lower(*args).compile()
        compile_s = time.perf_counter() - t0
    with run.timed("train"):
        t0 = time.perf_counter()
        out = jax.tree_util.tree_map(np.asarray, compiled(*args))
        run_s = time.perf_counter() - t0

    sharp, loss = out["sharpness"], out["loss"]
    s_steps = np.arange(sharp.shape[1]) * P.every
    late = late_mask(s_steps, P.late_fraction)
    first_hit = []
    for i, lr in enumerate(lrs):
        hit = np.nonzero(sharp[i] >= 0.9 * 2 / lr)[0]
        first_hit.append(int(s_steps[hit[0]]) if hit.size else None)
    return Result(n=ds.n, m=ds.m, lrs=lrs, s_steps=s_steps, l_steps=np.arange(loss.shape[1]),
                  sharpness=sharp, loss=loss, check=out["sharpness_end_check"],
                  late_median=np.array([np.nanmedian(sh[late]) for sh in sharp]),
                  late_ratio=np.array([late_ratio_median(sharp[i], s_steps, lr, P.late_fraction)
                                       for i, lr in enumerate(lrs)]),
                  first_hit=first_hit, compile_s=compile_s, run_s=run_s)


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    run.save_metrics(sharpness=res.sharpness, sharpness__dims=np.array(("lr", "measurement")),
                     loss=res.loss, loss__dims=np.array(("lr", "step")),
                     sharpness_end_check=res.check, axis__lr=res.lrs,
                     axis__measurement_step=res.s_steps, axis__step=res.l_steps)
    keys = [str(float(lr)) for lr in res.lrs]
    return {"lrs": res.lrs, "two_over_lr": 2 / res.lrs, "steps": res.s_steps,
            "sharpness": dict(zip(keys, res.sharpness)),
            "loss_steps": res.l_steps, "loss": dict(zip(keys, res.loss)),
            "late_ratio_median": {k: float(r) for k, r in zip(keys, res.late_ratio)},
            "late_fraction": cfg.experiment.late_fraction,
            "first_step_sharpness_ge_0.9_2_over_lr": dict(zip(keys, res.first_hit)),
            "sharpness_end_check": {k: float(c) for k, c in zip(keys, res.check)},
            "m": res.m, "compile_s": res.compile_s, "run_s": res.run_s}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, mc, lrs = cfg.experiment, cfg.model, res.lrs
    figs = ["sharpness.png"]
    title = (f"{mc.name} ({mc.activation}, {mc.output}, hidden {mc.hidden} x {mc.depth}) on "
             f"{cfg.data.name} (m={res.m}), full-batch GD")
    fig_sharpness(res.s_steps, res.sharpness, res.l_steps, res.loss, lrs, title,
                  run.figure(figs[0]))

    header = ["lr", "2/lr (theory)", "sharpness at init", "first step >= 0.9 x 2/lr",
              "late median sharpness", "late median ratio lr*S/2", "final loss",
              "end: warm vs cold"]
    rows = [[float(lr), 2 / lr, float(res.sharpness[i, 0]), res.first_hit[i],
             float(res.late_median[i]), float(res.late_ratio[i]), float(res.loss[i, -1]),
             f"{res.sharpness[i, -1]:.4g} vs {res.check[i]:.4g}"] for i, lr in enumerate(lrs)]
    report.print_table("sharpness: edge of stability (theory: late ratio ~ 1)", header, rows)
    run.save_report(report.report(
        "Edge of stability: sharpness under full-batch GD",
        question(__doc__), command(cfg),
        [("Setup", f"model `{mc.name}` (activation {mc.activation}, output {mc.output}, hidden "
                   f"{mc.hidden}, depth {mc.depth}, init {mc.init}), data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, one-hot targets), loss (1/m) sum (Yhat - Y)^2, "
                   f"full-batch GD for {cfg.train.steps} steps at lr in "
                   f"{', '.join(f'{x:g}' for x in lrs)}, seed {cfg.seed}, {cfg.precision}. "
                   f"Sharpness every {P.every} steps: {P.power_iters} power-iteration steps on "
                   "Hessian-vector products, warm-started from the previous eigenvector. Late "
                   f"window: the last {P.late_fraction:.3g} of training. The last column "
                   "compares the warm-started estimate at the end with a cold "
                   f"{P.check_iters}-step power iteration. One compile "
                   f"({summary['compile_s']:.2f} s), run {summary['run_s']:.2f} s."),
         ("Theory vs measurement", report.markdown_table(header, rows))],
        figs))


def fig_sharpness(s_steps, sharp, l_steps, loss, lrs, title, path):
    """Top: ``sharp[lr, measurement]`` vs ``s_steps`` per lr of ``lrs[lr]`` with its 2/lr as a
    dashed line of the same colour; bottom: the training loss ``loss[lr, step]`` (log) vs
    ``l_steps``."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8.5, 7), sharex=True, height_ratios=[3, 2])
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(lrs)))
    for i, lr in enumerate(lrs):
        a1.plot(s_steps, sharp[i], color=colors[i], lw=1.4, label=f"lr = {lr:g}")
        a1.axhline(2 / lr, color=colors[i], ls="--", lw=1.2, label=f"2/lr = {2 / lr:.3g}")
        a2.plot(l_steps, plots.positive(loss[i]), color=colors[i], lw=1)
    top = np.nanmax(np.where(np.isfinite(sharp), sharp, np.nan))
    a1.set_ylim(0, 1.15 * max(top, 2 / np.min(lrs)))
    a1.set_ylabel("sharpness = top Hessian eigenvalue")
    a1.set_title(title, fontsize=9)
    a1.legend(fontsize=8, ncol=2)
    a2.set_yscale("log")
    a2.set_ylabel("training loss, MSE (log)")
    a2.set_xlabel("step (full-batch GD)")
    fig.suptitle("Edge of stability: sharpness rises to 2/lr, then hovers there", fontsize=10)
    return plots.save(fig, path)
