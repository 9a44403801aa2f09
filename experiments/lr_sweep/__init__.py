"""Where does gradient descent stop converging as the learning rate grows?

Question: sweep the learning rate over several decades (x several seeds) and find the largest
one that still converges; compare it with the theory.
Theory: on a quadratic loss (linear models + MSE) with Hessian H = (2/m) Xt Xt^T, GD moves each
eigendirection by a factor 1 - lr*lambda, so it converges iff lr < 2/lambda_max(H) (exact).
CS230 momentum is stable iff lr (1 - beta) lambda_max < 2 (1 + beta). For nonlinear models
the same bound with the sharpness (top Hessian eigenvalue, by Lanczos in float64) at
initialization is only a lower bound: at large lr the sharpness falls early in training
(catapult dynamics), so GD survives above it; the sharpness is tracked along the runs at the
bracket to show it.
Divergence: a run diverged if its loss became non-finite, ended above divergence_factor x its
initial loss, or grew by more than growth_factor over the last growth_window of training. On a
quadratic, an lr a fraction d above 2/lambda_max multiplies the loss by about e^(4d) per step,
so the growth rule resolves d >= ln(growth_factor) / (4 x window steps) once the unstable mode
dominates (the summary reports it); the final-vs-initial rule alone is biased upward on short
runs, where the other modes' decay hides the growth.
Expected: runs below the threshold converge, runs above it blow up; the measured threshold
(geometric midpoint between the largest lr where no seed diverged and the smallest where
all did) lies within one grid step of the theory when the theory is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import matplotlib.cm
import matplotlib.colors
import numpy as np

from bpexp import make, optim, plots, report, sweep, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import (command, diverged_mask, finite_median, load_data,
                                       question)
from bpexp.plots import plt

USES = ("model", "data", "optimizer", "train", "sweep")  # make.check builds them first
STREAMS = True   # the grid streams into metrics.zarr chunk by chunk: resumable, shardable
SUMMARY_BUDGET = 64 << 20   # bytes of loss curves read at once while summarizing the store


@dataclass
class Params:
    name: str = "lr_sweep"
    lanczos_iters: int = 60      # Lanczos steps for the nonlinear sharpness (float64)
    divergence_factor: float = 1.0  # diverged: final loss > factor * initial loss
    growth_factor: float = 2.0   # diverged: loss grew > this over the last growth_window
    growth_window: float = 0.25  # fraction of training at its end
    track_every: int = 0         # nonlinear gd: sharpness along the bracket runs every k steps
                                 # (0: steps / 25)
    refine_rounds: int = 3       # vectorized bisection rounds inside the coarse bracket
    refine_tol: float = 0.002    # stop once hi / lo - 1 <= this


def _finite_above(lo):
    return lambda x: math.isfinite(x) and x > lo


# experiment key -> (test, what is allowed); inf would turn a divergence rule off
RULES = {
    "lanczos_iters": (lambda x: 2 <= x <= 1000, "an int in [2, 1000]"),
    "divergence_factor": (_finite_above(0), "a finite number > 0"),
    "growth_factor": (_finite_above(1), "a finite number > 1"),
    "growth_window": (lambda x: 0 < x <= 1, "a number in (0, 1]"),
    "refine_rounds": (lambda x: 0 <= x <= 20, "an int in [0, 20]"),
    "refine_tol": (_finite_above(0), "a finite number > 0"),
}


def validate(cfg):
    """The shared sections (every optimizer of the table has a row here) are checked by
    config/make; these are the experiment's own keys."""
    P = cfg.experiment
    for key, (ok, allowed) in RULES.items():
        if not ok(getattr(P, key)):
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; "
                            f"allowed: {allowed}")
    if P.track_every < 0 or (P.track_every and cfg.train.steps % P.track_every):
        raise UserError(f"experiment.track_every={P.track_every} is not allowed; allowed: 0 or "
                        f"an int >= 1 that divides train.steps={cfg.train.steps}")


