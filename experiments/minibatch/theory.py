"""The gradient noise scale (McCandlish et al. 2018): per-example gradients, B_noise =
tr(Sigma)/|G|^2, and the steps-vs-batch law S(B) = S_min (1 + B_crit/B)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp import train


def per_example_grads(model, p, X, Y):
    """[m, n_params] flattened gradients of the per-example losses l_i (L = (1/m) sum l_i),
    each by the hand-derived backward pass on one column."""
    def one(x, y):
        return ravel_pytree(model.grad(p, x[:, None], y[:, None]))[0]
    return jax.vmap(one, in_axes=(1, 1))(X, Y)


def noise_scale(g):
    """(B_noise, tr(Sigma), |G|^2) from per-example gradients ``g`` [m, n_params]: G = mean g_i,
    Sigma = (1/m) sum (g_i - G)(g_i - G)^T (the data set's own covariance: a batch of B
    drawn from it has gradient covariance Sigma / B), B_noise = tr(Sigma) / |G|^2."""
    G = jnp.mean(g, axis=0, keepdims=True)                  # (1, n_params)
    tr = jnp.mean(jnp.sum(jnp.square(g - G), axis=1))
    G2 = jnp.sum(jnp.square(G))
    return tr / G2, tr, G2


def gd_with_noise_scale(model, steps, every):
    """``run(p0, lr, X, Y)``: full-batch GD w -= lr g (train.loop) for every ``every``-th of
    ``steps`` steps (the floor multiple) with B_noise, tr(Sigma), |G|^2 and the full loss
    measured at steps 0, every, 2 every, ..., <= steps."""
    n_blocks = steps // every

    def run(p0, lr, X, Y):
        def measure(p):
            b, tr, G2 = noise_scale(per_example_grads(model, p, X, Y))
            return b, tr, G2, model.loss(p, X, Y)

        def update(q, _):
            return jax.tree.map(lambda w, d: w - lr * d, q, model.grad(q, X, Y)), q

        p, _, outs, _ = train.loop(update, p0, n_blocks * every, every=every,
                                   measure=lambda q, s: (measure(q), s))
        last = measure(p)
        return tuple(jnp.concatenate([o, jnp.asarray(x)[None]]) for o, x in zip(outs, last))

    return jax.jit(run)


def predicted_steps(batches, s_full, m, b_noise):
    """McCandlish et al.: S(B) = S_min (1 + B_noise / B), S_min from the full batch."""
    s_min = s_full / (1 + b_noise / m)
    return s_min * (1 + b_noise / np.asarray(batches, np.float64)), s_min


def fit_critical_batch(batches, steps):
    """(B_crit, S_min) of S(B) = S_min (1 + B_crit / B) fitted to measured steps by least
    squares in log S: B_crit on a log grid 1e-2..1e6 (4001 points), S_min in closed form."""
    b, s = np.asarray(batches, np.float64), np.asarray(steps, np.float64)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 2:
        return None, None
    b, ls = b[ok], np.log(s[ok])
    grid = np.geomspace(1e-2, 1e6, 4001)
    lf = np.log1p(grid[:, None] / b[None, :])               # [grid, batch]
    log_smin = np.mean(ls[None, :] - lf, axis=1)
    err = np.sum((ls[None, :] - lf - log_smin[:, None]) ** 2, axis=1)
    k = int(np.argmin(err))
    return float(grid[k]), float(np.exp(log_smin[k]))
