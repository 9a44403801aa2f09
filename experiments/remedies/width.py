"""ReLU + He at finite width: which per-layer factor the theory predicts, and the width-dependent
prediction of the one the run measures (issue 18, finding 5).

One example, one ReLU layer with He weights (zero biases): delta_l = f'(z_l) * (W_{l+1}^T
delta_{l+1}). Given delta_{l+1}, the h entries of W_{l+1}^T delta_{l+1} are independent
N(0, (2/h) ||delta_{l+1}||^2) and f'(z_l) = 1[z_l > 0] keeps K ~ Bin(h, 1/2) of them (the
sign symmetry of the weights makes the mask independent of them: Hanin 2018, "Which neural net
architectures give rise to exploding and vanishing gradients?", section 3; Hanin & Nica 2019),
so the squared per-layer ratio of two hidden layers of width h is exactly

    R = ||delta_l||^2 / ||delta_{l+1}||^2 = (2/h) chi^2_K,   K ~ Bin(h, 1/2).

Its MEAN is E[R] = (2/h) E[K] = 1 at every width: that is what the Glorot/He factor
sqrt(n Var(W) E[f'^2]) = 1 predicts (a mean of the squared norm ratio), and the product of D
such means is the mean of the product. A run measures something else: the geometric mean of
the ratio (the median over seeds of a product of random factors), i.e. exp(E[log R] / 2) per
layer, and by Jensen E[log R] < log E[R] = 0:

    E[log R] = log(2/h) + E_K[psi(K/2)] + log 2           (E log chi^2_k = psi(k/2) + log 2)
    Var[log R] = E_K[psi'(K/2)] + Var_K[psi(K/2)]          (Var log chi^2_k = psi'(k/2))

with K conditioned on K >= 1 (K = 0, probability 2^-h, kills the example's gradient; such
examples are counted and left out). For large h, Var[R] = 5/h and E[log R] = -5/(2h) + O(h^-2):
the per-layer factor is about 1 - 5/(4h), 0.96 at h = 32, and over D layers the product is
log-normal with median exp(D E[log R] / 2) and log-spread sqrt(D Var[log R]) / 2.

The law is exact when delta_L does not depend on the forward pass (the tests check it on deep
numpy nets). With the softmax loss one direction is tied to the output: a ReLU net with zero
biases is positively homogeneous, so dL/da_l . a_l = delta_L . z_L (Euler), which lifts E[R]
slightly (one-example numpy nets: +1.4% at width 16, +0.8% at 64), within the run's errors.

The run's headline factor is that of the batch's Frobenius norms (m examples at once):
R_batch = sum_j w_j R_j with weights w_j = ||delta_{l+1,j}||^2 / ||delta_{l+1}||^2, so by
Jensen sum_j w_j log R_j <= log R_batch, and log E[R_batch] = 0 bounds it from above: the batch
factor lies between the per-example prediction and 1 (the weights are taken as independent of
the ratios, as in the law above).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import primitives, stacked
from bpexp.experiments.depth_sweep import engine

EULER = 0.5772156649015329


def _psi_half(k):
    """psi(k/2) and psi'(k/2) for integers k >= 1 (closed forms: psi(n) = -gamma + H_{n-1},
    psi(n + 1/2) = -gamma - 2 ln 2 + sum_{j<=n} 2/(2j - 1); psi'(n) = pi^2/6 - sum_{j<n} 1/j^2,
    psi'(n + 1/2) = pi^2/2 - 4 sum_{j<=n} 1/(2j - 1)^2)."""
    k = np.asarray(k, np.int64)
    N = int(k.max()) // 2 + 1
    j = np.arange(1, N + 1, dtype=np.float64)
    H = np.concatenate([[0.0], np.cumsum(1 / j)])                  # H_n, n = 0..N
    H2 = np.concatenate([[0.0], np.cumsum(1 / j ** 2)])
    O = np.concatenate([[0.0], np.cumsum(2 / (2 * j - 1))])        # sum_{j<=n} 2/(2j-1)
    O2 = np.concatenate([[0.0], np.cumsum(1 / (2 * j - 1) ** 2)])
    n = k // 2
    even = k % 2 == 0
    psi = np.where(even, -EULER + H[np.maximum(n - 1, 0)], -EULER - 2 * math.log(2) + O[n])
    psi1 = np.where(even, math.pi ** 2 / 6 - H2[np.maximum(n - 1, 0)],
                    math.pi ** 2 / 2 - 4 * O2[n])
    return psi, psi1


def relu_log_ratio_moments(h: int) -> tuple[float, float]:
    """(E[log R], Var[log R]) of R = (2/h) chi^2_K, K ~ Bin(h, 1/2) conditioned on K >= 1:
    the squared per-layer ratio of dL/dz for one example between two ReLU layers of width h
    with He weights (module docstring). Exact (finite sums), float64."""
    k = np.arange(1, h + 1)
    logp = np.array([math.lgamma(h + 1) - math.lgamma(i + 1) - math.lgamma(h - i + 1)
                     for i in k]) - h * math.log(2)
    p = np.exp(logp)
    p /= p.sum()
    psi, psi1 = _psi_half(k)
    mean = math.log(2 / h) + math.log(2) + float(p @ psi)
    var = float(p @ psi1) + float(p @ psi ** 2) - float(p @ psi) ** 2
    return mean, var


