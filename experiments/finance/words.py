"""The finance experiment's sentences, computed from its summary alone: report.md's "What this
run shows" and the README's generated block."""

from __future__ import annotations

from bpexp import report


def _v(x, d=3):
    return "[" + ", ".join(f"{a:.{d}f}" for a in x) + "]"


def shows(summary: dict) -> list[str]:
    """Four or five sentences: the portfolio found, why a large lr slows it, in vs out of
    sample, the transaction cost, look-ahead."""
    pf, st = summary["portfolio"], summary["strategy"]
    gd, si = pf["gd"], pf["scale_invariance"]
    fr, med = gd["lr_times_lambda_max_over_2"], gd["steps_to_1e-6_median"]
    out = [(f"GD on -Sharpe of {', '.join(pf['assets'])} "
            + ("reaches" if gd["reached"] else "does not always reach")
            + f" the closed-form tangency portfolio from all {gd['starts']} random starts at "
            f"every lr up to {max(fr):g} x 2/λmax: |S - S*| <= "
            f"{max(gd['final_sharpe_gap_max']):.0e}"
            f" (S* = {pf['tangency_sharpe_closed_form']:.4f}), cosine with Σ⁻¹μ >= 1 - "
            f"{max(1 - c for c in gd['final_cosine_min']):.0e}.")]
    ok = [i for i, m in enumerate(med) if m is not None]
    if len(ok) > 1:
        out.append(f"Past the classical bound 2/λmax GD does not diverge, it slows down (median "
                   f"{med[ok[0]]:g} steps to 1e-6 at {fr[ok[0]]:g}x, {med[ok[-1]]:g} at "
                   f"{fr[ok[-1]]:g}x): S is scale-free, so the Hessian is singular along w "
                   f"(eigenvalue {si['hessian_eigenvalues_at_unit_tangency'][0]:.0e}), every "
                   f"step grows |w| (to {max(gd['final_norm_max']):.3g}) and the effective step "
                   f"lr/|w|² falls back below the edge.")
    b, lrs, bh = st["by_lr"], st["lrs"], st["buy_hold_out_mean"]
    out.append(f"On the S&P 500 walk-forward ({st['windows']} test years, mean of "
               f"{st['seeds']} seeds), raising the lr from {lrs[0]:g} to {lrs[-1]:g} moves the "
               f"in-sample Sharpe from {b['in_sharpe_mean'][0]:.2f} to "
               f"{b['in_sharpe_mean'][-1]:.2f} and the out-of-sample one from "
               f"{b['out_sharpe_mean'][0]:.2f} to {b['out_sharpe_mean'][-1]:.2f}, against "
               f"{bh:.2f} for buy and hold.")
    tc = st["transaction_cost"]
    wo, wi = tc["trained_without_cost"], tc["trained_with_cost"]
    out.append(f"Training with the {st['cost']:g} cost changes the out-of-sample turnover from "
               f"{wo['turnover_out']:.3f} to {wi['turnover_out']:.3f} a day and the net "
               f"out-of-sample Sharpe from {wo['out_sharpe_net']:.2f} to "
               f"{wi['out_sharpe_net']:.2f} (lr {st['lr']:g}).")
    out.append(f"No look-ahead: changing every price after a cut day moves earlier positions by "
               f"{st['lookahead_max_change_of_past_positions']:g}.")
    return out


