"""The catapult theory in numpy float64: the uv model on one sample, exactly.

Lewkowycz et al. 2020, section 2: the uv model f = v . u x / sqrt(m) (u, v in R^m, one sample
(x, y), L = (f - y)^2 / 2) trained by GD with lr eta. With r = f - y and the NTK eigenvalue
lambda = x^2 (|u|^2 + |v|^2) / m, one GD step u' = u - eta r x v / sqrt(m),
v' = v - eta r x u / sqrt(m) gives EXACTLY (expand the products; no large-width limit)

    f'      = f - eta lambda r + eta^2 x^2 r^2 f / m
    lambda' = lambda + (eta x^2 r / m) (eta lambda r - 4 f)

With y = 0 (r = f) the second line is lambda' = lambda + eta x^2 f^2 / m (eta lambda - 4): for
2 < eta lambda < 4 the loss grows (|1 - eta lambda| > 1) while lambda falls, until
eta lambda < 2 and the loss converges (catapult); for eta lambda > 4 lambda grows with the loss
and GD diverges. Hence eta_max = 4 / lambda0 at large width. (Their section 3 reports
eta_max ~ 12 / lambda0 for ReLU networks, measured.)

The loss Hessian of the same model has a closed form too (derived here): on the span of
e1 = (u, v) and e2 = (v, u), H e1 = lambda e1 + (x r / sqrt(m)) e2 and
H e2 = (2 x f / sqrt(m) + x r / sqrt(m)) e1, so its top eigenvalue is

    lambda_H = (lambda + sqrt(lambda^2 + 4 x^2 r (2 f + r) / m)) / 2

(and +-x r / sqrt(m) on the rest), i.e. lambda_H = lambda (1 + O(1/m)) at initialization.
For an input x in R^d with the NTK scale 1/sqrt(d) the same holds with x -> |x| / sqrt(d) and
u -> u x / |x| (f does not depend on the other directions of u).
"""

from __future__ import annotations

import numpy as np

LAZY_EDGE = 2.0                                  # eta lambda0 where the catapult starts
EDGE = {"uv": 4.0, "relu": 12.0}                 # eta_max lambda0: uv exact, ReLU reported
EDGE_SOURCE = {"uv": "uv model, exact at large width (section 2)",
               "relu": "ReLU nets, measured by the paper (section 3)"}


def uv_scalars(u, v, x, y):
    """(f, lambda_ntk, r, x_eff, m) of the one-sample uv model: u (m, d), v (1, m) or (m,),
    x (d,), y scalar, f = v u x / sqrt(m d) (NTK scale on the input too)."""
    u, v, x = (np.asarray(a, np.float64) for a in (u, v, x))
    u, v, x = u.reshape(u.shape[0], -1), v.ravel(), x.ravel()
    m, d = u.shape
    ux = u @ x / np.sqrt(d)
    f = float(v @ ux / np.sqrt(m))
    xe2 = float(x @ x / d)                                    # |x|^2 / d
    lam = float((xe2 * (v @ v) + ux @ ux) / m)
    return f, lam, f - float(y), np.sqrt(xe2), m


def uv_hessian_top(u, v, x, y) -> float:
    """Top eigenvalue of the Hessian of (f - y)^2 / 2 for the one-sample uv model (closed
    form above)."""
    f, lam, r, xe, m = uv_scalars(u, v, x, y)
    top = 0.5 * (lam + np.sqrt(lam ** 2 + 4 * xe ** 2 * r * (2 * f + r) / m))
    return float(max(top, abs(xe * r) / np.sqrt(m)))


def uv_map(f0, lam0, lr, steps, m, x=1.0, y=0.0):
    """Iterate the exact one-sample map for ``steps`` steps: returns (loss [steps + 1],
    lambda_ntk [steps + 1]), loss = (f - y)^2 / 2; overflow becomes inf/nan (divergence)."""
    f, lam, x2 = float(f0), float(lam0), float(x) ** 2
    loss, lams = np.empty(steps + 1), np.empty(steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            r = f - y
            loss[t], lams[t] = 0.5 * r * r, lam
            f, lam = (f - lr * lam * r + lr * lr * x2 * r * r * f / m,
                      lam + (lr * x2 * r / m) * (lr * lam * r - 4 * f))
    return loss, lams


def uv_map_edge(f0, lam0, lam_h, steps, m, x=1.0, y=0.0, *, lo=1.0, hi=4.0, tol=1e-4,
                converged=1.0):
    """c_max of the exact map: the largest c = lr lam_h / 2 (lam_h: the Hessian's lambda0) at
    which the map's loss after ``steps`` steps is below ``converged`` x its start, by bisection
    between ``lo`` (assumed stable) and ``hi`` (assumed not) to ``tol``. This is the edge at
    THIS width and initialization (the theory's 2 at infinite width)."""
    def ok(c):
        loss, _ = uv_map(f0, lam0, 2 * c / lam_h, steps, m, x, y)
        return bool(np.isfinite(loss[-1]) and loss[-1] < converged * loss[0])

    if not ok(lo) or ok(hi):
        return None
    while hi - lo > tol * lo:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return 0.5 * (lo + hi)
