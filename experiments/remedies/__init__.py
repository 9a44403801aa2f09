"""Do ReLU + He, Xavier, skip connections and batch norm stop the vanishing gradient?

Question: Lecture 5 section 10's remedies side by side at depths up to 30: for a plain sigmoid
MLP with the standard init and four repaired versions of it (ReLU + He, sigmoid + Xavier,
sigmoid + skip connections, sigmoid + batch norm; each changes one thing), how does
||dL/dW_1|| / ||dL/dW_L|| behave with depth at init, and which nets still train?
Theory: each remedy's per-layer factor of the back-propagated dL/dz (REMEDY_THEORY, computed
per run from the measured E[f'^2]): the Glorot factor sqrt(n Var(W) E[f'^2]) for the inits
(x0.14 per layer plain, x0.23 Xavier, 1 for ReLU + He; Glorot & Bengio 2010), the Jacobian
I + W^T diag f' for skip connections (He et al. 2016: dL/da never shrinks through the identity
path), and for batch norm (Ioffe & Szegedy 2015) a factor free of the scale of W (about 1).
Two refinements, measured by the run: (1) the ReLU + He factor 1 is a mean, E[R] of the squared
per-layer ratio; a run reports a geometric mean, and at width h one example's R is exactly
(2/h) chi^2_K, K ~ Bin(h, 1/2) (Hanin 2018; Hanin & Nica 2019), so the measured factor is
exp(E[log R]/2) ~ 1 - 5/(4h) (remedies.width; widths 16..128 at the deepest depth); (2) the
batch-norm estimate assumes dL/dz independent of W, which batch norm's scale invariance breaks
(dL/dw_i is orthogonal to w_i), so it overshoots by a few % per layer (remedies.bn splits the
factor into transfer, gain and projection).
Expected: at depth 30 the plain sigmoid's ||dL/dW_1|| / ||dL/dW_L|| is ~1e-25 while the
residual and batch-normalized nets keep it within a few decades of 1 and ReLU + He near 1;
only the repaired nets still train at depth 30 (ReLU + He at the shared lr 0.5 diverges in
some seeds: that lr is near its stability edge); the finite-width law matches the measured
ReLU + He factor per example at every width within its standard errors, and the transfer
shortfall of batch norm compounds to the gap between its estimate and the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpexp import report
from bpexp.experiments._common import question
from bpexp.experiments.depth_sweep import check_padded_engine, check_positive_ints
from bpexp.experiments.depth_sweep.run import _factor
from bpexp.experiments.remedies import bn, text, width
from bpexp.experiments.remedies.figures import (plot_remedy_dw, plot_remedy_norms,
                                                plot_remedy_summary, plot_width)
from bpexp.experiments.remedies.run import RemedyResult, _med, compute_remedies
from bpexp.experiments.remedies.theory import REMEDIES, REMEDY_THEORY, bn_factor_limit
from bpexp.errors import UserError

USES = ("model", "data", "optimizer", "train", "sweep")  # make.check builds them first


@dataclass
class Params:
    name: str = "remedies"
    depths: list = field(default_factory=lambda: [1, 2, 5, 10, 20, 30])      # hidden layers D
    width: int = 32                                                          # hidden width h
    remedies: list = field(default_factory=lambda: list(REMEDIES))           # which, in order
    # ReLU + He at the deepest depth over these widths (finite-width law; [] skips it)
    widths: list = field(default_factory=lambda: [16, 32, 64, 128])
    width_seeds: int = 16                                                    # its seeds


def validate(cfg):
    P = cfg.experiment
    check_padded_engine(cfg, "remedies")
    check_positive_ints("depths", P.depths)
    check_positive_ints("width", [P.width])
    if P.widths:
        check_positive_ints("widths", P.widths)
    if not (isinstance(P.width_seeds, int) and P.width_seeds >= 2):
        raise UserError(f"experiment.width_seeds={P.width_seeds!r} is not allowed; "
                        "allowed: an int >= 2")
    if not (P.remedies and all(r in REMEDIES for r in P.remedies)
            and len(set(P.remedies)) == len(P.remedies)):
        raise UserError(f"experiment.remedies={P.remedies!r} is not allowed; allowed: a "
                        f"non-empty list of distinct ones of {', '.join(REMEDIES)}")


def compute(cfg, run) -> RemedyResult:
    return compute_remedies(cfg, run)


def save(cfg, run, res: RemedyResult) -> dict:
    return save_remedies(cfg, run, res)


def present(cfg, run, res: RemedyResult, summary: dict) -> None:
    present_remedies(cfg, run, res, summary)


def save_remedies(cfg, run, res: RemedyResult) -> dict:
    """metrics.zarr from RemedyResult.dataset(); the summary: per remedy and depth, medians
    over seeds."""
    run.save_metrics(res.dataset())
    bn_limit = bn_factor_limit()
    out = {}
    for ri, name in enumerate(res.remedies):
        r = REMEDIES[name]
        deps = {}
        for di, D in enumerate(res.depths):
            ix, L = (ri, di), D + 1
            lossT = res.loss[ix][:, -1]
            plain = not r.residual and r.norm == "none"
            deps[str(D)] = {
                "ratio_first_last": _med(res.ratio_first_last[ix]),
                "ratio_first_last_seeds": res.ratio_first_last[ix],
                "dz_ratio_first_last": _med(res.dz_first_last[ix]),
                "dz_ratio_first_last_predicted": _med(res.dz_first_last_predicted[ix]),
                "factor_measured_dz": _factor(res.ratio_measured_dz[ix], D),
                "factor_predicted_dz": _factor(res.ratio_predicted_dz[ix], D),
                "grad_norms_init": np.median(res.grad_norm_init[ix], axis=0)[:L],
                "grad_norms_final": np.median(res.grad_norm_final[ix], axis=0)[:L],
                "dz_rms_init": np.median(res.dz_rms_init[ix], axis=0)[:L],
                "bound_with_weight_norms": _med(res.bound[ix]) if plain else None,
                "bound_holds": (bool(np.all(res.dz_first_last[ix] * np.sqrt(
                    res.width / res.d_out) <= res.bound[ix] * (1 + 1e-9))) if plain else None),
                "initial_loss": _med(res.loss[ix][:, 0]),
                "final_loss": float(np.median(np.where(np.isfinite(lossT), lossT, np.inf))),
                "final_loss_iqr": [float(q) for q in np.nanpercentile(lossT, [25, 75])],
                "diverged": int(np.sum(~np.isfinite(lossT)))}
        out[name] = {"label": r.label, "activation": r.activation, "init": r.init,
                     "residual": r.residual, "norm": r.norm, "theory": REMEDY_THEORY[name],
                     "depths": deps}
    return {"remedies": out, "depths": res.depths, "seeds": res.seeds, "width": res.width,
            "data": cfg.data.name, "m": res.m, "n": res.n, "d_out": res.d_out,
            "output": cfg.model.output, "steps": cfg.train.steps, "lr": res.lr,
            "bn_factor_limit": bn_limit, "sigmoid_fprime_max_pow_depth":
                {str(D): 0.25 ** D for D in res.depths},
            "class_entropy": res.class_entropy, "relu_width": res.relu_width,
            "bn_parts": res.bn_parts}


def present_remedies(cfg, run, res: RemedyResult, summary: dict) -> None:
    """Long because it writes the terminal tables and report.md's sections in reading order;
    each section is a few lines over the same values."""
    depths, Dm, names = res.depths, res.depths[-1], res.remedies
    figs = ["remedies_grad_norms.png", "remedies_summary.png"]
    plot_remedy_norms(res, summary, run.figure(figs[0]))
    plot_remedy_summary(res, summary, run.figure(figs[1]))
    if summary.get("relu_width"):
        figs.append("relu_width.png")
        plot_width(summary, run.figure(figs[-1]))
    figs.append("remedies_weight_grads.png")
    plot_remedy_dw(res, run.figure(figs[-1]))
    header = ["remedy", "theory factor / layer", "measured factor", f"|dz_1|/|dz_L| D={Dm}",
              "predicted", f"|dW_1|/|dW_L| D={Dm}", f"loss D={depths[0]}", f"loss D={Dm}"]
    rows = []
    for name in names:
        e = summary["remedies"][name]
        d = e["depths"][str(Dm)]
        rows.append([e["label"], d["factor_predicted_dz"], d["factor_measured_dz"],
                     d["dz_ratio_first_last"], d["dz_ratio_first_last_predicted"],
                     d["ratio_first_last"], e["depths"][str(depths[0])]["final_loss"],
                     d["final_loss"]])
    report.print_table(f"remedies: width {res.width}, D up to {Dm}, medians over "
                       f"{len(res.seeds)} seeds; factors are geometric means over the layers",
                       header, rows)
    print(f"0.25^{Dm} = {0.25 ** Dm:.3g}; batch-norm factor limit sqrt(E[sigma'^2]/Var[sigma]) "
          f"= {summary['bn_factor_limit']:.4f}")
    wh = ["width", "theory exp(E log R/2)", "measured", "2 SE", "mean field", "mean of R",
          "batch factor"]
    wrows = [list(r[:4]) + [r[4], r[5], r[6]] for r in text.width_rows(summary)]
    if wrows:
        report.print_table(f"ReLU + He at depth {summary['relu_width']['depth']}: per-layer "
                           "factor of dL/dz per example", wh, wrows)
    per_depth = [[summary["remedies"][n]["label"], D, d["ratio_first_last"],
                  d["dz_ratio_first_last"], d["dz_ratio_first_last_predicted"],
                  d["factor_measured_dz"], d["factor_predicted_dz"], d["initial_loss"],
                  d["final_loss"], d["diverged"]]
                 for n in names for D, d in ((D, summary["remedies"][n]["depths"][str(D)])
                                             for D in depths)]
    theory_lines = "\n".join(f"- **{REMEDIES[n].label}**: {REMEDY_THEORY[n]}" for n in names)
    extra = []
    if wrows:
        extra.append(("ReLU + He at finite width", width.__doc__.split("\n\n", 1)[1].strip()
                      + "\n\n" + report.markdown_table(wh, wrows)))
    if summary.get("bn_parts"):
        b = summary["bn_parts"]
        extra.append(("Why the batch-norm estimate overshoots", bn.__doc__.split("\n\n", 1)[1]
                      .strip() + "\n\n" + report.markdown_table(
                          ["depth", "T", "T, independent W", "G / predicted", "P",
                           "measured / predicted", f"compounded over {b['pairs']} layers"],
                          [[b["depth"], b["transfer"], b["transfer_independent"],
                            b["gain_over_predicted"], b["projection"],
                            b["measured_over_predicted"], 1 / text.bn_compound(summary)]])))
    run.save_report(report.report(
        "Remedies for vanishing gradients", question(__doc__), run.reproduce(),
        [("Setup", f"mlp width {res.width}, output `{cfg.model.output}`, data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, d_out={res.d_out}), depths {depths}, seeds "
                   f"{[int(s) for s in res.seeds]}, full-batch GD lr {res.lr:g} for "
                   f"{cfg.train.steps} steps, {cfg.precision}. Batch norm uses the batch's own "
                   "statistics (training mode). dz_l = dL/dz_l; its per-unit RMS is "
                   "||dz_l||_F / sqrt(width_l). Theory factors are computed per run from the "
                   "measured E[f'^2] (and, for batch norm, the batch std of z)."),
         ("Theory", theory_lines),
         (f"At depth {Dm}", report.markdown_table(header, rows)),
         ("Per depth", report.markdown_table(
             ["remedy", "D", "|dW_1|/|dW_L|", "|dz_1|/|dz_L| (RMS)", "predicted",
              "factor meas.", "factor pred.", "initial loss", "final loss", "diverged"],
             per_depth))] + extra,
        figs, shows=text.shows(summary)))


def readme(record) -> str:
    """The README block of this experiment, from a recorded run (bpexp.docs)."""
    return text.readme(record)
