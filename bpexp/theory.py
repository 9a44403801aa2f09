"""Analytic references that the experiments compare their measurements against.

Conventions: examples are columns, X is (n, m), Y is (d_out, m); the linear
model is Yhat = W X + b with MSE  L = (1/m) * sum((Yhat - Y)**2).
Everything here is a pure function; numpy closed forms are in float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from bpexp.errors import UserError
from bpexp.primitives import INITS

# --------------------------------------------------------------------------
# 1-2. Linear model with MSE: exact Hessian and step-size thresholds.
# --------------------------------------------------------------------------


def quadratic_hessian(X, d_out=1):
    """Hessian of the MSE of the linear model, (p, p) float64 numpy array.

    With Xt = [X; 1^T] ((n+1, m), bias row appended) and theta = (w..., b),
    yhat = theta^T Xt, so L = (1/m)||theta^T Xt - y||^2 is quadratic and
        H = (2/m) Xt Xt^T,   p = n + 1.
    For d_out > 1 the output units do not interact, so with the parameters
    ordered per unit, (w_1..., b_1, w_2..., b_2, ...), H = kron(I_dout, H1) and
    p = d_out (n + 1).  (A dict {'W','b'} raveled by jax is ordered differently.)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (n, m), got shape {X.shape}")
    m = X.shape[1]
    Xt = np.vstack([X, np.ones((1, m))])
    H = (2.0 / m) * Xt @ Xt.T
    return H if d_out == 1 else np.kron(np.eye(d_out), H)


def lambda_max_quadratic(X):
    """Largest eigenvalue of quadratic_hessian(X) (float64 eigvalsh)."""
    return float(np.linalg.eigvalsh(quadratic_hessian(X))[-1])


def gd_threshold(lam):
    """GD on a quadratic: e_{t+1} = (I - lr H) e_t, per eigendirection factor
    1 - lr*lambda, so GD converges iff 0 < lr < 2 / lambda_max."""
    return 2.0 / lam


def momentum_threshold(lam, beta):
    """Largest stable lr for CS230 (EMA) momentum, 2 (1 + b) / ((1 - b) lam).

    Derivation, 1-D quadratic f = lam w^2 / 2, so g = lam w:
        v' = b v + (1 - b) lam w
        w' = w - lr v' = -lr b v + (1 - lr (1 - b) lam) w
    i.e. (v, w)' = A (v, w) with A = [[b, (1-b) lam], [-lr b, 1 - a]] where
    a = lr (1 - b) lam.  trace A = 1 + b - a and det A = b (1 - a) + a b = b, so
        z^2 - (1 + b - a) z + b = 0.
    For 0 <= b < 1: complex roots have |z|^2 = b < 1; real roots leave the unit
    disk through z = 1 (needs a = 0) or z = -1 (1 + (1 + b - a) + b = 0, i.e.
    a = 2 (1 + b)).  Hence stable iff 0 < lr (1 - b) lambda_max < 2 (1 + b).
    beta = 0 recovers gd_threshold.
    """
    return 2.0 * (1.0 + beta) / ((1.0 - beta) * lam)


# --------------------------------------------------------------------------
# 5. 1-D quadratic closed forms.
# --------------------------------------------------------------------------


def gd_quadratic_factor(lr, lam):
    """Per-step contraction of GD along an eigendirection: w_t = (1 - lr lam)^t w_0."""
    return 1.0 - np.asarray(lr, dtype=np.float64) * lam


def momentum_spectral_radius(lr, lam, beta):
    """max |z| over roots of z^2 - (1 + b - lr (1-b) lam) z + b = 0 (see
    momentum_threshold).  lr may be an array; returns an array of its shape.
    Real roots: (|T| + sqrt(T^2 - 4b)) / 2; complex roots: sqrt(b)."""
    lr = np.asarray(lr, dtype=np.float64)
    T = 1.0 + beta - lr * (1.0 - beta) * lam
    disc = T * T - 4.0 * beta
    real = 0.5 * (np.abs(T) + np.sqrt(np.maximum(disc, 0.0)))
    return np.where(disc >= 0.0, real, np.sqrt(beta) + 0.0 * T)