def threshold_theory(cfg, model, ds, seeds, iters):
    """(lambda_max, threshold, kind), always in float64 (numpy, or JAX with x64 switched on
    for the call) whatever the run's precision; kind is exact | estimate (a lower bound) |
    none. ``ds``: the data in float64; the initial weights are the runs' (same seed,
    same draws)."""
    if cfg.model.name in ("univariate", "multivariate"):
        lam, kind = theory.lambda_max_quadratic(ds.X), "exact"
    else:
        # top ALGEBRAIC eigenvalue at init (Lanczos), median over the sweep's seeds
        with jax.enable_x64(True):
            lams = [theory.top_eigenvalues(model.loss, make.init_params(cfg, model, ds, int(s),
                                                                       dtype_=np.float64),
                                           ds.X, ds.Y, key=jax.random.PRNGKey(0), iters=iters)[0]
                    for s in seeds]
        lam, kind = float(np.median(lams)), "estimate"
    o = cfg.optimizer
    hp = {k: getattr(o, k) for k in optim.OPTIMIZERS[o.name].hparams}
    thr = optim.stability_bound(o.name, lam, **hp)      # the optimizer row's bound
    return (lam, thr, kind) if thr is not None else (lam, None, "none")  # adaptive: none


def refine(cfg, spec, ds, grid, fixed, bracket, chunk, P):
    """Vectorized bisection of the bracket [lo, hi]: each round trains as many lrs
    geometrically inside it as fill the coarse sweep's compiled chunk (x the other grid axes),
    so no round compiles again, and keeps the new bracket (largest lr where no run diverged,
    smallest where all did). Stops after ``P.refine_rounds`` rounds, once hi / lo - 1 <=
    ``P.refine_tol``, or when a round cannot narrow it (training too short to tell the runs
    apart). Returns [(lo, hi) per round]."""
    lo, hi = bracket
    n_other = grid.size // len(grid.axes["lr"])
    per = max(2, chunk // n_other)
    rounds = []
    for _ in range(P.refine_rounds):
        if hi / lo - 1 <= P.refine_tol:
            break
        lrs = np.geomspace(lo, hi, per + 2)[1:-1]
        r = sweep.run_grid(spec, ds.X, ds.Y, sweep.Grid({**grid.axes, "lr": lrs}), fixed,
                           devices=sweep.devices_for(cfg.device), chunk_size=chunk,
                           progress=False)
        loss = r.metrics["loss"].reshape(len(lrs), -1, r.metrics["loss"].shape[-1])
        diverged = diverged_mask(loss, r.metrics["final_loss"].reshape(len(lrs), -1),
                                 r.metrics["first_nonfinite"].reshape(len(lrs), -1),
                                 P.divergence_factor, P.growth_factor, P.growth_window)
        _, new_lo, new_hi = measured_threshold(np.concatenate([[lo], lrs, [hi]]), np.concatenate(
            [[0.0], diverged.mean(axis=1), [1.0]]))
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
        rounds.append((lo, hi))
    return rounds


def track_sharpness(cfg, model, ds, lrs, seed, every, iters):
    """Full-batch GD at each of ``lrs`` from the initial weights of ``seed``, in float64, with
    the top Hessian eigenvalue (Lanczos, warm-started) every ``every`` steps: ([lr, measurement]
    sharpness, [measurement] steps)."""
    with jax.enable_x64(True):
        p0 = make.init_params(cfg, model, ds, int(seed), dtype_=np.float64)
        one = train.gd_with_sharpness(model.loss, model.grad, lambda key: p0, cfg.train.steps,
                                      every, iters, iters)
        out = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))(
            jnp.asarray(lrs, jnp.float64), jax.random.PRNGKey(0), jnp.asarray(ds.X),
            jnp.asarray(ds.Y))
        sharp = np.asarray(out["sharpness"], np.float64)
    return sharp, np.arange(sharp.shape[1]) * every