def readme(record: dict) -> str:
    """The README's block for the finance section, from a recorded run."""
    s = record["summary"]
    pf, st = s["portfolio"], s["strategy"]
    gd, si, gc, pair = pf["gd"], pf["scale_invariance"], pf["gradient_check"], pf["pair"]
    b = st["by_lr"]
    table = report.markdown_table(
        ["lr", *[f"{x:g}" for x in st["lrs"]]],
        [["in-sample Sharpe", *[f"{x:.2f}" for x in b["in_sharpe_mean"]]],
         ["out-of-sample Sharpe", *[f"{x:.2f}" for x in b["out_sharpe_mean"]]]])
    pw = st["per_window"]
    at = [w["out_sharpe"] for w in pw]
    tc = st["transaction_cost"]
    wo, wi = tc["trained_without_cost"], tc["trained_with_cost"]
    steps = ", ".join(f"{f:g}x: median {m:g}, worst {x}" for f, m, x in
                      zip(gd["lr_times_lambda_max_over_2"], gd["steps_to_1e-6_median"],
                          gd["steps_to_1e-6_max"]))
    return (
        f"Measured by `{record['command']}` (float64). *Portfolio*: {pf['months']} months "
        f"{pf['period']} of {', '.join(pf['assets'])}; tangency w* ∝ Σ⁻¹μ, unit norm "
        f"{_v(pf['tangency_weights_unit'])}, sum-to-one {_v(pf['tangency_weights_sum1'])}, "
        f"S* = sqrt(12 μᵀΣ⁻¹μ) = {pf['tangency_sharpe_closed_form']:.6f} (the contour figure's "
        f"two factors {' + '.join(pair['assets'])} alone: {pair['tangency_sharpe']:.6f}). "
        f"Hand dS/dw vs jax.grad {gc['rel_err_autodiff']:.1e}, vs the moment form "
        f"{gc['rel_err_moment_form']:.1e}, vs central differences {gc['rel_err_fd']:.1e}. GD "
        f"from {gd['starts']} random unit-norm starts, {gd['steps']} steps: max |S_T - S*| "
        f"{_e(gd['final_sharpe_gap_max'])}, min cosine with w* {_e(gd['final_cosine_min'], 12)}"
        f" at lr = {', '.join(f'{f:g}' for f in gd['lr_times_lambda_max_over_2'])} x 2/λmax; "
        f"steps to 1e-6 ({steps}); max |w_T| {_e(gd['final_norm_max'], 3)}. Hessian of -S at "
        f"the unit tangency: eigenvalues {_e(si['hessian_eigenvalues_at_unit_tangency'], 3)}, "
        f"null eigenvector · w* = {si['null_eigenvector_cosine_with_w_star']:.12f}, "
        f"λmax(H(2w)) x 4 / λmax(H(w)) = {si['lambda_max_2w_times_4_over_lambda_max_w']:.12f}, "
        f"w·∇S / (|w||∇S|) <= {si['euler_w_dot_grad_rel_max']:.0e}, |w_T|² - |w_0|² = "
        f"lr² Σ|g_t|² to {si['norm_growth_identity_rel_err']:.0e}.\n\n"
        f"*Strategy*: {st['days']} days {st['period']}, {st['windows']} walk-forward windows, "
        f"{len(st['lrs'])} lrs x {st['seeds']} seeds x {{with, without}} the cost, "
        f"{st['steps']} GD steps; mean over windows and seeds, trained with the cost:\n\n"
        + table + f"\n{_trend(b)} Buy and hold: {st['buy_hold_out_mean']:.2f} out of sample on "
        f"average. At "
        f"lr {st['lr']:g} the per-window out-of-sample Sharpe (mean of {st['seeds']} seeds) "
        f"ranges {min(at):.2f}..{max(at):.2f} and beats buy and hold in "
        f"{sum(w['out_sharpe'] > w['buy_hold_out'] for w in pw)} of {len(pw)} windows. "
        f"Training with the cost: out-of-sample turnover {wo['turnover_out']:.3f} -> "
        f"{wi['turnover_out']:.3f} a day, net Sharpe {wo['out_sharpe_net']:.2f} -> "
        f"{wi['out_sharpe_net']:.2f} (gross {wo['out_sharpe_gross']:.2f} -> "
        f"{wi['out_sharpe_gross']:.2f}). Look-ahead: max change of past positions "
        f"{st['lookahead_max_change_of_past_positions']:g}; smooth vs exact cost <= "
        f"{st['smooth_cost_max_gap_per_day']:.0e} a day; jax.grad vs central differences "
        f"{st['grad_vs_finite_differences_rel_err']:.1e}.")


def _e(xs, d=None):
    return ", ".join(f"{x:.{d}g}" if d else f"{x:.0e}" for x in xs)


def _trend(b: dict) -> str:
    """In vs out of sample from the smallest to the largest lr, in words that follow the
    numbers."""
    i0, i1 = b["in_sharpe_mean"][0], b["in_sharpe_mean"][-1]
    o0, o1 = b["out_sharpe_mean"][0], b["out_sharpe_mean"][-1]
    if i1 > i0 and o1 < o0:
        return (f"The more aggressively the rule is fitted, the better it looks in sample "
                f"({i0:.2f} -> {i1:.2f}) and the worse out of sample ({o0:.2f} -> {o1:.2f}): "
                f"the lecture's warnings (non-stationary, limited data) measured.")
    return (f"From the smallest to the largest lr the in-sample Sharpe goes {i0:.2f} -> {i1:.2f}, "
            f"the out-of-sample one {o0:.2f} -> {o1:.2f}.")
