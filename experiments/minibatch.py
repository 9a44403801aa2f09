"""Mini-batch gradient descent measured: how many steps does each batch size need?

Question: on digits with two_layer_sigmoid (MSE on one-hot targets), how many steps and how
many epochs does mini-batch GD need to reach a loss target at each batch size B from 1 to the
full batch, each at its own best learning rate; how does that best lr grow with B; and how
much do the loss curves of different seeds (initialization and batch order) spread?
Theory (McCandlish et al. 2018, "An empirical model of large-batch training"): with per-example
gradients g_i, their mean G and covariance Sigma, a batch of B examples has gradient noise
tr(Sigma)/B; the gradient noise scale B_noise = tr(Sigma)/|G|^2 (their B_simple) sets the
critical batch size: steps to a target fall as S(B) ~ S_min (1 + B_noise/B), i.e. doubling the
batch halves the steps for B << B_noise (the linear scaling rule: best lr ~ B) and stops
helping for B >> B_noise, where the best lr saturates at lr_max / (1 + B_noise/B).
Expected: steps-to-target fall almost in proportion to 1/B for small batches and flatten
beyond a few times B_noise; the best lr grows about linearly with B for small B and saturates
near the full-batch stability limit; B_noise grows during training as |G| shrinks (tens at
init, hundreds near the target on this problem); small batches have the widest seed spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp import make, plots, report, sweep, train
from bpexp.errors import UserError
from bpexp.experiments._common import command, load_data, question
from bpexp.plots import plt

USES = ("model", "data", "optimizer", "train", "sweep")


@dataclass
class Params:
    name: str = "minibatch"
    batch_sizes: list = field(default_factory=lambda: [1, 4, 16, 64, 256, 0])  # 0 = full batch
    target: float = 0.5          # loss target (the smoothed training loss)
    window: int = 64             # smooth batch losses over the last ceil(window / B) steps
    noise_every: int = 5         # steps between B_noise measurements along full-batch training


def validate(cfg):
    P = cfg.experiment
    if cfg.model.name not in ("two_layer_sigmoid", "two_layer_linear", "mlp"):
        raise UserError(f"model.name={cfg.model.name!r} is not supported by minibatch; allowed: "
                        "two_layer_sigmoid, two_layer_linear, mlp")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not supported by minibatch; "
                        "allowed: gd (plain mini-batch GD)")
    if cfg.train.record_every != 1:
        raise UserError(f"train.record_every={cfg.train.record_every} is not supported by "
                        "minibatch; allowed: 1 (steps to the target need every step)")
    bs = P.batch_sizes
    if not (bs and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bs)
            and len(set(bs)) == len(bs)):
        raise UserError(f"experiment.batch_sizes={bs!r} is not allowed; allowed: a non-empty "
                        "list of distinct ints >= 1 (0 = the full batch)")
    if not (math.isfinite(P.target) and P.target > 0):
        raise UserError(f"experiment.target={P.target!r} is not allowed; allowed: a finite "
                        "number > 0")
    for k in ("window", "noise_every"):
        if not getattr(P, k) >= 1:
            raise UserError(f"experiment.{k}={getattr(P, k)!r} is not allowed; allowed: an "
                            "int >= 1")


# ---------------------------------------------------------------- the gradient noise scale
def per_example_grads(model, p, X, Y):
    """[m, n_params] flattened gradients of the per-example losses l_i (L = (1/m) sum l_i),
    each by the hand-derived backward pass on one column."""
    def one(x, y):
        return ravel_pytree(model.grad(p, x[:, None], y[:, None]))[0]
    return jax.vmap(one, in_axes=(1, 1))(X, Y)


def noise_scale(g):
    """(B_noise, tr(Sigma), |G|^2) from per-example gradients ``g`` [m, n_params]: G = mean g_i,
    Sigma = (1/m) sum (g_i - G)(g_i - G)^T (the data set's own covariance: a batch of B
    drawn from it has gradient covariance Sigma / B), B_noise = tr(Sigma) / |G|^2."""
    G = jnp.mean(g, axis=0, keepdims=True)                  # (1, n_params)
    tr = jnp.mean(jnp.sum(jnp.square(g - G), axis=1))
    G2 = jnp.sum(jnp.square(G))
    return tr / G2, tr, G2


def gd_with_noise_scale(model, steps, every):
    """``run(p0, lr, X, Y)``: full-batch GD w -= lr g (train.loop) for every ``every``-th of
    ``steps`` steps (the floor multiple) with B_noise, tr(Sigma), |G|^2 and the full loss
    measured at steps 0, every, 2 every, ..., <= steps."""
    n_blocks = steps // every

    def run(p0, lr, X, Y):
        def measure(p):
            b, tr, G2 = noise_scale(per_example_grads(model, p, X, Y))
            return b, tr, G2, model.loss(p, X, Y)

        def update(q, _):
            return jax.tree.map(lambda w, d: w - lr * d, q, model.grad(q, X, Y)), q

        p, _, outs, _ = train.loop(update, p0, n_blocks * every, every=every,
                                   measure=lambda q, s: (measure(q), s))
        last = measure(p)
        return tuple(jnp.concatenate([o, jnp.asarray(x)[None]]) for o, x in zip(outs, last))

    return jax.jit(run)


# ---------------------------------------------------------------- steps to the target
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
    batches = [b if 0 < b < ds.m else ds.m for b in P.batch_sizes]
    order = sorted(range(len(batches)), key=lambda i: batches[i])
    batches = [batches[i] for i in order]
    if len(set(batches)) < len(batches):
        raise UserError(f"experiment.batch_sizes={P.batch_sizes!r} name the full batch twice "
                        f"(m = {ds.m})")
    res, compile_s, run_s = [], 0.0, 0.0
    for b in batches:
        spec = make.spec(cfg, ds, batch_size=b if b < ds.m else 0)
        with run.timed(f"batch{b}"):
            r = sweep.run_grid(spec, ds.X, ds.Y, grid, fixed, devices=sweep.devices_for(cfg.device),
                               chunk_size=cfg.sweep.chunk_size, progress=cfg.sweep.progress,
                               label=f"batch {b}")
        compile_s += r.stats["compile_s"]
        run_s += r.stats["run_s"]
        res.append(r)
    lrs, seeds = grid.axes["lr"], grid.axes["seed"]
    loss = np.stack([np.asarray(r.metrics["loss"], np.float64) for r in res])
    if loss.ndim != 4:  # more axes than (lr, seed) were swept
        raise UserError("minibatch sweeps lr x seed only; drop sweep.init_scale/sweep.hparams")
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


# ---------------------------------------------------------------- save
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


def predicted_steps(batches, s_full, m, b_noise):
    """McCandlish et al.: S(B) = S_min (1 + B_noise / B), S_min from the full batch."""
    s_min = s_full / (1 + b_noise / m)
    return s_min * (1 + b_noise / np.asarray(batches, np.float64)), s_min


def fit_critical_batch(batches, steps):
    """(B_crit, S_min) of S(B) = S_min (1 + B_crit / B) fitted to measured steps by least
    squares in log S: B_crit on a log grid 1e-2..1e6 (4001 points), S_min in closed form."""
    b, s = np.asarray(batches, np.float64), np.asarray(steps, np.float64)
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 2:
        return None, None
    b, ls = b[ok], np.log(s[ok])
    grid = np.geomspace(1e-2, 1e6, 4001)
    lf = np.log1p(grid[:, None] / b[None, :])               # [grid, batch]
    log_smin = np.mean(ls[None, :] - lf, axis=1)
    err = np.sum((ls[None, :] - lf - log_smin[:, None]) ** 2, axis=1)
    k = int(np.argmin(err))
    return float(grid[k]), float(np.exp(log_smin[k]))


PER_BATCH_KEYS = ("best_lr", "steps_to_target", "steps_to_target_seeds", "epochs_to_target",
                  "examples_to_target", "final_loss_median", "final_loss_spread", "steps_spread",
                  "diverged_lrs")


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    run.save_metrics(dataset(res))
    b_target, b_geo, k_target = noise_at_target(res, P.target)
    per = {}
    best = []
    for i, b in enumerate(res.batches):
        j = best_lr(res.steps_to_target[i], res.diverged[i])
        best.append(j)
        div = [float(x) for x in res.lrs[res.diverged[i].any(axis=1)]]
        if j is None:   # no lr where every seed reached the target
            per[str(b)] = {k: None for k in PER_BATCH_KEYS} | {"diverged_lrs": div}
            continue
        st = res.steps_to_target[i, j].astype(np.float64)
        fin = res.final_loss[i, j]
        per[str(b)] = {
            "best_lr": float(res.lrs[j]), "steps_to_target": float(np.median(st)),
            "steps_to_target_seeds": [int(x) for x in st],
            "epochs_to_target": float(np.median(st) * b / res.m),
            "examples_to_target": float(np.median(st) * b),
            "final_loss_median": float(np.median(fin)),
            "final_loss_spread": float((fin.max() - fin.min()) / np.median(fin)),
            "steps_spread": float((st.max() - st.min()) / max(np.median(st), 1)),
            "diverged_lrs": div}
    full = per[str(res.m)]
    pred = None
    if full["steps_to_target"] is not None:
        s, s_min = predicted_steps(res.batches, full["steps_to_target"], res.m, b_geo)
        pred = {"b_noise": b_geo, "s_min": float(s_min),
                "steps": {str(b): float(v) for b, v in zip(res.batches, s)}}
    measured = [np.nan if per[str(b)]["steps_to_target"] is None
                else per[str(b)]["steps_to_target"] for b in res.batches]
    b_fit, s_min_fit = fit_critical_batch(res.batches, measured)
    return {"m": res.m, "batch_sizes": res.batches, "lrs": res.lrs, "seeds": res.seeds,
            "target": P.target, "window_examples": P.window, "steps": cfg.train.steps,
            "per_batch": per,
            "b_noise": {"init": float(res.b_noise[0]), "at_target": b_target,
                        "at_target_step": k_target, "geomean_to_target": b_geo,
                        "steps": res.noise_steps, "values": res.b_noise,
                        "trace_sigma": res.trace_sigma, "grad_sq": res.grad_sq,
                        "loss": res.noise_loss, "lr": res.noise_lr,
                        "covariance": "population (1/m) over the data set"},
            "prediction": pred,
            "fit": {"b_crit": b_fit, "s_min": s_min_fit,
                    "steps": ({str(b): float(s_min_fit * (1 + b_fit / b)) for b in res.batches}
                              if b_fit is not None else None),
                    "b_crit_between_init_and_target": (
                        None if b_fit is None else bool(res.b_noise[0] <= b_fit <= b_target))},
            "compile_s": res.compile_s, "run_s": res.run_s}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    bn, fit = summary["b_noise"], summary["fit"]
    header = ["batch B", "best lr", "steps to target", "S_min(1+B_noise/B)",
              "fit S_min(1+B_crit/B)", "epochs", "examples", "final loss", "seed spread steps"]
    pred = (summary["prediction"] or {}).get("steps", {})
    fsteps = fit["steps"] or {}
    rows = []
    for b in res.batches:
        d = summary["per_batch"][str(b)]
        rows.append([b, d["best_lr"], d["steps_to_target"], pred.get(str(b)), fsteps.get(str(b)),
                     d["epochs_to_target"], d.get("examples_to_target"),
                     d.get("final_loss_median"), d.get("steps_spread")])
    report.print_table(f"minibatch: {cfg.model.name} on {cfg.data.name} (m={res.m}), loss "
                       f"target {P.target:g}, {len(res.lrs)} lrs x {len(res.seeds)} seeds, "
                       f"{cfg.train.steps} steps", header, rows)
    line = (f"B_noise = tr(Sigma)/|G|^2 along full-batch GD (lr {bn['lr']:.3g}): "
            f"{bn['init']:.2f} at init, {bn['at_target']:.1f} at the target (step "
            f"{bn['at_target_step']}), geometric mean on the way {bn['geomean_to_target']:.1f}; "
            f"fitted critical batch B_crit = "
            + ("n/a" if fit["b_crit"] is None else f"{fit['b_crit']:.1f}"))
    print(line)
    figs = ["steps_to_target.png", "best_lr_vs_batch.png", "loss_curves.png", "noise_scale.png"]
    plot_steps(res, summary, run.figure(figs[0]))
    plot_best_lr(res, summary, run.figure(figs[1]))
    plot_curves(res, summary, P.target, run.figure(figs[2]))
    plot_noise(res, summary, P.target, run.figure(figs[3]))
    run.save_report(report.report(
        "Mini-batch gradient descent", question(__doc__), command(cfg),
        [("Setup", f"{cfg.model.name} (hidden {cfg.model.hidden}) on {cfg.data.name}, m = "
                   f"{res.m}, MSE; batch sizes {res.batches} (a fresh permutation per epoch); "
                   f"lrs {', '.join(f'{x:.3g}' for x in res.lrs)}; seeds "
                   f"{[int(s) for s in res.seeds]}; {cfg.train.steps} steps. The loss of a "
                   f"step is the trailing mean of the batch losses over the last "
                   f"ceil({P.window} / B) steps (the full loss for the full batch); steps to "
                   f"the target {P.target:g} = first step where it is <= target; best lr = "
                   "fewest median steps among lrs where every seed reaches it. B_noise = "
                   "tr(Sigma)/|G|^2 from the per-example gradients (hand-derived backward, "
                   "population covariance over the m examples), every "
                   f"{P.noise_every} steps along full-batch GD at the full batch's best lr "
                   f"(seed {int(res.seeds[0])}). B_crit: S(B) = S_min (1 + B_crit/B) fitted "
                   "to the measured steps (least squares in log S)."),
         ("Results", report.markdown_table(header, rows)),
         ("Gradient noise scale", line)],
        figs))


# ---------------------------------------------------------------- figures
def _best(res, summary):
    out = []
    for b in res.batches:
        lr = summary["per_batch"][str(b)]["best_lr"]
        out.append(None if lr is None else int(np.argmin(np.abs(res.lrs - lr))))
    return out


def _mark_noise(ax, summary):
    bn, fit = summary["b_noise"], summary["fit"]
    for val, ls, c, lab in ((bn["init"], ":", "tab:green", "B_noise at init"),
                            (bn["geomean_to_target"], "-", "tab:green",
                             "B_noise, geometric mean to the target"),
                            (bn["at_target"], "-.", "tab:green", "B_noise at the target"),
                            (fit["b_crit"], "--", "tab:purple", "B_crit fitted")):
        if val is not None:
            ax.axvline(val, color=c, ls=ls, lw=1.3, label=f"{lab} = {val:.3g}")


def plot_steps(res: Result, summary, path):
    """Steps (left) and epochs (right) to the target at each batch size's best lr, log-log,
    with seed ranges, the McCandlish form S_min (1 + B/B) and the noise scales marked."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    b = np.asarray(res.batches, np.float64)
    idx = _best(res, summary)
    bn, fit = summary["b_noise"], summary["fit"]
    bb = np.geomspace(b.min(), b.max(), 100)
    for ax, what in ((axes[0], "steps"), (axes[1], "epochs")):
        sc = np.ones_like(b) if what == "steps" else b / res.m
        scc = np.ones_like(bb) if what == "steps" else bb / res.m
        med, lo, hi = (np.full(len(b), np.nan) for _ in range(3))
        for i, j in enumerate(idx):
            if j is not None:
                st = res.steps_to_target[i, j] * sc[i]
                med[i], lo[i], hi[i] = np.median(st), st.min(), st.max()
        ax.fill_between(b, lo, hi, color="tab:blue", alpha=0.2, label="range over seeds")
        ax.plot(b, med, "o", color="tab:blue", ms=7, label="measured (median), best lr per B")
        if summary["prediction"]:
            p = summary["prediction"]
            ax.plot(bb, p["s_min"] * (1 + p["b_noise"] / bb) * scc, "-", color="tab:green",
                    lw=1.3, label=f"S_min (1 + B_noise/B), B_noise = {p['b_noise']:.3g}")
        if fit["b_crit"] is not None:
            ax.plot(bb, fit["s_min"] * (1 + fit["b_crit"] / bb) * scc, "--", color="tab:purple",
                    lw=1.3, label=f"fit S_min (1 + B_crit/B), B_crit = {fit['b_crit']:.3g}")
        if what == "steps" and np.isfinite(med[0]):
            ax.plot(bb, med[0] * b[0] / bb, ":", color="0.4", label="perfect scaling ~ 1/B")
        _mark_noise(ax, summary)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(b.min() / 1.5, b.max() * 1.5)
        ax.set_xlabel("batch size B (log2)")
        ax.set_ylabel(f"{what} to loss {summary['target']:g}")
        ax.grid(alpha=0.3)
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=9)
    axes[0].set_title("Steps to the target: ~1/B for small B, flat past the critical batch",
                      fontsize=10)
    axes[1].set_title("Epochs to the target: small batches use the data best", fontsize=10)
    fig.suptitle(f"Mini-batch GD on m = {res.m} examples, {len(res.seeds)} seeds; B_noise = "
                 f"tr(Sigma)/|G|^2 from per-example gradients along full-batch GD "
                 f"({bn['init']:.2g} at init, {bn['at_target']:.3g} at the target)", fontsize=10)
    return plots.save(fig, path)


