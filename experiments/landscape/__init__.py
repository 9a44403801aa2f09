"""Loss landscapes: convex vs non-convex, GD on a toy quadratic, and a trained model's real slice.

Question: what do the lecture's landscape pictures look like when every marked point and every
path is computed rather than drawn by hand? (a) Where are the minima, saddles and maxima of a
convex bowl and of a non-convex surface? (b) How does GD move on 0.5 w1^2 + 2 w2^2 as the
learning rate crosses 2/lambda_max = 0.5? (c) What does a trained network's loss look like on a
2-D plane through its weights, and where does its GD trajectory lie on it?
Theory: (a) critical points solve grad f = 0; the signs of the Hessian eigenvalues classify them
(+ + minimum, + - saddle, - - maximum); the bowl w1^2 + w2^2 has exactly one, a minimum at 0.
The non-convex surface is the tilted, coupled double well
    f(w) = (w1^2 - 1)^2 + (w2^2 - 1)^2 + c w1 w2 + t1 w1 + t2 w2      (c = 0.5, t = (0.3, -0.2)),
whose 3 x 3 critical points are 4 minima, 4 saddles and 1 maximum while c and t stay small.
(b) On a quadratic with Hessian diag(1, 4), GD gives w_t = (1 - lr h)^t w_0 per coordinate, so
it converges iff |1 - 4 lr| < 1, i.e. lr < 2/4 = 0.5, oscillating in w2 once lr > 0.25.
(c) Li et al. (NeurIPS 2018, "Visualizing the Loss Landscape of Neural Nets"): plot
L(theta* + a d1 + b d2) with random Gaussian directions rescaled row by row ("filter
normalization": each row of d has the norm of the matching row of W), so the picture does not
depend on the weights' scale; biases get zero direction (their default). Random directions
are nearly orthogonal to the training path (Li et al. section 7), so the trajectory's
least-squares projection onto them is tiny; the plane of the trajectory's top-2 principal
components (PCA) captures most of it and is drawn too.
Expected: 1 minimum for the bowl; 4 minima, 4 saddles, 1 maximum for the double well, each with
|grad| < 1e-8; toy GD converges for lr < 0.5 and diverges for 0.52; the slice's center is the
trained loss and the minimum of the slice sits at or near the center.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from matplotlib import colors as mcolors
from matplotlib import ticker

from bpexp import make, optim, plots, report, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import command, load_data, question
from bpexp.plots import plt

PRECISION = "float64"

USES = ("model", "data", "optimizer", "train")  # the sections read; make.check builds them first

# |coupling|, |tilt| and box at most this: f, its gradient and Hessian stay finite float64 over
# the Newton search
SURFACE_LIMIT = 1e6
MAX_STARTS = 1000      # starts^2 Newton runs at once
MAX_TOY_LRS = 8        # one figure panel each
MAX_TOY_STEPS = 1000   # one marker per step
TOY_LIMIT = 1e100      # |w_t| of the toy paths: their loss 0.5 w1^2 + 2 w2^2 stays finite
MAX_GRID = 201         # the grid^2 slice losses are one vmapped call: memory grows as grid^2
MAX_DIRECTION_SEED = 10 ** 9


@dataclass
class Params:
    name: str = "landscape"
    coupling: float = 0.5                 # c in the double well
    tilt: list = field(default_factory=lambda: [0.3, -0.2])   # (t1, t2)
    box: float = 2.0                      # critical points are searched in [-box, box]^2
    starts: int = 15                      # Newton starts per axis
    newton_iters: int = 60
    toy_w0: list = field(default_factory=lambda: [2.5, 2.0])
    toy_lrs: list = field(default_factory=lambda: [0.15, 0.4, 0.49, 0.52])
    toy_steps: int = 20
    grid: int = 41                        # slice: grid x grid loss evaluations (odd: 0 is a node)
    span: float = 1.0                     # slice: a, b in [-span, span] (units of the directions)
    bias_dirs: str = "zero"               # zero (Li et al. default) | filter (|d_i| = |b_i|)
    direction_seed: int = 1               # folded into the run seed for the random directions


def _finite(x, limit=math.inf) -> bool:
    return math.isfinite(x) and abs(x) <= limit


def validate(cfg):
    """One rule per key; lists are already lists of numbers (config checks their kind)."""
    P = cfg.experiment
    if not _finite(P.coupling, SURFACE_LIMIT):
        raise UserError(f"experiment.coupling={P.coupling!r} must be finite with |coupling| <= "
                        f"{SURFACE_LIMIT:g}")
    if len(P.tilt) != 2 or not all(_finite(t, SURFACE_LIMIT) for t in P.tilt):
        raise UserError(f"experiment.tilt={P.tilt!r} must be 2 finite numbers [t1, t2] with "
                        f"|t| <= {SURFACE_LIMIT:g}")
    if not (_finite(P.box, SURFACE_LIMIT) and P.box > 0):
        raise UserError(f"experiment.box={P.box!r} must be in (0, {SURFACE_LIMIT:g}]")
    if not 1 <= P.starts <= MAX_STARTS:
        raise UserError(f"experiment.starts={P.starts!r} must be in [1, {MAX_STARTS}]")
    if P.newton_iters < 1:
        raise UserError(f"experiment.newton_iters={P.newton_iters!r} must be >= 1")
    w0 = P.toy_w0
    # away from 0 so the loss curves have something to draw on a log axis
    if not (len(w0) == 2 and all(map(_finite, w0))
            and 1e-100 <= max(map(abs, w0)) <= TOY_LIMIT):
        raise UserError(f"experiment.toy_w0={w0!r} must be 2 finite numbers [w1, w2] with "
                        f"1e-100 <= max(|w1|, |w2|) <= {TOY_LIMIT:g}")
    lrs = P.toy_lrs
    # the summary keys each lr by its %g text
    if not (1 <= len(lrs) <= MAX_TOY_LRS and all(_finite(lr) and lr > 0 for lr in lrs)
            and len({f"{lr:g}" for lr in lrs}) == len(lrs)):
        raise UserError(f"experiment.toy_lrs={lrs!r} must be 1 to {MAX_TOY_LRS} distinct finite "
                        f"learning rates > 0")
    if not 1 <= P.toy_steps <= MAX_TOY_STEPS:
        raise UserError(f"experiment.toy_steps={P.toy_steps!r} must be in [1, {MAX_TOY_STEPS}]")
    grow = max(abs(1.0 - lr * h) for lr in lrs for h in np.diag(theory.TOY_HESSIAN))
    if math.log10(max(map(abs, w0))) + P.toy_steps * math.log10(grow) > math.log10(TOY_LIMIT):
        raise UserError(f"experiment.toy_steps={P.toy_steps} with experiment.toy_lrs={lrs!r} "
                        f"overflows: max |w0| x max |1 - lr h|^toy_steps must be <= "
                        f"{TOY_LIMIT:g} (fewer steps or smaller lrs)")
    if not (3 <= P.grid <= MAX_GRID and P.grid % 2):
        raise UserError(f"experiment.grid={P.grid!r} must be odd and in [3, {MAX_GRID}] "
                        f"(the center is the trained point)")
    if not (_finite(P.span) and P.span > 0):
        raise UserError(f"experiment.span={P.span!r} must be finite and > 0")
    if P.bias_dirs not in ("zero", "filter"):
        raise UserError(f"experiment.bias_dirs={P.bias_dirs!r} is not allowed; choose one of "
                        f"zero, filter")
    if not 0 <= P.direction_seed <= MAX_DIRECTION_SEED:
        raise UserError(f"experiment.direction_seed={P.direction_seed!r} must be in "
                        f"[0, {MAX_DIRECTION_SEED}]")
    if cfg.train.steps % cfg.train.record_every:
        raise UserError(f"train.record_every={cfg.train.record_every} must divide "
                        f"train.steps={cfg.train.steps}")


# ---------------------------------------------------------------- (a) analytic surfaces (numpy)
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


# ---------------------------------------------------------------- (b) toy quadratic GD (numpy)
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


# ---------------------------------------------------------------- (c) a trained model's slice
def filter_normalize(direction: dict, params: dict, bias="zero") -> dict:
    """Li et al. 2018 filter normalization of a random direction, leaf by leaf.

    2-D weights W (rows = units): d_i <- d_i ||W_i|| / ||d_i|| per row i. Biases (leaves named
    b*): zero (bias="zero") or per-row, i.e. |d_i| = |b_i| (bias="filter"). Other weights
    (scalar w, ()): the whole leaf is rescaled to the weight's norm."""
    out = {}
    for k, d in direction.items():
        d, w = np.asarray(d, np.float64), np.asarray(params[k], np.float64)
        if k.startswith("b") and bias == "zero":
            out[k] = np.zeros_like(d)
        elif d.ndim == 2:
            out[k] = d * np.linalg.norm(w, axis=1, keepdims=True) / np.maximum(
                np.linalg.norm(d, axis=1, keepdims=True), 1e-300)
        elif k.startswith("b"):     # bias vectors as rows of length 1: |d_i| = |b_i|
            out[k] = np.sign(d) * np.abs(w)
        else:
            out[k] = d * np.linalg.norm(w) / max(np.linalg.norm(d), 1e-300)
    return out


