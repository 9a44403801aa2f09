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

import numpy as np

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.minibatch.figures import plot_best_lr, plot_curves, plot_noise, plot_steps
from bpexp.experiments.minibatch.run import (
    Result,
    best_lr,
    compute,  # noqa: F401  (the experiment contract)
    dataset,
    noise_at_target,
)
from bpexp.experiments.minibatch.theory import fit_critical_batch, predicted_steps

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


# ---------------------------------------------------------------- steps to the target


# ---------------------------------------------------------------- save


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
        "Mini-batch gradient descent", question(__doc__), run.reproduce(),
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