# --------------------------------------------------------------------------
# 3-4. Hessians of arbitrary losses (jax).
# --------------------------------------------------------------------------


def lanczos(hvp, v0, iters):
    """Top of the spectrum of a symmetric H from ``iters`` Lanczos steps on Hessian-vector
    products, with full reorthogonalization (twice per step), jit- and vmap-compatible.

    Krylov space K = span{v0, H v0, ..., H^(k-1) v0}; the Ritz values theta (eigenvalues of the
    k x k tridiagonal T = V^T H V) converge to the extreme eigenvalues of H far faster than
    power iteration, and to the top ALGEBRAIC one (never a negative eigenvalue of larger
    magnitude); nearly equal top eigenvalues are resolved instead of mixed. Each Ritz pair
    (theta_i, y_i = V s_i) has the computable residual ||H y_i - theta_i y_i|| = beta_k |s_ki|,
    and H has an eigenvalue within that residual of theta_i.
    Returns (theta_1, theta_2, y_1 (unit), residual_1, residual_2); theta_2 is NaN for k = 1.
    ``v0``: (p,) start vector (a warm start: the previous top Ritz vector)."""
    p = v0.shape[0]
    dt = v0.dtype
    eps = jnp.finfo(dt).eps
    tiny = jnp.finfo(dt).tiny

    def reorth(w, V):
        w = w - V.T @ (V @ w)                      # full reorthogonalization against V_0..V_j
        return w - V.T @ (V @ w)                   # twice is enough (Kahan-Parlett)

    def step(j, c):
        V, alpha, beta = c
        w = hvp(V[j])
        a = jnp.vdot(V[j], w)
        scale = jnp.linalg.norm(w)
        w = reorth(w, V)
        b = jnp.linalg.norm(w)
        ok = b > 1e3 * tiny * jnp.maximum(jnp.abs(a), 1.0)
        nxt = jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0)
        # invariant subspace found (b at the rounding level of |H v_j|; a Hessian of low rank,
        # e.g. one training example, gets there in a few steps): the normalized remainder is a
        # fresh direction but not orthogonal to V to rounding, so it is orthogonalized once
        # more and T gets beta = 0 there (a restart); kept only if something is left of it
        brk = b <= 100 * eps * scale
        u = reorth(nxt, V)
        nu = jnp.linalg.norm(u)
        fresh = jnp.where(nu > 1e3 * eps * jnp.sqrt(p), u / jnp.where(nu > 0, nu, 1.0), 0.0)
        V = V.at[j + 1].set(jnp.where(brk, fresh, nxt))
        return V, alpha.at[j].set(a), beta.at[j].set(jnp.where(ok & ~brk, b, 0.0))

    V = jnp.zeros((iters + 1, p), dt).at[0].set(v0 / jnp.linalg.norm(v0))
    V, alpha, beta = lax.fori_loop(0, iters, step, (V, jnp.zeros(iters, dt), jnp.zeros(iters, dt)))
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, S = jnp.linalg.eigh(T)                  # ascending
    res = jnp.abs(beta[-1] * S[-1, :])            # ||H y_i - theta_i y_i||
    y = V[:iters].T @ S[:, -1]
    nan = jnp.full((), jnp.nan, dt)
    second = theta[-2] if iters > 1 else nan
    res2 = res[-2] if iters > 1 else nan
    return theta[-1], second, y / jnp.linalg.norm(y), res[-1], res2


