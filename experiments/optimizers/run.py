"""The optimizers experiment's computation: every optimizer on the network (one fused sweep)
and on the quadratic, each at its best lr, manual beside optax."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from bpexp import make, optim, sweep, theory
from bpexp.experiments._common import best_lr_index, diverged_mask, finite_median, load_data
from bpexp.experiments.optimizers.theory import (
    IMPLS,
    predicted_steps,
    quadratic_paths,
    quadratic_rate,
)

NAN2 = (float("nan"), float("nan"))  # a (max |diff|, relative) with no run to compare
GROWTH_LIMIT = 10.0  # a run whose loss rose above this x its start "spiked" (manual vs optax)


def lr_grid(rng, num) -> np.ndarray:
    """``num`` log-spaced learning rates from rng[0] to rng[1]."""
    return np.geomspace(float(rng[0]), float(rng[1]), int(num))


def steps_to_tol(steps, curve, tol) -> int | None:
    """First recorded step whose loss is <= tol (None if never)."""
    hit = np.nonzero(np.asarray(curve) <= tol)[0]
    return int(steps[hit[0]]) if hit.size else None


def max_abs_diff(a, b, ok=None) -> tuple[float, float]:
    """(max |a - b|, that / max |a|) over the entries of runs selected by ``ok`` (leading dims)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if ok is not None:
        a, b = a[ok], b[ok]
    if a.size == 0:
        return NAN2
    d = float(np.max(np.abs(a - b)))
    return d, d / max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)


