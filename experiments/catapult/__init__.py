"""The catapult mechanism: where are the lazy, catapult and divergent regimes of GD?

Question: train wide networks in NTK parametrisation by full-batch GD with MSE at learning
rates lr = c 2/lambda0, lambda0 the top eigenvalue of the loss Hessian at the run's own
initialization; for which c does training stay lazy, catapult, or diverge, and how does the
largest stable lr (eta_max lambda0) depend on the model, the data and the width?
Theory: Lewkowycz, Bahri, Dyer, Sohl-Dickstein, Gur-Ari 2020, "The large learning rate phase of
deep learning: the catapult mechanism" (arXiv 2003.02218). Lazy for eta lambda0 < 2 (the loss
falls monotonically, the curvature barely moves); catapult for 2 < eta lambda0 < eta_max
lambda0 (the loss first grows, the curvature falls until lambda_t < 2/eta, then training
converges to a flatter point); divergent above. For the two-layer linear uv model
f = v^T u x / sqrt(width) eta_max lambda0 = 4 exactly at large width (section 2; on one sample
the GD map of (f, lambda) is exact at every width, see theory.py); for ReLU networks the paper
reports eta_max lambda0 ~ 12 (section 3, measured).
Measurement: lambda0 by Lanczos on Hessian-vector products (float64) at each run's init; a
grid of c x widths x seeds, one vmapped compiled call per data setting (and per width where
padding the widths to the widest costs more than a compile); the loss at
every step, the sharpness every ``every`` steps (warm-started Lanczos); each run's regime by the
rule of bpexp.regimes.classify on the measured curves; eta_max lambda0 as the bracket between
the largest c where no run diverged and the smallest c where every run did, times 2.
Expected: the uv model's edge at eta lambda0 = 4 (within a few % at width >= 256 on one sample
and on the data set; the exact map predicts each run's regime on one sample), the lazy edge at
2 everywhere; the ReLU net's edge measured beside the paper's 12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.catapult import figures
from bpexp.experiments.catapult import theory as th
from bpexp.experiments.catapult.run import (  # noqa: F401 (the experiment contract)
    SETTINGS,
    Result,
    compute,
)

USES = ("data",)
PRECISION = "float64"
HEADLINE = ("uv_toy_eta_max_lambda0", "uv_data_eta_max_lambda0", "relu_toy_eta_max_lambda0",
            "relu_data_eta_max_lambda0")


def _c_default():
    return {"uv": [0.5, 0.9, 0.97, 1.03, 1.5, 1.9, 1.96, 2.04, 2.1, 2.5],
            "relu": [0.5, 0.9, 0.97, 1.03, 1.5, 1.9, 2.0, 2.1, 2.25, 2.5, 3.0, 4.0, 6.0, 8.0]}


@dataclass
class Params:
    name: str = "catapult"
    models: list = field(default_factory=lambda: ["uv", "relu"])   # uv | relu
    settings: list = field(default_factory=lambda: ["toy", "data"])  # toy: one sample; data
    widths: dict = field(default_factory=lambda: {"toy": [64, 1024], "data": [64, 512]})
    c: dict = field(default_factory=_c_default)   # lr in units of 2/lambda0, per model
    seeds: int = 2               # initializations: seed, seed + 1, ...
    steps: int = 200             # full-batch GD steps
    every: int = 20              # sharpness every k steps (warm-started Lanczos)
    lanczos_iters: int = 6       # Lanczos steps per sharpness measurement
    check_iters: int = 12        # cold Lanczos steps at the end (accuracy check)
    lam0_iters: int = 20         # cold Lanczos steps for lambda0 at init (converged by ~16)
    relu_depth: int = 1          # hidden layers of the ReLU net (1 or 2)
    toy_x: float = 1.0           # the one sample of the toy setting (the paper's uv example)
    toy_y: float = 0.0
    rise: float = 1.05           # regimes.classify: a catapult's loss rises above rise x start
    converged: float = 1.0       # regimes.classify: converged if final < converged x start
    fast_compile: bool = True    # XLA without backend optimizations (compile time dominates)


def _bad(key, value, allowed):
    raise UserError(f"experiment.{key}={value!r} is not allowed; allowed: {allowed}")


def _positive_list(x, integer=False):
    ok = isinstance(x, list) and len(x) > 0 and len(set(x)) == len(x)
    for v in (x if ok else []):
        ok &= (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               and v > 0 and (not integer or isinstance(v, int)))
    return ok and list(x) == sorted(x)


def validate(cfg):
    P = cfg.experiment
    if not (P.models and set(P.models) <= {"uv", "relu"} and len(set(P.models)) == len(P.models)):
        _bad("models", P.models, "a non-empty list of distinct names from uv, relu")
    if not (P.settings and set(P.settings) <= set(SETTINGS)
            and len(set(P.settings)) == len(P.settings)):
        _bad("settings", P.settings, "a non-empty list of distinct names from toy, data")
    for s in P.settings:
        w = P.widths.get(s)
        if not (_positive_list(w, integer=True) and max(w) <= 65536):
            _bad(f"widths.{s}", w, "an ascending list of distinct ints in [1, 65536]")
    for mdl in P.models:
        if not _positive_list(P.c.get(mdl)):
            _bad(f"c.{mdl}", P.c.get(mdl), "an ascending list of distinct finite numbers > 0")
    rules = {"seeds": (1, 64), "steps": (2, 100000), "lanczos_iters": (2, 1000),
             "check_iters": (2, 1000), "lam0_iters": (2, 1000), "relu_depth": (1, 2)}
    for k, (lo, hi) in rules.items():
        if not lo <= getattr(P, k) <= hi:
            _bad(k, getattr(P, k), f"an int in [{lo}, {hi}]")
    if P.every < 1 or P.steps % P.every:
        _bad("every", P.every, f"an int >= 1 that divides experiment.steps={P.steps}")
    if not (math.isfinite(P.toy_x) and P.toy_x != 0 and math.isfinite(P.toy_y)):
        _bad("toy_x", (P.toy_x, P.toy_y), "finite numbers, toy_x != 0")
    if not (math.isfinite(P.rise) and P.rise >= 1):
        _bad("rise", P.rise, "a finite number >= 1")
    if not 0 < P.converged <= 1:
        _bad("converged", P.converged, "a number in (0, 1]")
    if "data" in P.settings and cfg.data.name not in ("diabetes", "synthetic"):
        raise UserError(f"data.name={cfg.data.name!r} is not allowed for catapult; allowed: "
                        "diabetes, synthetic (one regression target)")


# ---------------------------------------------------------------- save
def _x2(v):
    return None if v is None else 2.0 * v


def cell_summary(c) -> dict:
    """The numbers of one model x setting x width (run.Cell)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        peak = np.nanmax(np.where(np.isfinite(c.loss), c.loss, np.inf), axis=-1) / c.loss[..., 0]
        final = c.loss[..., -1] / c.loss[..., 0]
        s_end = c.sharpness[..., -1]
        ok = c.regime != "divergent"
        check = np.abs(s_end - c.end_check) / np.abs(c.end_check)
    out = {"lambda0": c.lam0, "lr": c.lr,
           "eta_max_lambda0": _x2(c.edge["mid"]), "bracket": [_x2(c.edge["lo"]),
                                                               _x2(c.edge["hi"])],
           "mixed": c.edge["mixed"], "lazy_edge_lambda0": _x2(c.lazy_edge["mid"]),
           "lazy_bracket": [_x2(c.lazy_edge["lo"]), _x2(c.lazy_edge["hi"])],
           "regime_counts": {k: int(np.sum(c.regime == k)) for k in
                             ("lazy", "catapult", "divergent")},
           "regimes": c.regime.tolist(), "peak_over_initial": peak,
           "final_over_initial": final, "sharpness_end_lr_over_2": s_end * c.lr / 2,
           "sharpness_end_over_lambda0": s_end / c.lam0[:, None],
           "end_check_max_rel_diff": float(np.max(check[ok])) if ok.any() else None,
           "compile_s": c.compile_s, "run_s": c.run_s}
    if c.map_regime is not None:
        out["map_eta_max_lambda0"] = [_x2(e) for e in c.map_edge]
        out["map_regime_agreement"] = float(np.mean(c.map_regime == c.regime))
    return out


