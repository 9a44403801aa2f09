"""The adaptive-EoS computation: one jitted scan for the whole grid (each row's optimizer
picked by index), vmapped over the hyperparameter rows and seeds, measuring the
preconditioned and raw sharpness along it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from bpexp import make, optim, train
from bpexp.experiments.adaptive_eos.theory import (
    ADAPTIVE,
    NAMES,
    preconditioner,
    sharpness_pair,
    threshold,
)


def with_sharpness(name, loss_fn, grad_fn, init_fn, steps, every, iters):
    """``run(hp, key, X, Y) -> dict`` for ONE run of optimizer ``name`` (bpexp.optim, manual)
    with hyperparameters ``hp`` (traced scalars, lr included): params from ``init_fn``, full
    batch, ``steps`` steps (train.loop), the loss at every step, and at steps 0, every, ...,
    steps: the preconditioned sharpness lambda_max(P^-1/2 H P^-1/2), P the preconditioner of
    the step taken from those parameters, and the raw sharpness lambda_max(H), each by
    ``iters`` Lanczos steps warm-started from its previous Ritz vector, with residuals
    (theory.sharpness_pair). For a method without a preconditioner (P = I) the two are one
    measurement.

    ``name`` a tuple of optimizer names: the run takes the optimizer ``names[hp["which"]]``
    (a traced int, so one compile serves rows of every optimizer, vmapped over ``hp``); ``hp``
    then holds every optimizer's hyperparameters. Each step updates every optimizer's state
    from the same gradient and applies the chosen one's step and P (the others' cost a few
    elementwise operations; they never touch the parameters). With a momentum row among
    adaptive ones its P = I goes through the preconditioned Lanczos too (the same operator
    as the raw one)."""
    names = (name,) if isinstance(name, str) else tuple(name)
    adaptive = any(n in ADAPTIVE for n in names)

    def pick(hp, options):
        if len(options) == 1:
            return options[0]
        return jax.tree.map(lambda *xs: lax.select_n(hp["which"], *xs), *options)

    def run(hp, key, X, Y):
        k_init, k_v = jax.random.split(key)
        p0 = init_fn(k_init)
        flat0, unravel = ravel_pytree(p0)
        opts = [optim.get(n, **{k: hp[k] for k in optim.HYPERPARAMS[n]}) for n in names]

        def g(x):
            return jax.grad(lambda y: loss_fn(unravel(y), X, Y))(x)

        def hvp_at(x):
            return lambda u: jax.jvp(g, (x,), (u,))[1]   # H u (forward over reverse)

        def update(carry, _):
            x, states = carry                # flat params and every optimizer's flat state
            p = unravel(x)
            grad = ravel_pytree(grad_fn(p, X, Y))[0]
            outs = [o.update(grad, s, x) for o, s in zip(opts, states)]   # elementwise rules
            states = tuple(s for _, s in outs)
            upd = pick(hp, [u for u, _ in outs])
            P = pick(hp, [preconditioner(n, s, hp) for n, s in zip(names, states)])
            return (x + upd, states), (x, P, loss_fn(p, X, Y))

        def measure(info, V):
            x, P, _ = info
            lam, V, res = sharpness_pair(hvp_at(x), P if adaptive else None, V, iters)
            return {"precond": lam[0], "precond_res": res[0], "raw": lam[1],
                    "raw_res": res[1]}, V

        # steps + every steps: the last block's first step measures at step ``steps`` (the P
        # of the step from the final parameters); its other steps are discarded
        v0 = jax.random.normal(k_v, flat0.shape, flat0.dtype)
        state0 = tuple(o.init(flat0) for o in opts)
        _, _, recs, loss = train.loop(update, (flat0, state0), steps + every,
                                      every=every, measure=measure, state=jnp.stack([v0, v0]),
                                      each_step=lambda info: info[2])
        return {**recs, "loss": loss[:steps + 1]}

    return run


# ---------------------------------------------------------------- the grid
@dataclass
class Row:
    """One hyperparameter row of the grid: optimizer, lr, beta (adam's beta1, momentum's beta;
    None for rmsprop) and its stability threshold on the measured sharpness."""

    name: str
    lr: float
    beta: float | None
    threshold: float

    @property
    def label(self) -> str:
        b = {"adam": "b1", "momentum": "b"}.get(self.name)
        return f"{self.name} {b}={self.beta:g} lr={self.lr:g}" if b else \
            f"{self.name} lr={self.lr:g}"


def rows(P) -> list[Row]:
    """The grid of ``experiment.*``: adam (beta1 x lr), rmsprop (lr), momentum (lr), in that
    order; an empty lr list leaves an optimizer out."""
    out = [Row("adam", float(lr), float(b), float(threshold("adam", lr, b)))
           for b in P.adam_beta1s for lr in P.adam_lrs]
    out += [Row("rmsprop", float(lr), None, float(threshold("rmsprop", lr)))
            for lr in P.rmsprop_lrs]
    out += [Row("momentum", float(lr), float(P.momentum_beta),
                float(threshold("momentum", lr, P.momentum_beta))) for lr in P.momentum_lrs]
    return out


def hparams(rs: list[Row], P, dtype) -> dict:
    """Every optimizer's hyperparameters as arrays over the rows ``rs`` (the vmapped axis),
    and ``which``: each row's optimizer, its index in the tuple of ``rs``'s optimizer names
    (theory.NAMES order). A row fills the hyperparameters of the optimizers it does not use
    with valid values (its own beta, or 0)."""
    used = [n for n in NAMES if any(r.name == n for r in rs)]
    beta = [0.0 if r.beta is None else r.beta for r in rs]
    col = {"lr": [r.lr for r in rs], "beta1": beta, "beta": beta,
           "beta2": [P.beta2] * len(rs), "eps": [P.eps] * len(rs)}
    out = {k: jnp.asarray(np.asarray(v, np.float64), dtype) for k, v in col.items()}
    out["which"] = jnp.asarray([used.index(r.name) for r in rs], jnp.int32)
    return out


def train_grid(cfg, ds, model, grid: list[Row], dtype) -> tuple[dict, dict]:
    """Every row of ``grid`` x ``experiment.seeds`` seeds in ONE jitted call (with_sharpness
    over the grid's optimizers, vmapped over the rows and the seeds): one compile whatever the
    optimizers. Returns (arrays [row, seed, ...] in grid order, {"compile_s", "run_s": wall
    seconds, "compile_cpu_s", "run_cpu_s": CPU seconds of this process, all threads}); a
    shared machine's wall time can be far above its CPU time."""
    P = cfg.experiment
    hp_model = make.model_hparams(cfg, model)

    def init_fn(key):                                              # as in train.make_run
        return model.init(key, ds.n, ds.d_out, init_scale=cfg.model.init_scale, dtype=dtype,
                          **hp_model)

    grad_fn = model.grad if cfg.train.grad == "manual" else jax.grad(model.loss)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(cfg.seed + np.arange(P.seeds), jnp.int32))
    X, Y = jnp.asarray(ds.X, dtype), jnp.asarray(ds.Y, dtype)
    names = tuple(n for n in NAMES if any(r.name == n for r in grid))
    one = with_sharpness(names, model.loss, grad_fn, init_fn, cfg.train.steps, P.every,
                         P.lanczos_iters)
    f = jax.jit(jax.vmap(jax.vmap(one, in_axes=(None, 0, None, None)),   # seeds
                         in_axes=(0, None, None, None)))                   # rows
    args = (hparams(grid, P, dtype), keys, X, Y)
    w0, c0 = time.perf_counter(), time.process_time()
    compiled = f.lower(*args).compile()
    w1, c1 = time.perf_counter(), time.process_time()
    out = jax.tree.map(np.asarray, compiled(*args))
    w2, c2 = time.perf_counter(), time.process_time()
    return out, {"compile_s": w1 - w0, "run_s": w2 - w1, "compile_cpu_s": c1 - c0,
                 "run_cpu_s": c2 - c1}