def project(points, center, D):
    """Least-squares coefficients c (T, 2) with points - center ~ c @ D; D: (2, P)."""
    c, *_ = np.linalg.lstsq(D.T, (points - center).T, rcond=None)
    return c.T


def pca_plane(points, center):
    """Top-2 principal directions (2, P) of points - center (rows), and their variance share."""
    _, s, vt = np.linalg.svd(points - center, full_matrices=False)
    return vt[:2], (s[:2] ** 2 / np.sum(s ** 2))


def ravel(p, xp=np):
    """Parameter dict -> flat vector, leaves in sorted-key order (as jax's ravel_pytree)."""
    return xp.concatenate([xp.ravel(p[k]) for k in sorted(p)])


def unravel(vec, shapes):
    """Flat vector -> parameter dict; ``shapes`` maps leaf name -> shape. numpy or jax."""
    out, o = {}, 0
    for k in sorted(shapes):
        size = int(np.prod(shapes[k]))
        out[k] = vec[o:o + size].reshape(shapes[k])
        o += size
    return out


def make_trainer(model, n, d_out, hparams, opt_name, impl, opt_hp, steps, record_every):
    """jit: (seed, direction_seed, X, Y) -> theta trajectory (steps/record_every + 1, P), loss
    per step (steps,), final loss, 2 raw N(0, I) directions (2, P). Init as the sweep engine
    does (k_init = split(PRNGKey(seed))[0]); the optimizer of the config with hand gradients."""

    def fit(seed, dseed, X, Y):
        k_init, _ = train.run_keys(seed)
        p0 = model.init(k_init, n, d_out, dtype=X.dtype, **hparams)
        opt = optim.get(opt_name, impl=impl, **opt_hp)

        def update(carry, _):
            p, s = carry
            loss = model.loss(p, X, Y)
            upd, s = opt.update(model.grad(p, X, Y), s, p)
            return (jax.tree_util.tree_map(jnp.add, p, upd), s), (p, loss)

        # theta is recorded at steps 0, k, 2k, ...: at the first step of each block
        (p, _), _, thetas, losses = train.loop(
            update, (p0, opt.init(p0)), steps, every=record_every,
            measure=lambda info, st: (ravel(info[0], jnp), st), each_step=lambda info: info[1])
        flat0 = ravel(p0, jnp)
        # directions from a key of their own: they do not move with the init seed's stream
        key = jax.random.fold_in(jax.random.PRNGKey(seed), dseed)
        dirs = jax.random.normal(key, (2, flat0.size), X.dtype)
        traj = jnp.concatenate([thetas, ravel(p, jnp)[None]])   # steps 0, k, ..., steps
        return traj, losses, model.loss(p, X, Y), dirs

    return jax.jit(fit)


