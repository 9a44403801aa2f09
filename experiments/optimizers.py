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
such rate; their first steps have size ~lr (Adam: exactly lr sign(g)).
Each optax twin is the same update written differently (see bpexp.optim), so trajectories
agree to rounding: ~1e-6 relative in float32, ~1e-15 in float64.
Expected: on the quadratic GD zig-zags across the valley and needs about its predicted
ln(tol/f0) / (2 ln rho) steps; momentum (and, at the defaults, Adam) reach the tolerance in
fewer; on digits plain GD, capped by its stability bound, ends with the highest loss and Adam
with the lowest; manual vs optax differences are at rounding level.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from bpexp import make, optim, plots, report, sweep, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import best_lr_index, command, diverged_mask, finite_median, load_data, question

NAMES = ("gd", "momentum", "rmsprop", "adam")
IMPLS = ("manual", "optax")


USES = ("model", "data", "optimizer", "train", "sweep")  # config sections read (make.check builds them first)


@dataclass
class Params:
    name: str = "optimizers"
    optimizers: Any = field(default_factory=lambda: list(NAMES))
    # per optimizer [start, stop] of a log-spaced lr grid with lr_num points
    lr_range: Any = field(default_factory=lambda: {"gd": [0.01, 3.0], "momentum": [0.03, 30.0],
                                                   "rmsprop": [1e-4, 0.3], "adam": [3e-4, 1.0]})
    lr_num: int = 10
    tol_factor: float = 1.05        # digits tolerance: tol_factor x best final loss of all
    divergence_factor: float = 1.0  # also diverged: final loss > factor x initial loss
    quad_kappa: float = 50.0
    quad_angle: float = 30.0        # degrees the eigenvectors are rotated by
    quad_start: Any = field(default_factory=lambda: [2.5, 2.0])
    quad_steps: int = 300
    quad_lr_range: Any = field(default_factory=lambda: {"gd": [0.002, 0.08], "momentum": [0.01, 1.5],
                                                        "rmsprop": [0.001, 1.0], "adam": [0.001, 1.0]})
    quad_lr_num: int = 24
    quad_tol: float = 1e-6          # quadratic tolerance: absolute loss
    path_steps: int = 80            # steps of each path drawn on the contours


def validate(cfg):
    P = cfg.experiment
    bad = [o for o in P.optimizers if o not in NAMES]
    if bad or not P.optimizers:
        raise UserError(f"experiment.optimizers={P.optimizers!r} must be a non-empty list; allowed: {', '.join(NAMES)}")
    for key in ("lr_range", "quad_lr_range"):
        ranges = getattr(P, key)
        for o in P.optimizers:
            r = ranges.get(o) if isinstance(ranges, dict) else None
            if not (isinstance(r, list) and len(r) == 2 and 0 < r[0] <= r[1]):
                raise UserError(f"experiment.{key}.{o}={r!r} must be [start, stop] with 0 < start <= stop")
    for key in ("lr_num", "quad_lr_num", "quad_steps", "path_steps"):
        if getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} must be >= 1")
    if not (isinstance(P.quad_start, list) and len(P.quad_start) == 2):
        raise UserError(f"experiment.quad_start={P.quad_start!r} must be a list of 2 numbers")
    if P.quad_kappa < 1:
        raise UserError(f"experiment.quad_kappa={P.quad_kappa!r} must be >= 1")
    if cfg.train.steps % cfg.train.record_every:
        raise UserError(f"train.record_every={cfg.train.record_every} must divide train.steps={cfg.train.steps}")


def lr_grid(rng, num) -> np.ndarray:
    """``num`` log-spaced learning rates from rng[0] to rng[1]."""
    return np.geomspace(float(rng[0]), float(rng[1]), int(num))