@functools.partial(jax.jit, static_argnums=(0, 4))
def _lanczos_loss(loss_fn, params, args, key, iters):
    flat, unravel = ravel_pytree(params)
    grad_f = jax.grad(lambda x: loss_fn(unravel(x), *args))
    v0 = jax.random.normal(key, flat.shape, dtype=flat.dtype)
    return lanczos(lambda v: jax.jvp(grad_f, (flat,), (v,))[1], v0, iters)


def top_eigenvalues(loss_fn, params, *args, key, iters=60):
    """(lambda_1, lambda_2, residual_1, residual_2) of the loss Hessian at ``params`` by
    :func:`lanczos` on forward-over-reverse Hessian-vector products from a N(0, I) start drawn
    from ``key``; iters is capped at the number of parameters. Python floats."""
    p = sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params))
    lam1, lam2, _, r1, r2 = _lanczos_loss(loss_fn, params, args, key, min(int(iters), p))
    return float(lam1), float(lam2), float(r1), float(r2)


# --------------------------------------------------------------------------
# 6. Vanishing gradients (Glorot & Bengio 2010).
# --------------------------------------------------------------------------


def sigmoid_prime_max():
    """max_z sigma'(z) = sigma(0)(1 - sigma(0)) = 1/4."""
    return 0.25


def sigmoid_bound(L):
    """Upper bound on the product of L sigmoid derivatives: 0.25**L."""
    return 0.25 ** np.asarray(L, dtype=np.float64)


def glorot_factor(n, var_w, mean_fprime_sq):
    """Per-layer multiplier of the back-propagated gradient VARIANCE,
    n Var(W) E[f'(z)^2]: dL/da^{l-1} = W^T (f'(z^l) * dL/da^l) sums n terms."""
    return n * var_w * mean_fprime_sq


def glorot_ratio(n, var_w, mean_fprime_sq):
    """Ratio of gradient norms between adjacent layers, sqrt(glorot_factor)."""
    return np.sqrt(glorot_factor(n, var_w, mean_fprime_sq))


def init_variance(scheme, n_in, n_out, scale=1.0):
    """Var(W_ij) of an initialization scheme times ``scale`` (primitives.INITS; Var U[-a, a]
    = a^2 / 3), multiplied by scale^2 since the scale multiplies every weight:
      standard  U[-1/sqrt(n_in), 1/sqrt(n_in)]          -> 1 / (3 n_in)
      xavier    U[-+sqrt(6)/sqrt(n_in + n_out)]         -> 2 / (n_in + n_out)
      he        N(0, 2 / n_in)                          -> 2 / n_in
      normal    N(0, 1)                                 -> 1
    """
    if scheme not in INITS:
        raise UserError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INITS)}")
    return INITS[scheme].variance(n_in, n_out) * float(scale) ** 2


# --------------------------------------------------------------------------
# 7. Toy 2-D quadratics (numpy).
# --------------------------------------------------------------------------

TOY_HESSIAN = np.diag([1.0, 4.0])


def toy_quadratic(w):
    """f(w) = 0.5 w1^2 + 2 w2^2; Hessian diag(1, 4), GD diverges for lr > 0.5."""
    return 0.5 * w[0] ** 2 + 2.0 * w[1] ** 2


def toy_quadratic_grad(w):
    """grad f = (w1, 4 w2)."""
    return np.array([w[0], 4.0 * w[1]])


def ill_conditioned_quadratic(kappa, angle_deg=30.0):
    """f(w) = 0.5 w^T H w with H = R diag(1, kappa) R^T, R rotation by angle_deg
    (default 30 degrees so GD paths are not axis-aligned; 0 gives diag(1, kappa)).
    Condition number kappa, minimum at 0, GD stable iff lr < 2 / kappa.
    Returns (f, grad, H) with f, grad acting on (2,) arrays."""
    t = np.deg2rad(angle_deg)
    R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    H = R @ np.diag([1.0, float(kappa)]) @ R.T

    def f(w):
        return 0.5 * w @ H @ w

    def grad(w):
        return H @ w

    return f, grad, H
