"""The lr_sweep computation: the streamed grid, its summary read back in bounded memory, the
vectorized bisection of the bracket, sharpness tracked at the bracket."""

from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import make, regimes, render, sweep, train
from bpexp.experiments._common import diverged_mask, finite_median, load_data
from bpexp.experiments.lr_sweep.theory import measured_threshold, threshold_theory

THREE_LRS_PNG = "too_small_good_too_large.png"   # drawn by compute, before the refinement

SUMMARY_BUDGET = 64 << 20   # bytes of loss curves read at once while summarizing the store


def refine_spec(spec, P, lo: float, hi: float, per: int):
    """The training a refinement round needs to tell its lrs apart: on a quadratic an lr a
    relative ``d`` above the threshold grows the loss by exp(4 d t) over t steps, so the growth
    rule (x growth_factor over the last growth_window) sees d >= ln(g) / (4 w steps). With the
    round's lrs a factor (hi/lo)^(1/(per+1)) apart, the steps that resolve that spacing (never
    fewer than the coarse grid's, at most ``refine_max_steps``; the same number of records)."""
    d = (hi / lo) ** (1 / (per + 1)) - 1
    need = math.log(P.growth_factor) / (4 * P.growth_window * d)
    steps = int(min(max(spec.steps, need), max(P.refine_max_steps, spec.steps)))
    every = -(-steps // spec.n_records)
    if every * spec.n_records == spec.steps:
        return spec
    return dataclasses.replace(spec, steps=every * spec.n_records, record_every=every)


def refine(cfg, spec, ds, grid, fixed, bracket, chunk, P, spent: dict | None = None):
    """Vectorized bisection of the bracket [lo, hi]: each round trains as many lrs
    geometrically inside it as fill the coarse sweep's compiled chunk (x the other grid axes),
    for as many steps as resolve their spacing (refine_spec; a longer training compiles once),
    and keeps the new bracket (largest lr where no run diverged, smallest where all did). Stops
    after ``P.refine_rounds`` rounds, once hi / lo - 1 <= ``P.refine_tol``, or when a round
    cannot narrow it. Returns [(lo, hi, steps) per round]; adds each round's engine seconds
    (compile_s, run_s) to ``spent``."""
    lo, hi = bracket
    n_other = grid.size // len(grid.axes["lr"])
    per = max(2, chunk // n_other)
    rounds = []
    for _ in range(P.refine_rounds):
        if hi / lo - 1 <= P.refine_tol:
            break
        lrs = np.geomspace(lo, hi, per + 2)[1:-1]
        sp = refine_spec(spec, P, lo, hi, per)
        r = sweep.run_grid(sp, ds.X, ds.Y, sweep.Grid({**grid.axes, "lr": lrs}), fixed,
                           devices=sweep.devices_for(cfg.device), chunk_size=chunk,
                           progress=False)
        if spent is not None:
            for k in ("compile_s", "run_s"):
                spent[k] = spent.get(k, 0.0) + float(r.stats[k])
        loss = r.metrics["loss"].reshape(len(lrs), -1, r.metrics["loss"].shape[-1])
        diverged = diverged_mask(loss, r.metrics["final_loss"].reshape(len(lrs), -1),
                                 r.metrics["first_nonfinite"].reshape(len(lrs), -1),
                                 P.divergence_factor, P.growth_factor, P.growth_window)
        _, new_lo, new_hi = measured_threshold(np.concatenate([[lo], lrs, [hi]]), np.concatenate(
            [[0.0], diverged.mean(axis=1), [1.0]]))
        if (new_lo, new_hi) == (lo, hi):
            break
        lo, hi = new_lo, new_hi
        rounds.append((lo, hi, sp.steps))
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
    regimes: dict                  # label -> [lr] runs in that regime (bpexp.regimes)
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
    rounds: list                   # [(lo, hi, steps)] the bracket after each refinement round
    train_steps: int = 0           # the coarse grid's training length
    refine_s: dict = dataclasses.field(default_factory=dict)   # the rounds' compile_s, run_s


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
    out["regimes"] = {k: np.zeros(n_lr, np.int64) for k in regimes.LABELS}
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
        f64 = np.asarray(final, np.float64)   # converged runs' positive finite final losses
        conv = np.where(div | ~np.isfinite(f64) | (f64 <= 0), np.nan, f64)
        ok = ~np.all(np.isnan(conv), axis=1)
        for k, f in (("cmin", np.nanmin), ("cmed", np.nanmedian), ("cmax", np.nanmax)):
            out[k][sl.start + np.flatnonzero(ok)] = f(conv[ok], axis=1)
        out["curves"][sl] = loss[:, 0]
        # lazy / catapult / divergent per run, from its recorded curve and its final loss
        lab = regimes.classify_curves(np.concatenate([loss, final[..., None]], axis=-1))
        for k in regimes.LABELS:
            out["regimes"][k][sl] = (lab == k).sum(axis=1)
    return out


def curves_at(st, i: int, limit: int = 64) -> np.ndarray:
    """[run, record] the loss curves of the first ``limit`` runs at lr index ``i``."""
    loss = st.read("loss", lr=slice(i, i + 1))
    return loss.reshape(-1, loss.shape[-1])[:limit]


def pick_three(st, lrs, agg) -> tuple[int, dict]:
    """(best lr's index, {"idx": [too small, best, too large], "loss": their [run, step]
    curves}): best = the lowest median final loss among lrs where no run diverged; "too
    small" the lr nearest best / 1000 (visibly slow: the lecture's picture), else the smallest
    swept; "too large" the first above best with a divergence."""
    med_ok = np.where(agg["any"], np.inf, agg["med"])
    best = int(np.argmin(med_ok)) if np.isfinite(med_ok).any() else 0
    small = int(np.argmin(np.abs(np.log(lrs) - np.log(lrs[best] / 1000))))
    above = np.nonzero((agg["frac"] > 0) & (lrs > lrs[best]))[0]
    large = int(above[0]) if above.size else len(lrs) - 1
    idx = [small, best, large]
    return best, {"idx": idx, "loss": [curves_at(st, i) for i in idx]}


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = load_data(cfg, run)
    model, spec = make.model(cfg), make.spec(cfg, ds)
    grid, fixed = make.grid(cfg)
    devices = sweep.devices_for(cfg.device)
    lay = make.layout(cfg, ds)     # the same cut the entry point checks a resumed store against
    st = run.grid_store(lay, {**sweep.metric_shapes(spec),
                              "diverged": ((), (), np.dtype(bool))},   # written when summarized
                        sweep.record_coords(spec), attrs={"experiment": "lr_sweep"},
                        derived=("diverged",))
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
    best, three = pick_three(st, lrs, agg)
    idx = three["idx"]
    # this figure needs the coarse grid only: the figure helper draws it during the refinement
    render.draw("bpexp.experiments.lr_sweep.figures:three_lrs", res.coords["step"],
                three["loss"], [lrs[i] for i in idx], thr, run.figure(THREE_LRS_PNG))
    rounds, spent = [], {"compile_s": 0.0, "run_s": 0.0}
    if lo and hi:
        with run.timed("refine"):
            rounds = refine(cfg, spec, ds, grid, fixed, (lo, hi), res.stats["chunk_size"], P,
                            spent)
    track = None
    if kind == "estimate" and cfg.optimizer.name == "gd" and spec.batch == ds.m and lo and hi:
        every = P.track_every or max(1, cfg.train.steps // 25)
        while cfg.train.steps % every:
            every -= 1
        with run.timed("track"):
            sharp, at = track_sharpness(cfg, model, ds64, [lo, hi], grid.axes["seed"][0], every,
                                        min(P.lanczos_iters, 30))
        track = {"lrs": [lo, hi], "steps": at, "sharpness": sharp}
    return Result(n=ds.n, m=ds.m, batch=spec.batch, stats=res.stats,
                  runs_per_lr=grid.size // len(lrs), lrs=lrs, seeds=grid.axes["seed"],
                  steps=res.coords["step"], curves=agg["curves"],
                  three=three, frac=frac,
                  regimes=agg["regimes"],
                  med=agg["med"], conv=np.stack([agg["cmin"], agg["cmed"], agg["cmax"]]),
                  lam=lam, thr=thr, kind=kind, thr_meas=thr_meas, bracket=[lo, hi],
                  step_ratio=hi / lo if lo and hi else None,
                  resolution=math.log(P.growth_factor) / (4 * window_steps),
                  best=best, track=track, rounds=rounds, train_steps=cfg.train.steps,
                  refine_s=spent)


def refined(res) -> float | None:
    """Geometric midpoint of the last refined bracket (the coarse one without refinement)."""
    lo, hi = res.rounds[-1][:2] if res.rounds else res.bracket
    return float(np.sqrt(lo * hi)) if lo and hi else None


def interval(res, P) -> tuple[list, float]:
    """(the interval the threshold lies in, the growth rule's resolution d) of the last
    bracket: an lr up to a relative d above the threshold may still pass as converged in the
    training it had, so the threshold lies in [lo / (1 + d), hi] (quadratic losses)."""
    lo, hi, steps = res.rounds[-1] if res.rounds else (*res.bracket, None)
    steps = steps or res.train_steps
    d = math.log(P.growth_factor) / (4 * P.growth_window * steps)
    return ([lo / (1 + d), hi] if lo and hi else [lo, hi]), d
