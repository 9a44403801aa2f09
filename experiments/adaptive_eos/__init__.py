"""Adaptive edge of stability: do Adam and RMSprop hold the PRECONDITIONED sharpness at their
stability threshold, as GD holds the sharpness at 2/lr?

Question: train a tanh MLP with MSE on digits by full-batch Adam (two beta1), RMSprop and
heavy-ball momentum and track the preconditioned sharpness lambda_max(P^-1 H), P the diagonal
preconditioner the optimizer divides its step by, and the raw sharpness lambda_max(H). Where do
they go?
Theory: Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability" (arXiv
2207.14484, Sections 2-3; momentum: Cohen et al. 2021, ICLR, appendix on momentum). Written as
w -= lr P^-1 m, each method with P frozen is GD / heavy-ball momentum on P^-1 H, stable iff
lambda_max(P^-1 H) < (2 + 2 beta1) / ((1 - beta1) lr) for Adam (38/lr at beta1 = 0.9), 2/lr for
RMSprop; for momentum (P = I) the raw sharpness has the bound (2 + 2 beta) / ((1 - beta) lr).
After progressive sharpening the measured quantity rises to its threshold and hovers there
("adaptive edge of stability"); the raw sharpness of the adaptive methods sits at no edge (far
below 2/lr here, since P^-1 is large where gradients are small).
Measurement: every ``every`` steps, at the parameters entering a step, both sharpnesses by
warm-started Lanczos (bpexp.theory.lanczos) on Hessian-vector products, P read from the
optimizer's state after that step's update (the P the step applies; adam: P = (1 - b1^t)
(sqrt(s / (1 - b2^t)) + eps), rmsprop: sqrt(s) + eps, bpexp.optim); one jitted lax.scan for
the whole grid (each row's optimizer picked by index), vmapped over its rows and seeds.
Expected: for every run that reaches the edge, the mean of measured / threshold over the last
quarter of training is within 10% of 1; the adaptive runs' raw sharpness x lr / 2 stays well
below 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bpexp import docs, make
from bpexp.errors import UserError
from bpexp.experiments._common import load_data
from bpexp.experiments.adaptive_eos.run import fmt

USES = ("model", "data", "train")   # make.check builds them first
HEADLINE = ("adam_late_ratio_mean", "rmsprop_late_ratio_mean", "momentum_late_ratio_mean",
            "adaptive_raw_ratio_max")


@dataclass
class Params:
    name: str = "adaptive_eos"
    adam_lrs: Any = field(default_factory=lambda: [0.005, 0.01])
    adam_beta1s: Any = field(default_factory=lambda: [0.9, 0.5])
    rmsprop_lrs: Any = field(default_factory=lambda: [0.0003, 0.001])
    momentum_lrs: Any = field(default_factory=lambda: [2.0, 3.0])
    momentum_beta: float = 0.9
    beta2: float = 0.999       # adam's and rmsprop's second-moment decay
    eps: float = 1e-8          # adam's and rmsprop's eps (outside the sqrt, bpexp.optim)
    seeds: int = 2             # initializations per row: seed, seed + 1, ...
    every: int = 10            # measure both sharpnesses every k steps
    lanczos_iters: int = 15    # warm-started Lanczos steps per measurement
    late_fraction: float = 0.25  # the "late" window: the last fraction of training
    edge_tol: float = 0.1      # "at the edge": |late mean ratio - 1| <= edge_tol


def _lrs_ok(v) -> bool:
    return (isinstance(v, list) and all(isinstance(x, (int, float)) and 0 < x < math.inf
                                        for x in v) and len(set(v)) == len(v))


def validate(cfg):
    P = cfg.experiment
    for key in ("adam_lrs", "rmsprop_lrs", "momentum_lrs"):
        if not _lrs_ok(list(getattr(P, key))):
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; allowed: a "
                            "list of distinct finite learning rates > 0 (may be empty)")
    if not (P.adam_lrs or P.rmsprop_lrs or P.momentum_lrs):
        raise UserError("experiment.adam_lrs, rmsprop_lrs, momentum_lrs are all empty; allowed: "
                        "at least one learning rate")
    b1 = list(P.adam_beta1s)
    if not (b1 and all(0 <= b < 1 for b in b1) and len(set(b1)) == len(b1)):
        raise UserError(f"experiment.adam_beta1s={P.adam_beta1s!r} is not allowed; allowed: a "
                        "non-empty list of distinct numbers in [0, 1)")
    for key in ("momentum_beta", "beta2"):
        if not 0 <= getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; allowed: a "
                            "number in [0, 1)")
    if not 0 <= P.eps < math.inf:
        raise UserError(f"experiment.eps={P.eps!r} is not allowed; allowed: a number >= 0")
    if P.every < 1 or cfg.train.steps % P.every:
        raise UserError(f"experiment.every={P.every} is not allowed; allowed: an int >= 1 that "
                        f"divides train.steps={cfg.train.steps}")
    if not 1 <= P.seeds <= 64:
        raise UserError(f"experiment.seeds={P.seeds} is not allowed; allowed: an int in [1, 64]")
    if not 2 <= P.lanczos_iters <= 1000:
        raise UserError(f"experiment.lanczos_iters={P.lanczos_iters} is not allowed; allowed: "
                        "an int in [2, 1000]")
    for key in ("late_fraction", "edge_tol"):
        if not 0 < getattr(P, key) <= 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; allowed: a "
                            "number in (0, 1]")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not allowed; adaptive_eos "
                        "trains every optimizer of its grid (experiment.adam_lrs, rmsprop_lrs, "
                        "momentum_lrs); leave optimizer at its default")
    if cfg.train.batch_size != 0:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not allowed; adaptive_eos "
                        "needs full-batch training (0)")


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    n: int                      # features
    m: int                      # examples
    grid: list                  # [row] run.Row: optimizer, lr, beta, threshold
    seeds: np.ndarray           # [seed]
    s_steps: np.ndarray         # [measurement] the step of each measurement
    l_steps: np.ndarray         # [step + 1] 0..train.steps
    precond: np.ndarray         # [row, seed, measurement] lambda_max(P^-1/2 H P^-1/2)
    precond_res: np.ndarray     # [row, seed, measurement] its Lanczos residual
    raw: np.ndarray             # [row, seed, measurement] lambda_max(H)
    raw_res: np.ndarray         # [row, seed, measurement]
    loss: np.ndarray            # [row, seed, step + 1] full-batch training loss
    timings: dict               # compile_s, run_s (wall), compile_cpu_s, run_cpu_s (CPU)


def compute(cfg, run) -> Result:
    from bpexp.experiments.adaptive_eos.run import rows, train_grid

    ds = load_data(cfg, run)
    model = make.model(cfg)
    grid = rows(cfg.experiment)
    with run.timed("train"):
        out, timings = train_grid(cfg, ds, model, grid, make.dtype(cfg))
    n_meas = out["precond"].shape[-1]
    return Result(n=ds.n, m=ds.m, grid=grid, seeds=cfg.seed + np.arange(cfg.experiment.seeds),
                  s_steps=np.arange(n_meas) * cfg.experiment.every,
                  l_steps=np.arange(out["loss"].shape[-1]), precond=out["precond"],
                  precond_res=out["precond_res"], raw=out["raw"], raw_res=out["raw_res"],
                  loss=out["loss"], timings=timings)



# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    import xarray as xr

    from bpexp.experiments.adaptive_eos.run import summarize

    per = ("run", "seed", "measurement_step")
    run.save_metrics(xr.Dataset(
        {"precond_sharpness": (per, res.precond), "precond_residual": (per, res.precond_res),
         "raw_sharpness": (per, res.raw), "raw_residual": (per, res.raw_res),
         "loss": (("run", "seed", "step"), res.loss)},
        coords={"run": [r.label for r in res.grid], "seed": res.seeds,
                "measurement_step": res.s_steps, "step": res.l_steps,
                "optimizer": ("run", [r.name for r in res.grid]),
                "lr": ("run", [r.lr for r in res.grid]),
                "beta": ("run", [np.nan if r.beta is None else r.beta for r in res.grid]),
                "threshold": ("run", [r.threshold for r in res.grid])}))
    return summarize(res, cfg.experiment, cfg.precision)


# ---------------------------------------------------------------- present
def shows(S: dict) -> list[str]:
    """"What this run shows": sentences generated from the summary alone."""
    out = []
    for name, what, thr in (("adam", "preconditioned sharpness", "(2 + 2 beta1)/((1 - beta1) lr)"),
                            ("rmsprop", "preconditioned sharpness", "2/lr"),
                            ("momentum", "raw sharpness", "(2 + 2 beta)/((1 - beta) lr)")):
        keys = [k for k in S["labels"] if S["runs"][k]["optimizer"] == name]
        if not keys:
            continue
        per = ", ".join(f"{k.removeprefix(name + ' ')}: "
                        f"{fmt(S['runs'][k]['late_ratio_mean'], '.3f')}" for k in keys)
        reg = [g for k in keys for g in S["runs"][k]["regime"]]
        out.append(f"Under full-batch {name} the {what} over the last "
                   f"{100 * S['late_fraction']:.0f}% of training averages {per} x its threshold "
                   f"{thr}; {reg.count('at the edge')} of {len(reg)} runs are within "
                   f"{100 * S['edge_tol']:.0f}% of it.")
    if S["adaptive_raw_ratio_max"] is not None:
        out.append(f"The adaptive runs' raw sharpness stays at most "
                   f"{fmt(S['adaptive_raw_ratio_max'], '.3f')} x 2/lr: it sits at no edge, the "
                   "preconditioner absorbs the curvature.")
    off = [f"{k} seed {s}: {g}" for k in S["labels"]
           for s, g in zip(S["seeds"], S["runs"][k]["regime"]) if g != "at the edge"]
    if off:
        out.append("Not at the edge: " + "; ".join(off) + ".")
    return out


def table(S: dict) -> tuple[list[str], list[list]]:
    header = ["run", "threshold (theory)", "formula", "measured", "late mean / threshold",
              "per seed", "raw x lr/2", "first step >= 0.9", "regime", "final loss"]
    rows = []
    for k in S["labels"]:
        r = S["runs"][k]
        rows.append([k, r["threshold"], r["threshold_formula"], r["measured"],
                     r["late_ratio_mean"], " ".join(fmt(x, ".3f") for x in r["late_ratio"]),
                     " ".join(fmt(x, ".3g") for x in r["late_raw_over_2_over_lr"]),
                     " ".join(str(h) for h in r["first_step_ratio_ge_0.9"]),
                     "; ".join(dict.fromkeys(r["regime"])), float(np.median(r["final_loss"]))])
    return header, rows


def present(cfg, run, res: Result, summary: dict) -> None:
    from bpexp import report
    from bpexp.experiments._common import question
    from bpexp.experiments.adaptive_eos import figures

    S, P, mc = summary, cfg.experiment, cfg.model
    figs = ["late_ratios.png"]
    figures.fig_ratios(S, run.figure(figs[0]))
    for name in ("adam", "rmsprop", "momentum"):
        if figures.rows_of(S, name):
            figs.append(f"{name}.png")
            figures.fig_optimizer(S, name, run.figure(figs[-1]),
                                  loss={r.label: res.loss[i] for i, r in enumerate(res.grid)})
    header, rows = table(S)
    report.print_table("adaptive_eos: measured sharpness / threshold (theory: 1)", header, rows)
    setup = (f"model `{mc.name}` (activation {mc.activation}, output {mc.output}, hidden "
             f"{mc.hidden}, depth {mc.depth}, init {mc.init}), data `{cfg.data.name}` (n={res.n}, "
             f"m={res.m}), loss (1/m) sum (Yhat - Y)^2, full batch, {cfg.train.steps} steps, "
             f"seeds {', '.join(str(int(s)) for s in res.seeds)}, {cfg.precision}. Adam and "
             f"RMSprop with beta2 = {P.beta2:g}, eps = {P.eps:g} (outside the sqrt), momentum "
             f"beta = {P.momentum_beta:g} (EMA form, bpexp.optim). Every {P.every} steps both "
             f"sharpnesses by {P.lanczos_iters} warm-started Lanczos steps; largest relative "
             f"residual {S['max_rel_residual']['precond']:.1e} (preconditioned), "
             f"{S['max_rel_residual']['raw']:.1e} (raw). Late window: the last "
             f"{P.late_fraction:g} of training. Compile {S['compile_s']:.1f} s, run "
             f"{S['run_s']:.1f} s.")
    run.save_report(report.report(
        "Adaptive edge of stability: preconditioned sharpness under Adam and RMSprop",
        question(__doc__), run.reproduce(),
        [("Theory", " ".join(__doc__.split("Theory:")[1].split("Measurement:")[0].split())),
         ("Setup", setup), ("Theory vs measurement", report.markdown_table(header, rows))],
        figs, shows=shows(S)))


def readme(record: dict) -> str:
    """The README block: the command, the measured ratios per run, the machine."""
    S = record["summary"]
    cost = docs.machine(
        f"compile {S['compile_cpu_s']:.0f} s + run {S['run_cpu_s']:.0f} s of CPU "
        f"({S['compile_s'] + S['run_s']:.0f} s wall)", record)
    lines = [f"`{record['command']}` ({S['m']} digits, {S['precision']}, {len(S['seeds'])} "
             f"seeds): {cost}. Late mean over the last "
             f"{100 * S['late_fraction']:.0f}% of training:", "",
             "| run | threshold | late mean measured / threshold (per seed) | raw x lr/2 |",
             "|---|---|---|---|"]
    for k in S["labels"]:
        r = S["runs"][k]
        lines.append(f"| {k} | {r['threshold']:.4g} = {r['threshold_formula']} | "
                     + " ".join(fmt(x, ".3f") for x in r["late_ratio"]) + " | "
                     + " ".join(fmt(x, ".3g") for x in r["late_raw_over_2_over_lr"]) + " |")
    lines += ["", " ".join(shows(S))]
    return "\n".join(lines) + "\n"
from bpexp.experiments.adaptive_eos.page import page  # noqa: E402,F401  (the run page's figures)