def metrics(res: Result) -> xr.Dataset:
    """metrics.zarr: per cell MODEL_SETTING_wWIDTH_{loss, sharpness, lambda0, lr}, dims seed,
    c_MODEL, step / measurement_step."""
    vars_, coords = {}, {"seed": res.seeds, "step": np.arange(res.cells[0].loss.shape[-1]),
                         "measurement_step": res.s_steps}
    for c in res.cells:
        cdim = f"c_{c.model}"
        coords[cdim] = c.cs
        k = f"{c.model}_{c.setting}_w{c.width}"
        vars_[f"{k}_loss"] = (("seed", cdim, "step"), c.loss)
        vars_[f"{k}_sharpness"] = (("seed", cdim, "measurement_step"), c.sharpness)
        vars_[f"{k}_lr"] = (("seed", cdim), c.lr)
        vars_[f"{k}_lambda0"] = (("seed",), c.lam0)
    return xr.Dataset(vars_, coords=coords)


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    run.save_metrics(metrics(res))
    cells: dict = {}
    for c in res.cells:
        cells.setdefault(c.model, {}).setdefault(c.setting, {})[str(c.width)] = cell_summary(c)
    d, n = res.data_shape
    out = {"paper": "Lewkowycz et al. 2020, arXiv 2003.02218",
           "loss": "L = 1/(2n) sum_a (f(x_a) - y_a)^2",
           "models": list(P.models), "relu_depth": P.relu_depth,
           "settings": {"toy": {"x": res.toy[0], "y": res.toy[1], "n": 1, "d": 1},
                        "data": {"name": res.data_name, "n": n, "d": d}},
           "widths": {s: list(P.widths[s]) for s in P.settings},
           "c": {m: list(P.c[m]) for m in P.models}, "seeds": res.seeds, "steps": P.steps,
           "every": P.every, "rise": P.rise, "converged": P.converged,
           "theory": {"lazy_edge": th.LAZY_EDGE, "eta_max_lambda0": dict(th.EDGE)},
           "cells": cells}
    for mdl in ("uv", "relu"):          # headline: the widest width of each model x setting
        for s in ("toy", "data"):
            w = cells.get(mdl, {}).get(s)
            out[f"{mdl}_{s}_eta_max_lambda0"] = (w[str(max(map(int, w)))]["eta_max_lambda0"]
                                                 if w else None)
    out["compile_s"], out["run_s"] = res.compile_s, res.run_s
    return out


