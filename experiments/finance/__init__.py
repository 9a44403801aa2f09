"""Finance: gradient descent on the negative Sharpe ratio, with real market data.

Question: the lecture's analogy made real (weights = strategy parameters, loss = negative
Sharpe ratio, learning rate = how aggressively the strategy changes): does GD find the best
portfolio of the Fama-French factors, and what does GD on a trading rule for the S&P 500 learn
in sample and keep out of sample, net of transaction costs and without look-ahead?
Theory: S(w) = sqrt(12) w^T mu / sqrt(w^T Sigma w) is maximized by the tangency portfolio
w* ∝ Sigma^{-1} mu with S* = sqrt(12 mu^T Sigma^{-1} mu). S(c w) = S(w) for c > 0, so
w . grad S = 0 (Euler), the Hessian has w in its null space and scales as 1/|w|^2: GD steps are
orthogonal to w, every step grows |w|^2 by lr^2 |g|^2, and the effective step is lr / |w|^2.
A rule position_t = tanh(theta . x_{t-1}) fitted on one window and tested on the next
(walk-forward) maximizes in-sample Sharpe; with non-stationary, limited data nothing promises
the out-of-sample Sharpe follows. |Δposition| is not differentiable: train on the smooth
c (sqrt(Δ^2 + eps) - sqrt(eps)), evaluate with the exact c |Δ|.
Expected: hand dS/dw == jax.grad to ~1e-16; GD from every random start reaches S* to 1e-6 with
cosine 1 to w*, for learning rates up to 8 x 2/lambda_max (the growing |w| shrinks the step);
the strategy's in-sample Sharpe rises with training and with lr, its out-of-sample Sharpe does
not; a transaction cost in training lowers turnover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.finance.figures import (
    _vec,
    fig_contours,
    fig_equity,
    fig_pf_gd,
    fig_sharpe_vs_lr,
    fig_sharpe_vs_step,
    fig_windows,
    headline_windows,
    takeaways,
)
from bpexp.experiments.finance.run import Result, _stats
from bpexp.experiments.finance.run import compute  # noqa: F401  (the experiment contract)
from bpexp.experiments.finance.theory import TOL_AD, TOL_COS, TOL_FD, TOL_SHARPE
from bpexp.experiments.finance.words import readme, shows  # noqa: F401  (readme: the README)

PRECISION = "float64"
USES = ()  # loads its two data sets itself: ff_factors (portfolio) and sp500 (strategy)


@dataclass
class Params:
    name: str = "finance"
    # portfolio part (ff_factors: Mkt-RF, SMB, HML monthly)
    starts: int = 8              # random unit-norm starts w0
    pf_steps: int = 1500         # GD steps on -Sharpe(w)
    pf_lr: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 8.0])  # x 2/lambda_max(H)
    pair: list = field(default_factory=lambda: [0, 2])  # the two factors of the contour figure
    # strategy part (sp500 daily)
    days: int = 0                # most recent trading days used (0 = all 4831)
    train_days: int = 756        # walk-forward: fit on 3 years ...
    test_days: int = 252         # ... test on the next year, roll forward by test_days
    lrs: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1])
    lr: float = 0.01             # the lr shown per window and in the equity curves
    seeds: int = 3               # random theta0 per window, shared by every lr
    steps: int = 200             # GD steps on -Sharpe of net returns
    record_every: int = 10
    init_scale: float = 0.1      # theta0 ~ init_scale N(0, I) ...
    init_position: float = 0.5   # ... plus a bias atanh(0.5): start near half buy-and-hold
    cost: float = 0.0005         # transaction cost per unit |Δposition| (5 bp)
    eps: float = 1.0e-6          # smoothing of |Δ| in training


def validate(cfg):
    P = cfg.experiment
    ints = {"starts": (1, 256), "pf_steps": (1, 100_000), "seeds": (1, 64),
            "steps": (1, 100_000), "record_every": (1, 100_000), "train_days": (20, 10_000),
            "test_days": (5, 10_000), "days": (0, 100_000)}
    for k, (lo, hi) in ints.items():
        v = getattr(P, k)
        if not lo <= v <= hi:
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: an int in [{lo}, {hi}]")
    for k in ("pf_lr", "lrs"):
        v = getattr(P, k)
        if not (v and all(isinstance(x, (int, float)) and 0 < x < math.inf for x in v)):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: a non-empty list of "
                            "positive numbers")
    if not any(math.isclose(P.lr, x, rel_tol=1e-12) for x in P.lrs):
        raise UserError(f"experiment.lr={P.lr!r} is not allowed; allowed: one of experiment.lrs "
                        f"{P.lrs}")
    if not (len(P.pair) == 2 and P.pair[0] != P.pair[1] and all(0 <= i < 3 for i in P.pair)):
        raise UserError(f"experiment.pair={P.pair!r} is not allowed; allowed: two different "
                        "factor indices in 0..2")
    for k in ("init_scale", "eps"):
        if not 0 < getattr(P, k) < math.inf:
            raise UserError(f"experiment.{k}={getattr(P, k)!r} is not allowed; allowed: > 0")
    if not -1 < P.init_position < 1:
        raise UserError(f"experiment.init_position={P.init_position!r} is not allowed; allowed: "
                        "in (-1, 1)")
    if not 0 <= P.cost < 1:
        raise UserError(f"experiment.cost={P.cost!r} is not allowed; allowed: in [0, 1)")
    days = P.days or 4831
    if P.train_days + P.test_days > days:
        raise UserError(f"experiment.train_days={P.train_days} + test_days={P.test_days} is more "
                        f"than the {days} days used; allowed: a sum <= experiment.days")


# ---------------------------------------------------------------- portfolio (pure)


# ---------------------------------------------------------------- strategy (pure)


# ---------------------------------------------------------------- compute


# ---------------------------------------------------------------- save


def save(cfg, run, res: Result) -> dict:
    """Long because it writes the summary's sections (schema in the README) in one place, in
    the schema's order."""
    P = cfg.experiment
    gap, first, cos, norm_err = _stats(res)
    K = len(res.windows)
    win_names = [f"{res.days[b]}..{res.days[c - 1]}" for _, b, c in res.windows]
    run.save_metrics(xr.Dataset(
        {"pf_sharpe": (("pf_lr", "start", "pf_step"), res.pf_sharpe),
         "pf_norm": (("pf_lr", "start", "pf_step"), res.pf_norm),
         "pf_grad_sq": (("pf_lr", "start", "pf_step"), res.pf_gg),
         "pf_w_final": (("pf_lr", "start", "asset"), res.pf_wT),
         "pf_w0": (("start", "asset"), res.w0),
         "w_star": (("asset",), res.w_star),
         "hessian_eigenvalues": (("eig",), res.hess_eig),
         "pair_path": (("start", "pf_step", "pair_asset"), res.pair_path),
         "pair_surface": (("pair_y", "pair_x"), res.pair_surface),
         "in_sharpe": (("window", "lr", "seed", "train_cost", "record"), res.ins),
         "out_sharpe": (("window", "lr", "seed", "train_cost", "record"), res.outs),
         "theta": (("window", "lr", "seed", "train_cost", "feature"), res.theta),
         "turnover_out": (("window", "lr", "seed", "train_cost"), res.turnover),
         "out_sharpe_gross": (("window", "lr", "seed", "train_cost"), res.out_gross),
         "buy_hold_in": (("window",), res.bh_in), "buy_hold_out": (("window",), res.bh_out),
         "theta0": (("window", "seed", "feature"), res.theta0),
         "position_in": (("window", "seed", "day_in"), res.pos_in),
         "position_out": (("window", "seed", "day_out"), res.pos_out),
         "return_in": (("window", "day_in"), res.r_in),
         "return_out": (("window", "day_out"), res.r_out)},
        coords={"pf_lr": res.pf_lr, "pf_lr_frac": ("pf_lr", res.pf_lr_frac),
                "start": np.arange(len(res.w0)), "pf_step": np.arange(res.pf_sharpe.shape[-1]),
                "asset": res.assets, "pair_asset": [res.assets[i] for i in res.pair],
                "pair_x": res.pair_grid, "pair_y": res.pair_grid,
                "window": np.arange(K), "test_period": ("window", win_names),
                "lr": res.lrs, "seed": np.arange(P.seeds), "train_cost": res.train_costs,
                "record": res.record, "feature": res.features,
                "day_in": np.arange(P.train_days), "day_out": np.arange(P.test_days)}))
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    fin_in, fin_out = res.ins[..., -1], res.outs[..., -1]                # [K, L, S, C]
    per_window = [{"train": f"{res.days[a]}..{res.days[b - 1]}",
                   "test": f"{res.days[b]}..{res.days[c - 1]}",
                   "in_sharpe": float(fin_in[k, li, :, 1].mean()),
                   "out_sharpe": float(fin_out[k, li, :, 1].mean()),
                   "buy_hold_in": float(res.bh_in[k]), "buy_hold_out": float(res.bh_out[k]),
                   "turnover_out": float(res.turnover[k, li, :, 1].mean())}
                  for k, (a, b, c) in enumerate(res.windows)]
    cost_effect = {name: {"turnover_out": float(res.turnover[:, li, :, c].mean()),
                          "out_sharpe_gross": float(res.out_gross[:, li, :, c].mean()),
                          "out_sharpe_net": float(fin_out[:, li, :, c].mean()),
                          "in_sharpe_net": float(fin_in[:, li, :, c].mean())}
                   for c, name in enumerate(["trained_without_cost", "trained_with_cost"])}
    i_, j_ = res.pair
    return {
        "portfolio": {
            "data": "ff_factors", "assets": res.assets, "months": len(res.months),
            "period": f"{res.months[0]}..{res.months[-1]}",
            "sharpe": "sqrt(12) mean / std (population std), monthly excess returns",
            "tangency_weights_unit": res.w_star,
            "tangency_weights_sum1": res.w_star / res.w_star.sum(),
            "tangency_sharpe_closed_form": res.s_star,
            "tangency_sharpe_of_weights": res.s_of_w_star,
            "gd": {"starts": len(res.w0), "steps": res.pf_sharpe.shape[-1] - 1,
                   "lr": res.pf_lr, "lr_times_lambda_max_over_2": res.pf_lr_frac,
                   "final_sharpe_gap_max": gap[..., -1].max(-1),
                   "final_cosine_min": cos.min(-1),
                   "steps_to_1e-6_median": [float(np.median(f)) if (f >= 0).all() else None
                                            for f in first],
                   "steps_to_1e-6_max": [int(f.max()) if (f >= 0).all() else None
                                         for f in first],
                   "final_norm_max": res.pf_norm[..., -1].max(-1),
                   "reached": bool((gap[..., -1] < TOL_SHARPE).all()
                                   and (cos > 1 - TOL_COS).all())},
            "scale_invariance": {
                "hessian_eigenvalues_at_unit_tangency": res.hess_eig,
                "null_eigenvector_cosine_with_w_star": res.hess_null_cos,
                "lambda_max_2w_times_4_over_lambda_max_w": res.hess_scale,
                "euler_w_dot_grad_rel_max": res.euler,
                "norm_growth_identity_rel_err": norm_err},
            "gradient_check": res.grad_check,
            "pair": {"assets": [res.assets[i_], res.assets[j_]],
                     "tangency_weights_unit": res.pair_w_star,
                     "tangency_sharpe": res.pair_s_star, "lr": res.pair_lr,
                     "final_cosine_min": float(np.min(
                         res.pair_path[:, -1] @ res.pair_w_star
                         / np.linalg.norm(res.pair_path[:, -1], axis=-1)))}},
        "strategy": {
            "data": "sp500", "days": len(res.days), "period": f"{res.days[0]}..{res.days[-1]}",
            "features": res.features, "position": "tanh(theta . z_t), z_t from days < t",
            "sharpe": "sqrt(252) mean / std of net daily returns",
            "cost": P.cost, "eps": P.eps, "train_days": P.train_days,
            "test_days": P.test_days, "windows": K, "lrs": res.lrs, "seeds": P.seeds,
            "steps": P.steps, "lr": float(res.lrs[li]), "per_window": per_window,
            "by_lr": {"in_sharpe_mean": fin_in[..., 1].mean((0, 2)),
                      "out_sharpe_mean": fin_out[..., 1].mean((0, 2)),
                      "in_sharpe_gain_mean": (fin_in - res.ins[..., 0])[..., 1].mean((0, 2)),
                      "out_sharpe_gain_mean": (fin_out - res.outs[..., 0])[..., 1].mean((0, 2))},
            "buy_hold_out_mean": float(res.bh_out.mean()),
            "transaction_cost": cost_effect,
            "smooth_cost_max_gap_per_day": res.smooth_gap,
            "lookahead_max_change_of_past_positions": res.lookahead,
            "grad_vs_finite_differences_rel_err": res.strat_fd}}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    """Long because it writes the terminal table and report.md's sections in reading order;
    each section is a few lines over the same values."""
    P = cfg.experiment
    pf, st = summary["portfolio"], summary["strategy"]
    gd, si = pf["gd"], pf["scale_invariance"]
    figs = ["portfolio_contours.png", "portfolio_gd.png", "sharpe_vs_lr.png",
            "sharpe_vs_step.png", "equity_curves.png", "equity_windows.png"]
    t = takeaways(summary)
    fig_contours(res, t["portfolio_contours"], run.figure(figs[0]))
    fig_pf_gd(res, _stats(res)[1], t["portfolio_gd"], run.figure(figs[1]))
    fig_sharpe_vs_lr(res, t["sharpe_vs_lr"], run.figure(figs[2]))
    fig_sharpe_vs_step(res, t["sharpe_vs_step"], run.figure(figs[3]))
    fig_equity(res, P, headline_windows(st["per_window"]), t["equity_curves"],
               run.figure(figs[4]))
    fig_windows(res, summary, t["equity_windows"], run.figure(figs[5]))

    hdr = ["quantity", "measured", "theory / reference"]
    rows_pf = [
        ["tangency Sharpe S(w*) (grads.sharpe)", f"{pf['tangency_sharpe_of_weights']:.12f}",
         f"closed form sqrt(12 mu'Σ^-1 mu) = {pf['tangency_sharpe_closed_form']:.12f}"],
        *[[f"GD lr = {f:g} x 2/λmax: steps to |S - S*| < 1e-6 (median / max)",
           f"{md:g} / {mx}", "more as lr grows past the edge (|w| grows)"]
          for f, md, mx in zip(gd["lr_times_lambda_max_over_2"], gd["steps_to_1e-6_median"],
                               gd["steps_to_1e-6_max"])],
        *[[f"GD lr = {f:g} x 2/λmax: max |S_T - S*|", g, f"< {TOL_SHARPE:g}"]
          for f, g in zip(gd["lr_times_lambda_max_over_2"], gd["final_sharpe_gap_max"])],
        *[[f"GD lr = {f:g} x 2/λmax: min cos(w_T, w*)", c, "1"]
          for f, c in zip(gd["lr_times_lambda_max_over_2"], gd["final_cosine_min"])],
        *[[f"GD lr = {f:g} x 2/λmax: max |w_T| (|w_0| = 1)", n, "grows; lr/|w|^2 shrinks"]
          for f, n in zip(gd["lr_times_lambda_max_over_2"], gd["final_norm_max"])],
        ["Hessian of -S at unit w*: eigenvalues", " ".join(f"{e:.3g}" for e in
                                                           si["hessian_eigenvalues_at_unit_tangency"]),
         "one 0 (along w), the rest > 0"],
        ["|cos(null eigenvector, w*)|", si["null_eigenvector_cosine_with_w_star"], "1"],
        ["λmax(H(2w)) x 4 / λmax(H(w))", si["lambda_max_2w_times_4_over_lambda_max_w"],
         "1 (H scales as 1/|w|^2)"],
        ["max |w·∇S| / (|w||∇S|) at the starts", si["euler_w_dot_grad_rel_max"], "0 (Euler)"],
        ["|w_T|^2 - |w_0|^2 vs lr^2 Σ|g_t|^2, rel err", si["norm_growth_identity_rel_err"], "0"],
        ["hand dS/dw vs jax.grad, rel err", pf["gradient_check"]["rel_err_autodiff"],
         f"< {TOL_AD:g}"],
        ["hand dS/dw vs finite differences", pf["gradient_check"]["rel_err_fd"], f"< {TOL_FD:g}"],
        ["hand dS/dw vs moment form μ/σ - (w'μ)Σw/σ^3", pf["gradient_check"]["rel_err_moment_form"],
         f"< {TOL_AD:g}"]]
    report.print_table(f"finance, portfolio: Fama-French {', '.join(res.assets)} monthly "
                       f"{pf['period']}", hdr, rows_pf)
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    hdr_w = ["test year", "in-sample Sharpe", "out-of-sample Sharpe", "buy & hold out",
             "turnover/day out"]
    rows_w = [[w["test"], w["in_sharpe"], w["out_sharpe"], w["buy_hold_out"], w["turnover_out"]]
              for w in st["per_window"]]
    report.print_table(f"finance, strategy: S&P 500 walk-forward, lr = {res.lrs[li]:g}, cost "
                       f"{P.cost:g}/unit, mean of {P.seeds} seeds (net Sharpe)", hdr_w, rows_w)
    hdr_l = ["lr", "in-sample Sharpe", "out-of-sample Sharpe", "in gain over training",
             "out gain over training"]
    b = st["by_lr"]
    rows_l = [[float(lr), a, o, ga, go] for lr, a, o, ga, go in
              zip(res.lrs, b["in_sharpe_mean"], b["out_sharpe_mean"], b["in_sharpe_gain_mean"],
                  b["out_sharpe_gain_mean"])]
    report.print_table("finance, strategy: mean over windows and seeds, trained with cost",
                       hdr_l, rows_l)
    tc = st["transaction_cost"]
    rows_c = [[k.replace("_", " "), v["turnover_out"], v["out_sharpe_gross"], v["out_sharpe_net"]]
              for k, v in tc.items()]
    hdr_c = ["rule", "turnover/day out", "out Sharpe gross", "out Sharpe net"]
    report.print_table(f"finance, strategy: effect of the transaction cost (lr {res.lrs[li]:g})",
                       hdr_c, rows_c)
    checks = [["max |Δ past position| after changing future prices",
               st["lookahead_max_change_of_past_positions"], "0 exactly (no look-ahead)"],
              ["max |smooth - exact| cost per day", st["smooth_cost_max_gap_per_day"],
               f"<= cost sqrt(eps) = {P.cost * math.sqrt(P.eps):.2g}"],
              ["strategy jax.grad vs finite differences", st["grad_vs_finite_differences_rel_err"],
               "< 1e-6"]]
    report.print_table("finance, strategy: checks", hdr, checks)
    bl = st["by_lr"]
    run.save_report(report.report(
        "Finance: gradient descent on the negative Sharpe ratio", question(__doc__),
        run.reproduce(),
        [("Portfolio (Fama-French factors)",
          f"{pf['months']} months {pf['period']} of {', '.join(res.assets)} excess returns "
          f"(arch.data.frenchdata). Loss -S(w) with S = sqrt(12) mean/std (population std). "
          f"The tangency portfolio (unit norm) is {_vec(res.w_star)}, sum-to-one "
          f"{_vec(pf['tangency_weights_sum1'])}, S* = {res.s_star:.6f}. GD from {len(res.w0)} "
          f"random unit-norm starts, {gd['steps']} steps, learning rates "
          f"{_vec(res.pf_lr_frac)} x 2/λmax of the Hessian at the unit tangency.\n\n"
          "**Why the Hessian is singular.** S(cw) = S(w) for every c > 0, so along the ray of "
          "w the loss is flat: w is an eigenvector of the Hessian with eigenvalue 0, and by "
          "Euler's theorem w · ∇S = 0. Two consequences for the step size: (1) every GD step "
          "is orthogonal to w, so |w_{t+1}|^2 = |w_t|^2 + lr^2 |g_t|^2 and the norm only grows; "
          "(2) the curvature across the ray scales as 1/|w|^2, so the step that matters is "
          "lr/|w|^2. A too-large lr first throws w outward, which shrinks its own effective "
          "step: GD on a scale-free loss does not diverge, it slows down (compare the "
          "steps-to-1e-6 across learning rates). Newton's method is undefined (H is singular); "
          "the scale of w is arbitrary and must be fixed by a normalization (here |w| = 1 or "
          "sum w = 1) when weights are reported.\n\n" + report.markdown_table(hdr, rows_pf)),
         ("Strategy (S&P 500, walk-forward)",
          f"{st['days']} trading days {st['period']} (arch.data.sp500). position_t = "
          f"tanh(theta · z_t), z_t = the features {', '.join(res.features[:-1])} of days < t, "
          f"z-scored with the training window's statistics, plus a bias. Net return = "
          f"position_t r_t - {P.cost:g} |Δposition_t| (training: the smooth "
          f"c(sqrt(Δ^2+{P.eps:g}) - sqrt({P.eps:g}))). Fit {P.train_days} days, test the next "
          f"{P.test_days}, roll forward: {st['windows']} windows; GD {P.steps} steps from "
          f"{P.seeds} seeds of theta0 ~ {P.init_scale:g} N(0, I) + bias atanh("
          f"{P.init_position:g}) (a start near holding {P.init_position:g} of the index) at "
          "each lr of "
          f"{_vec(res.lrs)}, all in one vmapped call.\n\nPer window at lr {res.lrs[li]:g}:\n\n"
          + report.markdown_table(hdr_w, rows_w)
          + "\nBy learning rate (mean over windows and seeds):\n\n"
          + report.markdown_table(hdr_l, rows_l)
          + "\nIn-sample Sharpe rises with training and with lr (from "
          f"{bl['in_sharpe_mean'][0]:.3f} to {max(bl['in_sharpe_mean']):.3f}); out of sample it "
          f"ranges {min(bl['out_sharpe_mean']):.3f}..{max(bl['out_sharpe_mean']):.3f}, against "
          f"buy and hold {st['buy_hold_out_mean']:.3f} on average.\n\nTransaction cost:\n\n"
          + report.markdown_table(hdr_c, rows_c) + "\nChecks:\n\n"
          + report.markdown_table(hdr, checks))],
        figs, shows=shows(summary)))


