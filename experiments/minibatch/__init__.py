"""Mini-batch gradient descent measured: how many steps does each batch size need?

Question: on digits with two_layer_sigmoid (MSE on one-hot targets), how many steps and how
many epochs does mini-batch GD need to reach a loss target at each batch size B from 1 to the
full batch, each at its own best learning rate; how does that best lr grow with B; and how
much do the loss curves of different seeds (initialization and batch order) spread?
Theory: McCandlish et al. 2018 ("An empirical model of large-batch training", section 2 and
appendix A; derivation in theory.py): with per-example gradients g_i, their mean G and
population covariance Sigma, a batch of B distinct examples (the sweep draws without
replacement: a fresh permutation per epoch) has gradient covariance phi(B) Sigma / B with the
finite-population factor phi(B) = (m - B)/(m - 1) (phi = 1 with replacement). One step's best
lr is eps_opt(B) = eps_max / (1 + B_noise phi(B)/B) and the steps to a target follow
S(B) = S_min (1 + B_noise phi(B)/B), B_noise = tr(H Sigma)/G^T H G, measured here as
B_simple = tr(Sigma)/|G|^2 (H ~ identity). For B << B_noise doubling the batch halves the steps
and doubles the best lr (the linear scaling rule); for B >> B_noise neither changes, and
without replacement the full batch is noiseless: S(m) = S_min, eps_opt(m) = eps_max.
Where the theory stops applying: it is a one-step, locally quadratic model with one B_noise,
while B_noise changes along training and the best lr of a run is picked for the fewest steps
over the whole run, below the full batch's stability limit; the measured numbers are in the
report's "What this run shows", generated from the summary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.minibatch import text
from bpexp.experiments.minibatch.figures import plot_best_lr, plot_curves, plot_noise, plot_steps
from bpexp.experiments.minibatch.run import (
    Result,
    best_lr,
    compute,  # noqa: F401  (the experiment contract)
    dataset,
    noise_at_target,
)
from bpexp.experiments.minibatch.theory import (
    MODELS,
    fit_critical_batch,
    fit_errors,
    lr_model,
    phi,
    predicted_steps,
    steps_model,
)

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



PER_BATCH_KEYS = ("best_lr", "steps_to_target", "steps_to_target_seeds", "epochs_to_target",
                  "examples_to_target", "final_loss_median", "final_loss_spread", "steps_spread",
                  "diverged_lrs")
SAMPLER = "without_replacement"   # bpexp.train: consecutive slices of a permutation per epoch


def _per_batch(res: Result):
    per = {}
    for i, b in enumerate(res.batches):
        j = best_lr(res.steps_to_target[i], res.diverged[i])
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
    return per


def _models(res: Result, per, b_geo):
    """The steps model with and without the finite-population factor: predicted from B_noise
    (S_min from the full batch) and fitted to the measured steps."""
    measured = [np.nan if per[str(b)]["steps_to_target"] is None
                else per[str(b)]["steps_to_target"] for b in res.batches]
    s_full = per[str(res.m)]["steps_to_target"]
    pred = None if s_full is None else {"b_noise": b_geo}
    fit = {"sampler": SAMPLER}
    for name in MODELS:
        replace = name == "with_replacement"
        if pred is not None:
            s, s_min = predicted_steps(res.batches, s_full, res.m, b_geo, replace)
            pred[name] = {"s_min": float(s_min),
                          "steps": {str(b): float(v) for b, v in zip(res.batches, s)},
                          **fit_errors(measured, s)}
        bc, s_min = fit_critical_batch(res.batches, measured, res.m, replace)
        s = None if bc is None else steps_model(res.batches, s_min, bc, res.m, replace)
        fit[name] = {"b_crit": bc, "s_min": s_min,
                     "steps": None if s is None else {str(b): float(v)
                                                      for b, v in zip(res.batches, s)},
                     **(fit_errors(measured, s) if s is not None
                        else {"rms_log_error": None, "max_rel_error": None})}
    fit["b_crit"], fit["s_min"] = fit[SAMPLER]["b_crit"], fit[SAMPLER]["s_min"]
    a, b = (fit[n]["steps"] for n in MODELS)
    fit["curves_max_rel_difference"] = (None if a is None or b is None else
                                        max(abs(a[k] / b[k] - 1) for k in a))
    # both are S = a + c/B (theory.py): fitted, they differ only by the B_crit grid
    fit["better"] = _better(fit, tie=fit["curves_max_rel_difference"])
    if pred is not None:
        pred["better"] = _better(pred)
    return pred, fit


def _better(d, tie=None):
    """The model with the smaller rms log error; None if either is missing or the two curves
    agree within 1% (``tie``: their largest relative difference)."""
    errs = [d[n]["rms_log_error"] for n in MODELS]
    if None in errs or (tie is not None and tie <= 0.01):
        return None
    return MODELS[int(np.argmin(errs))]


def _lr_growth(res: Result, per, b_crit, b_init):
    """How the best lr grows with B: the x4 steps, the log-log slope up to where it stops
    growing, and the one-step optimum eps_max / (1 + B_noise phi(B)/B) (eps_max: the full
    batch's best lr, phi of the sampler) beside it for B_noise = B_crit and B_noise at init,
    with the B_noise each measured best lr below eps_max implies."""
    b = np.asarray(res.batches, np.float64)
    lr = np.array([np.nan if per[str(x)]["best_lr"] is None else per[str(x)]["best_lr"]
                   for x in res.batches])
    ok = np.isfinite(lr)
    if ok.sum() < 2:
        return None
    bo, lo = b[ok], lr[ok]
    k = int(np.flatnonzero(lo >= lo.max())[0])          # first B at the largest best lr
    slope = float(np.log(lo[k] / lo[0]) / np.log(bo[k] / bo[0])) if k > 0 else 0.0
    above = res.lrs[res.lrs > lo[k]]
    nxt = float(above.min()) if above.size else None     # the grid lr above the saturation
    x4 = {int(x): float(lo[bo == 4 * x][0] / y) for x, y in zip(bo, lo) if 4 * x in bo}
    out = {"b_from": int(bo[0]), "b_sat": int(bo[k]), "lr_from": float(lo[0]),
           "lr_sat": float(lo[k]), "slope": slope, "per_x4": float(4 ** slope),
           "x4_ratios": {str(x): v for x, v in x4.items()},
           "shape": ("flat" if k == 0 else "linear" if 0.9 <= slope <= 1.1
                     else "sub-linear" if slope < 0.9 else "super-linear"),
           "flat_after_sat": bool(np.all(lo[k:] == lo[k])),
           "next_lr": nxt, "next_lr_diverged": [int(x) for x in bo[k:]
                                                if nxt in per[str(int(x))]["diverged_lrs"]],
           "theory": None}
    if b_crit is not None and np.isfinite(lr[-1]):
        rep = SAMPLER == "with_replacement"
        th = lr_model(b, lr[-1], b_crit, res.m, rep)
        th0 = lr_model(b, lr[-1], b_init, res.m, rep)
        r = lr[ok] / th[ok]
        small = ok & (b < res.m)
        implied = {str(int(x)): float(x / phi(x, res.m, rep) * (lr[-1] / y - 1))
                   for x, y in zip(b[small], lr[small]) if y < lr[-1]}
        out["theory"] = {"lr_max": float(lr[-1]), "b_noise": b_crit, "b_noise_init": b_init,
                         "lr": {str(int(x)): float(v) for x, v in zip(b, th)},
                         "lr_init": {str(int(x)): float(v) for x, v in zip(b, th0)},
                         "measured_over_theory": {str(int(x)): float(v)
                                                  for x, v in zip(bo, r)},
                         "below_every_smaller_batch": bool(np.all(r[bo < res.m] > 1)),
                         "implied_b_noise": implied}
    return out


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    run.save_metrics(dataset(res))
    b_target, b_geo, k_target = noise_at_target(res, P.target)
    per = _per_batch(res)
    pred, fit = _models(res, per, b_geo)
    fit["b_crit_between_init_and_target"] = (
        None if fit["b_crit"] is None else bool(res.b_noise[0] <= fit["b_crit"] <= b_target))
    return {"m": res.m, "batch_sizes": res.batches, "lrs": res.lrs, "seeds": res.seeds,
            "target": P.target, "window_examples": P.window, "steps": cfg.train.steps,
            "per_batch": per,
            "b_noise": {"init": float(res.b_noise[0]), "at_target": b_target,
                        "at_target_step": k_target, "geomean_to_target": b_geo,
                        "steps": res.noise_steps, "values": res.b_noise,
                        "trace_sigma": res.trace_sigma, "grad_sq": res.grad_sq,
                        "loss": res.noise_loss, "lr": res.noise_lr, "seed": int(res.seeds[0]),
                        "covariance": "population (1/m) over the data set"},
            "prediction": pred, "fit": fit,
            "best_lr_growth": _lr_growth(res, per, fit["b_crit"], float(res.b_noise[0])),
            "compile_s": res.compile_s, "run_s": res.run_s}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    header, rows = text.table(summary)
    report.print_table(f"minibatch: {cfg.model.name} on {cfg.data.name} (m={res.m}), loss "
                       f"target {P.target:g}, {len(res.lrs)} lrs x {len(res.seeds)} seeds, "
                       f"{cfg.train.steps} steps", header, rows)
    shows = text.shows(summary)
    print("\n".join(text.details(summary)))
    figs = ["steps_to_target.png", "best_lr_vs_batch.png", "loss_curves.png", "noise_scale.png"]
    plot_steps(res, summary, run.figure(figs[0]))
    plot_best_lr(res, summary, run.figure(figs[1]))
    plot_curves(res, summary, P.target, run.figure(figs[2]))
    plot_noise(res, summary, P.target, run.figure(figs[3]))
    run.save_report(report.report(
        "Mini-batch gradient descent", question(__doc__), run.reproduce(),
        [("Setup", f"{cfg.model.name} (hidden {cfg.model.hidden}) on {cfg.data.name}, m = "
                   f"{res.m}, MSE; batch sizes {res.batches} (each batch B distinct examples: "
                   f"consecutive slices of a fresh permutation per epoch); lrs "
                   f"{', '.join(f'{x:.3g}' for x in res.lrs)}; seeds "
                   f"{[int(s) for s in res.seeds]}; {cfg.train.steps} steps. The loss of a "
                   f"step is the trailing mean of the batch losses over the last "
                   f"ceil({P.window} / B) steps (the full loss for the full batch); steps to "
                   f"the target {P.target:g} = first step where it is <= target; best lr = "
                   "fewest median steps among lrs where every seed reaches it. B_noise = "
                   "tr(Sigma)/|G|^2 from the per-example gradients (hand-derived backward, "
                   "population covariance over the m examples), every "
                   f"{P.noise_every} steps along full-batch GD at the full batch's best lr "
                   f"(seed {int(res.seeds[0])}). Models (McCandlish et al. 2018, section 2): "
                   "S(B) = S_min (1 + B_crit phi(B)/B) with phi = (m - B)/(m - 1) (without "
                   "replacement, the sampler's) and phi = 1 (with replacement), each fitted to "
                   "the measured steps (least squares in log S) and each predicted from the "
                   "geometric mean of B_noise with S_min from the full batch."),
         ("Results", report.markdown_table(header, rows)
          + "\n(seed range = (max - min) / median of the steps over the seeds; the model "
            "columns are steps.)"),
         ("Theory vs measurement", "\n\n".join(text.details(summary)))],
        figs, shows=shows))


def readme(record) -> str:
    """The README's generated block (bpexp.docs) from a stored record of a run."""
    return text.readme(record)