# ---------------------------------------------------------------- the numbers
FORMULA = {"adam": "(2 + 2 b1) / ((1 - b1) lr)", "rmsprop": "2 / lr",
           "momentum": "(2 + 2 b) / ((1 - b) lr)"}


def fmt(x, spec: str) -> str:
    """``x`` formatted with ``spec``; "nan" for a non-finite number or None (JSON's null)."""
    return format(x, spec) if x is not None and math.isfinite(x) else "nan"


def finite(xs) -> list[float]:
    """The finite numbers of ``xs`` (a diverged run's null / nan left out)."""
    return [float(x) for x in xs if x is not None and math.isfinite(x)]


def late_mask(steps, late_fraction):
    """[measurement] bool: the measurements in the last ``late_fraction`` of training, steps >=
    (1 - f) * last step (with a rounding margin)."""
    steps = np.asarray(steps, np.float64)
    return steps >= (1 - late_fraction) * steps[-1] - 1e-9 * max(steps[-1], 1.0)


def late_mean(values, steps, late_fraction) -> float:
    """Mean of ``values`` [measurement] over the late window; NaN if any is non-finite there."""
    v = np.asarray(values, np.float64)[late_mask(steps, late_fraction)]
    return float(np.mean(v)) if v.size and np.all(np.isfinite(v)) else float("nan")


