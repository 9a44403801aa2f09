"""How do gradients shrink with depth in a sigmoid MLP, and does the initialization matter?

Question: For MLPs of 1..10 hidden sigmoid layers on digits (softmax + cross-entropy), how does
||dL/dW_l|| fall from the output layer down to the input layer, at init and after full-batch
GD, for the standard, Xavier (Glorot normalized) and N(0, 1) initializations?
Theory: delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l). Since sigma' <= 1/4, the back-propagated
signal obeys ||delta_1|| <= 0.25^D prod_{k>=2} ||W_k||_2 ||delta_L|| (D hidden layers;
0.25^10 ~ 9.5e-7); tanh and relu have f' <= 1, so for them only the ||W|| product remains.
Glorot & Bengio (2010): per layer the gradient variance changes by n Var(W) E[f'(z)^2], so the
norms by sqrt(n Var(W) E[f'(z)^2]) (n = fan-out of W_{l+1}); standard init U[+-1/sqrt(n)]
has n Var(W) = 1/3, Xavier 1, N(0, 1) n = 32 (saturating sigmoids then make E[f'^2] small).
Expected: at init the norms fall geometrically towards the input, by about x0.13 per layer
for the standard init and x0.23 for Xavier (E[f'^2] ~ 0.055); the measured ratios match the
Glorot prediction within 10-20% between hidden layers; the weight-gradient ratios leave the x2
band almost only at the first pair, where dW_1 = dz_1 X^T meets the z-scored input (mean 0 per
feature) while the sigmoid activations above share a positive mean (the prediction's
||a_{l-1}|| / ||a_l|| treats dz and a as independent across examples); the bound
holds (loosely); deep standard/Xavier nets barely move in 100 GD steps (loss stays at the
class-frequency entropy 2.295, just under ln 10) while
shallow ones train, and N(0, 1) keeps the largest gradients in the deep nets.

The remedies (ReLU + He, Xavier, skip connections, batch norm) are their own experiment:
``+experiment=remedies``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bpexp import models, report
from bpexp.theory import init_variance
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.depth_sweep.figures import (_end_ratios, after_title, first_note,
                                                   grad_title, loss_title,
                                                   plot_activation, plot_final_loss,
                                                   plot_grad_norms, plot_ratios, ratio_title)
from bpexp.experiments.depth_sweep.text import readme, shows  # noqa: F401
from bpexp.experiments.depth_sweep.run import Result, _factor, compute, dataset  # noqa: F401
from bpexp.experiments.depth_sweep.theory import fprime_max

USES = ("model", "data", "optimizer", "train", "sweep")  # make.check builds them first


@dataclass
class Params:
    name: str = "depth_sweep"
    depths: list = field(default_factory=lambda: list(range(1, 11)))  # hidden layers D
    widths: list = field(default_factory=lambda: [32])  # hidden width; the first is the headline
    inits: list = field(default_factory=lambda: ["standard", "xavier", "normal"])
    normal_scale: float = 1.0    # the "normal" scheme is N(0, normal_scale^2)


def check_padded_engine(cfg, name: str) -> None:
    """The padded engine trains mlps with full-batch GD only (one line otherwise)."""
    if cfg.model.name != "mlp":
        raise UserError(f"model.name={cfg.model.name!r} is not supported by {name}; "
                        "allowed: mlp")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not supported by {name}; "
                        "allowed: gd (full-batch)")
    if cfg.train.batch_size not in (0, None) and (cfg.data.m == 0
                                                  or cfg.train.batch_size < cfg.data.m):
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not supported by "
                        f"{name}; allowed: 0 (full batch)")


def check_positive_ints(key: str, vals) -> None:
    if not (vals and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                         for v in vals)):
        raise UserError(f"experiment.{key}={vals!r} is not allowed; "
                        "allowed: a non-empty list of ints >= 1")


def validate(cfg):
    P = cfg.experiment
    check_padded_engine(cfg, "depth_sweep")
    for key, vals in (("depths", P.depths), ("widths", P.widths)):
        check_positive_ints(key, vals)
    if not (P.inits and all(i in models.INITS for i in P.inits)
            and len(set(P.inits)) == len(P.inits)):
        raise UserError(f"experiment.inits={P.inits!r} is not allowed; allowed: a non-empty "
                        f"list of distinct ones of {', '.join(models.INITS)}")
    # inf would make every weight of the normal runs inf: nothing left to measure
    if not (math.isfinite(P.normal_scale) and P.normal_scale > 0):
        raise UserError(f"experiment.normal_scale={P.normal_scale!r} is not allowed; "
                        "allowed: a finite number > 0")


def _depth_entry(M, ix, D, fmax) -> dict:
    """The summary of one (width, depth, init): medians over seeds."""
    L = D + 1

    def med(a):
        return np.median(a, axis=0)

    return {"grad_norms_init": med(M["grad_norm_init"][ix])[:L],
            "grad_norms_final": med(M["grad_norm_final"][ix])[:L],
            "dz_norms_init": med(M["delta_norm_init"][ix])[:L],
            "dz_norms_final": med(M["delta_norm_final"][ix])[:L],
            "ratio_measured": med(M["ratio_measured"][ix])[:D],
            "ratio_predicted": med(M["ratio_predicted"][ix])[:D],
            "ratio_measured_dz": med(M["ratio_measured_dz"][ix])[:D],
            "ratio_predicted_weight": med(M["ratio_predicted_weight"][ix])[:D],
            "ratio_measured_final": med(M["ratio_measured_final"][ix])[:D],
            "fprime_sq_init": med(M["fprime_sq_init"][ix])[:D],
            "factor_measured": _factor(M["ratio_measured"][ix], D),
            "factor_predicted": _factor(M["ratio_predicted"][ix], D),
            "factor_measured_dz": _factor(M["ratio_measured_dz"][ix], D),
            "factor_predicted_weight": _factor(M["ratio_predicted_weight"][ix], D),
            "delta_attenuation": float(np.median(M["delta_attenuation"][ix])),
            "bound_with_weight_norms": float(np.median(M["bound"][ix])),
            "bound_holds": bool(np.all(M["delta_attenuation"][ix] <= M["bound"][ix])),
            "fprime_max_pow_depth": fmax ** D,
            "initial_loss": float(np.median(M["loss"][ix][:, 0])),
            "final_loss": float(np.median(M["loss"][ix][:, -1])),
            "final_loss_iqr": [float(q) for q in np.percentile(M["loss"][ix][:, -1], [25, 75])],
            "final_loss_seeds": M["loss"][ix][:, -1]}


def save(cfg, run, res: Result) -> dict:
    """metrics.zarr: every Result array with its dims and coordinates (dataset()). The
    summary: per width, init and depth, medians over seeds."""
    M, depths, widths, inits, scale = res.metrics(), res.depths, res.widths, res.inits, res.scale
    run.save_metrics(dataset(res, cfg.train.steps))

    fmax = fprime_max(cfg.model.activation)
    per_width = {}
    for wi, h in enumerate(widths):
        inits_out = {}
        for ii, scheme in enumerate(inits):
            deps = {str(D): _depth_entry(M, (wi, di, ii), D, fmax)
                    for di, D in enumerate(depths)}
            fin = M["fprime_sq_init"][wi, :, ii]
            inits_out[scheme] = {
                "init_scale": scale[scheme],
                "n_var_w_hidden": h * init_variance(scheme, h, h, scale[scheme]),
                "mean_fprime_sq_init": float(np.nanmean(fin)),
                "depths": deps}
        per_width[str(h)] = {"inits": inits_out}
    return {"activation": cfg.model.activation, "output": cfg.model.output,
            "data": cfg.data.name, "m": res.m, "n": res.n, "d_out": res.d_out,
            "widths": widths, "depths": depths, "seeds": res.seeds, "steps": cfg.train.steps,
            "lr": cfg.optimizer.lr, "width": widths[0],
            "inits": per_width[str(widths[0])]["inits"], "by_width": per_width,
            "bound": {"activation": cfg.model.activation, "fprime_max": fmax,
                      "fprime_max_pow_depth": {str(D): fmax ** D for D in depths},
                      "formula": ("||dL/dz_1|| / ||dL/dz_L|| <= fprime_max^D "
                                  "prod_{l=2..D+1} ||W_l||_2"),
                      "note": ("fprime_max = 0.25 for sigmoid; 1 for tanh and relu, whose bound is "
                               "the ||W|| product alone"),
                      "holds_everywhere": bool(np.all(M["delta_attenuation"] <= M["bound"]))},
            "class_entropy": res.class_entropy,
            "ratio_outside_band": outside_band(res.ratio_measured[0], res.ratio_predicted_weight[0],
                                               res.ratio_measured_dz[0], res.ratio_predicted[0],
                                               inits)}


def outside_band(meas_w, pred_w, meas_dz, glorot, inits, band=2.0) -> dict:
    """Ratios measured / predicted outside [1/band, band], over every depth, init, seed and
    layer pair (``[depth, init, seed, pair]``, the headline width): counts for the weight and
    the dL/dz ratios, how many of the weight ones are the first pair (dW_1 = dz_1 X^T) or the
    last (below the output; a net of depth 1 has one pair, counted as first), and per init
    the count and the median measured / predicted at the first pair."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = meas_w / pred_w
        rw, rz = np.abs(np.log(r)), np.abs(np.log(meas_dz / glorot))
    ok = np.isfinite(rw)
    D = np.sum(np.isfinite(pred_w), axis=-1, keepdims=True)        # pairs of each net
    pair = np.arange(pred_w.shape[-1])
    first, last = pair == 0, (pair == D - 1) & (pair > 0)
    out = ok & (rw > np.log(band))
    return {"band": band, "total": int(ok.sum()), "count": int(out.sum()),
            "at_first": int((out & first).sum()), "at_last": int((out & last).sum()),
            "dz_count": int((np.isfinite(rz) & (rz > np.log(band))).sum()),
            "by_init": {k: int(out[:, i].sum()) for i, k in enumerate(inits)},
            "first_pair_ratio_median": {k: float(np.nanmedian(r[:, i, :, 0]))
                                        for i, k in enumerate(inits)}}


