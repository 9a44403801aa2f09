"""One training run as a pure function: ``lax.scan`` over steps.

``make_run(spec)`` returns ``run(hp, X, Y) -> metrics`` for ONE run, where ``hp`` holds the
numeric knobs as (possibly traced) scalars: ``lr``, ``seed``, ``init_scale`` and optimizer
hyperparameters. ``sweep.py`` vmaps it over a grid; nothing here knows about grids.

Recorded every ``record_every`` steps, at the parameters entering that step: the loss on the
step's batch, the l2 norm of the gradient per parameter leaf, of all parameters and of the
step's update. Per run: the first step whose loss is non-finite (-1 if none; ``steps`` if only
the loss after the last update is) and the final full-data loss. A diverged run's NaNs stay in
its own slice: nothing is reduced across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from bpexp import models, optim, theory
from bpexp.errors import UserError



class Step(NamedTuple):
    """What one training step sees: the recorded metrics are functions of it."""

    loss: jax.Array      # loss on the step's batch, at the parameters entering the step
    grads: dict          # gradient pytree
    params: dict         # parameters entering the step
    updates: dict        # the optimizer's update (added to params)


def _l2(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


class Metric(NamedTuple):
    dims: tuple          # axes after the run axes ("step" first for per-step metrics)
    of: Callable | None  # Step -> value, for per-step metrics; None for per-run ones


# The one list of recorded metrics: the sweep engine's dims, the stored arrays and the memory
# estimate are read from it. A per-step metric is one entry here.
METRICS = {
    "loss": Metric(("step",), lambda s: s.loss),
    # leaves in sorted order, as leaf_names() labels them
    "grad_norm": Metric(("step", "param"),
                        lambda s: jnp.stack([jnp.linalg.norm(s.grads[k].ravel())
                                             for k in sorted(s.grads)])),
    "param_norm": Metric(("step",), lambda s: _l2(s.params)),
    "update_norm": Metric(("step",), lambda s: _l2(s.updates)),
    "first_nonfinite": Metric((), None),   # first step with a non-finite loss, -1 if none
    "final_loss": Metric((), None),        # full-data loss after the last step
}
def metric_dims(axes: tuple) -> dict:
    """name -> dims of each metric for runs laid out on ``axes``."""
    return {k: tuple(axes) + m.dims for k, m in METRICS.items()}


def run_keys(seed):
    """(k_init, k_batch) of a run: the one convention every part of bpexp draws keys by."""
    return jax.random.split(jax.random.PRNGKey(seed))


def loop(update, carry, steps: int, *, every: int = 1, measure=None, state=None,
         each_step=None):
    """THE training loop: ``lax.scan`` over ``steps`` calls of ``update(carry, t) -> (carry,
    info)`` (t: the step index, a traced int), in blocks of ``every`` steps, with measurements:

      measure(info, state) -> (record, state)   at the first step of each block (t = 0, every,
                                                2 every, ...), from what that step saw (its
                                                loss, gradient, parameters entering it);
                                                ``state`` is carried from record to record
                                                (e.g. a warm-started Lanczos vector);
      each_step(info) -> record                 at every step.

    A record is any pytree of arrays; its shape is the measurement's. Returns (carry, state,
    records with a leading [steps // every] axis, per-step records with a leading [steps]
    axis). ``steps`` must be a multiple of ``every``. Steps a block does not record only
    advance the carry (XLA drops the unused values)."""
    if steps % every:
        raise ValueError(f"steps={steps} is not a multiple of every={every}")

    def block(c, r):
        carry, state = c
        t0 = r * every
        carry, info = update(carry, t0)
        rec, state = measure(info, state) if measure is not None else (None, state)
        first = each_step(info) if each_step is not None else None
        if every == 1:
            return (carry, state), (rec, jax.tree.map(lambda x: x[None], first))

        def inner(carry, t):
            carry, info = update(carry, t)
            return carry, (each_step(info) if each_step is not None else None)

        carry, rest = lax.scan(inner, carry, t0 + jnp.arange(1, every))
        per = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
        return (carry, state), (rec, per)

    (carry, state), (recs, per) = lax.scan(block, (carry, state), jnp.arange(steps // every))
    per = jax.tree.map(lambda x: x.reshape((steps,) + x.shape[2:]), per)
    return carry, state, recs, per


@dataclass(frozen=True)
class TrainSpec:
    """Everything structural about a run: changing any field means a new compile."""

    model: str
    n: int
    d_out: int
    m: int
    steps: int
    model_options: tuple = ()        # (("activation", "tanh"), ("output", "softmax_ce"))
    model_hparams: tuple = ()        # (("hidden", 32), ("init", "xavier"), ...) minus init_scale
    optimizer: str = "gd"
    impl: str = "manual"
    batch_size: int = 0              # 0 = full batch
    record_every: int = 1
    grad: str = "manual"             # manual | autodiff
    dtype: str = "float32"
    opt_hparams: tuple = field(default=())  # names of the optimizer's numeric hyperparameters

    def __post_init__(self):
        if not self.opt_hparams:  # default: every hyperparameter of the optimizer is numeric
            object.__setattr__(self, "opt_hparams", tuple(optim.HYPERPARAMS[self.optimizer]))

    @property
    def n_records(self) -> int:
        return self.steps // self.record_every

    @property
    def batch(self) -> int:
        return (self.m if self.batch_size in (0, None) or self.batch_size >= self.m
                else self.batch_size)

    def get_model(self) -> models.Model:
        return models.get(self.model, **dict(self.model_options))


def validate_spec(spec: TrainSpec) -> None:
    if spec.steps % spec.record_every:
        raise UserError(f"train.record_every={spec.record_every} "
                        f"must divide train.steps={spec.steps}")
    if spec.batch_size < 0:
        raise UserError(f"train.batch_size={spec.batch_size} must be >= 0")


def param_shapes(spec: TrainSpec):
    """Parameter pytree of ShapeDtypeStructs (no compile)."""
    model = spec.get_model()
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), spec.n, spec.d_out,
                                             dtype=jnp.dtype(spec.dtype),
                                             **dict(spec.model_hparams)))


def make_run(spec: TrainSpec):
    """``run(hp, X, Y) -> dict`` of one run's metrics; ``hp`` values may be traced scalars."""
    validate_spec(spec)
    model = spec.get_model()
    dtype = jnp.dtype(spec.dtype)
    bs, m = spec.batch, spec.m
    per_epoch = max(1, m // bs)  # drop the remainder: every step sees exactly bs columns
    value_and_grad = (jax.value_and_grad(model.loss) if spec.grad == "autodiff"
                      else lambda p, X, Y: (model.loss(p, X, Y), model.grad(p, X, Y)))

    def run(hp, X, Y):
        k_init, k_batch = run_keys(hp["seed"])
        p0 = model.init(k_init, spec.n, spec.d_out, init_scale=hp["init_scale"], dtype=dtype,
                        **dict(spec.model_hparams))
        opt = optim.get(spec.optimizer, impl=spec.impl, **{k: hp[k] for k in spec.opt_hparams})
        s0 = opt.init(p0)

        def batch(step):
            if bs == m:
                return X, Y
            epoch, i = step // per_epoch, step % per_epoch
            perm = jax.random.permutation(jax.random.fold_in(k_batch, epoch), m)  # fresh per epoch
            idx = lax.dynamic_slice(perm, (i * bs,), (bs,))
            return jnp.take(X, idx, axis=1), jnp.take(Y, idx, axis=1)

        def update(carry, step):
            p, s, first_bad = carry
            loss, g = value_and_grad(p, *batch(step))
            upd, s_new = opt.update(g, s, p)
            first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(loss), step.astype(jnp.int32),
                                  first_bad)
            return (optax.apply_updates(p, upd), s_new, first_bad), Step(loss, g, p, upd)

        def measure(now, state):
            return {k: mt.of(now) for k, mt in METRICS.items() if mt.of is not None}, state

        init = (p0, s0, jnp.array(-1, jnp.int32))
        (p, _, first_bad), _, recs, _ = loop(update, init, spec.steps, every=spec.record_every,
                                             measure=measure)
        final = model.loss(p, X, Y)
        first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(final), spec.steps, first_bad)
        return {**recs, "first_nonfinite": first_bad, "final_loss": final}

    return run