# ---------------------------------------------------------------- the network: one compile
def run_fused(specs: dict, lrs: dict, seeds, fixed: dict, X, Y) -> dict:
    """Every ``specs[(opt, impl)]`` trained at learning rates ``lrs[opt]`` x ``seeds``, with
    ONE compile: the ``train.make_run`` of each spec, vmapped over lr, side by side in one
    jitted function of (seed, ...), called once per seed. Same runs and numbers as
    ``sweep.run_grid(spec, X, Y, Grid({"lr": lrs[opt], "seed": seeds}), fixed)`` per spec,
    but one compile instead of one per (optimizer, impl); the seed and init scale are shared
    unbatched scalars, so the initialization (threefry, slow to compile when batched) is
    compiled once, unbatched. Returns ``{(opt, impl): SweepResult}`` with axes (lr, seed)."""
    dtype = np.dtype(next(iter(specs.values())).dtype)
    hps, runs = {}, {}
    for (o, impl), spec in specs.items():
        key = f"{o}/{impl}"
        hps[key] = {k: np.asarray(lrs[o] if k == "lr" else fixed.get(k, optim.HYPERPARAMS[o][k]), dtype)
                    for k in spec.opt_hparams}
        axes = {k: 0 if k == "lr" else None for k in ("seed", "init_scale", *spec.opt_hparams)}
        runs[key] = jax.vmap(train.make_run(spec), in_axes=(axes, None, None))

    @jax.jit
    def all_runs(common, hps, X, Y):
        return {k: f({**hps[k], **common}, X, Y) for k, f in runs.items()}

    X, Y = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
    common = [{"seed": np.int32(s), "init_scale": np.asarray(fixed.get("init_scale", 1.0), dtype)} for s in seeds]
    t0 = time.perf_counter()
    compiled = all_runs.lower(common[0], hps, X, Y).compile()
    t1 = time.perf_counter()
    outs = [jax.tree_util.tree_map(np.asarray, compiled(c, hps, X, Y)) for c in common]  # one call per seed
    stats = {"compile_s": t1 - t0, "run_s": time.perf_counter() - t1}
    results = {}
    for (o, impl), spec in specs.items():
        key = f"{o}/{impl}"
        g = sweep.Grid({"lr": np.asarray(lrs[o]), "seed": np.asarray(seeds)})
        metrics = {k: np.stack([out[key][k] for out in outs], axis=1) for k in outs[0][key]}  # [lr, seed, ...]
        names = tuple(g.axes)
        dims = {"loss": names + ("step",), "grad_norm": names + ("step", "param"),
                "param_norm": names + ("step",), "update_norm": names + ("step",),
                "first_nonfinite": names, "final_loss": names}
        coords = {"step": np.arange(spec.n_records) * spec.record_every, "param": np.array(train.leaf_names(spec))}
        results[(o, impl)] = sweep.SweepResult(dict(g.axes), metrics, dims, coords, {"runs": g.size, **stats})
    return results


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
        return float("nan"), float("nan")
    d = float(np.max(np.abs(a - b)))
    return d, d / max(float(np.max(np.abs(a))), np.finfo(np.float64).tiny)


# ---------------------------------------------------------------- the quadratic: one compile
def quadratic_paths(H, w0, lrs: dict, fixed: dict, steps: int, impls=IMPLS, dtype="float32") -> dict:
    """Paths of every optimizer (manual and optax twin) on f(w) = 0.5 w^T H w, each vmapped
    over its lrs; one jitted ``lax.scan`` program for all. Returns ``{(opt, impl): (path
    [lr, step + 1, 2], loss [lr, step + 1])}``; row 0 of each path is ``w0``."""
    dt = jnp.dtype(dtype)

    def one(name, impl, lr, H, w0):
        hp = {k: fixed[k] for k in optim.HYPERPARAMS[name] if k != "lr"}
        opt = optim.get(name, impl=impl, lr=lr, **hp)

        def step(carry, _):
            w, s = carry
            upd, s = opt.update(H @ w, s, w)          # grad f = H w
            return (optax.apply_updates(w, upd), s), w

        (w_last, _), ws = lax.scan(step, (w0, opt.init(w0)), None, length=steps)
        path = jnp.concatenate([ws, w_last[None]], axis=0)                 # (steps + 1, 2)
        return path, 0.5 * jnp.einsum("ti,ij,tj->t", path, H, path)        # f = 0.5 w^T H w

    @jax.jit
    def all_paths(lrs, H, w0):
        return {f"{o}/{i}": jax.vmap(lambda lr, o=o, i=i: one(o, i, lr, H, w0))(lrs[o])
                for o in lrs for i in impls}

    out = all_paths({o: jnp.asarray(v, dt) for o, v in lrs.items()}, jnp.asarray(H, dt), jnp.asarray(w0, dt))
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