# ---------------------------------------------------------------- the remedies side by side


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    """Long because it writes the terminal table and report.md's sections in reading order;
    each section is a few lines over the same values."""
    P = cfg.experiment
    act, out = cfg.model.activation, cfg.model.output
    steps, lr = cfg.train.steps, cfg.optimizer.lr
    depths, widths, inits, seeds = res.depths, res.widths, res.inits, res.seeds
    # the figures show the headline width
    figs = ["activation.png", "grad_norms_vs_layer.png", "final_loss_vs_depth.png",
            "ratio_measured_vs_predicted.png", "grad_norms_after_training.png"]
    plot_activation(act, run.figure(figs[0]))
    plot_grad_norms(depths, inits, res.grad_norm_init[0], res.ratio_predicted_weight[0], act,
                    "at init", widths[0], grad_title(summary), run.figure(figs[1]))
    plot_final_loss(depths, inits, res.loss[0][..., 0], res.loss[0][..., -1], out, steps, lr,
                    res.class_entropy, loss_title(summary), run.figure(figs[2]))
    plot_ratios(inits, res.ratio_measured_dz[0], res.ratio_predicted[0], res.ratio_measured[0],
                res.ratio_predicted_weight[0], act, widths[0], ratio_title(summary),
                run.figure(figs[3]), first_note(summary))
    plot_grad_norms(depths, inits, res.grad_norm_final[0], None, act, f"after {steps} steps",
                    widths[0], after_title(summary), run.figure(figs[4]))

    Dm, fmax = depths[-1], fprime_max(act)
    header = ["init", "n Var(W)", "E f'(z)^2", "Glorot", "dz ratio", "dW pred.", "dW ratio",
              "|dz_1|/|dz_L|", f"bound {fmax:g}^D*prod|W|", f"loss D={depths[0]}",
              f"loss D={Dm}"]
    rows = []
    for scheme in inits:
        e = summary["inits"][scheme]
        d = e["depths"][str(Dm)]
        rows.append([scheme, e["n_var_w_hidden"], e["mean_fprime_sq_init"],
                     d["factor_predicted"], d["factor_measured_dz"],
                     d["factor_predicted_weight"], d["factor_measured"],
                     d["delta_attenuation"], d["bound_with_weight_norms"],
                     e["depths"][str(depths[0])]["final_loss"], d["final_loss"]])
    title = (f"depth_sweep: {act} MLP width {widths[0]}, D={Dm}, per-layer factors at init "
             f"(geometric means; medians over {len(seeds)} seeds); "
             f"{fmax:g}^{Dm} = {fmax ** Dm:.3g}")
    report.print_table(title, header, rows)
    print("Glorot = sqrt(n Var(W) E[f'(z)^2]) | dz ratio = measured RMS(dL/dz_l)/RMS(dL/dz_l+1) "
          "| dW pred./ratio = predicted/measured ||dW_l||/||dW_l+1||")
    print(f"bound ||dz_1||/||dz_L|| <= {fmax:g}^D prod ||W_l||_2 holds in every run: "
          f"{summary['bound']['holds_everywhere']}")
    per_depth = []
    for scheme in inits:
        for D in depths:
            d = summary["inits"][scheme]["depths"][str(D)]
            per_depth.append([scheme, D, d["grad_norms_init"][0], d["grad_norms_init"][-1],
                              d["factor_predicted"], d["factor_measured_dz"],
                              d["factor_predicted_weight"], d["factor_measured"],
                              d["delta_attenuation"], d["bound_with_weight_norms"],
                              d["initial_loss"], d["final_loss"]])
    after = [[sc, Dm, *(float(np.median(v)) for v in _end_ratios(res, 0, depths.index(Dm), i, Dm)),
              summary["inits"][sc]["depths"][str(Dm)]["final_loss"]]
             for i, sc in enumerate(inits)]
    note = ("f'max = 0.25 for the sigmoid (theory.sigmoid_bound)." if act == "sigmoid" else
            f"Activation {act}: f'max = 1, not 0.25, so the 0.25^D bound does not apply; the "
            "bound column is the ||W||_2 product alone.")
    run.save_report(report.report(
        "Depth sweep: vanishing gradients", question(__doc__),
        run.reproduce(),
        [("Setup", f"mlp, {act} hidden layers, output `{out}`, data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, d_out={res.d_out}), depths {depths} (D hidden "
                   f"layers, L = D + 1 weight matrices), widths {widths}, inits {inits} (normal = "
                   f"N(0, {P.normal_scale:g}^2)), seeds {[int(s) for s in seeds]}, full-batch GD "
                   f"lr {lr:g} for {steps} steps, {cfg.precision}. dz_l = dL/dz_l (the "
                   "back-propagated delta_l).\n\n"
                   "Per layer pair (l, l+1) at init: *Glorot* = sqrt(n Var(W_{l+1}) "
                   "E[f'(z_l)^2]) (theory.glorot_ratio, theory.init_variance, E[f'^2] measured "
                   "on the pre-activations); *dL/dz ratio measured* = per-unit RMS of dz_l over "
                   "that of dz_{l+1}, the quantity Glorot's factor predicts; *dW ratio measured* "
                   "= ||dL/dW_l||_F / ||dL/dW_{l+1}||_F; *dW ratio predicted* = Glorot x "
                   "sqrt(h/n) x ||a_{l-1}|| / ||a_l|| (width change below the output, input X vs "
                   "sigmoid activations at the first layer; equal to Glorot between hidden "
                   "layers). Table columns are geometric means over the layers of the deepest "
                   "net. Bound: ||dz_1|| / ||dz_L|| <= f'max^D prod_{l>=2} ||W_l||_2 "
                   "(rigorous). " + note),
         (f"Theory vs measurement (D={Dm}, width {widths[0]})",
          report.markdown_table(header, rows)),
         ("Per depth", report.markdown_table(
             ["init", "D", "||dW_1|| init", "||dW_L|| init", "Glorot", "dz ratio meas.",
              "dW ratio pred.", "dW ratio meas.", "|dz_1|/|dz_L|", "bound", "initial loss",
              "final loss"], per_depth)),
         ("After training", "grad_norms_after_training.png; deepest net, medians over "
          "seeds. The back-propagated dL/dz still falls towards the input as at init, but the "
          "weight-gradient norms of the nets that stopped learning become nearly flat across "
          "layers. Since dW_l = delta_l a_{l-1}^T, the activations make up the difference; a "
          "plausible reading is that once the output bias fits the class frequencies only the "
          "input-dependent part of a_{l-1} contributes, and that part shrinks layer by layer in "
          "the forward pass (not measured here).\n\n" + report.markdown_table(
              ["init", "D", "|dW_1|/|dW_L| init", "|dW_1|/|dW_L| final", "|dz_1|/|dz_L| init",
               "|dz_1|/|dz_L| final", "final loss"], after))],
        figs, shows=shows(summary)))


from bpexp.experiments.depth_sweep.page import page  # noqa: E402,F401  (the run page's figures)