def diff_per_lr(a, b, loss, ok) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per lr, over the runs (seeds) ``ok`` [L, S] keeps: (max |a - b|, that / max |a| of the
    run, the largest loss growth max_t loss_t / loss_0); NaN where no run is kept. ``a``, ``b``:
    [L, S, ...] values of the two implementations, ``loss``: [L, S, T] of ``a``."""
    a, b, loss = (np.asarray(x, np.float64) for x in (a, b, loss))
    axes = tuple(range(2, a.ndim))
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.max(np.abs(a - b), axis=axes)
        rel = d / np.maximum(np.max(np.abs(a), axis=axes), np.finfo(np.float64).tiny)
        growth = np.max(loss, axis=-1) / loss[..., 0]
    out = [np.where(ok.any(1), np.max(np.where(ok, x, -np.inf), axis=1), np.nan)
           for x in (d, rel, growth)]
    return out[0], out[1], out[2]


def twin_summary(fits: dict, limit: float = GROWTH_LIMIT) -> dict:
    """Manual vs optax over every lr of every problem (``fits``: problem -> opt -> Fit), split
    by the loss growth: calm lrs (max_t loss_t / loss_0 <= limit) and spiking ones; lrs where
    every run diverged are left out (counted)."""
    rows = [(p, n, float(f.lrs[i]), float(f.growth_lr[i]), float(f.diff_lr[i]),
             float(f.rel_lr[i]))
            for p, per in fits.items() for n, f in per.items() for i in range(len(f.lrs))]
    kept = [r for r in rows if np.isfinite(r[4])]
    calm = [r for r in kept if r[3] <= limit]
    spiking = [r for r in kept if r[3] > limit]
    worst = max(spiking, key=lambda r: r[4]) if spiking else None
    return {"loss_growth_limit": limit, "lrs_compared": len(kept),
            "lrs_left_out_diverged": len(rows) - len(kept), "calm_lrs": len(calm),
            "calm_max_abs": max((r[4] for r in calm), default=None),
            "calm_max_rel": max((r[5] for r in calm), default=None),
            "spiking_lrs": len(spiking),
            "spiking_max_abs": None if worst is None else worst[4],
            "spiking_max_rel": max((r[5] for r in spiking), default=None),
            "spiking_max_abs_by_problem": {p: max((r[4] for r in spiking if r[0] == p),
                                                  default=None) for p in fits},
            "worst": None if worst is None else dict(zip(
                ("problem", "optimizer", "lr", "loss_growth", "max_abs_diff"), worst[:5]))}


@dataclass
class Fit:
    """One optimizer (hand-written) on one problem: its lr grid and its best lr. [L] lrs,
    [S] seeds, [T] points of a loss curve (network: recorded steps + the final loss;
    quadratic: quad_steps + 1)."""

    lrs: np.ndarray                   # [L] log-spaced learning rates
    diverged: np.ndarray              # [L] bool: a run at this lr diverged
    final: np.ndarray                 # [L] final loss (network: median over seeds, with a
                                      # non-finite loss counted as +inf)
    best: int | None                  # index of the best lr; None if every lr diverged
    curve: np.ndarray | None          # loss at the best lr: network [S, T], quadratic [T]
    diff: tuple                       # (max |manual - optax|, relative) at the best lr
    diff_grid: tuple                  # the same over every lr where neither diverged
    diff_lr: np.ndarray               # [L] max |manual - optax| per lr (NaN: every run diverged)
    rel_lr: np.ndarray                # [L] the same divided by the run's largest |value|
    growth_lr: np.ndarray             # [L] largest loss_t / loss_0 of those runs
    steps_to_tol: int | None = None   # first step reaching the tolerance (network: median curve)
    path: np.ndarray | None = None    # quadratic: [T, 2] the path at the best lr
    rate_theory: float = float("nan")  # quadratic: contraction per step at the best lr (theory)
    steps_theory: float | None = None  # quadratic: steps to the tolerance at that rate

    @property
    def best_lr(self) -> float | None:
        return None if self.best is None else float(self.lrs[self.best])

    @property
    def final_loss(self) -> float | None:
        return None if self.best is None else float(self.final[self.best])


@dataclass
class Result:
    """Both problems. [L] lrs, [S] seeds, [R] recorded steps of a network run, [Q] quad_steps."""

    names: list                # the optimizers compared, in config order
    seeds: np.ndarray          # [S] seed values
    n: int                     # features of the network's data
    m: int                     # its examples
    batch: int                 # examples per network step
    sweeps: dict               # (opt, impl) -> sweep.SweepResult, metrics [L, S, ...]
    steps: np.ndarray          # [R + 1] recorded steps, then train.steps (the final loss)
    net: dict                  # opt -> Fit on the network
    tol: float                 # network tolerance: tol_factor x lowest best final loss
    H: np.ndarray              # [2, 2] Hessian of the quadratic
    lams: np.ndarray           # [2] its eigenvalues, ascending
    w0: np.ndarray             # [2] start of every path
    f0: float                  # f(w0)
    paths: dict                # (opt, impl) -> (path [L, Q + 1, 2], loss [L, Q + 1])
    quad: dict                 # opt -> Fit on the quadratic
    gd_threshold: float        # theory: GD stable iff lr < this
    gd_best_lr: float          # theory: GD's fastest lr, 2 / (lambda_min + lambda_max)
    momentum_threshold: float  # theory: momentum stable iff lr < this
    bounds: dict = field(default_factory=dict)  # opt -> its row's stability bound (or None)


def _with_final(metrics) -> np.ndarray:
    """[L, S, R + 1]: the recorded losses, then the final loss."""
    return np.concatenate([metrics["loss"], metrics["final_loss"][..., None]], axis=-1)


def compute(cfg, run) -> Result:
    """Long because it runs the experiment's parts one after another (each a few lines) sharing
    their inputs."""
    P, o = cfg.experiment, cfg.optimizer
    names = list(P.optimizers)
    ds = load_data(cfg, run)
    fixed = {"init_scale": cfg.model.init_scale, "beta": o.beta, "beta1": o.beta1,
             "beta2": o.beta2, "eps": o.eps}
    seeds = make.seed_values(cfg.sweep.seeds, cfg.seed)
    lrs = {n: lr_grid(P.lr_range[n], P.lr_num) for n in names}
    specs = {(n, i): make.spec(cfg, ds, optimizer=n, impl=i,
                               opt_hparams=tuple(optim.HYPERPARAMS[n]))
             for n in names for i in IMPLS}
    with run.timed("network"):
        sweeps = sweep.run_fused(specs, lrs, seeds, fixed, ds.X, ds.Y)

    # ---- the network: best lr, tolerance, manual vs optax
    steps = np.append(sweeps[(names[0], "manual")].coords["step"], cfg.train.steps)
    net = {}
    for n in names:
        r, t = sweeps[(n, "manual")].metrics, sweeps[(n, "optax")].metrics
        curves, curves_t = _with_final(r), _with_final(t)
        div = diverged_mask(r["loss"], r["final_loss"], r["first_nonfinite"], P.divergence_factor)
        b = best_lr_index(r["final_loss"], div)
        ok = ~div & ~diverged_mask(t["loss"], t["final_loss"], t["first_nonfinite"],
                                   P.divergence_factor)
        net[n] = Fit(lrs[n], div.any(axis=1), finite_median(r["final_loss"], axis=1), b,
                     None if b is None else curves[b],
                     NAN2 if b is None else max_abs_diff(curves[b], curves_t[b]),
                     max_abs_diff(curves, curves_t, ok), *diff_per_lr(curves, curves_t, curves, ok))
    finals = [f.final_loss for f in net.values() if f.final_loss is not None]
    tol = P.tol_factor * min(finals) if finals else float("nan")
    for f in net.values():
        if f.best is not None:
            f.steps_to_tol = steps_to_tol(steps, np.median(f.curve, axis=0), tol)

    # ---- the quadratic
    _, _, H = theory.ill_conditioned_quadratic(P.quad_kappa, P.quad_angle)
    lams = np.linalg.eigvalsh(H)
    w0 = np.asarray(P.quad_start, np.float64)
    f0 = float(0.5 * w0 @ H @ w0)
    qlrs = {n: lr_grid(P.quad_lr_range[n], P.quad_lr_num) for n in names}
    with run.timed("quadratic"):
        paths = quadratic_paths(H, w0, qlrs, fixed, P.quad_steps, dtype=cfg.precision)
    qsteps = np.arange(P.quad_steps + 1)
    quad = {}
    for n in names:
        (path, loss), (path_t, loss_t) = paths[(n, "manual")], paths[(n, "optax")]
        div = ~np.isfinite(loss).all(axis=1) | (loss[:, -1] > P.divergence_factor * loss[:, 0])
        fin = np.where(div, np.inf, loss[:, -1])
        b = int(np.argmin(fin)) if np.isfinite(fin).any() else None
        ok = ~div & np.isfinite(loss_t).all(axis=1)
        rate = float("nan") if b is None else quadratic_rate(n, qlrs[n][b], lams, o.beta)
        quad[n] = Fit(qlrs[n], div, loss[:, -1], b, None if b is None else loss[b],
                      NAN2 if b is None else max_abs_diff(path[b], path_t[b]),
                      max_abs_diff(path, path_t, ok),
                      *diff_per_lr(path[:, None], path_t[:, None], loss[:, None], ok[:, None]),
                      steps_to_tol=None if b is None else steps_to_tol(qsteps, loss[b], P.quad_tol),
                      path=None if b is None else path[b], rate_theory=rate,
                      steps_theory=predicted_steps(rate, f0, P.quad_tol))
    return Result(names, seeds, ds.n, ds.m, specs[(names[0], "manual")].batch, sweeps, steps,
                  net, tol, H, lams, w0, f0, paths, quad, optim.stability_bound("gd", lams[-1]),
                  2 / (lams[0] + lams[-1]),
                  optim.stability_bound("momentum", lams[-1], beta=o.beta),
                  {n: optim.stability_bound(n, lams[-1], **_row_hparams(n, o)) for n in names})


def _row_hparams(name, o) -> dict:
    """The config's values of optimizer ``name``'s own hyperparameters."""
    return {k: getattr(o, k) for k in optim.OPTIMIZERS[name].hparams if hasattr(o, k)}


def dataset(res: Result) -> xr.Dataset:
    """Both problems' arrays, every optimizer and implementation in one array per quantity.

    Layout: each optimizer sweeps its OWN lr grid (same length for all), so the arrays are
    stacked along ``optimizer`` and ``impl`` with the grid position ``lr_index`` as the lr dim and
    ``lr`` a 2-D coordinate over (optimizer, lr_index): one variable per quantity reads better
    than one per optimizer and impl, each with an lr dim of its own. To select by lr:
    ``ds.net_loss.sel(optimizer="adam", impl="manual").swap_dims(lr_index="lr")``.
    The network (``net_*``, the sweep engine's metrics): dims (optimizer, impl, lr_index, seed)
    then step / param as in bpexp.sweep. The quadratic (``quad_*``): its own lr grids
    (``quad_lr_index``, ``quad_lr``) and steps (``quad_step``, 0..quad_steps), ``w`` = (w1, w2);
    ``quad_H`` its Hessian over (w_row, w_col)."""
    names = res.names
    first = res.sweeps[(names[0], "manual")]

    def stack(get):  # [optimizer, impl, ...]
        return np.stack([np.stack([get(n, i) for i in IMPLS]) for n in names])

    data = {f"net_{k}": (("optimizer", "impl", "lr_index", *dims[1:]),   # dims: (lr, seed, ...)
                         stack(lambda n, i, k=k: res.sweeps[(n, i)].metrics[k]))
            for k, dims in first.dims.items()}
    q = ("optimizer", "impl", "quad_lr_index", "quad_step")
    data["quad_path"] = ((*q, "w"), stack(lambda n, i: res.paths[(n, i)][0]))
    data["quad_loss"] = (q, stack(lambda n, i: res.paths[(n, i)][1]))
    data["quad_H"] = (("w_row", "w_col"), np.asarray(res.H))
    w = np.array(["w1", "w2"])
    coords = {"optimizer": np.array(names), "impl": np.array(IMPLS),
              "lr_index": np.arange(len(first.axes["lr"])),
              "lr": (("optimizer", "lr_index"), np.stack([res.net[n].lrs for n in names])),
              "seed": np.asarray(first.axes["seed"]),
              **{k: np.asarray(v) for k, v in first.coords.items()},        # step, param
              "quad_lr_index": np.arange(len(res.quad[names[0]].lrs)),
              "quad_lr": (("optimizer", "quad_lr_index"),
                          np.stack([res.quad[n].lrs for n in names])),
              "quad_step": np.arange(data["quad_loss"][1].shape[-1]),
              "w": w, "w_row": w, "w_col": w}
    return xr.Dataset(data, coords=coords)