def leaf_names(spec: TrainSpec) -> list[str]:
    """Parameter leaf names in the order of ``grad_norm``'s last axis (sorted)."""
    return sorted(param_shapes(spec))


def gd_with_sharpness(loss_fn, grad_fn, init_fn, steps, every, iters, check_iters):
    """``run(lr, key, X, Y) -> dict`` for ONE run, X: (n, m), Y: (d_out, m): params from
    ``init_fn(key)``, full-batch GD for ``steps`` steps (:func:`loop`), the loss at every step,
    and at steps 0, every, ..., steps the top two Hessian eigenvalues by ``iters`` Lanczos steps
    (theory.lanczos) warm-started from the previous top Ritz vector, with the residual of the
    top one. ``grad_fn`` is the training gradient (hand-derived); the Hessian-vector product
    is jvp of jax.grad. A last measurement at the final parameters starts cold (random
    vector) with ``check_iters`` steps: the accuracy check of the warm start. Returns
    sharpness, second, residual [steps / every + 1], loss [steps + 1], end_check and
    end_check_residual (scalars)."""

    def run(lr, key, X, Y):
        k_init, k_v = jax.random.split(key)
        p0 = init_fn(k_init)
        flat0, unravel = ravel_pytree(p0)
        v0 = jax.random.normal(k_v, flat0.shape, flat0.dtype)
        a = jnp.asarray(lr).astype(flat0.dtype)

        def f(x):
            return loss_fn(unravel(x), X, Y)

        g = jax.grad(f)

        def hvp_at(x):
            return lambda u: jax.jvp(g, (x,), (u,))[1]   # H u

        def update(x, _):
            p = unravel(x)
            grad, _ = ravel_pytree(grad_fn(p, X, Y))
            return x - a * grad, (x, loss_fn(p, X, Y))   # w -= lr g

        def sharpness(info, v):
            lam1, lam2, v, res, _ = theory.lanczos(hvp_at(info[0]), v, iters)
            return (lam1, lam2, res), v

        x, v, (lam1, lam2, res), (_, loss) = loop(update, flat0, steps, every=every,
                                                  measure=sharpness, state=v0,
                                                  each_step=lambda info: info)
        (l1, l2, r), _ = sharpness((x, None), v)                          # at step ``steps``
        c1, _, _, cres, _ = theory.lanczos(hvp_at(x), v0, check_iters)   # cold, at the end
        return {"sharpness": jnp.append(lam1, l1), "second": jnp.append(lam2, l2),
                "residual": jnp.append(res, r), "loss": jnp.append(loss, f(x)),
                "end_check": c1, "end_check_residual": cres}

    return run
