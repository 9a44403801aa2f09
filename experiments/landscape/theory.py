"""The landscape's surfaces: the convex bowl and the double well, their critical points found
numerically (Newton from a grid of starts, classified by the Hessian's eigenvalues), and GD on
the lecture's toy quadratic beside its closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import theory, train


class Surface:
    """f, grad, hess of a 2-D surface on arrays W: (..., 2) -> (...), (..., 2), (..., 2, 2)."""

    def __init__(self, formula, f, grad, hess):
        self.formula, self.f, self.grad, self.hess = formula, f, grad, hess


def bowl() -> Surface:
    return Surface("w1^2 + w2^2",
                   lambda W: W[..., 0] ** 2 + W[..., 1] ** 2,
                   lambda W: 2.0 * W,
                   lambda W: np.broadcast_to(2.0 * np.eye(2), W.shape[:-1] + (2, 2)).copy())


def double_well(c=0.5, t=(0.3, -0.2)) -> Surface:
    """(w1^2 - 1)^2 + (w2^2 - 1)^2 + c w1 w2 + t1 w1 + t2 w2."""
    t1, t2 = float(t[0]), float(t[1])

    def f(W):
        w1, w2 = W[..., 0], W[..., 1]
        return (w1 ** 2 - 1) ** 2 + (w2 ** 2 - 1) ** 2 + c * w1 * w2 + t1 * w1 + t2 * w2

    def grad(W):
        w1, w2 = W[..., 0], W[..., 1]
        return np.stack([4 * w1 * (w1 ** 2 - 1) + c * w2 + t1,   # df/dw1
                         4 * w2 * (w2 ** 2 - 1) + c * w1 + t2], -1)

    def hess(W):
        w1, w2 = W[..., 0], W[..., 1]
        off = np.full_like(w1, c)
        return np.stack([np.stack([12 * w1 ** 2 - 4, off], -1),   # d2f/dw1^2 = 12 w1^2 - 4
                         np.stack([off, 12 * w2 ** 2 - 4], -1)], -2)

    terms = "".join(f" {'-' if v < 0 else '+'} {abs(v):g} {name}"
                    for v, name in ((c, "w1 w2"), (t1, "w1"), (t2, "w2")) if v)
    return Surface("(w1^2-1)^2 + (w2^2-1)^2" + terms, f, grad, hess)


def classify(eigs, tol=1e-9) -> str:
    """Hessian eigenvalue signs -> minimum | maximum | saddle | degenerate."""
    if np.min(np.abs(eigs)) <= tol:
        return "degenerate"
    if np.all(eigs > 0):
        return "minimum"
    if np.all(eigs < 0):
        return "maximum"
    return "saddle"


def critical_points(s: Surface, box=2.0, starts=15, iters=60, max_step=0.5, gtol=1e-10,
                    dedup=1e-6):
    """Newton on grad f = 0 (w <- w - H^+ g, step clipped to max_step) from a starts x starts grid
    in [-box, box]^2, all starts at once; converged points (|g| < gtol) deduplicated and
    classified by the Hessian eigenvalue signs. Newton is attracted to every kind of critical
    point, not only minima, which is the point here. Returns a list of dicts sorted by value."""
    s1 = np.linspace(-box, box, starts)
    W = np.stack(np.meshgrid(s1, s1, indexing="ij"), -1).reshape(-1, 2)
    for _ in range(iters):
        step = (np.linalg.pinv(s.hess(W)) @ s.grad(W)[..., None])[..., 0]
        norm = np.linalg.norm(step, axis=-1, keepdims=True)
        W = W - step * np.minimum(1.0, max_step / np.maximum(norm, 1e-300))
    ok = np.isfinite(W).all(-1) & (np.linalg.norm(s.grad(W), axis=-1) < gtol)
    ok &= np.abs(W).max(-1) <= box * 1.5
    pts: list[np.ndarray] = []
    for w in W[ok]:
        if all(np.linalg.norm(w - p) > dedup for p in pts):
            pts.append(w)
    out = []
    for w in pts:
        eig = np.linalg.eigvalsh(s.hess(w))
        out.append({"w": w.tolist(), "value": float(s.f(w)),
                    "grad_norm": float(np.linalg.norm(s.grad(w))),
                    "hessian_eigs": eig.tolist(), "kind": classify(eig)})
    return sorted(out, key=lambda d: d["value"])


def by_kind(points):
    kinds = {"minima": "minimum", "saddles": "saddle", "maxima": "maximum",
             "degenerate": "degenerate"}
    return {k: [p for p in points if p["kind"] == v] for k, v in kinds.items()}


def surface_grid(s: Surface, half_width, G=81):
    """(W1, W2, f), each (G, G), over [-half_width, half_width]^2: what the figures draw."""
    g = np.linspace(-half_width, half_width, G)
    A, B = np.meshgrid(g, g, indexing="ij")
    return A, B, s.f(np.stack([A, B], -1))


def toy_gd(w0, lrs, steps):
    """GD paths on 0.5 w1^2 + 2 w2^2 (train.loop, float64, vmapped over the lrs):
    (len(lrs), steps + 1, 2), plus the closed form (1 - lr h)^t w0."""
    h = np.diag(theory.TOY_HESSIAN)

    def path(lr):
        def update(w, _):
            return w - lr * (jnp.asarray(h) * w), w     # grad f = (w1, 4 w2)

        wT, _, _, ws = train.loop(update, jnp.asarray(w0, jnp.float64), steps,
                                  each_step=lambda w: w)
        return jnp.concatenate([ws, wT[None]])

    paths = np.asarray(jax.jit(jax.vmap(path))(jnp.asarray(lrs, jnp.float64)))
    t = np.arange(steps + 1)[None, :, None]
    lr = np.asarray(lrs)[:, None, None]
    closed = (1.0 - lr * h[None, None, :]) ** t * np.asarray(w0)[None, None, :]
    return paths, closed
