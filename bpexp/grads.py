"""Hand-derived backward passes of the section models, in the notation of the CS230 notes,
and of the Sharpe ratio. (The mlp's layer forward and backward are bpexp.stacked.)

Each returns the same pytree as ``jax.grad(model.loss)(p, X, Y)``; tests prove it.
``X: (n, m)``, ``Y: (d_out, m)``; ``1`` is the all-ones (m, 1), i.e. a sum over columns.
Autodiff is never used here.
"""

from __future__ import annotations

import jax.numpy as jnp

from bpexp.primitives import sigmoid
from bpexp.stacked import sum_cols as _sum_cols


def univariate(p, X, Y):
    m = Y.shape[-1]
    yhat = p["w"] * X + p["b"]                       # yhat = w x + b
    dyhat = (2.0 / m) * (yhat - Y)                   # dL/dyhat = (2/m)(yhat - y)
    return {"w": jnp.sum(dyhat * X),                 # dw = (2/m)(yhat - y) x^T
            "b": jnp.sum(dyhat)}                     # db = (2/m)(yhat - y) 1


def multivariate(p, X, Y):
    m = Y.shape[-1]
    yhat = p["w"] @ X + p["b"]                       # yhat = w X + b
    dyhat = (2.0 / m) * (yhat - Y)                   # dL/dyhat = (2/m)(yhat - y)  (1, m)
    return {"w": dyhat @ X.T,                        # dw = (2/m)(yhat - y) X^T   (1, n)
            "b": jnp.sum(dyhat)}                     # db = (2/m)(yhat - y) 1


def two_layer_linear(p, X, Y):
    m = Y.shape[-1]
    Z = p["W1"] @ X + p["b1"]                        # Z = W1 X + b1              (k, m)
    yhat = p["W2"] @ Z + p["b2"]                     # yhat = W2 Z + b2
    dyhat = (2.0 / m) * (yhat - Y)                   # dL/dyhat                   (d, m)
    dZ = p["W2"].T @ dyhat                           # dL/dZ = W2^T dL/dyhat      (k, m)
    return {"W2": dyhat @ Z.T,                       # dW2 = (2/m)(yhat - y) Z^T
            "b2": _sum_cols(dyhat),                  # db2 = (2/m)(yhat - y) 1
            "W1": dZ @ X.T,                          # dW1 = W2^T (2/m)(yhat - y) X^T
            "b1": _sum_cols(dZ)}                     # db1 = W2^T (2/m)(yhat - y) 1


def two_layer_sigmoid(p, X, Y):
    m = Y.shape[-1]
    A = sigmoid(p["W1"] @ X + p["b1"])               # A = sigma(W1 X + b1)       (k, m)
    yhat = p["W2"] @ A + p["b2"]                     # yhat = W2 A + b2
    dyhat = (2.0 / m) * (yhat - Y)                   # dL/dyhat
    dZ = (p["W2"].T @ dyhat) * A * (1 - A)           # dL/dZ = W2^T dL/dyhat * sigma'(Z)
    return {"W2": dyhat @ A.T,                       # dW2 = (2/m)(yhat - y) A^T
            "b2": _sum_cols(dyhat),                  # db2 = (2/m)(yhat - y) 1
            "W1": dZ @ X.T,                          # dW1 = dZ X^T
            "b1": _sum_cols(dZ)}                     # db1 = dZ 1


def logistic(p, X, Y):
    m = Y.shape[-1]
    a = sigmoid(p["w"] @ X + p["b"])                 # a = sigma(w X + b)
    dz = (a - Y) / m                                 # dL/dz = (a - y)/m  (BCE o sigmoid)
    return {"w": dz @ X.T,                           # dw = dZ X^T
            "b": jnp.sum(dz)}                        # db = dZ 1


# ---------------------------------------------------------------- Sharpe ratio (Lecture 5, finance)
# Returns r: (T,) per period; S = sqrt(A) mean(r) / std(r) with the population std (ddof 0) and
# A periods per year (12 monthly, 252 daily). Portfolio: r = w^T R, R: (n, T) asset returns.
def sharpe(r, periods=1.0):
    """S = sqrt(A) mu / s, mu = (1/T) sum r_t, s = sqrt((1/T) sum (r_t - mu)^2)."""
    mu = jnp.mean(r, axis=-1)
    s = jnp.sqrt(jnp.mean((r - mu[..., None]) ** 2, axis=-1))
    return jnp.sqrt(periods) * mu / s


def sharpe_grad_returns(r, periods=1.0):
    """dS/dr_t, the chain rule through a mean and a standard deviation: (T,)."""
    T = r.shape[-1]
    mu = jnp.mean(r, axis=-1, keepdims=True)         # dmu/dr_t = 1/T
    d = r - mu
    s = jnp.sqrt(jnp.mean(d ** 2, axis=-1, keepdims=True))  # ds/dr_t = (r_t - mu) / (T s)
    # dS/dr_t = sqrt(A) [dmu/dr_t / s - mu ds/dr_t / s^2]
    return jnp.sqrt(periods) * (1.0 / (T * s) - mu * d / (T * s ** 3))


def neg_sharpe(p, X, Y=None, periods=1.0):
    """Portfolio loss -S(w^T X): p = {"w": (n,)}, X: (n, T) returns; Y is unused."""
    del Y
    return -sharpe(p["w"] @ X, periods)


def neg_sharpe_grad(p, X, Y=None, periods=1.0):
    """d(-S)/dw = -R dS/dr, since dr_t/dw = R[:, t] (r = w^T R)."""
    del Y
    return {"w": -(X @ sharpe_grad_returns(p["w"] @ X, periods))}


def sharpe_grad_moments(w, mu, Sigma, periods=1.0):
    """The same gradient from the moments (REFERENCE.md): with sigma_p = sqrt(w^T Sigma w),
    dS/dw = sqrt(A) [mu / sigma_p - (w^T mu) Sigma w / sigma_p^3]. mu: (n,), Sigma: (n, n)."""
    sp = jnp.sqrt(w @ Sigma @ w)
    return jnp.sqrt(periods) * (mu / sp - (w @ mu) * (Sigma @ w) / sp ** 3)
