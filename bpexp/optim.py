"""Hand-written optimizers as optax GradientTransformations (CS230 conventions).

Conventions of CS230 / deeplearning.ai; ``t`` counts steps from 1, ``g`` is the
gradient, ``a`` the learning rate.

| name     | update                                           |
|----------|--------------------------------------------------|
| gd       | w -= a g                                         |
| momentum | v = b v + (1-b) g ; w -= a v                     |
| rmsprop  | s = b2 s + (1-b2) g^2 ; w -= a g / (sqrt(s)+eps) |
| adam     | v = b1 v + (1-b1) g ; s = b2 s + (1-b2) g^2 ;    |
|          | w -= a (v/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps)   |

Each optimizer has an exact optax twin:

| name     | optax twin                                             |
|----------|--------------------------------------------------------|
| gd       | optax.sgd(a)                                           |
| momentum | optax.sgd(a * (1 - b), momentum=b)                     |
| rmsprop  | optax.rmsprop(a, decay=b2, eps=eps, eps_in_sqrt=False) |
| adam     | optax.adam(a, b1, b2, eps)                             |

Why the mappings: CS230 momentum is an exponential moving average while optax's
``trace`` is a plain sum ``v = b v + g`` (= EMA / (1-b)), hence ``lr * (1-b)``;
optax rmsprop puts eps inside the sqrt by default, CS230 outside
(``eps_in_sqrt=False``); adam is identical.

Every hyperparameter may be a traced jax array (``jax.vmap`` over lr / betas /
eps without recompiling): they are never converted with ``float()`` nor
branched on. The optax twins also accept traced hyperparameters (checked in
``tests/test_optim.py``). Updates are the negative step (optax convention,
apply with ``optax.apply_updates``). States follow the params' dtypes;
hyperparameters are cast to each leaf's dtype, so float32 grads stay float32.
The adam step count is int32 and is not saturated (optax's is) at 2**31 steps.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bpexp import theory
from bpexp.errors import UserError


class _Required:
    """Sentinel default for hyperparameters without a default (lr)."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

class MomentumState(NamedTuple):
    v: optax.Params  # pytree like params; EMA of gradients


class RMSPropState(NamedTuple):
    s: optax.Params  # pytree like params; EMA of squared gradients


class AdamState(NamedTuple):
    count: jax.Array  # shape=(), dtype=int32; number of steps taken (t - 1)
    v: optax.Params  # pytree like params; EMA of gradients (1st moment)
    s: optax.Params  # pytree like params; EMA of squared gradients (2nd moment)


def _like(x, ref: jax.Array) -> jax.Array:
    """Hyperparameter `x` (float or traced array) cast to the dtype of `ref`.

    Derived values like ``1 - beta`` are computed before the cast, in the
    hyperparameter's own precision (1 - float32(0.999) is off by 1e-5 relative).
    """
    return jnp.asarray(x).astype(ref.dtype)


def gd(lr) -> optax.GradientTransformation:
    """Plain gradient descent: w -= lr g."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: -_like(lr, g) * g, updates), state  # -a g

    return optax.GradientTransformation(init, update)


def momentum(lr, beta=0.9) -> optax.GradientTransformation:
    """Momentum with an EMA velocity: v = b v + (1-b) g; w -= lr v."""

    def init(params):
        return MomentumState(v=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params

        def ema(g, v):
            return _like(beta, g) * v + _like(1 - beta, g) * g  # v = b v + (1-b) g

        v = jax.tree.map(ema, updates, state.v)
        updates = jax.tree.map(lambda v_: -_like(lr, v_) * v_, v)  # -a v
        return updates, MomentumState(v=v)

    return optax.GradientTransformation(init, update)


def rmsprop(lr, beta2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """RMSProp: s = b2 s + (1-b2) g^2; w -= lr g / (sqrt(s) + eps)."""

    def init(params):
        return RMSPropState(s=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params

        def ema_sq(g, s):
            return _like(beta2, g) * s + _like(1 - beta2, g) * g**2  # s = b2 s + (1-b2) g^2

        def step(g, s):
            return -_like(lr, g) * g / (jnp.sqrt(s) + _like(eps, g))  # -a g / (sqrt(s) + eps)

        s = jax.tree.map(ema_sq, updates, state.s)
        us = jax.tree.map(step, updates, s)
        return us, RMSPropState(s=s)

    return optax.GradientTransformation(init, update)


def adam(lr, beta1=0.9, beta2=0.999, eps=1e-8) -> optax.GradientTransformation:
    """Adam with bias correction (t counts from 1)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(count=jnp.zeros([], jnp.int32), v=zeros, s=zeros)

    def update(updates, state, params=None):
        del params
        t = state.count + 1  # t = 1, 2, ...
        # 1 - b^t in the hyperparameter's own (higher) precision, then cast.
        c1 = 1 - jnp.asarray(beta1) ** t  # 1 - b1^t
        c2 = 1 - jnp.asarray(beta2) ** t  # 1 - b2^t

        def ema(g, v):
            return _like(beta1, g) * v + _like(1 - beta1, g) * g  # v = b1 v + (1-b1) g

        def ema_sq(g, s):
            return _like(beta2, g) * s + _like(1 - beta2, g) * g**2  # s = b2 s + (1-b2) g^2

        def step(v, s):
            v_hat = v / _like(c1, v)  # v / (1 - b1^t)
            s_hat = s / _like(c2, s)  # s / (1 - b2^t)
            return -_like(lr, v) * v_hat / (jnp.sqrt(s_hat) + _like(eps, v))

        v = jax.tree.map(ema, updates, state.v)
        s = jax.tree.map(ema_sq, updates, state.s)
        us = jax.tree.map(step, v, s)  # -a v_hat / (sqrt(s_hat) + eps)
        return us, AdamState(count=t, v=v, s=s)

    return optax.GradientTransformation(init, update)