def make_plane_loss(model, shapes):
    """jit: (center (P,), D (2, P), coeffs (N, 2), X, Y) -> loss (N,), one vmapped call."""

    def plane(center, D, coeffs, X, Y):
        return jax.vmap(lambda c: model.loss(unravel(center + c @ D, shapes), X, Y))(coeffs)

    return jax.jit(plane)


def plane_grid(span_a, span_b, G):
    """Node coordinates a (G,), b (G,) and all (a, b) pairs (G * G, 2), a-major."""
    a, b = np.linspace(-span_a, span_a, G), np.linspace(-span_b, span_b, G)
    A, B = np.meshgrid(a, b, indexing="ij")
    return a, b, np.stack([A.ravel(), B.ravel()], -1)


# ---------------------------------------------------------------- compute
@dataclass
class Plane:
    """One slice L(theta* + a d1 + b d2) on a G x G grid (G = experiment.grid), and the
    trajectory's T recorded parameter vectors (P entries each) projected onto it."""

    a: np.ndarray          # (G,) coefficient of d1 at the grid nodes
    b: np.ndarray          # (G,) coefficient of d2
    loss: np.ndarray       # (G, G) training loss at theta* + a_i d1 + b_j d2
    dirs: np.ndarray       # (2, P) d1, d2
    coeffs: np.ndarray     # (T, 2) least-squares projection of theta_t - theta*
    traj_loss: np.ndarray  # (T,) loss at theta* + coeffs_t @ dirs
    captured: float        # |projection of theta_0 - theta*| / |theta_0 - theta*|


@dataclass
class Result:
    """(a) the two surfaces, (b) toy GD with K = len(toy_lrs) and S = toy_steps, (c) the trained
    model: T = train.steps / train.record_every + 1 recorded parameter vectors of P entries."""

    formulas: dict            # "convex" | "nonconvex" -> the surface's formula
    crit: dict                # "convex" | "nonconvex" -> critical points sorted by f (dicts:
                              # w [2], value, grad_norm, hessian_eigs [2], kind)
    grids: dict               # "convex" | "nonconvex" -> (W1, W2, f) each (81, 81), for drawing
    toy_lrs: np.ndarray       # (K,)
    toy_paths: np.ndarray     # (K, S + 1, 2) GD iterates w_t
    toy_closed: np.ndarray    # (K, S + 1, 2) closed form (1 - lr h)^t w_0
    toy_loss: np.ndarray      # (K, S + 1) f(w_t) = 0.5 w1^2 + 2 w2^2
    factors: np.ndarray       # (K, 2) 1 - lr h per coordinate
    bound: float              # 2 / lambda_max: GD diverges for lr above it
    n: int                    # features of the data
    m: int                    # examples of the data
    thetas: np.ndarray        # (T, P) recorded parameters: row 0 the init, row T - 1 theta*
    steps: np.ndarray         # (T,) the step of each row
    train_loss: np.ndarray    # (train.steps,) full-batch loss before each step
    final_loss: float         # loss at theta*
    random: Plane             # random filter-normalized directions (Li et al.)
    pca: Plane                # the trajectory's top-2 principal directions
    pca_var: np.ndarray       # (2,) variance share of PC1, PC2
    shapes: dict              # leaf -> shape: the layout of a parameter vector (sorted leaves)


