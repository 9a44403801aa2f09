"""The gradient noise scale (McCandlish et al. 2018, "An empirical model of large-batch
training", section 2 and appendix A) for batches drawn without replacement.

Per-example gradients g_i (i = 1..m), their mean G (the full gradient) and population
covariance Sigma = (1/m) sum (g_i - G)(g_i - G)^T. The mean gradient of a batch of B examples
is unbiased with covariance
    Sigma / B                            B draws with replacement (i.i.d.),
    Sigma / B * (m - B) / (m - 1)        B distinct examples (without replacement),
the second by the finite-population correction: the draws are negatively correlated,
Cov(g_{s1}, g_{s2}) = -Sigma / (m - 1), so Var(mean) = Sigma/B + (B - 1)/B (-Sigma/(m - 1)).
The sweep draws without replacement: bpexp.train takes step t's batch as the B consecutive
columns of a fresh permutation per epoch, so each batch is a uniform B-subset of the m examples
(consecutive batches of one epoch are disjoint; the model below treats each step on its own).

McCandlish et al.'s model: one SGD step with lr eps on a locally quadratic loss (Hessian H)
lowers it in expectation by eps |G|^2 - (eps^2/2)(G^T H G + tr(H Cov)). With
Cov = phi(B) Sigma / B, phi(B) = 1 (with replacement) or (m - B)/(m - 1) (without):
    eps_opt(B) = eps_max / (1 + B_noise phi(B) / B),   eps_max = |G|^2 / G^T H G,
    dL_opt(B) = dL_max / (1 + B_noise phi(B) / B),     B_noise = tr(H Sigma) / G^T H G,
and steps to a target (each step makes dL_opt progress) S(B) = S_min (1 + B_noise phi(B) / B):
B enters through the effective noise ratio B_noise phi(B)/B = B_noise (1/B - 1/m) m/(m - 1).
Without replacement the full batch (phi(m) = 0) is noiseless, so S(m) = S_min and
eps_opt(m) = eps_max; with replacement S(m) = S_min (1 + B_noise/m). For H ~ identity
B_noise is B_simple = tr(Sigma)/|G|^2, the one measured here.

Both laws are S(B) = a + c/B: with replacement a = S_min, c = S_min B_crit; without,
a = S_min (1 - B_crit/(m - 1)), c = S_min B_crit m/(m - 1). Fitted to steps with S_min and
B_crit free they give the same curve (only the parameters' meaning differs: S_min is S at
B -> inf with replacement, S(m) without); they differ when B_noise is measured, not fitted.
"""

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
    Sigma = (1/m) sum (g_i - G)(g_i - G)^T (the data set's own covariance: a batch of B drawn
    from it has gradient covariance phi(B) Sigma / B, see :func:`phi`), B_noise =
    tr(Sigma) / |G|^2."""
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


MODELS = ("with_replacement", "without_replacement")


def phi(batches, m, replace: bool):
    """The variance factor of a batch's mean gradient, Cov = phi(B) Sigma / B: 1 with
    replacement, the finite-population correction (m - B)/(m - 1) without (1 at B = 1, 0 at
    B = m)."""
    b = np.asarray(batches, np.float64)
    return np.ones_like(b) if replace else (m - b) / (m - 1)


def batch_noise(tr_sigma, batches, m, replace: bool):
    """E|g_batch - G|^2 = tr(Cov) of a batch's mean gradient: phi(B) tr(Sigma) / B."""
    b = np.asarray(batches, np.float64)
    return phi(b, m, replace) * tr_sigma / b


def steps_model(batches, s_min, b_noise, m, replace: bool):
    """S(B) = S_min (1 + B_noise phi(B) / B) (McCandlish et al. eq. 2.11 with the batch's own
    covariance)."""
    b = np.asarray(batches, np.float64)
    return s_min * (1 + b_noise * phi(b, m, replace) / b)


def lr_model(batches, lr_max, b_noise, m, replace: bool):
    """The one-step optimal lr eps_opt(B) = eps_max / (1 + B_noise phi(B) / B) (their eq. 2.7)."""
    b = np.asarray(batches, np.float64)
    return lr_max / (1 + b_noise * phi(b, m, replace) / b)


def predicted_steps(batches, s_full, m, b_noise, replace: bool = False):
    """S(B) with S_min from the full batch's steps: S_min = S(m) / (1 + B_noise phi(m) / m)
    (= S(m) without replacement, phi(m) = 0)."""
    s_min = s_full / (1 + b_noise * float(phi(m, m, replace)) / m)
    return steps_model(batches, s_min, b_noise, m, replace), s_min


def fit_errors(steps, model_steps) -> dict:
    """How well model steps match measured ones: rms of log(model/measured) (the fit's own
    objective) and the largest |model/measured - 1| over the finite measurements."""
    s, f = np.asarray(steps, np.float64), np.asarray(model_steps, np.float64)
    ok = np.isfinite(s) & (s > 0)
    if not ok.any():
        return {"rms_log_error": None, "max_rel_error": None}
    r = np.log(f[ok] / s[ok])
    return {"rms_log_error": float(np.sqrt(np.mean(r ** 2))),
            "max_rel_error": float(np.max(np.abs(f[ok] / s[ok] - 1)))}


def fit_critical_batch(batches, steps, m=None, replace: bool = True):
    """(B_crit, S_min) of S(B) = S_min (1 + B_crit phi(B) / B) fitted to measured steps by least
    squares in log S (``m`` needed without replacement): B_crit on a log grid 1e-2..1e6 (4001
    points), S_min in closed form."""
    b, s = np.asarray(batches, np.float64), np.asarray(steps, np.float64)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 2:
        return None, None
    b, ls = b[ok], np.log(s[ok])
    ratio = phi(b, m, replace) / b
    grid = np.geomspace(1e-2, 1e6, 4001)
    lf = np.log1p(grid[:, None] * ratio[None, :])           # [grid, batch]
    log_smin = np.mean(ls[None, :] - lf, axis=1)
    err = np.sum((ls[None, :] - lf - log_smin[:, None]) ** 2, axis=1)
    k = int(np.argmin(err))
    return float(grid[k]), float(np.exp(log_smin[k]))