def measured_threshold(lrs, frac):
    """Geometric midpoint between the largest lr where no seed diverged (below the first lr
    where all did) and the smallest lr where all seeds diverged."""
    all_bad = np.nonzero(frac >= 1.0)[0]
    if all_bad.size == 0:
        return None, None, None
    hi = lrs[all_bad[0]]
    ok = np.nonzero((frac == 0) & (lrs < hi))[0]
    if ok.size == 0:
        return None, None, float(hi)
    lo = lrs[ok[-1]]
    return float(np.sqrt(lo * hi)), float(lo), float(hi)


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    n: int                         # features of the dataset trained on
    m: int                         # examples
    batch: int                     # examples per step (m: full batch)
    stats: dict                    # the engine's: runs, chunks, layout, compile_s, run_s ...
    runs_per_lr: int               # runs at each lr (the other grid axes pooled)
    lrs: np.ndarray                # [lr]
    seeds: np.ndarray              # [seed]
    steps: np.ndarray              # [record] the step of each recorded loss
    curves: np.ndarray             # [lr, record] loss of the first run at each lr
    three: dict                    # "too small / good / too large": idx [3], loss [3][run, record]
    frac: np.ndarray               # [lr] fraction of runs that diverged
    med: np.ndarray                # [lr] median final loss (a diverged run counts as +inf)
    conv: np.ndarray               # [3, lr] min, median, max final loss over converged runs
    lam: float                     # lambda_max of the loss Hessian (exact or estimated)
    thr: float | None              # theory threshold (None: rmsprop / adam)
    kind: str                      # exact | estimate | none
    thr_meas: float | None         # measured threshold (geometric midpoint of the bracket)
    bracket: list                  # [lo, hi] the lrs around it (None where missing)
    step_ratio: float | None       # hi / lo: the grid's resolution at the bracket
    resolution: float              # quadratic: smallest (lr / threshold - 1) the growth rule sees
    best: int                      # index of the best lr (the smallest when every lr diverged)
    track: dict | None             # nonlinear gd: sharpness along the runs at the bracket
    rounds: list                   # [(lo, hi)] the bracket after each refinement round