def compute(cfg, run) -> Result:
    P = cfg.experiment
    # (a) critical points of the two surfaces
    with run.timed("critical_points"):
        surfaces = {"convex": bowl(), "nonconvex": double_well(P.coupling, P.tilt)}
        crit = {k: critical_points(s, P.box, P.starts, P.newton_iters)
                for k, s in surfaces.items()}
    # drawn over 1.4 x the farthest critical point, so the wells are not flattened by the corners
    far = max((np.max(np.abs(p["w"])) for c in crit.values() for p in c), default=0.0)
    extent = max(1.0, 1.4 * far)

    # (b) toy GD
    lrs = np.asarray(P.toy_lrs, np.float64)
    paths, closed = toy_gd(P.toy_w0, lrs, P.toy_steps)
    h = np.diag(theory.TOY_HESSIAN)

    # (c) trained model, slice, trajectory
    ds = load_data(cfg, run, name=cfg.data.name)
    model = make.model(cfg)
    hparams = {**make.model_hparams(cfg, model), "init_scale": cfg.model.init_scale}
    opt_hp = {k: (cfg.optimizer.lr if k == "lr" else getattr(cfg.optimizer, k))
              for k in optim.HYPERPARAMS[cfg.optimizer.name]}
    X, Y = jnp.asarray(ds.X, jnp.float64), jnp.asarray(ds.Y, jnp.float64)
    shapes = {k: tuple(v.shape) for k, v in jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), ds.n, ds.d_out, dtype=jnp.float64,
                           **hparams)).items()}
    # the compiled calls here are tiny and run once: XLA's cheapest optimization level cuts
    # the compile from ~4.7 s to ~1.7 s CPU and costs ~0.1 s of run time
    with run.timed("train"):
        trainer = make_trainer(model, ds.n, ds.d_out, hparams, cfg.optimizer.name,
                               cfg.optimizer.impl, opt_hp, cfg.train.steps, cfg.train.record_every)
        args = (cfg.seed, 1000 + P.direction_seed, X, Y)
        out = trainer.lower(*args).compile(make.FAST_COMPILE)(*args)
        thetas, train_loss, final_loss, dirs = (np.asarray(v) for v in jax.device_get(out))
    if not (np.isfinite(thetas).all() and np.isfinite(final_loss)):
        raise UserError(f"optimizer.lr={cfg.optimizer.lr:g}: training diverged (non-finite "
                        f"weights or loss), and a slice needs a finite trained point; lower it")
    final_loss = float(final_loss)
    center = thetas[-1]
    p_star = unravel(center, shapes)
    D_rand = np.stack([ravel(filter_normalize(unravel(d, shapes), p_star, P.bias_dirs))
                       for d in dirs])
    D_pca, pca_var = pca_plane(thetas, center)
    c_rand, c_pca = project(thetas, center, D_rand), project(thetas, center, D_pca)
    gap = max(np.linalg.norm(thetas[0] - center), 1e-300)
    G = P.grid
    a_r, b_r, C_r = plane_grid(P.span, P.span, G)
    ext = 1.25 * np.max(np.abs(c_pca), axis=0)
    a_p, b_p, C_p = plane_grid(max(ext[0], 1e-6), max(ext[1], 1e-6), G)
    with run.timed("slice"):
        args_r = (center, D_rand, np.concatenate([C_r, c_rand]), X, Y)
        plane = make_plane_loss(model, shapes).lower(*args_r).compile(make.FAST_COMPILE)
        L_r = np.asarray(plane(*args_r))
        L_p = np.asarray(plane(center, D_pca, np.concatenate([C_p, c_pca]), X, Y))
    if not np.isfinite(L_r).all():
        raise UserError(f"experiment.span={P.span:g}: the loss overflows at "
                        f"{np.sum(~np.isfinite(L_r))} of the {G}x{G} points of the slice; "
                        f"choose a smaller span")
    return Result(
        formulas={k: s.formula for k, s in surfaces.items()}, crit=crit,
        grids={k: surface_grid(s, extent) for k, s in surfaces.items()},
        toy_lrs=lrs, toy_paths=paths, toy_closed=closed,
        toy_loss=theory.toy_quadratic(np.moveaxis(paths, -1, 0)),
        factors=1.0 - lrs[:, None] * h[None, :], bound=2.0 / float(h.max()), n=ds.n, m=ds.m,
        thetas=thetas, steps=np.arange(thetas.shape[0]) * cfg.train.record_every,
        train_loss=train_loss, final_loss=final_loss,
        random=Plane(a_r, b_r, L_r[:G * G].reshape(G, G), D_rand, c_rand, L_r[G * G:],
                     float(np.linalg.norm(c_rand[:1] @ D_rand) / gap)),
        pca=Plane(a_p, b_p, L_p[:G * G].reshape(G, G), D_pca, c_pca, L_p[G * G:],
                  float(np.linalg.norm(c_pca[:1] @ D_pca) / gap)),
        pca_var=pca_var, shapes=shapes)


