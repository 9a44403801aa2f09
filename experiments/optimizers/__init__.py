"""GD, momentum, RMSprop and Adam, each at its own best learning rate, hand-written and optax.

Question: on a small network (two_layer_sigmoid on digits, MSE on one-hot targets) and on an
ill-conditioned 2-D quadratic, how do the four CS230 optimizers compare when each gets the
learning rate that suits it, and do the hand-written transformations (bpexp.optim) trace the
same trajectories as their optax twins?
Theory: on f(w) = 0.5 w^T H w with eigenvalues 1 and kappa, GD contracts the error by
rho = max|1 - lr lambda| per step, at best (kappa - 1)/(kappa + 1) at lr = 2/(1 + kappa), and
diverges for lr > 2/kappa. CS230 momentum with lr in the band where the roots of
z^2 - (1 + b - lr (1 - b) lambda) z + b are complex for both eigenvalues contracts by sqrt(b)
per step whatever kappa is (possible for kappa < ((1 + sqrt b)/(1 - sqrt b))^2), so it beats
GD once (kappa - 1)/(kappa + 1) > sqrt(b): kappa > 38 for b = 0.9. Adam and RMSprop have no
such rate; their first steps have size ~lr (Adam: lr sign(g) up to eps, lr |g| / (|g| + eps)).
Each optax twin is the same update written differently (see bpexp.optim), so trajectories
agree to rounding: ~1e-6 relative in float32, ~1e-15 in float64.
Expected: on the quadratic GD zig-zags across the valley and needs about its predicted
ln(tol/f0) / (2 ln rho) steps; momentum (and, at the defaults, Adam) reach the tolerance in
fewer; on digits plain GD, capped by its stability bound, ends with the highest loss and Adam
with the lowest; manual vs optax differences are at rounding level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from matplotlib.lines import Line2D

from bpexp import make, optim, plots, report, sweep, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import (best_lr_index, command, diverged_mask, finite_median,
                                       load_data, question)
from bpexp.plots import plt

NAMES = optim.NAMES     # every row of the optimizer table
IMPLS = optim.IMPLS
NAN2 = (float("nan"), float("nan"))  # a (max |diff|, relative) with no run to compare


USES = ("model", "data", "optimizer", "train", "sweep")


@dataclass
class Params:
    name: str = "optimizers"
    optimizers: Any = field(default_factory=lambda: list(NAMES))
    # per optimizer [start, stop] of a log-spaced lr grid with lr_num points
    lr_range: Any = field(default_factory=lambda: {
        k: list(r.lr_range) for k, r in optim.OPTIMIZERS.items()})
    lr_num: int = 10
    tol_factor: float = 1.05        # digits tolerance: tol_factor x best final loss of all
    divergence_factor: float = 1.0  # also diverged: final loss > factor x initial loss
    quad_kappa: float = 50.0
    quad_angle: float = 30.0        # degrees the eigenvectors are rotated by
    quad_start: Any = field(default_factory=lambda: [2.5, 2.0])
    quad_steps: int = 300
    quad_lr_range: Any = field(default_factory=lambda: {
        k: list(r.quad_lr_range) for k, r in optim.OPTIMIZERS.items()})
    quad_lr_num: int = 24
    quad_tol: float = 1e-6          # quadratic tolerance: absolute loss
    path_steps: int = 80            # steps of each path drawn on the contours


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(cfg):
    P = cfg.experiment
    opts = P.optimizers
    if not opts or any(o not in NAMES for o in opts) or len(set(opts)) < len(opts):
        raise UserError(f"experiment.optimizers={opts!r} must be a non-empty list of distinct "
                        f"optimizers; allowed: {', '.join(NAMES)}")
    for key in ("lr_range", "quad_lr_range"):
        ranges = getattr(P, key)
        unknown = [k for k in ranges if k not in NAMES]
        if unknown:
            raise UserError(f"experiment.{key}.{unknown[0]} is not an optimizer; allowed keys: "
                            f"{', '.join(NAMES)}")
        for o in opts:
            r = ranges.get(o)
            if not (isinstance(r, list) and len(r) == 2 and all(map(_number, r))
                    and 0 < r[0] <= r[1] < math.inf):
                raise UserError(f"experiment.{key}.{o}={r!r} must be [start, stop], finite "
                                f"numbers with 0 < start <= stop")
    for key in ("lr_num", "quad_lr_num", "quad_steps", "path_steps"):
        if getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} must be >= 1")
    for key in ("tol_factor", "quad_tol"):
        if not 0 < getattr(P, key) < math.inf:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} must be finite and > 0")
    if not P.divergence_factor > 0:
        raise UserError(f"experiment.divergence_factor={P.divergence_factor!r} must be > 0")
    if not 1 <= P.quad_kappa < math.inf:
        raise UserError(f"experiment.quad_kappa={P.quad_kappa!r} must be finite and >= 1")
    if not math.isfinite(P.quad_angle):
        raise UserError(f"experiment.quad_angle={P.quad_angle!r} must be finite (degrees)")
    w0 = P.quad_start
    # nearer the minimum (0, 0), the contours drawn at f(w0) x 1e-3 .. f(w0) underflow to 0
    if not (isinstance(w0, list) and len(w0) == 2 and all(map(_number, w0))
            and all(map(math.isfinite, w0)) and max(map(abs, w0)) >= 1e-100):
        raise UserError(f"experiment.quad_start={w0!r} must be 2 finite numbers [w1, w2] with "
                        f"max(|w1|, |w2|) >= 1e-100 (the minimum is (0, 0))")


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


# ---------------------------------------------------------------- the quadratic: one compile
def quadratic_paths(H, w0, lrs: dict, fixed: dict, steps: int, impls=IMPLS,
                    dtype="float32") -> dict:
    """Paths of every optimizer (manual and optax twin) on f(w) = 0.5 w^T H w, each vmapped
    over its lrs; one jitted ``lax.scan`` program for all. Returns ``{(opt, impl): (path
    [lr, step + 1, 2], loss [lr, step + 1])}``; row 0 of each path is ``w0``."""
    dt = jnp.dtype(dtype)

    def one(name, impl, lr, H, w0):
        hp = {k: fixed[k] for k in optim.HYPERPARAMS[name] if k != "lr"}
        opt = optim.get(name, impl=impl, lr=lr, **hp)

        def update(carry, _):
            w, s = carry
            upd, s = opt.update(H @ w, s, w)          # grad f = H w
            return (optax.apply_updates(w, upd), s), w

        (w_last, _), _, _, ws = train.loop(update, (w0, opt.init(w0)), steps,
                                           each_step=lambda w: w)
        path = jnp.concatenate([ws, w_last[None]], axis=0)                 # (steps + 1, 2)
        return path, 0.5 * jnp.einsum("ti,ij,tj->t", path, H, path)        # f = 0.5 w^T H w

    @jax.jit
    def all_paths(lrs, H, w0):
        return {f"{o}/{i}": jax.vmap(lambda lr, o=o, i=i: one(o, i, lr, H, w0))(lrs[o])
                for o in lrs for i in impls}

    out = all_paths({o: jnp.asarray(v, dt) for o, v in lrs.items()}, jnp.asarray(H, dt),
                    jnp.asarray(w0, dt))
    return {tuple(k.split("/")): tuple(np.asarray(x) for x in v) for k, v in out.items()}


def quadratic_rate(name, lr, lams, beta) -> float:
    """Linear contraction factor per step at ``lr`` (GD, momentum; NaN otherwise)."""
    lams = np.asarray(lams, np.float64)
    if name == "gd":
        return float(np.max(np.abs(theory.gd_quadratic_factor(lr, lams))))
    if name == "momentum":
        return float(np.max([theory.momentum_spectral_radius(lr, lam, beta) for lam in lams]))
    return float("nan")


def predicted_steps(rate, f0, tol) -> float | None:
    """f_t ~ f0 rate^(2t): steps until f_t <= tol (ignores the constant of the slowest mode)."""
    if not (0 < rate < 1) or f0 <= tol:
        return None
    return math.log(tol / f0) / (2 * math.log(rate))


# ---------------------------------------------------------------- compute
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
                     max_abs_diff(curves, curves_t, ok))
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


# ---------------------------------------------------------------- save
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


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    run.save_metrics(dataset(res))

    def entry(f: Fit, extra):
        return {"best_lr": f.best_lr, "final_loss": f.final_loss, "steps_to_tol": f.steps_to_tol,
                "max_abs_diff_manual_vs_optax": f.diff[0],
                "max_rel_diff_manual_vs_optax": f.diff[1],
                "max_abs_diff_manual_vs_optax_all_lrs": f.diff_grid[0], **extra}

    data, names, net, quad = cfg.data.name, res.names, res.net, res.quad
    stats = res.sweeps[(names[0], "manual")].stats  # shared by all: one compiled call
    return {
        "problems": {
            data: {n: entry(net[n], {"lrs": net[n].lrs, "final_loss_median": net[n].final,
                                     "diverged": net[n].diverged}) for n in names},
            "quadratic": {n: entry(quad[n], {"lrs": quad[n].lrs, "final_loss_per_lr": quad[n].final,
                                             "diverged": quad[n].diverged,
                                             "rate_theory": quad[n].rate_theory,
                                             "steps_to_tol_theory": quad[n].steps_theory,
                                             "stability_bound": res.bounds[n]})
                          for n in names}},
        "tolerance": {data: res.tol, "quadratic": P.quad_tol,
                      "definition": f"{data}: first step where the median (over seeds) loss at "
                                    f"the best lr <= {P.tol_factor} x the lowest best final loss "
                                    f"of all optimizers; quadratic: first step with loss <= "
                                    f"{P.quad_tol:g} (absolute)"},
        "quadratic": {"kappa": P.quad_kappa, "angle_deg": P.quad_angle, "eigenvalues": res.lams,
                      "start": res.w0, "f0": res.f0, "gd_threshold": res.gd_threshold,
                      "gd_best_lr_theory": res.gd_best_lr,
                      "momentum_threshold": res.momentum_threshold},
        "network_compile_s": stats["compile_s"], "network_run_s": stats["run_s"],
        "runs": sum(r.stats["runs"] for r in res.sweeps.values()),
        "precision": cfg.precision, "steps": cfg.train.steps, "seeds": res.seeds, "m": res.m,
    }


# ---------------------------------------------------------------- present
COLORS = {k: plots.PALETTE[i % len(plots.PALETTE)] for i, k in enumerate(optim.NAMES)}


def present(cfg, run, res: Result, summary: dict) -> None:
    P, o = cfg.experiment, cfg.optimizer
    names, net, quad, lams, w0 = res.names, res.net, res.quad, res.lams, res.w0
    figs = ["loss_at_best_lr.png", "final_loss_vs_lr.png", "quadratic_paths.png"]
    title_net = (f"{cfg.model.name} on {cfg.data.name} (m={res.m}), {len(res.seeds)} seeds, "
                 f"median")
    title_q = f"quadratic, kappa={P.quad_kappa:g}, rotated {P.quad_angle:g} deg"
    fig_best_curves(names, res.steps, net, res.tol, quad, P.quad_tol, title_net, title_q,
                    run.figure(figs[0]))
    fig_final_vs_lr(names, net, quad, title_net, title_q, res.bounds, run.figure(figs[1]))
    n_path = min(P.path_steps, P.quad_steps)
    fig_paths(names, res.H, w0, quad, n_path,
              f"{title_q}: first {n_path} steps at each optimizer's best lr", run.figure(figs[2]))

    header = ["problem", "optimizer", "best lr", "final loss", "steps to tol", "theory steps",
              "max|manual-optax|", "relative"]
    rows = [[cfg.data.name, n, net[n].best_lr, net[n].final_loss, _steps(net[n].steps_to_tol), "-",
             *net[n].diff] for n in names]
    rows += [["quadratic", n, quad[n].best_lr, quad[n].final_loss, _steps(quad[n].steps_to_tol),
              "-" if quad[n].steps_theory is None else round(quad[n].steps_theory), *quad[n].diff]
             for n in names]
    report.print_table(f"optimizers: each at its best lr ({cfg.precision}); tol {cfg.data.name} = "
                       f"{report.fmt(res.tol)}, quadratic = {P.quad_tol:g}", header, rows)
    theory_rows = [["GD stable iff lr < 2/kappa", res.gd_threshold,
                    "measured: " + _first_diverged(quad.get("gd"))],
                   ["GD best lr 2/(1+kappa), rate (kappa-1)/(kappa+1)", res.gd_best_lr,
                    f"rate {(lams[-1] - lams[0]) / (lams[-1] + lams[0]):.4f}"],
                   ["momentum stable iff lr < 2(1+b)/((1-b) kappa)", res.momentum_threshold,
                    "measured: " + _first_diverged(quad.get("momentum"))],
                   ["momentum best rate sqrt(beta)", math.sqrt(o.beta),
                    "beats GD iff (kappa-1)/(kappa+1) > sqrt(beta)"]]
    theory_rows += [[f"theory rate at the measured best lr, {n}", quad[n].rate_theory,
                     f"lr {report.fmt(quad[n].best_lr)}"] for n in names if n in ("gd", "momentum")]
    report.print_table(f"quadratic (kappa={P.quad_kappa:g}): theory", ["quantity", "value", "note"],
                       theory_rows)
    batch = "" if res.batch == res.m else f" (batch {res.batch})"
    run.save_report(report.report(
        "Optimizers at their best learning rates, hand-written vs optax",
        question(__doc__), command(cfg),
        [("Setup", f"network: model `{cfg.model.name}` (hidden {cfg.model.hidden}), data "
                   f"`{cfg.data.name}` (n={res.n}, m={res.m}), full-batch{batch}, "
                   f"{cfg.train.steps} steps, {P.lr_num} lrs x {len(res.seeds)} seeds per "
                   f"optimizer, {cfg.precision}; beta={o.beta}, beta1={o.beta1}, "
                   f"beta2={o.beta2}, eps={o.eps}.\n"
                   f"Quadratic: f = 0.5 w^T H w, eigenvalues {lams[0]:g} and {lams[-1]:g}, start "
                   f"({w0[0]:g}, {w0[1]:g}) (f0 = {res.f0:.4g}), {P.quad_steps} steps, "
                   f"{P.quad_lr_num} lrs per optimizer.\n"
                   f"Best lr: lowest median final loss among lrs where no seed diverged "
                   f"(non-finite, or final > {P.divergence_factor:g} x initial). Tolerance: "
                   f"network {P.tol_factor:g} x the lowest best final loss of all optimizers = "
                   f"{res.tol:.4g} (first step where the median curve reaches it); quadratic "
                   f"absolute {P.quad_tol:g}. max|manual-optax|: loss curves at the best lr "
                   f"(network, all seeds), parameters along the path (quadratic); relative = "
                   f"divided by the largest |value|."),
         ("Measured", report.markdown_table(header, rows)),
         ("Theory on the quadratic", report.markdown_table(["quantity", "value", "note"],
                                                          theory_rows)),
         ("Manual vs optax over every lr of the grid",
          "The largest |manual - optax| over all lrs where neither diverged. In float32 it grows "
          "at lrs near the stability edge, where the dynamics amplify 1-ulp rounding differences "
          "(the two write the same update in a different order); in float64 it stays tiny.\n\n"
          + report.markdown_table(
              ["problem", "optimizer", "max|manual-optax| (all lrs)", "at best lr"],
              [[cfg.data.name, n, net[n].diff_grid[0], net[n].diff[0]] for n in names]
              + [["quadratic", n, quad[n].diff_grid[0], quad[n].diff[0]] for n in names]))],
        figs))


def _steps(v) -> int | str:
    return "not reached" if v is None else v


def _first_diverged(q: Fit | None) -> str:
    """'X ok, Y diverged' at the first diverged lr of a quadratic fit (or 'none diverged')."""
    if q is None or not q.diverged.any():
        return "none diverged in the grid"
    i = int(np.argmax(q.diverged))
    below = f"{q.lrs[i - 1]:.3g} ok, " if i > 0 else ""
    return f"{below}{q.lrs[i]:.3g} diverged"


def fig_best_curves(names, steps, net, tol, quad, qtol, title_net, title_q, path):
    """Left: network loss at each optimizer's best lr (median over seeds, min-max band);
    right: quadratic loss at each best lr; dashed: the tolerances."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for n in names:
        if net[n].curve is None:
            continue
        c = plots.positive(net[n].curve)
        a1.plot(steps, np.nanmedian(c, axis=0), color=COLORS[n], lw=1.5,
                label=f"{n}, lr={net[n].best_lr:.3g}")
        a1.fill_between(steps, np.nanmin(c, axis=0), np.nanmax(c, axis=0), color=COLORS[n],
                        alpha=0.15)
    a1.axhline(tol, color="k", ls="--", lw=1, label=f"tolerance {tol:.3g}")
    a1.set_yscale("log")
    a1.set_xlabel("step (full-batch updates)")
    a1.set_ylabel("training loss, MSE (log)")
    a1.set_title(title_net, fontsize=9)
    a1.legend(fontsize=8)
    for n in names:
        if quad[n].curve is not None:
            a2.plot(np.arange(len(quad[n].curve)), plots.positive(quad[n].curve), color=COLORS[n],
                    lw=1.5, label=f"{n}, lr={quad[n].best_lr:.3g}")
    a2.axhline(qtol, color="k", ls="--", lw=1, label=f"tolerance {qtol:g}")
    a2.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel("f(w) = 0.5 w^T H w (log)")
    a2.set_title(title_q, fontsize=9)
    a2.legend(fontsize=8)
    fig.suptitle("Loss at each optimizer's best learning rate (hand-written; optax twins "
                 "coincide)", fontsize=10)
    return plots.save(fig, path)


