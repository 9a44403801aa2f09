"""The catapult experiment's computation: for every model x data setting x width, one compiled
call that trains every (seed, c) run: lambda0 of the run's initialization by Lanczos, lr =
c 2 / lambda0, full-batch GD with the loss at every step and the sharpness every few steps
(train.gd_with_sharpness), then each run's regime (bpexp.regimes)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp import regimes, theory, train
from bpexp.experiments._common import load_data
from bpexp.experiments.catapult import nets
from bpexp.experiments.catapult import theory as th
from bpexp.xla import FAST_COMPILE

SETTINGS = ("toy", "data")


def toy_data(P):
    """The paper's uv example: one sample, x = toy_x in one dimension, target toy_y."""
    return np.array([[float(P.toy_x)]]), np.array([[float(P.toy_y)]])


def real_data(cfg, run=None):
    ds = load_data(cfg, run)
    return np.asarray(ds.X, np.float64), np.asarray(ds.Y, np.float64)


def depth(P, model: str) -> int:
    return nets.MODELS[model][1] or int(P.relu_depth)


def grid_fn(activation: str, dep: int, width: int, d: int, P):
    """``f(cs [R], seeds [R], X, Y) -> dict`` of R runs (one jitted vmap): run i starts from
    nets.init(split(PRNGKey(seeds[i]))[0]), measures lambda0 there (``P.lam0_iters`` cold
    Lanczos steps on Hessian-vector products) and trains at lr = cs[i] 2 / lambda0."""
    def loss_fn(p, X, Y):
        return nets.loss(p, X, Y, activation)

    def grad_fn(p, X, Y):
        return nets.grad(p, X, Y, activation)

    def init_fn(key):
        return nets.init(key, d, width, dep)

    one = train.gd_with_sharpness(loss_fn, grad_fn, init_fn, P.steps, P.every, P.lanczos_iters,
                                  P.check_iters)

    def run(c, seed, X, Y):
        key = jax.random.PRNGKey(seed)
        flat, unravel = ravel_pytree(init_fn(jax.random.split(key)[0]))   # as ``one`` inits
        g = jax.grad(lambda x: loss_fn(unravel(x), X, Y))
        v0 = jax.random.normal(jax.random.fold_in(key, 1), flat.shape, flat.dtype)
        lam0, *_ = theory.lanczos(lambda u: jax.jvp(g, (flat,), (u,))[1], v0, P.lam0_iters)
        lr = 2 * c / lam0
        return {"lam0": lam0, "lr": lr, **one(lr, key, X, Y)}

    return jax.jit(jax.vmap(run, in_axes=(0, 0, None, None)))


@dataclass
class Cell:
    """One model x data setting x width: runs on a [seed, c] grid."""

    model: str
    setting: str
    width: int
    cs: np.ndarray               # [c]
    lam0: np.ndarray             # [seed] top Hessian eigenvalue at init (Lanczos)
    lr: np.ndarray               # [seed, c]
    loss: np.ndarray             # [seed, c, step] full-batch loss, step 0 = init
    sharpness: np.ndarray        # [seed, c, measurement] warm Lanczos every ``every`` steps
    end_check: np.ndarray        # [seed, c] cold Lanczos at the end
    regime: np.ndarray           # [seed, c] str
    edge: dict                   # regimes.edge_bracket on c (divergent)
    lazy_edge: dict              # regimes.edge_bracket on c (catapult or divergent)
    map_edge: list = field(default_factory=list)   # [seed] c_max of the exact map (uv toy)
    map_regime: np.ndarray | None = None           # [seed, c] regime of the map's curve
    compile_s: float = 0.0
    run_s: float = 0.0


@dataclass
class Result:
    cells: list                  # [Cell]
    seeds: np.ndarray
    data_name: str
    data_shape: tuple            # (d, n) of the real data set
    toy: tuple                   # (x, y)
    s_steps: np.ndarray          # [measurement]
    compile_s: float
    run_s: float


def compute(cfg, run) -> Result:
    P = cfg.experiment
    Xd, Yd = real_data(cfg, run)
    data = {"toy": toy_data(P), "data": (Xd, Yd)}
    seeds = cfg.seed + np.arange(P.seeds)
    cells = []
    for model in P.models:
        act, cs = nets.MODELS[model][0], np.asarray(P.c[model], np.float64)
        for setting in P.settings:
            X, Y = data[setting]
            for width in P.widths[setting]:
                with run.timed(f"{model}-{setting}-{width}"):
                    cells.append(one_cell(model, act, setting, width, cs, seeds, X, Y, P))
    s_steps = np.arange(P.steps // P.every + 1) * P.every
    return Result(cells=cells, seeds=seeds, data_name=cfg.data.name, data_shape=Xd.shape,
                  toy=(float(P.toy_x), float(P.toy_y)), s_steps=s_steps,
                  compile_s=sum(c.compile_s for c in cells), run_s=sum(c.run_s for c in cells))


def one_cell(model, act, setting, width, cs, seeds, X, Y, P) -> Cell:
    f = grid_fn(act, depth(P, model), width, X.shape[0], P)
    S, C = len(seeds), len(cs)
    args = (jnp.asarray(np.tile(cs, S)), jnp.asarray(np.repeat(seeds, C), jnp.int32),
            jnp.asarray(X), jnp.asarray(Y))
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile(FAST_COMPILE if P.fast_compile else None)
    t1 = time.perf_counter()
    out = {k: np.asarray(v).reshape((S, C) + np.shape(v)[1:]) for k, v in compiled(*args).items()}
    t2 = time.perf_counter()
    lam0 = out["lam0"][:, 0]
    regime = regimes.classify_many(out["loss"], out["lr"], out["sharpness"][..., -1],
                                   out["lam0"], rise=P.rise, converged=P.converged)
    cell = Cell(model=model, setting=setting, width=int(width), cs=cs, lam0=lam0, lr=out["lr"],
                loss=out["loss"], sharpness=out["sharpness"], end_check=out["end_check"],
                regime=regime, edge=regimes.edge_bracket(cs, (regime == "divergent").T),
                lazy_edge=regimes.edge_bracket(cs, (regime != "lazy").T),
                compile_s=t1 - t0, run_s=t2 - t1)
    if model == "uv" and setting == "toy":
        exact_map(cell, seeds, X, Y, P)
    return cell


def exact_map(cell: Cell, seeds, X, Y, P) -> None:
    """The uv toy's theory per run: the exact one-sample map from the run's own init."""
    x, y = float(X[0, 0]), float(Y[0, 0])
    edges, reg = [], np.empty(cell.regime.shape, dtype="<U9")
    for i, s in enumerate(seeds):
        p = nets.init(jax.random.split(jax.random.PRNGKey(int(s)))[0], 1, cell.width, 1)
        f0, lam_ntk, _, _, m = th.uv_scalars(p["W1"], p["v"], [x], y)
        edges.append(th.uv_map_edge(f0, lam_ntk, cell.lam0[i], P.steps, m, x, y, lo=0.9,
                                    converged=P.converged))
        for j, lr in enumerate(cell.lr[i]):
            loss, _ = th.uv_map(f0, lam_ntk, lr, P.steps, m, x, y)
            reg[i, j] = regimes.classify(loss, lr, rise=P.rise, converged=P.converged)
    cell.map_edge, cell.map_regime = edges, reg
