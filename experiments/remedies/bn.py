"""Why the batch-norm prediction overshoots at depth: the per-layer factor split into its three
parts, measured at init.

For a batch-normalized hidden pair (l, l + 1) (no skip), with g_l = dL/da_l:
    g_l = W_{l+1}^T delta_{l+1}          transfer   T = ||g_l|| / (sqrt(n Var W) ||delta_{l+1}||)
    u_l = g_l * f'(y_l) * inv_std_l      gain       G = ||u_l|| / ||g_l||
    delta_l = P(u_l)                     projection P = ||delta_l|| / ||u_l|| (P removes the
                                         parts of each row along 1 and zhat)
so ||delta_l|| / ||delta_{l+1}|| = sqrt(n Var W) T G P exactly (equal widths). The prediction
sqrt(n Var W E[(f'/sigma_B)^2]) takes T = 1 (delta_{l+1} independent of W_{l+1}: Glorot's
assumption), G = its mean-square value and P = 1. Batch norm breaks the first: the layer's
output is invariant to the scale of each row w_i of W_{l+1}, so dL/dw_i = delta_{l+1,i}
a_l^T is orthogonal to w_i, i.e. each row delta_{l+1,i} is orthogonal (over the batch) to
w_i^T a_l. That ties delta_{l+1} to W_{l+1}, and ||W^T delta|| falls short of
sqrt(n Var W) ||delta||. ``transfer_independent`` recomputes T with the W of another seed (same
distribution, independent of delta): it returns to ~1, which locates the shortfall.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import primitives, stacked, theory
from bpexp.experiments.depth_sweep import engine


@functools.lru_cache(maxsize=8)
def _compiled(n, h, d_out, D, dtype, output):
    """The jitted per-seed pass, one per shape (so repeated calls do not compile again)."""
    def one(draws, X, Y):
        q = stacked.unstack(engine.init_stack(draws, "standard", 1.0, "batch"), D)
        _, _, fp, deltas = stacked.loss_and_grad(q, X, Y, "sigmoid", output, False, "batch")
        return ([q[f"W{l}"] for l in range(1, D + 2)], [deltas[l] for l in range(1, D + 2)],
                [c.fprime for c in fp.caches], [c.inv_std for c in fp.caches])

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def _pieces(X, Y, D, h, seeds, dtype, output, draws=None):
    """Per seed: the hidden W_l, delta_l, f'(y_l), inv_std_l (l = 1..D) and W_L, delta_L of
    the batch-normalized sigmoid net (standard init) of the remedies run. ``draws``: the
    seeds' engine.seed_draws when the caller has them already."""
    n, d_out, dt = X.shape[0], Y.shape[0], jnp.dtype(dtype)
    if draws is None:
        draws = engine.draws_fn(n, h, d_out, D, dt)(jnp.asarray(seeds, jnp.int32))
    out = _compiled(n, h, d_out, D, dt, output)(draws, X, Y)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), out)


def decompose(X, Y, D, h, seeds, dtype, output="softmax_ce", draws=None) -> dict:
    """Geometric means over the hidden pairs (l, l + 1), l = 1..D-1, and the seeds of T, T with
    independent weights, G / G_predicted and P; ``measured_over_predicted`` = their product's
    counterpart, the measured per-layer factor over the prediction."""
    Ws, ds, fps, invs = _pieces(X, Y, D, h, seeds, dtype, output, draws)
    S = len(seeds)
    nvar = h * theory.init_variance("standard", h, h)
    logs = {k: [] for k in ("T", "T_ind", "G_ratio", "P", "meas_over_pred")}
    for s in range(S):
        for l in range(D - 1):                       # pair (l + 1, l + 2) in 1-based layers
            W, W_ind = Ws[l + 1][s], Ws[l + 1][(s + 1) % S]
            dn, up = ds[l + 1][s], ds[l][s]
            g = W.T @ dn
            u = g * fps[l][s] * invs[l][s]
            gain_pred = np.sqrt(np.mean((fps[l][s] * invs[l][s]) ** 2))
            pred = np.sqrt(nvar) * gain_pred
            ng, nu, nd = (np.linalg.norm(a) for a in (g, u, dn))
            logs["T"].append(np.log(ng / (np.sqrt(nvar) * nd)))
            logs["T_ind"].append(np.log(np.linalg.norm(W_ind.T @ dn) / (np.sqrt(nvar) * nd)))
            logs["G_ratio"].append(np.log(nu / ng / gain_pred))
            logs["P"].append(np.log(np.linalg.norm(up) / nu))
            logs["meas_over_pred"].append(np.log(np.linalg.norm(up) / nd / pred))
    g = {k: float(np.exp(np.mean(v))) for k, v in logs.items()}
    return {"depth": int(D), "pairs": D - 1, "transfer": g["T"],
            "transfer_independent": g["T_ind"], "gain_over_predicted": g["G_ratio"],
            "projection": g["P"], "measured_over_predicted": g["meas_over_pred"],
            "eps": primitives.BN_EPS}