# ---------------------------------------------------------------- save
def dataset(res: Result) -> xr.Dataset:
    """The three parts' arrays with named dims. Each part has its own axes, so each gets dims
    of its own name rather than a shared ``lr`` / ``step`` with different values:
    (a) ``convex_point`` / ``nonconvex_point`` (critical points sorted by f) x ``w`` (w1, w2);
    (b) ``toy_lr`` x ``toy_step`` (0..toy_steps) x ``w``;
    (c) ``step`` (train_loss: the loss before each step), ``trajectory_step`` (the recorded
    parameter vectors' steps), ``theta`` (entry of the flat parameter vector, leaves in sorted
    order; the coordinate ``theta_leaf`` names each entry's leaf), ``direction`` (d1, d2) and
    the grid of each plane: ``slice_a`` x ``slice_b`` (random directions), ``pca_a`` x ``pca_b``
    (the trajectory's top-2 principal components)."""
    data, coords = {}, {"w": np.array(["w1", "w2"]), "direction": np.array(["d1", "d2"])}
    for k in ("convex", "nonconvex"):
        pts, dim = res.crit[k], f"{k}_point"
        data[f"{k}_points"] = ((dim, "w"), np.array([q["w"] for q in pts], np.float64)
                               .reshape(len(pts), 2))
        data[f"{k}_kinds"] = (dim, np.array([q["kind"] for q in pts], dtype=str))
        data[f"{k}_values"] = (dim, np.array([q["value"] for q in pts], np.float64))
        coords[dim] = np.arange(len(pts))
    toy = ("toy_lr", "toy_step")
    data.update(toy_paths=((*toy, "w"), res.toy_paths), toy_loss=(toy, res.toy_loss),
                toy_closed_form=((*toy, "w"), res.toy_closed))
    coords.update(toy_lr=res.toy_lrs, toy_step=np.arange(res.toy_paths.shape[1]))
    traj = ("trajectory_step", "theta")
    data.update(train_loss=("step", res.train_loss), trajectory=(traj, res.thetas))
    leaves = sorted(res.shapes)
    coords.update(step=np.arange(res.train_loss.shape[0]), trajectory_step=res.steps,
                  theta=np.arange(res.thetas.shape[1]),
                  theta_leaf=("theta", np.repeat(np.array(leaves, dtype=str),
                                                 [int(np.prod(res.shapes[k])) for k in leaves])))
    for name, pl in (("slice", res.random), ("pca", res.pca)):
        data.update({f"{name}_loss": ((f"{name}_a", f"{name}_b"), pl.loss),
                     f"{name}_dirs": (("direction", "theta"), pl.dirs),
                     f"{name}_traj_coeffs": (("trajectory_step", "direction"), pl.coeffs),
                     f"{name}_traj_loss": ("trajectory_step", pl.traj_loss)})
        coords.update({f"{name}_a": pl.a, f"{name}_b": pl.b})
    data["pca_explained_variance"] = ("direction", res.pca_var)
    return xr.Dataset(data, coords=coords)