def summarize(st, P, budget: int = SUMMARY_BUDGET) -> dict:
    """Per-lr statistics of a complete grid store, read in blocks of learning rates (bounded
    memory whatever the grid size); writes each run's ``diverged`` flag into the store."""
    lay = st.layout
    n_lr = lay.shape[0]
    n_rec = st.read("step").size
    per_lr = int(np.prod(lay.shape[1:]))
    rows = max(1, budget // max(1, per_lr * n_rec * 8))
    out = {k: np.full(n_lr, np.nan) for k in ("frac", "med", "cmin", "cmed", "cmax")}
    out["any"] = np.zeros(n_lr, bool)
    out["curves"] = np.full((n_lr, n_rec), np.nan)
    for sl in st.blocks("lr", rows):
        b = sl.stop - sl.start
        loss = st.read("loss", lr=sl).reshape(b, per_lr, n_rec)
        final = st.read("final_loss", lr=sl).reshape(b, per_lr)
        bad = st.read("first_nonfinite", lr=sl).reshape(b, per_lr)
        div = diverged_mask(loss, final, bad, P.divergence_factor, P.growth_factor,
                            P.growth_window)
        st.write_region("diverged", div.reshape((b,) + lay.shape[1:]), lr=sl)
        out["frac"][sl], out["any"][sl] = div.mean(axis=1), div.any(axis=1)
        out["med"][sl] = finite_median(final, axis=1)
        conv = np.where(div, np.nan, plots.positive(final))
        ok = ~np.all(np.isnan(conv), axis=1)
        for k, f in (("cmin", np.nanmin), ("cmed", np.nanmedian), ("cmax", np.nanmax)):
            out[k][sl.start + np.flatnonzero(ok)] = f(conv[ok], axis=1)
        out["curves"][sl] = loss[:, 0]
    return out


def curves_at(st, i: int, limit: int = 64) -> np.ndarray:
    """[run, record] the loss curves of the first ``limit`` runs at lr index ``i``."""
    loss = st.read("loss", lr=slice(i, i + 1))
    return loss.reshape(-1, loss.shape[-1])[:limit]


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = load_data(cfg, run)
    model, spec = make.model(cfg), make.spec(cfg, ds)
    grid, fixed = make.grid(cfg)
    devices = sweep.devices_for(cfg.device)
    lay = make.layout(cfg, ds)     # the same cut the entry point checks a resumed store against
    st = run.grid_store(lay, {**sweep.metric_shapes(spec),
                              "diverged": ((), (), np.dtype(bool))},   # written when summarized
                        sweep.record_coords(spec), attrs={"experiment": "lr_sweep"})
    shard = ((cfg.sweep.shard, cfg.sweep.num_shards) if cfg.sweep.shard is not None
             else (0, 1))
    with run.timed("sweep"):   # returns once every chunk is in the store (else: Stopped)
        res = sweep.run_grid(spec, ds.X, ds.Y, grid, fixed, devices=devices, progress=cfg.sweep
                             .progress, label="lr_sweep", store=st, shard=shard)
    ds64 = make.dataset(cfg, dtype_=np.float64)   # theory is float64 whatever the run
    with run.timed("theory"):
        lam, thr, kind = threshold_theory(cfg, model, ds64, grid.axes["seed"],
                                          P.lanczos_iters)
    lrs = grid.axes["lr"]
    with run.timed("summarize"):
        agg = summarize(st, P)
    frac = agg["frac"]
    thr_meas, lo, hi = measured_threshold(lrs, frac)
    window_steps = P.growth_window * cfg.train.steps
    rounds = []
    if lo and hi:
        with run.timed("refine"):
            rounds = refine(cfg, spec, ds, grid, fixed, (lo, hi), res.stats["chunk_size"], P)
    track = None
    if kind == "estimate" and cfg.optimizer.name == "gd" and spec.batch == ds.m and lo and hi:
        every = P.track_every or max(1, cfg.train.steps // 25)
        while cfg.train.steps % every:
            every -= 1
        with run.timed("track"):
            sharp, at = track_sharpness(cfg, model, ds64, [lo, hi], grid.axes["seed"][0], every,
                                        min(P.lanczos_iters, 30))
        track = {"lrs": [lo, hi], "steps": at, "sharpness": sharp}
    med_ok = np.where(agg["any"], np.inf, agg["med"])
    best = int(np.argmin(med_ok)) if np.isfinite(med_ok).any() else 0
    # "too small": the lr nearest best / 30; "too large": the first above best with a divergence
    small = int(np.argmin(np.abs(np.log(lrs) - np.log(lrs[best] / 30))))
    above = np.nonzero((frac > 0) & (lrs > lrs[best]))[0]
    large = int(above[0]) if above.size else len(lrs) - 1
    idx = [small, best, large]
    return Result(n=ds.n, m=ds.m, batch=spec.batch, stats=res.stats,
                  runs_per_lr=grid.size // len(lrs), lrs=lrs, seeds=grid.axes["seed"],
                  steps=res.coords["step"], curves=agg["curves"],
                  three={"idx": idx, "loss": [curves_at(st, i) for i in idx]}, frac=frac,
                  med=agg["med"], conv=np.stack([agg["cmin"], agg["cmed"], agg["cmax"]]),
                  lam=lam, thr=thr, kind=kind, thr_meas=thr_meas, bracket=[lo, hi],
                  step_ratio=hi / lo if lo and hi else None,
                  resolution=math.log(P.growth_factor) / (4 * window_steps),
                  best=best, track=track, rounds=rounds)


def refined(res) -> float | None:
    """Geometric midpoint of the last refined bracket (the coarse one without refinement)."""
    lo, hi = res.rounds[-1] if res.rounds else res.bracket
    return float(np.sqrt(lo * hi)) if lo and hi else None


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    """The grid is already in metrics.zarr (streamed; ``diverged`` added by summarize)."""
    g = res.stats
    return {"lrs": res.lrs, "diverged_fraction": res.frac, "final_loss_median": res.med,
            "lambda_max": res.lam, "threshold_theory": res.thr,
            "threshold_measured": res.thr_meas, "theory_kind": res.kind,
            "threshold_bracket": res.bracket, "grid_step_ratio": res.step_ratio,
            "measured_over_theory": (res.thr_meas / res.thr) if res.thr and res.thr_meas else None,
            "threshold_refined": refined(res), "refined_bracket": list(res.rounds[-1])
            if res.rounds else res.bracket, "refine_rounds": len(res.rounds),
            "refined_over_theory": (refined(res) / res.thr) if res.thr and refined(res) else None,
            "steps_to_resolve_refine_tol": math.log(cfg.experiment.growth_factor) / (
                4 * cfg.experiment.refine_tol * cfg.experiment.growth_window),
            "divergence_rule": {"factor": cfg.experiment.divergence_factor,
                                "growth_factor": cfg.experiment.growth_factor,
                                "growth_window": cfg.experiment.growth_window,
                                "quadratic_resolution": res.resolution},
            "sharpness_along_bracket": None if res.track is None else {
                "seed": int(res.seeds[0]), "lrs": res.track["lrs"], "steps": res.track["steps"],
                "sharpness": dict(zip(("lo", "hi"), res.track["sharpness"])),
                "final_over_2_over_lr": dict(zip(("lo", "hi"), [
                    float(sh[-1] * lr / 2) for sh, lr in zip(res.track["sharpness"],
                                                             res.track["lrs"])]))},
            "best_lr": float(res.lrs[res.best]), "runs": g["runs"], "chunks": g["chunks"],
            "runs_per_chunk": g["layout"]["runs_per_chunk"],
            "chunks_computed_by_finalizer": g["chunks_computed"],
            "sweep_s": g["run_s"], "compile_s": g["compile_s"]}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    s, lrs, good = summary, res.lrs, res.best
    figs = ["loss_curves.png", "final_loss_vs_lr.png", "too_small_good_too_large.png"]
    loss_curves_by_lr(res.steps, res.curves, lrs, run.figure(figs[0]),
                      title=f"{cfg.model.name} on {cfg.data.name}, {cfg.optimizer.name}: loss per "
                            f"lr (seed {int(res.seeds[0])})")
    final_vs_lr(lrs, res.conv, res.frac, res.thr, res.kind, res.thr_meas,
                run.figure(figs[1]), s["threshold_refined"] if res.rounds else None,
                title=f"Final loss vs learning rate ({res.runs_per_lr} runs per lr)")
    three_lrs(res.steps, res.three["loss"], [lrs[i] for i in res.three["idx"]], res.thr,
              run.figure(figs[2]))

    if res.track is not None:
        figs.append("sharpness_at_bracket.png")
        fig_track(res.track, res.lam, run.figure(figs[-1]),
                  title=f"{cfg.model.name} on {cfg.data.name}: sharpness along GD at the "
                        f"bracket (seed {int(res.seeds[0])}, float64)")
    lo, hi = res.bracket
    bound = ", momentum bound" if cfg.optimizer.name == "momentum" else ""
    label = {"exact": "exact", "estimate": "lower bound (sharpness at init)", "none": "none"}
    rows = [["lambda_max of the loss Hessian", res.lam, label[res.kind]],
            [f"threshold, theory (2/lambda_max{bound})", res.thr, label[res.kind]],
            ["threshold, measured (geometric midpoint)", res.thr_meas,
             f"between {report.fmt(lo)} and {report.fmt(hi)}"],
            ["measured / theory", (res.thr_meas / res.thr) if res.thr and res.thr_meas else None,
             f"bracket ratio x{res.step_ratio:.3f}" if res.step_ratio else ""],
            ["threshold, refined (vectorized bisection)", s["threshold_refined"],
             f"{s['refine_rounds']} rounds, bracket {report.fmt(s['refined_bracket'][0])} - "
             f"{report.fmt(s['refined_bracket'][1])}" if s["refined_bracket"][0] else ""],
            ["refined / theory", s["refined_over_theory"],
             f"resolution x{s['refined_bracket'][1] / s['refined_bracket'][0]:.4f}"
             if s["refined_bracket"][0] and s["refined_bracket"][1] else ""],
            ["best lr (lowest median final loss)", s["best_lr"],
             f"final loss {report.fmt(float(res.med[good]))}"],
            ["runs", s["runs"], f"{s['sweep_s']:.2f} s after {s['compile_s']:.2f} s compile"]]
    if res.track is not None:
        for name, lr, sh in zip(("lo", "hi"), res.track["lrs"], res.track["sharpness"]):
            rows.append([f"sharpness along GD at lr {lr:.4g} ({name})",
                         float(np.nanmax(sh)), f"init {sh[0]:.4g} -> end {sh[-1]:.4g}; "
                                               f"2/lr = {2 / lr:.4g}"])
    report.print_table("lr_sweep: theory vs measurement", ["quantity", "value", "note"], rows)
    per_lr = [[float(a), float(b), float(c)] for a, b, c in zip(lrs, res.frac, res.med)]
    batch = "full" if res.batch == res.m else res.batch
    run.save_report(report.report(
        "Learning-rate sweep", question(__doc__), command(cfg),
        [("Setup", f"model `{cfg.model.name}`, data `{cfg.data.name}` (n={res.n}, m={res.m}), "
                   f"optimizer `{cfg.optimizer.name}` ({cfg.optimizer.impl}), {cfg.train.steps} "
                   f"steps, {len(lrs)} learning rates x {res.runs_per_lr} runs, batch {batch}, "
                   f"{cfg.precision} (theory always float64). A run diverged if its loss became "
                   "non-finite, ended above "
                   f"{cfg.experiment.divergence_factor:g} x its initial loss, or grew by more "
                   f"than x{cfg.experiment.growth_factor:g} over the last "
                   f"{cfg.experiment.growth_window:g} of training (on a quadratic this resolves "
                   f"lr / threshold - 1 >= {res.resolution:.2g}). For nonlinear models the "
                   "threshold from the sharpness at initialization is a lower bound: at large "
                   "lr the sharpness falls early in training (catapult), see the tracked "
                   "sharpness."),
         ("Theory vs measurement", report.markdown_table(["quantity", "value", "note"], rows)),
         ("Per learning rate", report.markdown_table(["lr", "diverged fraction",
                                                       "median final loss"], per_lr))],
        figs))


def _lr_colors(lrs):
    """(colour map, log norm) spanning ``lrs`` [lr]."""
    norm = matplotlib.colors.LogNorm(vmin=float(np.min(lrs)), vmax=float(np.max(lrs)))
    return plt.get_cmap("viridis"), norm


def loss_curves_by_lr(steps, loss, lrs, path, title="Loss per learning rate"):
    """``loss[lr, step]`` as curves coloured by ``lrs[lr]`` (log colour scale) against
    ``steps[step]``, log loss axis; a diverged curve ends where its loss stops being finite."""
    cmap, norm = _lr_colors(lrs)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    # at most 96 curves stay readable
    keep = np.unique(np.linspace(0, len(lrs) - 1, min(len(lrs), 96)).round().astype(int))
    for lr, curve in zip(np.asarray(lrs)[keep], np.asarray(loss)[keep]):
        ax.plot(steps, plots.positive(curve), color=cmap(norm(lr)), lw=1)
    ax.set_yscale("log")
    start = plots.positive(np.asarray(loss)[:, 0])
    if np.any(np.isfinite(start)):  # diverging curves leave the top; converging ones stay readable
        lo = np.nanmin(plots.positive(loss))
        ax.set_ylim(lo / 2, np.nanmax(start) * 1e3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.set_title(title, fontsize=10)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="learning rate (log)")
    return plots.save(fig, path)


def final_vs_lr(lrs, conv, frac, thr_theory, kind, thr_measured, path, thr_refined=None,
                title="Final loss vs lr"):
    """Median and spread (``conv[0|1|2, lr]``: min, median, max) of the final loss over the
    runs that did not diverge, per lr of ``lrs[lr]``; lrs with diverged runs (``frac[lr]`` >
    0) marked at the top; vertical lines at the theoretical and measured thresholds; the
    diverged fraction below."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True, height_ratios=[3, 1])
    lo, med, hi = conv
    ok = np.isfinite(med)
    ax.fill_between(lrs, lo, hi, alpha=0.2, color="tab:blue", label="min-max over converged runs")
    ax.plot(lrs, med, "o-", ms=3, color="tab:blue", label="median final loss (converged runs)")
    top = np.nanmax(hi) * 2 if np.any(ok) else 1.0
    bad = frac > 0
    ax.plot(lrs[bad], np.full(bad.sum(), top), "x", color="tab:red", label="lr with diverged runs")
    if thr_theory:
        ax.axvline(thr_theory, color="k", ls="--",
                   label=f"theory 2/lambda_max ({kind}) = {thr_theory:.4g}")
        ax2.axvline(thr_theory, color="k", ls="--")
    if thr_measured:
        ax.axvline(thr_measured, color="tab:red", ls=":", label=f"measured = {thr_measured:.4g}")
        ax2.axvline(thr_measured, color="tab:red", ls=":")
    if thr_refined:
        ax.axvline(thr_refined, color="tab:purple", ls="-.", lw=1,
                   label=f"refined (bisection) = {thr_refined:.5g}")
        ax2.axvline(thr_refined, color="tab:purple", ls="-.", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("final training loss (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax2.plot(lrs, frac, "s-", ms=3, color="tab:red")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_ylabel("diverged\nfraction")
    ax2.set_xlabel("learning rate (log)")
    return plots.save(fig, path)


def three_lrs(steps, losses, lrs, thr, path):
    """The lecture's "too small / good / too large" chart from real runs: ``losses`` is a list of
    three ``[run, step]`` arrays, ``lrs`` their three learning rates, ``steps`` [step]."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=False)
    names = ["too small", "good", "too large"]
    colors = ["tab:orange", "tab:green", "tab:red"]
    for ax, name, lr, L, c in zip(axes, names, lrs, losses, colors):
        for curve in L:
            ax.plot(steps, plots.positive(curve), color=c, lw=1, alpha=0.7)
        ax.set_yscale("log")
        rel = f" = {lr / thr:.3g} x theory threshold" if thr else ""
        ax.set_title(f"{name}: lr = {lr:.3g}{rel}", fontsize=9)
        ax.set_xlabel("step")
    axes[0].set_ylabel("training loss (log)")
    fig.suptitle("Learning rate too small / good / too large (real runs, every seed)", fontsize=10)
    return plots.save(fig, path)


def fig_track(track, lam0, path, title):
    """Sharpness vs step of the GD runs at the two bracketing lrs (``track``: lrs, steps,
    sharpness [2, measurement]) with each 2/lr and the sharpness at init."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (lr, sh), c, name in zip(zip(track["lrs"], track["sharpness"]), ("tab:green", "tab:red"),
                                 ("largest lr where no run diverged",
                                  "smallest lr where every run diverged")):
        ax.plot(track["steps"], plots.positive(sh), color=c, lw=1.5, marker=".",
                label=f"lr = {lr:.4g} ({name})")
        ax.axhline(2 / lr, color=c, ls="--", lw=1, label=f"2/lr = {2 / lr:.4g}")
    ax.axhline(lam0, color="k", ls=":", lw=1, label=f"sharpness at init (median) = {lam0:.4g}")
    lo_run = plots.positive(track["sharpness"][0])
    bottom = np.nanmin(np.append(lo_run, [2 / max(track["lrs"]), lam0]))
    ax.set_yscale("log")   # a diverging run leaves the top; the surviving one stays readable
    ax.set_ylim(bottom / 2, 10 * max(lam0, 2 / min(track["lrs"]), np.nanmax(lo_run)))
    ax.set_xlabel("step (full-batch GD)")
    ax.set_ylabel("top Hessian eigenvalue (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return plots.save(fig, path)
from bpexp.experiments.lr_sweep.page import page  # noqa: E402,F401  (the run page's figures)