# ---------------------------------------------------------------- present
def _fmt(v, f=".2f"):
    return "n/a" if v is None else format(v, f)


def table(summary: dict):
    """Header and rows: per model x setting x width, measured vs theory."""
    header = ["model", "data", "width", "lambda0 (seeds)", "eta_max lambda0 measured",
              "bracket", "theory", "lazy edge (theory 2)", "lazy / catapult / divergent"]
    rows = []
    for mdl, per in summary["cells"].items():
        for s, widths in per.items():
            name = "one sample" if s == "toy" else summary["settings"]["data"]["name"]
            for w, c in widths.items():
                rc = c["regime_counts"]
                rows.append([mdl, name, int(w), " ".join(f"{x:.3f}" for x in c["lambda0"]),
                             _fmt(c["eta_max_lambda0"]),
                             f"[{_fmt(c['bracket'][0])}, {_fmt(c['bracket'][1])}]",
                             f"{summary['theory']['eta_max_lambda0'][mdl]:g}",
                             _fmt(c["lazy_edge_lambda0"]),
                             f"{rc['lazy']} / {rc['catapult']} / {rc['divergent']}"])
    return header, rows


def shows(summary: dict) -> list[str]:
    """'What this run shows': sentences computed from the summary."""
    out = []
    th_ = summary["theory"]["eta_max_lambda0"]
    for mdl, per in summary["cells"].items():
        for s, widths in per.items():
            name = "one sample" if s == "toy" else summary["settings"]["data"]["name"]
            ws = sorted(widths, key=int)
            vals = [widths[w]["eta_max_lambda0"] for w in ws]
            txt = ", ".join(f"{_fmt(v)} at width {w}" for w, v in zip(ws, vals))
            wide = vals[-1]
            if wide is None:
                verdict = "no edge inside the grid at the widest width"
            else:
                verdict = (f"{100 * (wide / th_[mdl] - 1):+.1f}% from the theory's "
                           f"{th_[mdl]:g} at the widest width")
            out.append(f"{mdl} on {name}: eta_max lambda0 = {txt} ({verdict}).")
    lazy = [c["lazy_edge_lambda0"] for per in summary["cells"].values()
            for widths in per.values() for c in widths.values()
            if c["lazy_edge_lambda0"] is not None]
    if lazy:
        out.append(f"The lazy/catapult boundary lies at eta lambda0 = {min(lazy):.2f}-"
                   f"{max(lazy):.2f} over every cell (theory 2).")
    m = summary["cells"].get("uv", {}).get("toy", {})
    if m:
        agree = min(c["map_regime_agreement"] for c in m.values())
        out.append(f"On one sample the exact (f, lambda) map of the uv model predicts the regime "
                   f"of {100 * agree:.0f}% or more of the runs at every width.")
    return out


