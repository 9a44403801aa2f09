"""The optimizers on the quadratic f(w) = 0.5 w^T H w: every optimizer's path (manual and
optax twin) in one program, GD's and momentum's contraction rates, predicted steps."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bpexp import optim, theory, train

NAMES = optim.NAMES     # every row of the optimizer table
IMPLS = optim.IMPLS


def quadratic_paths(H, w0, lrs: dict, fixed: dict, steps: int, impls=IMPLS,
                    dtype="float32") -> dict:
    """Paths of every optimizer (manual and optax twin) on f(w) = 0.5 w^T H w, each vmapped
    over its lrs; one jitted ``lax.scan`` program for all. Returns ``{(opt, impl): (path
    [lr, step + 1, 2], loss [lr, step + 1])}``; row 0 of each path is ``w0``."""
    dt = jnp.dtype(dtype)

    def one(name, impl, lr, H, w0):
        hp = {k: fixed[k] for k in optim.HYPERPARAMS[name] if k != "lr"}
        opt = optim.get(name, impl=impl, lr=lr, **hp)

        def update(carry, _):
            w, s = carry
            upd, s = opt.update(H @ w, s, w)          # grad f = H w
            return (optax.apply_updates(w, upd), s), w

        (w_last, _), _, _, ws = train.loop(update, (w0, opt.init(w0)), steps,
                                           each_step=lambda w: w)
        path = jnp.concatenate([ws, w_last[None]], axis=0)                 # (steps + 1, 2)
        return path, 0.5 * jnp.einsum("ti,ij,tj->t", path, H, path)        # f = 0.5 w^T H w

    @jax.jit
    def all_paths(lrs, H, w0):
        return {f"{o}/{i}": jax.vmap(lambda lr, o=o, i=i: one(o, i, lr, H, w0))(lrs[o])
                for o in lrs for i in impls}

    out = all_paths({o: jnp.asarray(v, dt) for o, v in lrs.items()}, jnp.asarray(H, dt),
                    jnp.asarray(w0, dt))
    return {tuple(k.split("/")): tuple(np.asarray(x) for x in v) for k, v in out.items()}


def quadratic_rate(name, lr, lams, beta) -> float:
    """Linear contraction factor per step at ``lr`` (GD, momentum; NaN otherwise)."""
    lams = np.asarray(lams, np.float64)
    if name == "gd":
        return float(np.max(np.abs(theory.gd_quadratic_factor(lr, lams))))
    if name == "momentum":
        return float(np.max([theory.momentum_spectral_radius(lr, lam, beta) for lam in lams]))
    return float("nan")


def predicted_steps(rate, f0, tol) -> float | None:
    """f_t ~ f0 rate^(2t): steps until f_t <= tol (ignores the constant of the slowest mode)."""
    if not (0 < rate < 1) or f0 <= tol:
        return None
    return math.log(tol / f0) / (2 * math.log(rate))