def fig_final_vs_lr(names, net, quad, title_net, title_q, bounds, path):
    """Final loss vs lr per optimizer, log-log; diverged lrs as crosses at the top, the best lr
    as a star; on the quadratic each optimizer's stability bound (its row's) as a dotted
    line."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, fits, title in ((axes[0], net, title_net), (axes[1], quad, title_q)):
        fin_all = np.concatenate([plots.positive(np.where(f.diverged, np.nan, f.final))
                                  for f in fits.values()])
        top = np.nanmax(fin_all) * 3 if np.isfinite(fin_all).any() else 1.0
        for n in names:
            f = fits[n]
            ax.plot(f.lrs, plots.positive(np.where(f.diverged, np.nan, f.final)), "o-", ms=3,
                    color=COLORS[n], label=n)
            ax.plot(f.lrs[f.diverged], np.full(f.diverged.sum(), top), "x", color=COLORS[n], ms=7)
            if f.best is not None:
                ax.plot(f.lrs[f.best], f.final[f.best], "*", ms=13, color=COLORS[n], mec="k",
                        mew=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate (log)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("final training loss (median over seeds, log)")
    axes[1].set_ylabel("final f(w) (log)")
    for n in names:
        if bounds.get(n):
            axes[1].axvline(bounds[n], color=COLORS[n], ls=":", lw=1.2,
                            label=f"{n} bound = {bounds[n]:.3g}")
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        h += [Line2D([], [], ls="", marker="x", color="0.3"),
              Line2D([], [], ls="", marker="*", ms=10, color="0.3")]
        lab += ["diverged (drawn at top)", "best lr"]
        ax.legend(h, lab, fontsize=7)
    fig.suptitle("Final loss vs learning rate per optimizer", fontsize=10)
    return plots.save(fig, path)


def fig_paths(names, H, w0, quad, n_path, title, path):
    """One panel per optimizer: contours of 0.5 w^T H w and the first ``n_path`` steps of the
    path at its best lr from w0 (same start)."""
    paths = {n: None if quad[n].path is None else quad[n].path[: n_path + 1] for n in names}
    k = len(names)
    cols = 2 if k > 1 else 1
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 4.4 * rows), squeeze=False)
    r = 1.25 * float(np.max(np.abs(w0)))
    reach = [np.nanmax(np.abs(p[np.isfinite(p).all(axis=1)])) for p in paths.values()
             if p is not None]
    r = min(max([r, *(1.05 * x for x in reach)]), 3 * r)   # show early overshoots, not blow-ups
    g = np.linspace(-r, r, 241)
    W1, W2 = np.meshgrid(g, g)
    F = 0.5 * (H[0, 0] * W1 ** 2 + 2 * H[0, 1] * W1 * W2 + H[1, 1] * W2 ** 2)
    f0 = 0.5 * w0 @ H @ w0
    levels = f0 * np.geomspace(1e-3, 1, 9)
    for ax, n in zip(axes.ravel(), names):
        ax.contour(W1, W2, F, levels=levels, colors="0.6", linewidths=0.7)
        p = paths[n]
        if p is not None:
            p = np.where(np.abs(p) > 10 * r, np.nan, p)
            ax.plot(p[:, 0], p[:, 1], "-o", ms=2.2, lw=1, color=COLORS[n])
        ax.plot(*w0, "ks", ms=6, label=f"start ({w0[0]:g}, {w0[1]:g})")
        ax.plot(0, 0, "k*", ms=11, label="minimum (0, 0)")
        lr = "none converged" if quad[n].best is None else f"lr={quad[n].best_lr:.3g}"
        st = "" if quad[n].steps_to_tol is None else f", tol reached at step {quad[n].steps_to_tol}"
        ax.set_title(f"{n}: {lr}{st}", fontsize=9)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal")
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)
from bpexp.experiments.optimizers.page import page  # noqa: E402,F401  (the run page's figures)