def save(cfg, run, res: Result) -> dict:
    P, crit, r, p = cfg.experiment, res.crit, res.random, res.pca
    run.save_metrics(dataset(res))

    def points(k):  # the bowl lists its minima only
        return {kk: v for kk, v in by_kind(crit[k]).items() if k == "nonconvex" or kk == "minima"}

    def toy(lr, path, closed, factors, loss):
        return {"final": path[-1].tolist(), "diverged": bool(loss[-1] > loss[0]),
                "theory_diverges": bool(lr > res.bound), "factors": factors.tolist(),
                "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
                "max_abs_diff_closed_form": float(np.max(np.abs(path - closed)))}

    mid = P.grid // 2
    argmin = np.unravel_index(r.loss.argmin(), r.loss.shape)
    return {
        "convex": {"formula": res.formulas["convex"], **points("convex")},
        "nonconvex": {"formula": res.formulas["nonconvex"], **points("nonconvex")},
        "toy_gd": {"w0": list(P.toy_w0), "steps": P.toy_steps, "divergence_bound": res.bound,
                   "lr": {f"{lr:g}": toy(lr, *rest) for lr, *rest in zip(
                       res.toy_lrs, res.toy_paths, res.toy_closed, res.factors, res.toy_loss)}},
        "slice": {"model": cfg.model.name, "data": cfg.data.name,
                  "n_params": int(res.thetas.shape[1]), "grid": P.grid, "span": P.span,
                  "bias_dirs": P.bias_dirs,
                  "directions": "random N(0, I), filter-normalized per row (Li et al. 2018)",
                  "trained_loss": res.final_loss, "initial_loss": float(res.train_loss[0]),
                  "center_loss": float(r.loss[mid, mid]), "min_loss": float(r.loss.min()),
                  "min_at": [float(r.a[argmin[0]]), float(r.b[argmin[1]])],
                  "max_loss": float(r.loss.max()),
                  "final_projection": r.coeffs[-1].tolist(),
                  "initial_projection": r.coeffs[0].tolist(), "captured_fraction": r.captured,
                  "pca": {"center_loss": float(p.loss[mid, mid]), "min_loss": float(p.loss.min()),
                          "explained_variance": res.pca_var.tolist(),
                          "captured_fraction": p.captured,
                          "initial_projection": p.coeffs[0].tolist(),
                          "span": [float(p.a[-1]), float(p.b[-1])]}},
    }


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, crit, sl, toy = cfg.experiment, res.crit, summary["slice"], summary["toy_gd"]
    G, bound = P.grid, res.bound
    figs = ["surfaces_3d.png", "critical_points.png", "toy_gd.png", "slice_trajectory.png"]
    fig_surfaces_3d(res.grids, crit, res.formulas, res.random,
                    f"{cfg.model.name} on {cfg.data.name}: L(theta* + a d1 + b d2)",
                    run.figure(figs[0]))
    fig_critical_points(res.grids, crit, res.formulas, run.figure(figs[1]))
    fig_toy_gd(res.toy_paths, res.toy_loss, res.toy_lrs, res.factors, bound, run.figure(figs[2]))
    var = res.pca_var
    fig_slice(res.steps, res.train_loss, res.final_loss,
              [(res.random, "random plane", "random filter-normalized directions\n"
                f"(Li et al. 2018; biases: {P.bias_dirs})", "a (units of d1)", "b (units of d2)"),
               (res.pca, "PCA plane", f"PCA of the trajectory (variance {var[0]:.0%} + "
                f"{var[1]:.0%})", "PC1 (parameter units)", "PC2 (parameter units)")],
              f"{cfg.model.name} on {cfg.data.name}, {cfg.optimizer.name} "
              f"lr={cfg.optimizer.lr:g}, {cfg.train.steps} steps", run.figure(figs[3]))

    nc = summary["nonconvex"]
    grad_max = max((p["grad_norm"] for p in crit["nonconvex"]), default=None)
    rows = [["convex bowl: critical points", len(crit["convex"]), "1 minimum at (0, 0)",
             ", ".join(f"{p['kind']} at ({p['w'][0]:.2g}, {p['w'][1]:.2g})"
                       for p in crit["convex"])],
            ["double well: minima / saddles / maxima",
             f"{len(nc['minima'])} / {len(nc['saddles'])} / {len(nc['maxima'])}", "4 / 4 / 1",
             "none found" if grad_max is None else f"max |grad| {grad_max:.1e}"],
            ["double well: global minimum", nc["minima"][0]["value"] if nc["minima"] else None,
             "-", "at (%.4f, %.4f)" % tuple(nc["minima"][0]["w"]) if nc["minima"] else ""]]
    for lr, rec in zip(res.toy_lrs, toy["lr"].values()):
        theory_says = (f"{'diverges' if lr > bound else 'converges'} "
                       f"(lr {'>' if lr > bound else '<'} 2/4)")
        fa, a0, aT = rec["factors"], rec["loss_initial"], rec["loss_final"]
        rows.append([f"toy GD lr={lr:g}: final w", "(%.3g, %.3g)" % tuple(rec["final"]),
                     theory_says, f"factors ({fa[0]:.3g}, {fa[1]:.3g}); "
                     f"{'diverged' if rec['diverged'] else 'converged'}: f {a0:.3g} -> {aT:.3g}"])
    pca = sl["pca"]
    rows += [["slice: center loss", sl["center_loss"], f"trained loss {sl['trained_loss']:.6g}",
              f"|diff| {abs(sl['center_loss'] - sl['trained_loss']):.1e}"],
             ["slice: min loss on the grid", sl["min_loss"], "<= center",
              "at (a, b) = (%.3g, %.3g), %dx%d grid" % (*sl["min_at"], G, G)],
             ["slice, PCA plane: min loss on the grid", pca["min_loss"], "<= center",
              f"center {pca['center_loss']:.6g}: below it means GD has not reached a minimum"],
             ["trajectory captured by the plane",
              f"random {sl['captured_fraction']:.2%}, PCA {pca['captured_fraction']:.2%}",
              "random: a small part; PCA: most (Li et al. s.7)",
              "|projection of theta_0 - theta*| / |theta_0 - theta*|"]]
    header = ["quantity", "measured", "theory", "note"]
    report.print_table("landscape: theory vs measurement", header, rows)

    pts_rows = [[k, p["kind"], "(%.6f, %.6f)" % tuple(p["w"]), p["value"],
                 "(%.4g, %.4g)" % tuple(p["hessian_eigs"]), p["grad_norm"]]
                for k in ("convex", "nonconvex") for p in crit[k]]
    setup = (f"(a) Surfaces: {res.formulas['convex']} and {res.formulas['nonconvex']}; "
             f"Newton from a {P.starts}x{P.starts} grid in [-{P.box:g}, {P.box:g}]^2, float64. "
             f"(b) GD on 0.5 w1^2 + 2 w2^2 from ({P.toy_w0[0]:g}, {P.toy_w0[1]:g}), "
             f"{P.toy_steps} steps. "
             f"(c) `{cfg.model.name}` on `{cfg.data.name}` (n={res.n}, m={res.m}), "
             f"{cfg.optimizer.name} lr={cfg.optimizer.lr:g}, {cfg.train.steps} steps (hand "
             f"gradients, float64), parameters recorded every {cfg.train.record_every} steps; "
             f"{G}x{G} grid; random directions filter-normalized per row, biases {P.bias_dirs}; "
             "trajectory projected by least squares onto each plane.")
    run.save_report(report.report(
        "Loss landscapes", question(__doc__), command(cfg),
        [("Setup", setup),
         ("Theory vs measurement", report.markdown_table(header, rows)),
         ("Critical points", report.markdown_table(
             ["surface", "kind", "w", "f(w)", "Hessian eigenvalues", "|grad|"], pts_rows))],
        figs))


