"""The landscape's computation: the surfaces, the toy GD and a trained model's 2-D loss slice."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from bpexp import make, optim, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import load_data
from bpexp.experiments.landscape.theory import (
    bowl,
    critical_points,
    double_well,
    surface_grid,
    toy_gd,
)
from bpexp.xla import FAST_COMPILE


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
    """Long because it runs the experiment's parts one after another (each a few lines) sharing
    their inputs."""
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
        out = trainer.lower(*args).compile(FAST_COMPILE)(*args)
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
        plane = make_plane_loss(model, shapes).lower(*args_r).compile(FAST_COMPILE)
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