# ---------------------------------------------------------------- the experiment
def run(cfg, run):
    P = cfg.experiment
    names = list(P.optimizers)
    ds = load_data(cfg, run)
    o = cfg.optimizer
    fixed = {"init_scale": cfg.model.init_scale, "beta": o.beta, "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps}
    seeds = make.seed_values(cfg.sweep.seeds, cfg.seed)
    lrs = {n: lr_grid(P.lr_range[n], P.lr_num) for n in names}
    specs = {(n, i): make.spec(cfg, ds, optimizer=n, impl=i,
                                         opt_hparams=tuple(optim.HYPERPARAMS[n]))
             for n in names for i in IMPLS}
    with run.timed("network"):
        res = run_fused(specs, lrs, seeds, fixed, ds.X, ds.Y)

    # ---- the network: best lr, tolerance, manual vs optax
    steps = np.append(res[(names[0], "manual")].coords["step"], cfg.train.steps)  # + final loss
    net = {}
    for n in names:
        r, t = res[(n, "manual")].metrics, res[(n, "optax")].metrics
        curves = np.concatenate([r["loss"], r["final_loss"][..., None]], axis=-1)       # [lr, seed, step+1]
        curves_t = np.concatenate([t["loss"], t["final_loss"][..., None]], axis=-1)
        div = diverged_mask(r["loss"], r["final_loss"], r["first_nonfinite"], P.divergence_factor)
        b = best_lr_index(r["final_loss"], div)
        ok_grid = ~div & ~diverged_mask(t["loss"], t["final_loss"], t["first_nonfinite"], P.divergence_factor)
        d_best = max_abs_diff(curves[b], curves_t[b]) if b is not None else (float("nan"),) * 2
        d_grid = max_abs_diff(curves, curves_t, ok_grid)
        net[n] = {"lrs": lrs[n], "best": b, "curves": curves, "diverged": div,
                  "final_median": finite_median(r["final_loss"], axis=1),
                  "best_lr": None if b is None else float(lrs[n][b]),
                  "final_loss": None if b is None else float(finite_median(r["final_loss"][b], axis=0)),
                  "median_curve": None if b is None else np.median(curves[b], axis=0),
                  "diff": d_best, "diff_grid": d_grid}
    finals = [v["final_loss"] for v in net.values() if v["final_loss"] is not None]
    tol = P.tol_factor * min(finals) if finals else float("nan")
    for n in names:
        net[n]["steps_to_tol"] = (steps_to_tol(steps, net[n]["median_curve"], tol)
                                  if net[n]["best"] is not None else None)

    # ---- the quadratic
    _, _, H = theory.ill_conditioned_quadratic(P.quad_kappa, P.quad_angle)
    lams = np.linalg.eigvalsh(H)
    w0 = np.asarray(P.quad_start, np.float64)
    f0 = float(0.5 * w0 @ H @ w0)
    qlrs = {n: lr_grid(P.quad_lr_range[n], P.quad_lr_num) for n in names}
    with run.timed("quadratic"):
        qp = quadratic_paths(H, w0, qlrs, fixed, P.quad_steps, dtype=cfg.precision)
    qsteps = np.arange(P.quad_steps + 1)
    quad = {}
    for n in names:
        path, loss = qp[(n, "manual")]
        path_t, loss_t = qp[(n, "optax")]
        div = ~np.isfinite(loss).all(axis=1) | (loss[:, -1] > P.divergence_factor * loss[:, 0])
        fin = np.where(div, np.inf, loss[:, -1])
        b = int(np.argmin(fin)) if np.isfinite(fin).any() else None
        ok = ~div & np.isfinite(loss_t).all(axis=1)
        rate = quadratic_rate(n, qlrs[n][b], lams, o.beta) if b is not None else float("nan")
        quad[n] = {"lrs": qlrs[n], "best": b, "diverged": div, "final": loss[:, -1],
                   "best_lr": None if b is None else float(qlrs[n][b]),
                   "final_loss": None if b is None else float(loss[b, -1]),
                   "curve": None if b is None else loss[b], "path": None if b is None else path[b],
                   "steps_to_tol": None if b is None else steps_to_tol(qsteps, loss[b], P.quad_tol),
                   "diff": max_abs_diff(path[b], path_t[b]) if b is not None else (float("nan"),) * 2,
                   "diff_loss": max_abs_diff(loss[b], loss_t[b]) if b is not None else (float("nan"),) * 2,
                   "diff_grid": max_abs_diff(path, path_t, ok),
                   "rate_theory": rate, "steps_theory": predicted_steps(rate, f0, P.quad_tol)}

    # ---- metrics, figures, table, report
    arrays = {}
    for (n, i), r in res.items():
        arrays.update(r.npz(prefix=f"digits__{n}__{i}__"))
    for (n, i), (path, loss) in qp.items():
        arrays[f"quadratic__{n}__{i}__path"] = path
        arrays[f"quadratic__{n}__{i}__path__dims"] = np.array(("lr", "step", "coord"))
        arrays[f"quadratic__{n}__{i}__loss"] = loss
        arrays[f"quadratic__{n}__{i}__loss__dims"] = np.array(("lr", "step"))
        arrays[f"quadratic__{n}__axis__lr"] = qlrs[n]
    arrays["quadratic__H"] = H
    run.save_metrics(**arrays)

    figs = ["loss_at_best_lr.png", "final_loss_vs_lr.png", "quadratic_paths.png"]
    title_net = f"{cfg.model.name} on {cfg.data.name} (m={ds.m}), {len(seeds)} seeds, median"
    title_q = f"quadratic, kappa={P.quad_kappa:g}, rotated {P.quad_angle:g} deg"
    fig_best_curves(names, steps, {n: net[n]["curves"][net[n]["best"]] if net[n]["best"] is not None else None for n in names},
                    {n: net[n]["best_lr"] for n in names}, tol, qsteps,
                    {n: quad[n]["curve"] for n in names}, {n: quad[n]["best_lr"] for n in names}, P.quad_tol,
                    title_net, title_q, run.figure(figs[0]))
    fig_final_vs_lr(names, {n: (net[n]["lrs"], net[n]["final_median"], net[n]["diverged"].any(axis=1), net[n]["best"]) for n in names},
                    {n: (quad[n]["lrs"], quad[n]["final"], quad[n]["diverged"], quad[n]["best"]) for n in names},
                    title_net, title_q, theory.gd_threshold(lams[-1]),
                    theory.momentum_threshold(lams[-1], o.beta) if "momentum" in names else None,
                    run.figure(figs[1]))
    n_path = min(P.path_steps, P.quad_steps)
    fig_paths(names, H, w0, {n: quad[n]["path"][: n_path + 1] if quad[n]["path"] is not None else None for n in names},
              {n: quad[n]["best_lr"] for n in names}, {n: quad[n]["steps_to_tol"] for n in names},
              f"{title_q}: first {n_path} steps at each optimizer's best lr", run.figure(figs[2]))

    header = ["problem", "optimizer", "best lr", "final loss", "steps to tol", "theory steps",
              "max|manual-optax|", "relative"]
    rows = []
    for n in names:
        v = net[n]
        rows.append([cfg.data.name, n, v["best_lr"], v["final_loss"], _steps(v["steps_to_tol"]), "-", v["diff"][0], v["diff"][1]])
    for n in names:
        v = quad[n]
        rows.append(["quadratic", n, v["best_lr"], v["final_loss"], _steps(v["steps_to_tol"]),
                     "-" if v["steps_theory"] is None else round(v["steps_theory"]), v["diff"][0], v["diff"][1]])
    report.print_table(f"optimizers: each at its best lr ({cfg.precision}); tol {cfg.data.name} = "
                       f"{report.fmt(tol)}, quadratic = {P.quad_tol:g}", header, rows)
    theory_rows = [["GD stable iff lr < 2/kappa", theory.gd_threshold(lams[-1]),
                    "measured: " + _first_diverged(quad.get("gd"))],
                   ["GD best lr 2/(1+kappa), rate (kappa-1)/(kappa+1)", 2 / (lams[0] + lams[-1]),
                    f"rate {(lams[-1] - lams[0]) / (lams[-1] + lams[0]):.4f}"],
                   ["momentum stable iff lr < 2(1+b)/((1-b) kappa)", theory.momentum_threshold(lams[-1], o.beta),
                    "measured: " + _first_diverged(quad.get("momentum"))],
                   ["momentum best rate sqrt(beta)", math.sqrt(o.beta),
                    "beats GD iff (kappa-1)/(kappa+1) > sqrt(beta)"]]
    theory_rows += [[f"theory rate at the measured best lr, {n}", quad[n]["rate_theory"],
                     f"lr {report.fmt(quad[n]['best_lr'])}"] for n in names if n in ("gd", "momentum")]
    report.print_table(f"quadratic (kappa={P.quad_kappa:g}): theory", ["quantity", "value", "note"], theory_rows)
    run.save_report(report.report(
        "Optimizers at their best learning rates, hand-written vs optax",
        question(__doc__), command(cfg),
        [("Setup", f"network: model `{cfg.model.name}` (hidden {cfg.model.hidden}), data `{cfg.data.name}` "
                   f"(n={ds.n}, m={ds.m}), full-batch{'' if specs[(names[0], 'manual')].batch == ds.m else ' (batch ' + str(specs[(names[0], 'manual')].batch) + ')'}, "
                   f"{cfg.train.steps} steps, {P.lr_num} lrs x {len(seeds)} seeds per optimizer, {cfg.precision}; "
                   f"beta={o.beta}, beta1={o.beta1}, beta2={o.beta2}, eps={o.eps}.\n"
                   f"Quadratic: f = 0.5 w^T H w, eigenvalues {lams[0]:g} and {lams[-1]:g}, start ({w0[0]:g}, {w0[1]:g}) "
                   f"(f0 = {f0:.4g}), {P.quad_steps} steps, {P.quad_lr_num} lrs per optimizer.\n"
                   f"Best lr: lowest median final loss among lrs where no seed diverged (non-finite, or final > "
                   f"{P.divergence_factor:g} x initial). Tolerance: network {P.tol_factor:g} x the lowest best final "
                   f"loss of all optimizers = {tol:.4g} (first step where the median curve reaches it); quadratic "
                   f"absolute {P.quad_tol:g}. max|manual-optax|: loss curves at the best lr (network, all seeds), "
                   f"parameters along the path (quadratic); relative = divided by the largest |value|."),
         ("Measured", report.markdown_table(header, rows)),
         ("Theory on the quadratic", report.markdown_table(["quantity", "value", "note"], theory_rows)),
         ("Manual vs optax over every lr of the grid",
          "The largest |manual - optax| over all lrs where neither diverged. In float32 it grows at lrs near "
          "the stability edge, where the dynamics amplify 1-ulp rounding differences (the two write the same "
          "update in a different order); in float64 it stays tiny.\n\n" + report.markdown_table(
              ["problem", "optimizer", "max|manual-optax| (all lrs)", "at best lr"],
              [[cfg.data.name, n, net[n]["diff_grid"][0], net[n]["diff"][0]] for n in names]
              + [["quadratic", n, quad[n]["diff_grid"][0], quad[n]["diff"][0]] for n in names]))],
        figs))

    def entry(v, extra):
        return {"best_lr": v["best_lr"], "final_loss": v["final_loss"], "steps_to_tol": v["steps_to_tol"],
                "max_abs_diff_manual_vs_optax": v["diff"][0], "max_rel_diff_manual_vs_optax": v["diff"][1],
                "max_abs_diff_manual_vs_optax_all_lrs": v["diff_grid"][0], **extra}

    return {
        "problems": {
            cfg.data.name: {n: entry(net[n], {"lrs": net[n]["lrs"], "final_loss_median": net[n]["final_median"],
                                              "diverged": net[n]["diverged"].any(axis=1)}) for n in names},
            "quadratic": {n: entry(quad[n], {"lrs": quad[n]["lrs"], "final_loss_per_lr": quad[n]["final"], "diverged": quad[n]["diverged"],
                                             "rate_theory": quad[n]["rate_theory"], "steps_to_tol_theory": quad[n]["steps_theory"]})
                          for n in names}},
        "tolerance": {cfg.data.name: tol, "quadratic": P.quad_tol,
                      "definition": f"{cfg.data.name}: first step where the median (over seeds) loss at the best lr "
                                    f"<= {P.tol_factor} x the lowest best final loss of all optimizers; quadratic: "
                                    f"first step with loss <= {P.quad_tol:g} (absolute)"},
        "quadratic": {"kappa": P.quad_kappa, "angle_deg": P.quad_angle, "eigenvalues": lams, "start": w0, "f0": f0,
                      "gd_threshold": theory.gd_threshold(lams[-1]), "gd_best_lr_theory": 2 / (lams[0] + lams[-1]),
                      "momentum_threshold": theory.momentum_threshold(lams[-1], o.beta)},
        "network_compile_s": res[(names[0], "manual")].stats["compile_s"],
        "network_run_s": res[(names[0], "manual")].stats["run_s"], "runs": sum(r.stats["runs"] for r in res.values()),
        "precision": cfg.precision, "steps": cfg.train.steps, "seeds": seeds, "m": ds.m,
    }


def _steps(v) -> int | str:
    return "not reached" if v is None else v


def _first_diverged(q) -> str:
    """'first diverged lr X' from a quadratic entry (or 'none in the grid')."""
    if q is None or not q["diverged"].any():
        return "none diverged in the grid"
    i = int(np.argmax(q["diverged"]))
    below = f"{q['lrs'][i - 1]:.3g} ok, " if i > 0 else ""
    return f"{below}{q['lrs'][i]:.3g} diverged"


# ---- figures
COLORS = {"gd": "tab:blue", "momentum": "tab:orange", "rmsprop": "tab:green", "adam": "tab:red"}


def fig_best_curves(names, steps, curves, best_lr, tol, qsteps, qcurves, qbest_lr, qtol, title_net, title_q, path):
    """Left: network loss at each optimizer's best lr (median over seeds, min-max band);
    right: quadratic loss at each best lr; dashed: the tolerances."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for n in names:
        c = curves[n]
        if c is None:
            continue
        c = plots.positive(c)
        a1.plot(steps, np.nanmedian(c, axis=0), color=COLORS[n], lw=1.5, label=f"{n}, lr={best_lr[n]:.3g}")
        a1.fill_between(steps, np.nanmin(c, axis=0), np.nanmax(c, axis=0), color=COLORS[n], alpha=0.15)
    a1.axhline(tol, color="k", ls="--", lw=1, label=f"tolerance {tol:.3g}")
    a1.set_yscale("log")
    a1.set_xlabel("step (full-batch updates)")
    a1.set_ylabel("training loss, MSE (log)")
    a1.set_title(title_net, fontsize=9)
    a1.legend(fontsize=8)
    for n in names:
        if qcurves[n] is not None:
            a2.plot(qsteps, plots.positive(qcurves[n]), color=COLORS[n], lw=1.5, label=f"{n}, lr={qbest_lr[n]:.3g}")
    a2.axhline(qtol, color="k", ls="--", lw=1, label=f"tolerance {qtol:g}")
    a2.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel("f(w) = 0.5 w^T H w (log)")
    a2.set_title(title_q, fontsize=9)
    a2.legend(fontsize=8)
    fig.suptitle("Loss at each optimizer's best learning rate (hand-written; optax twins coincide)", fontsize=10)
    return plots.save(fig, path)


def fig_final_vs_lr(names, net, quad, title_net, title_q, gd_thr, mom_thr, path):
    """Final loss vs lr per optimizer, log-log; diverged lrs as crosses at the top, the best lr
    as a star; on the quadratic the GD and momentum stability bounds as dotted lines."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for ax, data, title in ((axes[0], net, title_net), (axes[1], quad, title_q)):
        fin_all = np.concatenate([plots.positive(np.where(d[2], np.nan, d[1])) for d in data.values()])
        top = np.nanmax(fin_all) * 3 if np.isfinite(fin_all).any() else 1.0
        for n in names:
            lrs, fin, div, b = data[n]
            ax.plot(lrs, plots.positive(np.where(div, np.nan, fin)), "o-", ms=3, color=COLORS[n], label=n)
            ax.plot(lrs[div], np.full(div.sum(), top), "x", color=COLORS[n], ms=7)
            if b is not None:
                ax.plot(lrs[b], fin[b], "*", ms=13, color=COLORS[n], mec="k", mew=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate (log)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("final training loss (median over seeds, log)")
    axes[1].set_ylabel("final f(w) (log)")
    axes[1].axvline(gd_thr, color=COLORS["gd"], ls=":", lw=1.2, label=f"GD bound 2/kappa = {gd_thr:.3g}")
    if mom_thr:
        axes[1].axvline(mom_thr, color=COLORS["momentum"], ls=":", lw=1.2, label=f"momentum bound = {mom_thr:.3g}")
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        h += [plt.Line2D([], [], ls="", marker="x", color="0.3"), plt.Line2D([], [], ls="", marker="*", ms=10, color="0.3")]
        lab += ["diverged (drawn at top)", "best lr"]
        ax.legend(h, lab, fontsize=7)
    fig.suptitle("Final loss vs learning rate per optimizer", fontsize=10)
    return plots.save(fig, path)


def fig_paths(names, H, w0, paths, best_lr, steps_tol, title, path):
    """One panel per optimizer: contours of 0.5 w^T H w and the path from w0 (same start)."""
    plt = _plt()
    k = len(names)
    cols = 2 if k > 1 else 1
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 4.4 * rows), squeeze=False)
    r = 1.25 * float(np.max(np.abs(w0)))
    reach = [np.nanmax(np.abs(p[np.isfinite(p).all(axis=1)])) for p in paths.values() if p is not None]
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
        lr = "none converged" if best_lr[n] is None else f"lr={best_lr[n]:.3g}"
        st = "" if steps_tol[n] is None else f", tol reached at step {steps_tol[n]}"
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


def _plt():
    import matplotlib.pyplot as plt  # Agg backend already chosen by bpexp.plots

    return plt