class Optimizer(NamedTuple):
    """One row of the optimizer table."""

    manual: Callable     # (lr, **hparams) -> GradientTransformation, written here
    twin: Callable       # (hp: dict) -> its optax equivalent
    lr: float            # default learning rate of ``optimizer=NAME`` when none is given
    hparams: dict        # other hyperparameters and their defaults
    doc: str             # the update rule, one line
    # (lam, hp) -> the largest stable lr on a quadratic whose top Hessian eigenvalue is lam,
    # or None where there is no closed form (the adaptive methods)
    bound: Callable = lambda lam, hp: None
    bound_doc: str = ""  # the bound as a formula, for tables and legends
    lr_range: tuple = (1e-3, 1.0)       # a sensible log-spaced lr grid on a small network
    quad_lr_range: tuple = (1e-3, 1.0)  # ... on the optimizers experiment's 2-D quadratic


def _twin_gd(hp):
    return optax.sgd(hp["lr"])


def _twin_momentum(hp):
    return optax.sgd(hp["lr"] * (1 - hp["beta"]), momentum=hp["beta"])  # optax trace = EMA / (1-b)


def _twin_rmsprop(hp):
    return optax.rmsprop(hp["lr"], decay=hp["beta2"], eps=hp["eps"], eps_in_sqrt=False)


def _twin_adam(hp):
    return optax.adam(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], eps=hp["eps"])


# The one table of optimizers: the config group ``optimizer=NAME``, its defaults, the sweepable
# hyperparameters and the optax twins are all read from here. A new optimizer is one row.
OPTIMIZERS: dict[str, Optimizer] = {
    "gd": Optimizer(gd, _twin_gd, 0.1, {}, "w -= lr g",
                    lambda lam, hp: theory.gd_threshold(lam), "lr < 2 / lambda_max",
                    (0.01, 3.0), (0.002, 0.08)),
    "momentum": Optimizer(momentum, _twin_momentum, 0.1, {"beta": 0.9},
                          "v = beta v + (1 - beta) g ; w -= lr v",
                          lambda lam, hp: theory.momentum_threshold(lam, hp["beta"]),
                          "lr (1 - beta) lambda_max < 2 (1 + beta)", (0.03, 30.0), (0.01, 1.5)),
    "rmsprop": Optimizer(rmsprop, _twin_rmsprop, 0.01, {"beta2": 0.999, "eps": 1e-8},
                         "s = beta2 s + (1 - beta2) g^2 ; w -= lr g / (sqrt(s) + eps)",
                         lr_range=(1e-4, 0.3), quad_lr_range=(0.001, 1.0)),
    "adam": Optimizer(adam, _twin_adam, 0.01, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                      "bias-corrected v, s (Kingma & Ba 2015) ; "
                      "w -= lr v_hat / (sqrt(s_hat) + eps)",
                      lr_range=(3e-4, 1.0), quad_lr_range=(0.001, 1.0)),
}
NAMES: tuple[str, ...] = tuple(OPTIMIZERS)
IMPLS = ("manual", "optax")
HYPERPARAMS: dict[str, dict[str, Any]] = {
    k: {"lr": REQUIRED, **o.hparams} for k, o in OPTIMIZERS.items()}
# allowed values of every hyperparameter name: (low, high, low included, high included)
RANGES = {"lr": (0.0, float("inf"), False, False), "beta": (0.0, 1.0, True, False),
          "beta1": (0.0, 1.0, True, False), "beta2": (0.0, 1.0, True, False),
          "eps": (0.0, float("inf"), True, False)}


def stability_bound(name: str, lam: float, **hp) -> float | None:
    """The largest stable lr of optimizer ``name`` on a quadratic with top curvature ``lam``
    (its row's bound; None without a closed form; the derivations are in bpexp.theory)."""
    row = OPTIMIZERS[name]
    return row.bound(lam, {**row.hparams, **hp})


def check_range(key: str, name: str, value) -> None:
    """UserError unless ``value`` lies in RANGES[name]; ``key`` is how the user wrote it."""
    lo, hi, lo_in, hi_in = RANGES[name]
    ok = (lo <= value if lo_in else lo < value) and (value <= hi if hi_in else value < hi)
    if not ok:
        interval = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
        raise UserError(f"{key}={value!r} must be in {interval}")


def get(name: str, impl: str = "manual", **hp) -> optax.GradientTransformation:
    """Optimizer `name` with hyperparameters `hp` (lr required).

    impl="manual" gives the hand-written transformation, impl="optax" its optax
    twin with the mapped hyperparameters. Raises UserError (a ValueError) on an unknown name,
    unknown impl, unknown hyperparameter or missing lr.
    """
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; known: {', '.join(NAMES)}")
    if impl not in IMPLS:
        raise UserError(f"unknown impl {impl!r}; known: {', '.join(IMPLS)}")
    allowed = HYPERPARAMS[name]
    unknown = sorted(set(hp) - set(allowed))
    if unknown:
        raise UserError(f"unknown hyperparameter(s) {', '.join(unknown)} for {name!r}; "
                        f"allowed: {', '.join(allowed)}")
    full = {**allowed, **hp}
    missing = [k for k, v in full.items() if v is REQUIRED]
    if missing:
        raise UserError(f"{name!r} needs hyperparameter(s): {', '.join(missing)}")
    if impl == "optax":
        return OPTIMIZERS[name].twin(full)
    return OPTIMIZERS[name].manual(**full)
