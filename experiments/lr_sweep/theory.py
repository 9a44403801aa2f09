"""The threshold of GD: 2/lambda_max (exact for a quadratic loss; a lower bound from the
Hessian at init otherwise) and its measurement from a swept grid."""

from __future__ import annotations

import jax
import numpy as np

from bpexp import make, optim, theory


def threshold_theory(cfg, model, ds, seeds, iters):
    """(lambda_max, threshold, kind), always in float64 (numpy, or JAX with x64 switched on
    for the call) whatever the run's precision; kind is exact | estimate (a lower bound) |
    none. ``ds``: the data in float64; the initial weights are the runs' (same seed,
    same draws)."""
    if cfg.model.name in ("univariate", "multivariate"):
        lam, kind = theory.lambda_max_quadratic(ds.X), "exact"
    else:
        # top ALGEBRAIC eigenvalue at init (Lanczos), median over the sweep's seeds
        with jax.enable_x64(True):
            lams = [theory.top_eigenvalues(model.loss, make.init_params(cfg, model, ds, int(s),
                                                                       dtype_=np.float64),
                                           ds.X, ds.Y, key=jax.random.PRNGKey(0), iters=iters)[0]
                    for s in seeds]
        lam, kind = float(np.median(lams)), "estimate"
    o = cfg.optimizer
    hp = {k: getattr(o, k) for k in optim.OPTIMIZERS[o.name].hparams}
    thr = optim.stability_bound(o.name, lam, **hp)      # the optimizer row's bound
    return (lam, thr, kind) if thr is not None else (lam, None, "none")  # adaptive: none


def measured_threshold(lrs, frac):
    """Geometric midpoint between the largest lr where no seed diverged (below the first lr
    where all did) and the smallest lr where all seeds diverged."""
    all_bad = np.nonzero(frac >= 1.0)[0]
    if all_bad.size == 0:
        return None, None, None
    hi = lrs[all_bad[0]]
    ok = np.nonzero((frac == 0) & (lrs < hi))[0]
    if ok.size == 0:
        return None, None, float(hi)
    lo = lrs[ok[-1]]
    return float(np.sqrt(lo * hi)), float(lo), float(hi)
