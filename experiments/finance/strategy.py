"""The walk-forward S&P 500 rule: positions from strictly past features, net returns after a
cost, GD on -Sharpe over windows x lrs x seeds x costs in one vmapped call."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import data, gradcheck, grads, train
from bpexp.experiments.finance.theory import DAYS


def standardize(F_train, F):
    """Features F: (n, T) z-scored with the TRAINING window's mean and std, plus a bias row:
    (n + 1, T). Statistics of the test window are never used."""
    mu, sd = F_train.mean(axis=-1, keepdims=True), F_train.std(axis=-1, keepdims=True)
    Z = (F - mu) / sd
    return jnp.concatenate([Z, jnp.ones_like(Z[..., :1, :])], axis=-2)


def positions(theta, Z):
    """position_t = tanh(theta . z_t): (T,), z_t built from returns before day t only."""
    return jnp.tanh(theta @ Z)


def net_returns(pos, r, cost, eps=None, prev=0.0):
    """pos_t r_t minus the cost of changing the position (from ``prev`` before day 0): smooth
    c (sqrt(Δ^2 + eps) - sqrt(eps)) when eps is given (training), else exact c |Δ|."""
    d = jnp.diff(pos, prepend=prev)
    tc = cost * (jnp.sqrt(d * d + eps) - jnp.sqrt(eps)) if eps is not None else cost * jnp.abs(d)
    return pos * r - tc


def strategy_loss(theta, Z, r, cost, eps):
    """-Sharpe (annualized, sqrt(252)) of the net daily returns."""
    return -grads.sharpe(net_returns(positions(theta, Z), r, cost, eps), DAYS)


def walk_forward(m, train_days, test_days):
    """Window starts s_k = k test_days: train [s_k, s_k + train), test the next test_days."""
    K = (m - train_days) // test_days
    return [(k * test_days, k * test_days + train_days, k * test_days + train_days + test_days)
            for k in range(K)]


def make_strategy_runs(steps, record_every, eps, eval_cost):
    """jit: windows x lrs x seeds x train_costs runs of GD on strategy_loss. Returns final theta
    and, every ``record_every`` steps, in-sample and out-of-sample Sharpe of the net returns
    (exact cost ``eval_cost``)."""
    rec = np.arange(0, steps + 1, record_every)
    grad = jax.grad(strategy_loss)

    def sharpe_net(theta, Z, r, prev=0.0):
        return grads.sharpe(net_returns(positions(theta, Z), r, eval_cost, prev=prev), DAYS)

    def one(theta0, lr, c, Ztr, rtr, Zte, rte):
        def update(th, _):
            return th - lr * grad(th, Ztr, rtr, c, eps), th

        thT, _, _, path = train.loop(update, theta0, steps, each_step=lambda th: th)
        path = jnp.concatenate([path, thT[None]])[rec]
        ins = jax.vmap(lambda th: sharpe_net(th, Ztr, rtr))(path)
        # out of sample the rule continues from its last in-sample position
        out = jax.vmap(lambda th: sharpe_net(th, Zte, rte, positions(th, Ztr)[-1]))(path)
        return thT, ins, out

    # axes: theta0 [K, L, S, n], lr [L], cost [C], data [K, ...]
    f = jax.vmap(one, (None, None, 0, None, None, None, None))        # train cost
    f = jax.vmap(f, (0, None, None, None, None, None, None))          # seed
    f = jax.vmap(f, (0, 0, None, None, None, None, None))             # lr
    f = jax.vmap(f, (0, None, None, 0, 0, 0, 0))                      # window
    return jax.jit(f), rec


def lookahead_check(theta, days, cut_fraction=0.5, seed=0):
    """Change every price after a cut day (x random factors), rebuild the features, standardize
    with fixed statistics, recompute positions: max |Δ position| on days up to the cut (must
    be exactly 0: position_t depends on prices up to t-1 only)."""
    _, P = data.sp500_prices()
    X, _, _, t0 = data.sp500_features(P)
    start = X.shape[1] - days if days else 0
    cut = start + int(cut_fraction * (X.shape[1] - start))  # column index
    Q = P.copy()
    Q[t0 + cut:] *= np.random.default_rng(seed).uniform(0.5, 1.5, Q[t0 + cut:].shape)
    X2 = data.sp500_features(Q)[0]
    Xs = X[:, start:]
    pos1 = np.asarray(positions(jnp.asarray(theta), standardize(Xs, jnp.asarray(Xs))))
    pos2 = np.asarray(positions(jnp.asarray(theta), standardize(Xs, jnp.asarray(X2[:, start:]))))
    n_past = cut - start + 1  # positions on days up to and including the cut day
    assert not np.array_equal(pos1[n_past:], pos2[n_past:])  # the change does reach the future
    return float(np.max(np.abs(pos1[:n_past] - pos2[:n_past])))


def _strategy_fd(theta, Z, r, cost, eps, h=1e-6):
    g = np.asarray(jax.jit(jax.grad(strategy_loss))(jnp.asarray(theta), Z, jnp.asarray(r),
                                                     cost, eps))
    E = h * np.eye(theta.size)
    loss = jax.jit(jax.vmap(strategy_loss, (0, None, None, None, None)))
    fd = (np.asarray(loss(theta + E, Z, r, cost, eps))
          - np.asarray(loss(theta - E, Z, r, cost, eps))) / (2 * h)
    return gradcheck.rel_err(g, fd)