def first_step(steps, ratio, level=0.9) -> int | None:
    """The first step at which ``ratio`` [measurement] reaches ``level`` after having been
    below it (the start-up transient of the adaptive methods, whose first P is tiny because
    their moments start at 0, does not count); the first step if it never was below; None if
    it never reaches it."""
    r = np.asarray(ratio, np.float64)
    below = np.nonzero(r < level)[0]
    if below.size == 0:
        return int(steps[0])
    hit = np.nonzero((r >= level) & (np.arange(r.size) > below[0]))[0]
    return int(steps[hit[0]]) if hit.size else None


def regime(ratio: float, first_hit, late_start: int, finite: bool, tol: float) -> str:
    """Where one run is: at the edge (late mean ratio within ``tol`` of 1), diverged, above, or
    below it, and if below why: never reached 0.9 x threshold (too short or lr too small),
    reached it only in the late window (just arrived), or reached it and fell back."""
    if not finite or not math.isfinite(ratio):
        return "diverged"
    if abs(ratio - 1) <= tol:
        return "at the edge"
    if ratio > 1:
        return "above the edge"
    if first_hit is None:
        return "below: never reached 0.9 x threshold (too short or lr too small)"
    if first_hit >= late_start:
        return f"below: reached 0.9 x threshold only at step {first_hit} (too short)"
    return f"below: reached 0.9 x threshold at step {first_hit}, then fell back"


def run_summary(row: Row, steps, precond, raw, loss, P) -> dict:
    """One row's numbers over its seeds (``precond``, ``raw`` [seed, measurement], ``loss``
    [seed, step + 1]): the measured sharpness (preconditioned for adam / rmsprop, raw for
    momentum) over its threshold, its late mean, first step at 0.9 x threshold, regime; the
    raw sharpness x lr / 2 (raw over GD's 2/lr)."""
    measured = precond if row.name in ADAPTIVE else raw
    ratio = measured / row.threshold
    late_start = int(np.asarray(steps)[late_mask(steps, P.late_fraction)][0])
    late = [late_mean(r, steps, P.late_fraction) for r in ratio]
    hits = [first_step(steps, r) for r in ratio]
    finite = [bool(np.all(np.isfinite(x))) for x in loss]
    return {"optimizer": row.name, "lr": row.lr, "beta": row.beta, "threshold": row.threshold,
            "threshold_formula": FORMULA[row.name],
            "measured": "preconditioned" if row.name in ADAPTIVE else "raw",
            "late_ratio": late, "late_ratio_mean": float(np.mean(late)),
            "late_raw_over_2_over_lr": [late_mean(r * row.lr / 2, steps, P.late_fraction)
                                        for r in raw],
            "first_step_ratio_ge_0.9": hits,
            "regime": [regime(r, h, late_start, f, P.edge_tol)
                       for r, h, f in zip(late, hits, finite)],
            "final_loss": [float(x[-1]) for x in loss],
            "precond_sharpness": precond, "raw_sharpness": raw,
            "loss": np.asarray(loss)[:, np.asarray(steps)]}    # at the measurement steps


def summarize(res, P, precision: str) -> dict:
    """summary.json (schema in the README) from a Result."""
    runs = {r.label: run_summary(r, res.s_steps, res.precond[i], res.raw[i], res.loss[i], P)
            for i, r in enumerate(res.grid)}
    out = {"labels": list(runs), "steps": res.s_steps, "seeds": res.seeds, "runs": runs}
    for name in NAMES:      # over the runs that did not diverge
        late = finite(x for r in runs.values() if r["optimizer"] == name
                      for x in r["late_ratio"])
        out[f"{name}_late_ratio_mean"] = float(np.mean(late)) if late else None
        out[f"{name}_late_ratio_range"] = [min(late), max(late)] if late else None
    raw = finite(x for r in runs.values() if r["optimizer"] in ADAPTIVE
                 for x in r["late_raw_over_2_over_lr"])
    regimes = [g for r in runs.values() for g in r["regime"]]
    ok = np.isfinite(res.precond) & np.isfinite(res.raw)
    return {**out, "adaptive_raw_ratio_max": float(np.max(raw)) if raw else None,
            "runs_at_edge": regimes.count("at the edge"), "runs_total": len(regimes),
            "late_fraction": P.late_fraction, "edge_tol": P.edge_tol,
            "max_rel_residual": {
                "precond": float(np.max((res.precond_res / np.abs(res.precond))[ok], initial=0.0)),
                "raw": float(np.max((res.raw_res / np.abs(res.raw))[ok], initial=0.0))},
            "lanczos_iters": P.lanczos_iters, "every": P.every, "m": res.m,
            "precision": precision, **res.timings}
