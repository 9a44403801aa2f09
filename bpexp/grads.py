"""Hand-derived backward passes, one per model, in the notation of the CS230 notes.

Each returns the same pytree as ``jax.grad(model.loss)(p, X, Y)``; tests prove it.
``X: (n, m)``, ``Y: (d_out, m)``; ``1`` is the all-ones (m, 1), i.e. a sum over columns.
Autodiff is never used here.
"""

from __future__ import annotations

import jax.numpy as jnp

from bpexp.primitives import (activate, activation_prime, batch_norm, is_residual, n_layers,
                              output, sigmoid)


def _sum_cols(A):
    """A 1 : (rows, 1), the bias gradient."""
    return jnp.sum(A, axis=1, keepdims=True)


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


def output_delta(name, zL, Y):
    """delta_L = dL/dz_L for each output/loss pair (primitives.OUTPUTS)."""
    return output(name).delta(zL, Y)


def mlp_forward_cache(p, X, activation, residual=False, norm="none", bn=None):
    """Forward pass keeping z_l and a_l (a_0 = X) for the backward pass. With norm="batch" the
    dict ``bn`` (if given) receives per hidden layer l: ``y`` (the normalized pre-activation
    gamma zhat + beta that f sees), ``zhat`` and ``inv_std``."""
    L = n_layers(p)
    zs, acts = [], [X]
    for l in range(1, L + 1):
        z = p[f"W{l}"] @ acts[-1] + p[f"b{l}"]       # z_l = W_l a_{l-1} + b_l
        zs.append(z)
        if l < L:
            y = z
            if norm == "batch":                      # y_l = gamma_l zhat_l + beta_l
                y, zhat, inv_std = batch_norm(z, p[f"gamma{l}"], p[f"beta{l}"])
                if bn is not None:
                    bn[l] = {"y": y, "zhat": zhat, "inv_std": inv_std}
            a = activate(activation, y)              # a_l = f(y_l)
            if is_residual(residual, acts[-1].shape[0], a.shape[0]):
                a = acts[-1] + a                     # a_l = a_{l-1} + f(y_l)
            acts.append(a)
    return zs, acts


def batch_norm_backward(dy, zhat, inv_std, gamma):
    """The classic batch-norm backward (Ioffe & Szegedy 2015) over the m columns, from
    dy = dL/dy: (h, m). Returns (dz, dgamma, dbeta)."""
    m = dy.shape[-1]
    dgamma = _sum_cols(dy * zhat)                    # dgamma = (dy * zhat) 1
    dbeta = _sum_cols(dy)                            # dbeta = dy 1
    dzhat = dy * gamma                               # dzhat = dy gamma
    # dz = (1/m) (var + eps)^(-1/2) [m dzhat - dzhat 1 - zhat (dzhat * zhat) 1]
    dz = (inv_std / m) * (m * dzhat - _sum_cols(dzhat) - zhat * _sum_cols(dzhat * zhat))
    return dz, dgamma, dbeta


def mlp(p, X, Y, *, activation="sigmoid", output="identity_mse", residual=False, norm="none",
        return_deltas=False):
    """The delta recursion of Lecture 5, written once for any depth:
    delta_L = dL/da_L * f'(z_L); delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l);
    dW_l = delta_l a_{l-1}^T ; db_l = delta_l 1.
    Written through da_l = dL/da_l so that the variants slot in: a residual layer adds da_l to
    da_{l-1} (the identity path); batch norm turns dL/dy_l into delta_l = dL/dz_l by its own
    backward. ``deltas[l]`` = dL/dz_l."""
    L = n_layers(p)
    bn = {}
    zs, acts = mlp_forward_cache(p, X, activation, residual, norm, bn)
    delta = output_delta(output, zs[-1], Y)          # delta_L = dL/dz_L
    g, deltas, da = {}, {L: delta}, None            # da = dL/da_l of the layer above
    for l in range(L, 0, -1):
        g[f"W{l}"] = delta @ acts[l - 1].T           # dW_l = delta_l a_{l-1}^T
        g[f"b{l}"] = _sum_cols(delta)                # db_l = delta_l 1
        if l > 1:
            skip = l < L and is_residual(residual, acts[l - 1].shape[0], acts[l].shape[0])
            da = (p[f"W{l}"].T @ delta               # dL/da_{l-1} = W_l^T delta_l
                  + (da if skip else 0))             #   + dL/da_l if a_l = a_{l-1} + f(y_l)
            y = bn[l - 1]["y"] if norm == "batch" else zs[l - 2]
            delta = da * activation_prime(activation, y, None)   # dL/dy_{l-1} = da * f'(y_{l-1})
            if norm == "batch":
                delta, g[f"gamma{l - 1}"], g[f"beta{l - 1}"] = batch_norm_backward(
                    delta, bn[l - 1]["zhat"], bn[l - 1]["inv_std"], p[f"gamma{l - 1}"])
            deltas[l - 1] = delta                    # delta_{l-1} = dL/dz_{l-1}
    g = {k: g[k] for k in p}                         # same key order as params
    return (g, deltas) if return_deltas else g


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