KIND_STYLE = {"minimum": ("o", "tab:green"), "saddle": ("X", "tab:orange"),
              "maximum": ("^", "tab:red"), "degenerate": ("s", "0.4")}


def _mark(ax, pts, three_d=False, zlift=0.0):
    seen = set()
    for p in pts:
        m, c = KIND_STYLE[p["kind"]]
        label = p["kind"] if p["kind"] not in seen else None
        seen.add(p["kind"])
        if three_d:
            ax.scatter([p["w"][0]], [p["w"][1]], [p["value"] + zlift], marker=m, color=c, s=60,
                       edgecolor="k", depthshade=False, zorder=10, label=label)
        else:
            ax.plot(*p["w"], m, color=c, ms=9, mec="k", label=label, zorder=5)


def _log_levels(L, num=25):
    """``num`` log-spaced contour levels over the finite positive values of L; a slice flat to
    float precision gets a thin band around its value, as contourf needs increasing levels."""
    v = plots.positive(L)
    levels = np.unique(np.geomspace(np.nanmin(v), np.nanmax(v), num))
    return levels if levels.size > 1 else levels[0] * np.array([1 - 1e-9, 1 + 1e-9])


def fig_surfaces_3d(grids, crit, formulas, plane: Plane, title_slice, path):
    fig = plt.figure(figsize=(17, 5.6))
    for i, k in enumerate(("convex", "nonconvex")):
        A, B, Z = grids[k]
        ax = fig.add_subplot(1, 3, i + 1, projection="3d", computed_zorder=False)
        ax.plot_surface(A, B, Z, cmap="viridis", alpha=0.75, rstride=2, cstride=2, lw=0.2,
                        edgecolor="0.3")
        _mark(ax, crit[k], three_d=True, zlift=0.05 * (Z.max() - Z.min()))
        ax.set_title(f"{'convex' if k == 'convex' else 'non-convex'}: {formulas[k]}", fontsize=9)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_zlabel("f(w)")
        if crit[k]:  # none found: nothing to label
            ax.legend(fontsize=8, loc="upper left")
    a, b, L = plane.a, plane.b, plane.loss
    A, B = np.meshgrid(a, b, indexing="ij")
    ax = fig.add_subplot(1, 3, 3, projection="3d", computed_zorder=False)
    ax.plot_surface(A, B, np.log10(plots.positive(L)), cmap="viridis", alpha=0.8, lw=0.2,
                    edgecolor="0.3")
    mid = len(a) // 2
    ax.scatter([0], [0], [np.log10(L[mid, mid])], color="tab:red", s=60, edgecolor="k",
               depthshade=False, zorder=10, label=f"trained weights theta*, L = {L[mid, mid]:.4g}")
    ax.set_title(title_slice + "\n(d1, d2 random, filter-normalized)", fontsize=9)
    ax.set_xlabel("a (units of d1)")
    ax.set_ylabel("b (units of d2)")
    ax.set_xticks(np.linspace(a[0], a[-1], 5))
    ax.set_yticks(np.linspace(b[0], b[-1], 5))
    ax.set_zlabel("log10 training loss")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Loss surfaces; critical points found numerically (Newton + Hessian eigenvalue "
                 "signs)", fontsize=11)
    return plots.save(fig, path)


