"""Which regime did a gradient-descent run end in: lazy, catapult or divergent?

Lewkowycz et al. 2020 ("The large learning rate phase of deep learning: the catapult
mechanism", arXiv 2003.02218, section 2) describe three regimes of full-batch GD with MSE on a
wide network, set by the learning rate lr against lambda0, the top eigenvalue of the loss
Hessian at initialization: lazy (lr < 2/lambda0: the loss falls monotonically, the curvature
barely moves), catapult (2/lambda0 < lr < eta_max: the loss first grows, the curvature falls
until it is below 2/lr, then the loss converges) and divergent (lr > eta_max).
:func:`classify` reads the regime off the MEASURED curves only (no theory value enters the
rule), so any loop that records a loss curve can label its runs; :func:`edge_bracket` turns
labels on a grid of learning rates into a bracket of the largest stable one.
Pure numpy; names no experiment.
"""

from __future__ import annotations

import numpy as np

LABELS = ("lazy", "catapult", "divergent")


def classify(loss, lr, sharpness_end=None, lam0=None, *, rise: float = 1.05,
             converged: float = 1.0, drop: float = 0.05) -> str:
    """The regime of one run from its loss curve ``loss[t]`` (t = 0 is the loss at
    initialization, then one entry per recorded step, the last one after training).

    The rule, in this order:
      1. "divergent" if any loss (or ``sharpness_end``, when given) is non-finite, or the run
         did not converge: loss[-1] >= converged * loss[0] (the final loss is not below the
         initial one: the run diverged or has not come back down within its steps);
      2. "catapult" if the loss rose on the way: max_t loss[t] > rise * loss[0];
      3. "catapult" also if ``sharpness_end`` and ``lam0`` are both given and the curvature
         fell from above the stability edge to below it, lam0 * lr / 2 > 1 >= sharpness_end *
         lr / 2, by at least the fraction ``drop`` of lam0, sharpness_end <= (1 - drop) lam0
         (a catapult whose spike in the top mode was hidden by the other modes' fall; the
         margin keeps out runs just above the edge whose curvature only lost the O(residual /
         sqrt(width)) part as the loss converged);
      4. "lazy" otherwise (converged without the loss rising above ``rise`` x its start).

    ``lr``: the run's learning rate; ``sharpness_end``: the top Hessian eigenvalue at the end;
    ``lam0``: the top Hessian eigenvalue at initialization. ``rise`` (>= 1) is the tolerance on
    a rise of the loss; ``converged`` (<= 1) the fraction of the initial loss the final loss
    must be below; ``drop`` (in [0, 1)) the curvature's fall that rule 3 needs."""
    loss = np.asarray(loss, np.float64)
    if loss.ndim != 1 or loss.size < 2:
        raise ValueError(f"loss must be a 1-D curve of >= 2 values, got shape {loss.shape}")
    if not (rise >= 1 and 0 < converged <= 1 and 0 <= drop < 1 and lr > 0):
        raise ValueError(f"need rise >= 1, 0 < converged <= 1, 0 <= drop < 1, lr > 0; got "
                         f"{rise}, {converged}, {drop}, {lr}")
    if not np.all(np.isfinite(loss)) or (sharpness_end is not None
                                         and not np.isfinite(sharpness_end)):
        return "divergent"
    if not loss[-1] < converged * loss[0]:
        return "divergent"
    if loss.max() > rise * loss[0]:
        return "catapult"
    if (sharpness_end is not None and lam0 is not None
            and lam0 * lr / 2 > 1 >= sharpness_end * lr / 2
            and sharpness_end <= (1 - drop) * lam0):
        return "catapult"
    return "lazy"


def classify_curves(loss, *, rise: float = 1.05, converged: float = 1.0) -> np.ndarray:
    """:func:`classify`'s rules 1, 2 and 4 (no sharpness), vectorized over runs: ``loss[...,
    t]`` -> a str array of ``loss.shape[:-1]``. For grids too big for a loop per run; equal to
    ``classify_many(loss, lr)`` (a test checks it)."""
    loss = np.asarray(loss, np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.all(np.isfinite(loss), axis=-1) | ~(loss[..., -1] < converged * loss[..., 0])
        rose = np.max(loss, axis=-1) > rise * loss[..., 0]
    return np.where(bad, "divergent", np.where(rose, "catapult", "lazy")).astype("<U9")


def classify_many(loss, lr, sharpness_end=None, lam0=None, **kw) -> np.ndarray:
    """:func:`classify` over runs: ``loss[..., t]``, ``lr``, ``sharpness_end`` and ``lam0``
    broadcast to ``loss.shape[:-1]``. Returns a str array of that shape."""
    loss = np.asarray(loss, np.float64)
    shape = loss.shape[:-1]
    lr = np.broadcast_to(np.asarray(lr, np.float64), shape)
    se = None if sharpness_end is None else np.broadcast_to(
        np.asarray(sharpness_end, np.float64), shape)
    l0 = None if lam0 is None else np.broadcast_to(np.asarray(lam0, np.float64), shape)
    out = np.empty(shape, dtype="<U9")
    for idx in np.ndindex(shape):
        out[idx] = classify(loss[idx], float(lr[idx]), None if se is None else float(se[idx]),
                            None if l0 is None else float(l0[idx]), **kw)
    return out


def edge_bracket(x, divergent) -> dict:
    """The largest stable value of a grid, bracketed: ``x[k]`` ascending grid values (e.g.
    learning rates), ``divergent[k, s]`` bool for run s at x[k] (or ``[k]``).

    lo = the largest x[k] such that no run diverged at x[k] or at any smaller grid value;
    hi = the smallest x[k] such that every run diverged at x[k] and at every larger value.
    Grid values strictly between (some runs diverged, or a stable one above a divergent one)
    are counted in ``mixed``. ``mid`` = (lo + hi) / 2. lo is None if the smallest value already
    diverged, hi None if the largest did not all diverge; mid is None unless both exist."""
    x = np.asarray(x, np.float64)
    d = np.asarray(divergent, bool).reshape(len(x), -1)
    if len(x) == 0 or np.any(np.diff(x) <= 0):
        raise ValueError("x must be a non-empty ascending grid")
    anyd, alld = d.any(axis=1), d.all(axis=1)
    n_ok = int(np.argmax(anyd)) if anyd.any() else len(x)      # x[:n_ok] all stable
    tail = alld[::-1]
    n_div = int(np.argmin(tail)) if not tail.all() else len(x)  # x[-n_div:] all diverged
    lo = float(x[n_ok - 1]) if n_ok > 0 else None
    hi = float(x[len(x) - n_div]) if n_div > 0 else None
    mixed = len(x) - n_ok - n_div
    mid = 0.5 * (lo + hi) if lo is not None and hi is not None else None
    return {"lo": lo, "hi": hi, "mid": mid, "mixed": max(mixed, 0)}
