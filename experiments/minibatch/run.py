"""The minibatch experiment's computation: steps to the target per batch size and lr, and the
noise scale along full-batch GD."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import make, sweep
from bpexp.errors import UserError
from bpexp.experiments._common import load_data
from bpexp.experiments.minibatch.theory import gd_with_noise_scale


def smooth(loss, w: int):
    """Trailing mean over the last ``w`` recorded batch losses (fewer at the start): [..., step].
    A diverged run's NaN/inf stay in its own slice."""
    c = np.cumsum(np.where(np.isfinite(loss), loss, np.nan), axis=-1)
    c = np.concatenate([np.zeros(loss.shape[:-1] + (1,)), c], axis=-1)
    t = np.arange(1, loss.shape[-1] + 1)
    lo = np.maximum(t - w, 0)
    return (c[..., t] - c[..., lo]) / (t - lo)


def first_below(curve, target):
    """[...] index of the first entry <= target along the last axis, -1 if none."""
    hit = np.asarray(curve) <= target
    return np.where(hit.any(axis=-1), np.argmax(hit, axis=-1), -1)


def best_lr(steps_to, diverged):
    """Index of the lr with the fewest median steps to the target among lrs where every seed
    reached it and none diverged (``steps_to``, ``diverged``: [lr, seed]); None if none."""
    ok = np.all(steps_to >= 0, axis=1) & ~np.any(diverged, axis=1)
    if not ok.any():
        return None
    med = np.where(ok, np.median(np.where(steps_to >= 0, steps_to, 0), axis=1), np.inf)
    return int(np.argmin(med))


@dataclass
class Result:
    m: int                       # examples in the data set
    batches: list                # [batch] batch sizes (the full batch as m)
    lrs: np.ndarray              # [lr]
    seeds: np.ndarray            # [seed]
    loss: np.ndarray             # [batch, lr, seed, step] batch loss entering each step
    smoothed: np.ndarray         # [batch, lr, seed, step] trailing mean (window examples)
    final_loss: np.ndarray       # [batch, lr, seed] full-data loss after the last step
    diverged: np.ndarray         # [batch, lr, seed] a non-finite loss somewhere
    steps_to_target: np.ndarray  # [batch, lr, seed] first step with smoothed <= target, -1
    noise_steps: np.ndarray      # [noise_step] steps of the B_noise measurements
    b_noise: np.ndarray          # [noise_step] along full-batch GD at the full batch's best lr
    trace_sigma: np.ndarray      # [noise_step] tr(Sigma)
    grad_sq: np.ndarray          # [noise_step] |G|^2
    noise_loss: np.ndarray       # [noise_step] full loss at the measurement
    noise_lr: float              # lr of that run
    compile_s: float
    run_s: float


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = load_data(cfg, run)
    model = make.model(cfg)
    grid, fixed = make.grid(cfg)
    if set(grid.axes) != {"lr", "seed"}:
        raise UserError("minibatch sweeps lr x seed only; drop sweep.init_scale/sweep.hparams")
    batches = [b if 0 < b < ds.m else ds.m for b in P.batch_sizes]
    order = sorted(range(len(batches)), key=lambda i: batches[i])
    batches = [batches[i] for i in order]
    if len(set(batches)) < len(batches):
        raise UserError(f"experiment.batch_sizes={P.batch_sizes!r} name the full batch twice "
                        f"(m = {ds.m})")
    lrs, seeds = grid.axes["lr"], grid.axes["seed"]
    # every batch size x lr in ONE compiled program (sweep.run_fused: vmapped over lr, one call
    # per seed): the same runs as one run_grid per batch size, a sixth of the compiles
    specs = {(cfg.optimizer.name, b): make.spec(cfg, ds, batch_size=b if b < ds.m else 0)
             for b in batches}
    with run.timed("sweep"), jax.default_device(sweep.devices_for(cfg.device)[0]):
        fused = sweep.run_fused(specs, {cfg.optimizer.name: lrs}, seeds, fixed, ds.X, ds.Y)
    res = [fused[k] for k in specs]
    compile_s, run_s = res[0].stats["compile_s"], res[0].stats["run_s"]
    loss = np.stack([np.asarray(r.metrics["loss"], np.float64) for r in res])
    smoothed = np.stack([smooth(loss[i], -(-P.window // b)) for i, b in enumerate(batches)])
    final = np.stack([np.asarray(r.metrics["final_loss"], np.float64) for r in res])
    diverged = np.stack([r.diverged() for r in res]) | ~np.isfinite(final)
    steps_to = first_below(smoothed, P.target)
    # B_noise along full-batch GD at the full batch's best lr (else the best finite one)
    i_full = batches.index(ds.m)
    j = best_lr(steps_to[i_full], diverged[i_full])
    if j is None:
        ok = ~diverged[i_full].any(axis=1)
        j = int(np.flatnonzero(ok)[-1]) if ok.any() else 0
    p0 = make.init_params(cfg, model, ds, int(seeds[0]))
    steps = cfg.train.steps
    every = min(P.noise_every, steps)
    with run.timed("noise_scale"):
        f = gd_with_noise_scale(model, steps, every)
        b_noise, tr, G2, nl = jax.device_get(f(p0, jnp.asarray(lrs[j], ds.X.dtype),
                                               jnp.asarray(ds.X), jnp.asarray(ds.Y)))
    n_meas = steps // every
    return Result(m=ds.m, batches=batches, lrs=lrs, seeds=seeds, loss=loss, smoothed=smoothed,
                  final_loss=final, diverged=diverged, steps_to_target=steps_to,
                  noise_steps=np.append(np.arange(n_meas) * every, n_meas * every),
                  b_noise=np.asarray(b_noise, np.float64), trace_sigma=np.asarray(tr, np.float64),
                  grad_sq=np.asarray(G2, np.float64), noise_loss=np.asarray(nl, np.float64),
                  noise_lr=float(lrs[j]), compile_s=compile_s, run_s=run_s)


def dataset(res: Result):
    import xarray as xr

    run = ("batch", "lr", "seed")
    return xr.Dataset(
        {"loss": (run + ("step",), res.loss), "smoothed_loss": (run + ("step",), res.smoothed),
         "final_loss": (run, res.final_loss), "diverged": (run, res.diverged),
         "steps_to_target": (run, res.steps_to_target),
         "b_noise": (("noise_step",), res.b_noise),
         "trace_sigma": (("noise_step",), res.trace_sigma),
         "grad_sq": (("noise_step",), res.grad_sq),
         "noise_loss": (("noise_step",), res.noise_loss)},
        coords={"batch": list(res.batches), "lr": res.lrs, "seed": res.seeds,
                "step": np.arange(res.loss.shape[-1]), "noise_step": res.noise_steps})


def noise_at_target(res: Result, target):
    """B_noise at the first measurement whose full loss is <= target (the last one if none),
    and the geometric mean of B_noise over the measurements up to it."""
    hit = np.flatnonzero(res.noise_loss <= target)
    k = int(hit[0]) if hit.size else len(res.noise_loss) - 1
    b = res.b_noise[: k + 1]
    return float(res.b_noise[k]), float(np.exp(np.mean(np.log(b)))), int(res.noise_steps[k])