def present(cfg, run, res: Result, summary: dict) -> None:
    header, rows = table(summary)
    report.print_table("catapult: eta_max lambda0 measured vs theory", header, rows)
    figs = ["phase_diagram.png", "curves.png"]
    figures.phase_diagram(res, summary, run.figure(figs[0]))
    figures.curves(res, summary, run.figure(figs[1]))
    P, sd = cfg.experiment, summary["settings"]["data"]
    setup = (f"Models in NTK parametrisation (weights N(0, 1), no biases): uv "
             f"f = v^T u x / sqrt(width d) and a ReLU net with {P.relu_depth} hidden layer(s). "
             f"Loss {summary['loss']} (with the 1/2 and the 1/n). Data: one sample x = "
             f"{res.toy[0]:g}, y = {res.toy[1]:g} (the paper's uv example) and {sd['name']} "
             f"(n = {sd['n']} examples, d = {sd['d']} z-scored features, z-scored target). "
             f"lambda0: {P.lam0_iters} Lanczos steps on Hessian-vector products at each run's "
             f"init (float64); lr = c 2/lambda0; {P.steps} full-batch GD steps; sharpness every "
             f"{P.every} steps ({P.lanczos_iters} warm Lanczos steps). Regime rule "
             f"(bpexp.regimes.classify): divergent if non-finite or final loss >= "
             f"{P.converged:g} x initial; catapult if the loss rose above {P.rise:g} x "
             "initial or the sharpness fell from above 2/lr to below it (and by >= 5% of "
             "lambda0); lazy otherwise. "
             "eta_max lambda0 = 2 x the midpoint of the bracket [largest c with no divergent "
             "seed below it, smallest c with every seed divergent above it]. Seeds "
             f"{[int(s) for s in res.seeds]}; compile {summary['compile_s']:.1f} s, run "
             f"{summary['run_s']:.1f} s in total.")
    run.save_report(report.report(
        "The catapult mechanism: lazy, catapult and divergent GD", question(__doc__),
        run.reproduce(), [("Setup", setup),
                          ("Theory vs measurement", report.markdown_table(header, rows))],
        figs, shows=shows(summary)))


# ---------------------------------------------------------------- README block
def readme(record: dict) -> str:
    """The README block: the measured table of a recorded run and its command. Every number in
    it is reproduced by a fresh run of the command (no timings: those stay in the prose)."""
    S = record["summary"]
    header, rows = table(S)
    return "\n".join([f"Measured by `{record['command']}`:", "",
                      report.markdown_table(header, rows), "", " ".join(shows(S))])


from bpexp.experiments.catapult.page import page  # noqa: E402,F401  (the run page's figures)