def fig_critical_points(grids, crit, formulas, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    for ax, k in zip(axes, ("convex", "nonconvex")):
        A, B, Z = grids[k]
        cs = ax.contourf(A, B, Z, levels=30, cmap="viridis")
        ax.contour(A, B, Z, levels=30, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="f(w)")
        _mark(ax, crit[k])
        for p in crit[k]:
            right, up = p["w"][0] >= 0, p["w"][1] >= 0  # label away from the centre
            eig = p["hessian_eigs"]
            ax.annotate(f"f={p['value']:.3f}\neig ({eig[0]:.2g}, {eig[1]:.2g})", p["w"],
                        xytext=(7 if right else -7, 7 if up else -7), textcoords="offset points",
                        ha="left" if right else "right", va="bottom" if up else "top",
                        fontsize=7, color="w", zorder=4,
                        bbox=dict(boxstyle="round,pad=0.2", fc="0.15", alpha=0.5, lw=0))
        ax.set_title(formulas[k], fontsize=9)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_aspect("equal")
        if crit[k]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.suptitle("Critical points (grad f = 0) and their Hessian eigenvalues", fontsize=11)
    return plots.save(fig, path)


def fig_toy_gd(paths, losses, lrs, factors, bound, path):
    n = len(lrs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.4))
    fig.subplots_adjust(wspace=0.35)
    for ax, pth, lr, fa in zip(axes, paths, lrs, factors):
        lim = max(3.0, 1.1 * np.max(np.abs(pth[np.isfinite(pth)])))
        g = np.linspace(-lim, lim, 121)
        A, B = np.meshgrid(g, g, indexing="ij")
        Z = theory.toy_quadratic(np.stack([A, B]))  # the drawn background, not a result
        ax.contour(A, B, Z, levels=np.geomspace(0.05, Z.max(), 14), cmap="viridis",
                   linewidths=0.8)
        c = "tab:red" if lr > bound else "tab:blue"
        ax.plot(pth[:, 0], pth[:, 1], "o-", color=c, ms=3, lw=1)
        ax.plot(*pth[0], "s", color="k", ms=6, label="start (%.3g, %.3g)" % tuple(pth[0]))
        ax.plot(*pth[-1], "*", color=c, ms=12, mec="k",
                label="step %d (%.2g, %.2g)" % (len(pth) - 1, *pth[-1]))
        ax.plot(0, 0, "+", color="k", ms=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        state = "diverges" if lr > bound else "converges"
        ax.set_title(f"lr = {lr:g}: factors 1-lr*h = ({fa[0]:.2f}, {fa[1]:.2f})\n"
                     f"theory: {state} (bound 2/4 = {bound:g})", fontsize=9, color=c)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[-1]
    cmap = plt.get_cmap("coolwarm")
    for i, (f, lr) in enumerate(zip(losses, lrs)):
        ax.semilogy(np.arange(len(f)), plots.positive(f), "o-", ms=3,
                    color=cmap(i / max(1, n - 1)), label=f"lr = {lr:g}")
    ax.set_xlabel("step t")
    ax.set_ylabel("f(w_t) = 0.5 w1^2 + 2 w2^2 (log)")
    ax.set_title("loss per step", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle("GD on 0.5 w1^2 + 2 w2^2 (Hessian diag(1, 4)): w_t = (1 - lr h)^t w_0, "
                 "diverges iff lr > 2/4", fontsize=11)
    return plots.save(fig, path)


def fig_slice(steps, train_loss, final_loss, planes, title, path):
    """``planes``: (Plane, short name, title, x label, y label) per plane."""
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.6))
    fig.subplots_adjust(wspace=0.4)
    for ax, (pl, _, name, xl, yl) in zip(axes, planes):
        A, B = np.meshgrid(pl.a, pl.b, indexing="ij")
        L, c = plots.positive(pl.loss), pl.coeffs
        levels = _log_levels(L)
        cs = ax.contourf(A, B, L, levels=levels, norm=mcolors.LogNorm(), cmap="viridis")
        ax.contour(A, B, L, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="training loss (log colour)", format="%.3g")
        ax.plot(c[:, 0], c[:, 1], ".-", color="tab:red", ms=4, lw=1.2,
                label="GD trajectory (projected)")
        ax.plot(*c[0], "s", color="w", mec="k", ms=7, label="init (projected)")
        ax.plot(0, 0, "*", color="tab:red", mec="k", ms=14,
                label=f"trained theta*, L = {final_loss:.4g}")
        ax.set_title(f"{name}\nprojection keeps {pl.captured:.1%} of |theta_0 - theta*|",
                     fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    ax.semilogy(np.arange(len(train_loss)), plots.positive(train_loss), color="k", lw=1.5,
                label="training loss (full batch)")
    for (pl, short, *_), col in zip(planes, ("tab:blue", "tab:orange")):
        ax.semilogy(steps, plots.positive(pl.traj_loss), "o", ms=3, color=col,
                    label=f"loss at the projection onto the {short}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.2g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_title("training loss vs loss at the trajectory's projection onto each plane",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=11)
    return plots.save(fig, path)
from bpexp.experiments.landscape.page import page  # noqa: E402,F401  (the run page's figures)