def relu_width_theory(h: int, D: int, d_out: int) -> dict:
    """The predictions for width h and depth D (D - 1 hidden pairs, then the output pair of
    fan-out d_out, whose ratio is R d_out / h): per-layer factor of the mean (1) and of the
    geometric mean, the end-to-end RMS(dz_1) / RMS(dz_D) (hidden pairs) and RMS(dz_1) /
    RMS(dz_L) (all D pairs) as product of means and as median, and the log-spread of the
    hidden product."""
    e, v = relu_log_ratio_moments(h)
    return {"factor_mean_field": 1.0, "factor_per_example": math.exp(e / 2),
            "factor_asymptotic": math.exp(-5 / (4 * h)),
            "mean_sq_ratio": 1.0, "log_ratio_mean": e, "log_ratio_var": v,
            "hidden_end_to_end_median": math.exp((D - 1) * e / 2),
            "hidden_end_to_end_log_sd": math.sqrt((D - 1) * v) / 2,
            "first_last_mean_field": math.sqrt(d_out / h),
            "first_last_median": math.sqrt(d_out / h) * math.exp(D * e / 2)}


def _sq_norms(X, Y, D, h, seeds, dtype, output):
    """The traced body of per_example_sq_norms (seeds: a traced int32 array)."""
    n, d_out = X.shape[0], Y.shape[0]
    out = primitives.output(output)

    def one(draws):
        p = engine.init_stack(draws, "he", 1.0)
        zL, a_D, buf = stacked.padded_forward(p, X, D, "relu")
        _, st = stacked.padded_backward(p, X, D, a_D, buf, out.delta(zL, Y), False,
                                        lambda d, w: jnp.sum(d * d, axis=0))
        return st

    return jax.vmap(one)(engine.seed_draws(seeds, n, h, d_out, D, dtype))


def per_example_sq_norms(X, Y, D, h, seeds, dtype, output="softmax_ce"):
    """[seed, layer l = 1..D+1, example] ||dL/dz_l||^2 of each example's column at init, for
    the ReLU + He net of depth D and width h (the draws of the remedies run: the same seed
    gives the same weights as its ``relu_he`` net at that width and depth max)."""
    return all_sq_norms(X, Y, D, [h], seeds, dtype, output)[0]


def all_sq_norms(X, Y, D, widths, seeds, dtype, output="softmax_ce"):
    """per_example_sq_norms of every width in ``widths``, one compiled call for all of them
    (one compile of one module costs less than one per width)."""
    f = jax.jit(lambda s: [_sq_norms(X, Y, D, h, s, dtype, output) for h in widths])
    return [np.asarray(a, np.float64) for a in f(jnp.asarray(seeds, jnp.int32))]


def measure(sq, h: int, d_out: int) -> dict:
    """The measured counterparts of relu_width_theory from ``sq`` [seed, layer, example]
    (per_example_sq_norms). Hidden pairs l = 1..D-1; examples whose gradient died (a zero
    norm at some hidden layer) are counted and left out. Standard errors (``*_se``) come from
    the spread of the per-seed means (the examples of one net are correlated)."""
    S, L, _ = sq.shape
    D = L - 1
    hid = sq[:, :D]
    alive = np.all(hid > 0, axis=1)                                  # [seed, example]
    with np.errstate(divide="ignore", invalid="ignore"):
        logR = np.log(hid[:, :-1] / hid[:, 1:])                      # [seed, pair, example]
        R = hid[:, :-1] / hid[:, 1:]
        e2e = 0.5 * np.log(hid[:, 0] / hid[:, -1])[alive]            # hidden product, per example
        fl_e = 0.5 * np.log((sq[:, 0] / h) / (sq[:, -1] / d_out))[alive]
    w = alive[:, None, :]

    def seed_means(a):                                               # mean over pairs, examples
        return np.array([a[s][np.broadcast_to(w[s], a[s].shape)].mean() for s in range(S)])

    lm, rm = seed_means(logR), seed_means(R)
    Rb = hid.sum(-1)[:, :-1] / hid.sum(-1)[:, 1:]                   # [seed, pair] batch ratios
    fl_b = np.sqrt((sq[:, 0].sum(-1) / h) / (sq[:, -1].sum(-1) / d_out))   # first / last, batch
    se = lambda a: float(np.std(a, ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")  # noqa: E731
    return {"factor_per_example": math.exp(lm.mean() / 2), "log_factor_se": se(lm) / 2,
            "mean_sq_ratio": float(rm.mean()), "mean_sq_ratio_se": se(rm),
            "log_ratio_var": float(np.var(logR[np.broadcast_to(w, logR.shape)])),
            "hidden_end_to_end_median": math.exp(float(np.mean(e2e))),
            "hidden_end_to_end_log_sd": float(np.std(e2e)),
            "factor_batch": math.exp(float(np.mean(np.log(Rb))) / 2),
            "first_last_batch_median": float(np.median(fl_b)),
            "first_last_per_example_median": math.exp(float(np.mean(fl_e))),
            "dead_examples": int(np.sum(~alive)), "examples": int(alive.size)}


def study(X, Y, D, widths, seeds, dtype, output="softmax_ce"):
    """Theory beside measurement per width: ({"depth", "seeds", "widths": {h: {"theory": ...,
    "measured": ...}}}, sq [width, seed, layer, example])."""
    d_out = Y.shape[0]
    out, sqs = {}, []
    for h, sq in zip(widths, all_sq_norms(X, Y, D, widths, seeds, dtype, output)):
        out[str(h)] = {"theory": relu_width_theory(h, D, d_out), "measured": measure(sq, h, d_out)}
        sqs.append(sq)
    return {"depth": int(D), "seeds": [int(s) for s in seeds], "widths": out}, np.stack(sqs)
