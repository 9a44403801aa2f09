"""One training run as a pure function: ``lax.scan`` over steps.

``make_run(spec)`` returns ``run(hp, X, Y) -> metrics`` for ONE run, where ``hp`` holds the
numeric knobs as (possibly traced) scalars: ``lr``, ``seed``, ``init_scale`` and optimizer
hyperparameters. ``sweep.py`` vmaps it over a grid; nothing here knows about grids.

Recorded every ``record_every`` steps, at the parameters entering that step: the loss on the
step's batch, the l2 norm of the gradient per parameter leaf, of all parameters and of the
step's update. Per run: the first step whose loss is non-finite (-1 if none; ``steps`` if only
the loss after the last update is) and the final full-data loss. A diverged run's NaNs stay in its own slice: nothing is reduced across runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import optax
from jax import lax

from bpexp import models, optim

METRICS = ("loss", "grad_norm", "param_norm", "update_norm", "first_nonfinite", "final_loss")


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
        return self.m if self.batch_size in (0, None) or self.batch_size >= self.m else self.batch_size

    def get_model(self) -> models.Model:
        return models.get(self.model, **dict(self.model_options))


def validate_spec(spec: TrainSpec) -> None:
    if spec.steps % spec.record_every:
        raise ValueError(f"train.record_every={spec.record_every} must divide train.steps={spec.steps}")
    if spec.batch_size < 0:
        raise ValueError(f"train.batch_size={spec.batch_size} must be >= 0")


def param_shapes(spec: TrainSpec):
    """Parameter pytree of ShapeDtypeStructs (no compile)."""
    model = spec.get_model()
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), spec.n, spec.d_out,
                                             dtype=jnp.dtype(spec.dtype), **dict(spec.model_hparams)))


def _l2(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


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
        key = jax.random.PRNGKey(hp["seed"])
        k_init, k_batch = jax.random.split(key)
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

        def step_fn(carry, step):
            p, s, first_bad = carry
            loss, g = value_and_grad(p, *batch(step))
            upd, s_new = opt.update(g, s, p)
            rec = {"loss": loss,  # leaves in sorted order, as leaf_names() labels them
                   "grad_norm": jnp.stack([jnp.linalg.norm(g[k].ravel()) for k in sorted(g)]),
                   "param_norm": _l2(p), "update_norm": _l2(upd)}
            first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(loss), step.astype(jnp.int32), first_bad)
            return (optax.apply_updates(p, upd), s_new, first_bad), rec

        def block(carry, r):
            # the first step of each block is recorded; the rest only advance the carry
            carry, rec = step_fn(carry, r * spec.record_every)
            if spec.record_every > 1:
                steps = r * spec.record_every + jnp.arange(1, spec.record_every)
                carry, _ = lax.scan(lambda c, t: (step_fn(c, t)[0], None), carry, steps)
            return carry, rec

        init = (p0, s0, jnp.array(-1, jnp.int32))
        (p, _, first_bad), recs = lax.scan(block, init, jnp.arange(spec.n_records))
        final = model.loss(p, X, Y)
        first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(final), spec.steps, first_bad)
        return {**recs, "first_nonfinite": first_bad, "final_loss": final}

    return run


def leaf_names(spec: TrainSpec) -> list[str]:
    """Parameter leaf names in the order of ``grad_norm``'s last axis (sorted)."""
    return sorted(param_shapes(spec))
