"""Theory of the finance experiment: the tangency portfolio (the maximum of the Sharpe ratio in
closed form), the portfolio loss -S(w) and its GD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import grads, train

TOL_AD, TOL_FD, TOL_SHARPE, TOL_COS = 1e-10, 1e-6, 1e-6, 1e-6
MONTHS, DAYS = 12.0, 252.0  # periods per year: Sharpe ratios are annualized by sqrt of these


def moments(R):
    """mu: (n,), Sigma: (n, n) of returns R: (n, T), population covariance (ddof 0)."""
    mu = R.mean(axis=1)
    D = R - mu[:, None]
    return mu, D @ D.T / R.shape[1]


def tangency(R, periods=MONTHS):
    """Closed form: w* = Sigma^{-1} mu (any positive multiple), S* = sqrt(A mu^T Sigma^{-1} mu)."""
    mu, Sigma = moments(np.asarray(R, np.float64))
    w = np.linalg.solve(Sigma, mu)
    return w, float(np.sqrt(periods * mu @ w))


def pf_loss(w, R):
    return grads.neg_sharpe({"w": w}, R, None, MONTHS)


def pf_gd(R, W0, lr, steps):
    """GD on -S(w) with the hand gradient from every start. W0: (k, n) -> final w (k, n), and per
    step (k, steps + 1): Sharpe, |w|, |g|^2 (at the step's w), and the path (k, steps + 1, n)."""

    def one(w0):
        def update(w, _):
            g = grads.neg_sharpe_grad({"w": w}, R, None, MONTHS)["w"]
            return w - lr * g, (w, -pf_loss(w, R), g @ g)

        wT, _, _, (path, S, gg) = train.loop(update, w0, steps, each_step=lambda info: info)
        gT = grads.neg_sharpe_grad({"w": wT}, R, None, MONTHS)["w"]
        return (jnp.concatenate([path, wT[None]]), jnp.append(S, -pf_loss(wT, R)),
                jnp.append(gg, gT @ gT))

    return jax.vmap(one)(W0)
