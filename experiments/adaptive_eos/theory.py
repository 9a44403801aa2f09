"""Adaptive edge of stability: the thresholds, the optimizer's preconditioner read from its
state, and the preconditioned sharpness lambda_max(P^-1/2 H P^-1/2) by Lanczos.

Cohen et al. 2022 ("Adaptive Gradient Methods at the Edge of Stability", arXiv 2207.14484,
Section 2) write every method as w_{t+1} = w_t - eta P_t^-1 m_t with a diagonal P_t. With P
frozen and H the Hessian, the update is a linear recursion in w (and m) whose stability is that
of GD / heavy-ball momentum on the preconditioned Hessian P^-1 H: stable iff every eigenvalue
of P^-1 H lies below

    RMSprop (m = g):                          2 / eta
    Adam / momentum (m = b1 m + (1 - b1) g):  (2 + 2 b1) / ((1 - b1) eta)     (38/eta at 0.9)

(the momentum bound is bpexp.theory.momentum_threshold solved for lambda). P^-1 H is similar
to the symmetric P^-1/2 H P^-1/2 (same spectrum), whose top eigenvalue Lanczos finds from
Hessian-vector products.

bpexp's optimizers (bpexp.optim) in that form, P read from the state AFTER the step's update
(the moments then include the step's own gradient, so P is the one this step applies):

    adam:     P = (1 - b1^t) (sqrt(s / (1 - b2^t)) + eps),  m = v (the raw EMA)  [t from 1]
    rmsprop:  P = sqrt(s) + eps,                            m = g
    momentum: P = I,                                        m = v
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bpexp import theory

ADAPTIVE = ("adam", "rmsprop")       # the methods with a preconditioner
NAMES = ("adam", "rmsprop", "momentum")


def threshold(name: str, lr, beta=0.0):
    """The stability threshold on lambda_max(P^-1 H) of optimizer ``name`` at ``lr`` (``beta``:
    adam's beta1, momentum's beta; unused for rmsprop). Works on floats and arrays."""
    if name == "rmsprop":
        return 2 / lr
    return (2 + 2 * beta) / ((1 - beta) * lr)


def preconditioner(name: str, state, hp: dict):
    """The diagonal P (a pytree like the params) that optimizer ``name`` divides its step by,
    read from ``state``, the optimizer state returned by the update that applies it (bpexp.optim
    conventions; ``hp``: its hyperparameters, traced or not). The update is then exactly
    -lr P^-1 m, m = the state's first moment (adam, momentum) or the gradient (rmsprop)."""
    if name == "adam":
        t = state.count                                         # steps taken, this one included
        c1 = 1 - jnp.asarray(hp["beta1"]) ** t                  # 1 - b1^t
        c2 = 1 - jnp.asarray(hp["beta2"]) ** t                  # 1 - b2^t
        return jax.tree.map(lambda s: c1.astype(s.dtype) * (
            jnp.sqrt(s / c2.astype(s.dtype)) + jnp.asarray(hp["eps"]).astype(s.dtype)), state.s)
    if name == "rmsprop":
        return jax.tree.map(lambda s: jnp.sqrt(s) + jnp.asarray(hp["eps"]).astype(s.dtype),
                            state.s)
    if name == "momentum":
        return jax.tree.map(jnp.ones_like, state.v)
    raise ValueError(f"no preconditioner for optimizer {name!r}")


def first_moment(name: str, state, grads):
    """m of the update -lr P^-1 m: the state's EMA (adam, momentum) or the gradient."""
    return grads if name == "rmsprop" else state.v


def sharpness_pair(hvp, P, V, iters):
    """Both sharpnesses by Lanczos (theory.lanczos, ``iters`` steps) on the flat Hessian-vector
    product ``hvp``: row 0 lambda_max(P^-1/2 H P^-1/2) (``P``: the flat diagonal
    preconditioner), row 1 lambda_max(H), one Lanczos vmapped over the two operators; with
    ``P`` None (P = I) one Lanczos for both rows. ``V`` [2, p]: the start vectors (warm: the
    previous Ritz vectors). Returns (values [2], unit Ritz vectors [2, p], residuals [2])."""

    def top(d, v):
        lam, _, y, res, _ = theory.lanczos(lambda u: d * hvp(d * u), v, iters)   # D H D u
        return lam, y, res

    if P is None:
        lam, _, y, res, _ = theory.lanczos(hvp, V[1], iters)
        return jnp.stack([lam, lam]), jnp.stack([y, y]), jnp.stack([res, res])
    D = jnp.stack([1 / jnp.sqrt(P), jnp.ones_like(P)])
    return jax.vmap(top)(D, V)