def plot_best_lr(res: Result, summary, path):
    """Best lr vs batch size with the linear scaling rule and lr_max / (1 + B_noise/B)."""
    fig, ax = plt.subplots(figsize=(6.8, 4.8))
    b = np.asarray(res.batches, np.float64)
    lr = np.array([np.nan if summary["per_batch"][str(x)]["best_lr"] is None
                   else summary["per_batch"][str(x)]["best_lr"] for x in res.batches])
    ax.plot(b, lr, "o-", color="tab:blue", ms=7, label="best lr (fewest steps to the target)")
    div = [np.min(summary["per_batch"][str(x)]["diverged_lrs"] or [np.nan])
           for x in res.batches]
    ax.plot(b, div, "v", color="tab:red", ms=7, label="smallest lr where a seed diverged")
    ok = np.isfinite(lr)
    bb = np.geomspace(b.min(), b.max(), 100)
    if ok.any():
        i0 = int(np.flatnonzero(ok)[0])
        ax.plot(bb, lr[i0] * bb / b[i0], ":", color="0.4", label="linear scaling lr ~ B")
        bc = summary["fit"]["b_crit"]
        if bc is not None and np.isfinite(lr[-1]):
            lr_max = lr[-1] * (1 + bc / b[-1])
            ax.plot(bb, lr_max / (1 + bc / bb), "--", color="tab:purple",
                    label=f"lr_max / (1 + B_crit/B), B_crit = {bc:.3g} (fitted to steps)")
        _mark_noise(ax, summary)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(res.lrs.min() / 1.5, res.lrs.max() * 1.5)
    for x in res.lrs:  # the grid the best lr is picked from
        ax.axhline(x, color="0.85", lw=0.6, zorder=0)
    ax.set_xlabel("batch size B (log2)")
    ax.set_ylabel("learning rate (grey lines: the grid)")
    ax.set_title("Best lr vs batch size: linear scaling, then saturation", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return plots.save(fig, path)


def plot_curves(res: Result, summary, target, path):
    """Smoothed training loss at each batch size's best lr: median over seeds with the
    min-max band, against steps (left) and epochs (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    idx = _best(res, summary)
    t = np.arange(res.loss.shape[-1])
    for i, (b, j) in enumerate(zip(res.batches, idx)):
        if j is None:
            continue
        c = cmap(i / max(len(res.batches) - 1, 1))
        cur = res.smoothed[i, j]
        for ax, x in ((axes[0], t + 1), (axes[1], (t + 1) * b / res.m)):
            ax.fill_between(x, cur.min(0), cur.max(0), color=c, alpha=0.2)
            ax.plot(x, np.median(cur, 0), color=c, lw=1.4,
                    label=f"B = {b}, lr {res.lrs[j]:.3g}")
    for ax, xl in ((axes[0], "step (log)"), (axes[1], "epoch (log)")):
        ax.axhline(target, color="k", ls="--", lw=1, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss (trailing mean of batch losses)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Loss vs steps at each B's best lr (band: min-max over seeds)",
                      fontsize=10)
    axes[1].set_title("Loss vs epochs (examples seen / m)", fontsize=10)
    return plots.save(fig, path)


def plot_noise(res: Result, summary, target, path):
    """B_noise, tr(Sigma) and |G|^2 along full-batch GD, with the full loss."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    s = res.noise_steps
    ax = axes[0]
    ax.plot(s, res.b_noise, "o-", color="tab:green", ms=3, label="B_noise = tr(Sigma)/|G|^2")
    ax.set_yscale("log")
    ax.set_xlabel("full-batch GD step")
    ax.set_ylabel("B_noise (examples)")
    k = summary["b_noise"]["at_target_step"]
    ax.axvline(k, color="k", ls="--", lw=1, label=f"loss reaches {target:g} (step {k})")
    ax.axhline(res.m, color="0.5", ls=":", lw=1, label=f"m = {res.m}")
    if summary["fit"]["b_crit"] is not None:
        ax.axhline(summary["fit"]["b_crit"], color="tab:purple", ls="--", lw=1.2,
                   label=f"B_crit fitted to the steps = {summary['fit']['b_crit']:.3g}")
    ax.legend(fontsize=8)
    ax.set_title(f"Gradient noise scale along full-batch GD, lr {res.noise_lr:.3g}", fontsize=10)
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.plot(s, res.trace_sigma, color="tab:purple", label="tr(Sigma)")
    ax.plot(s, res.grad_sq, color="tab:orange", label="|G|^2")
    ax.plot(s, res.noise_loss, color="k", lw=1, label="full loss")
    ax.set_yscale("log")
    ax.set_xlabel("full-batch GD step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("Per-example gradient variance and squared mean gradient", fontsize=10)
    return plots.save(fig, path)
