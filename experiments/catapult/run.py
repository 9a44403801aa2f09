"""The catapult experiment's computation: for every data setting, one compiled call that trains
every (model, width, seed, c) run (the models share the program through a per-run activation
flag, the widths through zero-padding to the widest): lambda0 of the run's initialization by
Lanczos, lr = c 2 / lambda0, full-batch GD with the loss at every step and the sharpness every
few steps, then each run's regime (bpexp.regimes)."""

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


def grid_fn(dep: int, pad: int, d: int, P):
    """``f(cs [R], seeds [R], relu [R], widths [R], X, Y) -> dict`` of R runs (one jitted vmap,
    one compile for every model of depth ``dep`` and every width <= ``pad``): run i is the net
    of width widths[i] (ReLU where relu[i], the linear uv model otherwise) zero-padded to
    ``pad`` units; it starts from nets.init(split(PRNGKey(seeds[i]))[0]) (the same numbers as
    an unpadded init), measures lambda0 there (``P.lam0_iters`` cold Lanczos steps on
    Hessian-vector products) and trains at lr = cs[i] 2 / lambda0 by full-batch GD for
    ``P.steps`` steps: the loss at every step, the top Hessian eigenvalue every ``P.every``
    steps (``P.lanczos_iters`` Lanczos steps warm-started from the previous top Ritz vector) and
    a cold check at the end (``P.check_iters`` steps). The padding units are 0 and stay 0 (their
    gradient is 0), and every Lanczos vector is 0 on them (the start vectors are the unpadded
    run's, the Hessian-vector products are masked), so each run computes what its unpadded net
    computes, to rounding (checked in the tests)."""

    def run(c, seed, relu, width, X, Y):
        key = jax.random.PRNGKey(seed)
        k_init, k_v = jax.random.split(key)
        p0, index, mask = nets.init_padded(k_init, d, width, pad, dep)
        flat0, unravel = ravel_pytree(p0)

        def start(k):   # the unpadded run's random start vector, 0 on the padding
            return jnp.where(mask, jnp.take(jax.random.normal(k, flat0.shape, flat0.dtype),
                                            index, mode="clip"), 0.0)

        def f(x):
            return nets.loss(unravel(x), X, Y, relu, width)

        g = jax.grad(f)

        def hvp_at(x):
            return lambda u: jnp.where(mask, jax.jvp(g, (x,), (u,))[1], 0.0)   # H u

        lam0, *_ = theory.lanczos(hvp_at(flat0), start(jax.random.fold_in(key, 1)),
                                  P.lam0_iters)
        lr = 2 * c / lam0

        def update(x, _):
            value, grad = nets.loss_and_grad(unravel(x), X, Y, relu, width)
            return x - lr * ravel_pytree(grad)[0], (x, value)   # w -= lr g

        def sharpness(info, state):   # state: (warm start, the parameters measured last)
            lam1, _, v, _, _ = theory.lanczos(hvp_at(info[0]), state[0], P.lanczos_iters)
            return lam1, (v, info[0])

        # one block past ``steps``: its first step measures the sharpness at step ``steps`` (one
        # Lanczos in the program instead of two); the block's other steps are dropped
        v0 = start(k_v)
        _, (_, x), lam1, loss = train.loop(update, flat0, P.steps + P.every, every=P.every,
                                           measure=sharpness, state=(v0, flat0),
                                           each_step=lambda info: info[1])
        c1, *_ = theory.lanczos(hvp_at(x), v0, P.check_iters)                # cold, at the end
        return {"lam0": lam0, "lr": lr, "sharpness": lam1, "loss": loss[:P.steps + 1],
                "end_check": c1}

    return jax.jit(jax.vmap(run, in_axes=(0, 0, 0, 0, None, None)))


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
    for setting in P.settings:
        X, Y = data[setting]
        for dep in sorted({depth(P, m) for m in P.models}):   # the models share a compile
            models = [m for m in P.models if depth(P, m) == dep]
            for widths in width_groups(P.widths[setting], *X.shape):
                with run.timed(f"{setting}-depth{dep}-w{'-'.join(map(str, widths))}"):
                    cells += group(models, dep, setting, widths, seeds, X, Y, P)
    order = {(m, s): i for i, (m, s) in enumerate((m, s) for m in P.models for s in P.settings)}
    cells.sort(key=lambda c: (order[c.model, c.setting], c.width))
    s_steps = np.arange(P.steps // P.every + 1) * P.every
    return Result(cells=cells, seeds=seeds, data_name=cfg.data.name, data_shape=Xd.shape,
                  toy=(float(P.toy_x), float(P.toy_y)), s_steps=s_steps,
                  compile_s=sum(c.compile_s for c in cells), run_s=sum(c.run_s for c in cells))


PAD_SIZE = 2 ** 16   # pad a net to a wider one only while width x (d + 1) x n stays below this


def width_groups(widths, d: int, n: int) -> list:
    """The widths that share one compiled call (zero-padded to the group's widest): all of them
    where the widest net is small (width x (d + 1) x n <= PAD_SIZE, e.g. one sample), where
    padding costs less than a compile; else one call per width (padding a width-64 net on 32
    examples to 512 units costs more run time than its compile)."""
    if int(max(widths)) * (d + 1) * n <= PAD_SIZE:
        return [list(widths)]
    return [[w] for w in widths]


def group(models, dep, setting, widths, seeds, X, Y, P) -> list:
    """Every (model, width, seed, c) run of ``models`` (all of depth ``dep``) on one data
    setting in ONE compiled call (grid_fn, padded to the widest width); the call's compile and
    run time is split over the cells by their share of the runs."""
    S = len(seeds)
    keys, cs_l, seed_l, relu_l, width_l = [], [], [], [], []
    for model in models:
        cs = np.asarray(P.c[model], np.float64)
        for width in widths:
            keys.append((model, int(width), cs))
            cs_l.append(np.tile(cs, S))
            seed_l.append(np.repeat(seeds, len(cs)))
            relu_l.append(np.full(S * len(cs), nets.MODELS[model][0] == "relu"))
            width_l.append(np.full(S * len(cs), width))
    f = grid_fn(dep, int(max(widths)), X.shape[0], P)
    args = (jnp.asarray(np.concatenate(cs_l)), jnp.asarray(np.concatenate(seed_l), jnp.int32),
            jnp.asarray(np.concatenate(relu_l)), jnp.asarray(np.concatenate(width_l), jnp.int32),
            jnp.asarray(X), jnp.asarray(Y))
    t0 = time.perf_counter()
    compiled = f.lower(*args).compile(FAST_COMPILE if P.fast_compile else None)
    t1 = time.perf_counter()
    out = {k: np.asarray(v) for k, v in compiled(*args).items()}
    t2 = time.perf_counter()
    R, cells, i = len(args[0]), [], 0
    for model, width, cs in keys:
        n = S * len(cs)
        part = {k: v[i:i + n].reshape((S, len(cs)) + v.shape[1:]) for k, v in out.items()}
        cells.append(one_cell(model, setting, width, cs, seeds, X, Y, P, part,
                              (t1 - t0) * n / R, (t2 - t1) * n / R))
        i += n
    return cells


def one_cell(model, setting, width, cs, seeds, X, Y, P, out, compile_s, run_s) -> Cell:
    lam0 = out["lam0"][:, 0]
    regime = regimes.classify_many(out["loss"], out["lr"], out["sharpness"][..., -1],
                                   out["lam0"], rise=P.rise, converged=P.converged)
    cell = Cell(model=model, setting=setting, width=int(width), cs=cs, lam0=lam0, lr=out["lr"],
                loss=out["loss"], sharpness=out["sharpness"], end_check=out["end_check"],
                regime=regime, edge=regimes.edge_bracket(cs, (regime == "divergent").T),
                lazy_edge=regimes.edge_bracket(cs, (regime != "lazy").T),
                compile_s=compile_s, run_s=run_s)
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
