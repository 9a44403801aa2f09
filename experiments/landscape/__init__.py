"""Loss landscapes: convex vs non-convex, GD on a toy quadratic, and a trained model's real slice.

Question: what do the lecture's landscape pictures look like when every marked point and every
path is computed rather than drawn by hand? (a) Where are the minima, saddles and maxima of a
convex bowl and of a non-convex surface? (b) How does GD move on 0.5 w1^2 + 2 w2^2 as the
learning rate crosses 2/lambda_max = 0.5? (c) What does a trained network's loss look like on a
2-D plane through its weights, and where does its GD trajectory lie on it?
Theory: (a) critical points solve grad f = 0; the signs of the Hessian eigenvalues classify them
(+ + minimum, + - saddle, - - maximum); the bowl w1^2 + w2^2 has exactly one, a minimum at 0.
The non-convex surface is the tilted, coupled double well
    f(w) = (w1^2 - 1)^2 + (w2^2 - 1)^2 + c w1 w2 + t1 w1 + t2 w2      (c = 0.5, t = (0.3, -0.2)),
whose 3 x 3 critical points are 4 minima, 4 saddles and 1 maximum while c and t stay small.
(b) On a quadratic with Hessian diag(1, 4), GD gives w_t = (1 - lr h)^t w_0 per coordinate, so
it converges iff |1 - 4 lr| < 1, i.e. lr < 2/4 = 0.5, oscillating in w2 once lr > 0.25.
(c) Li et al. (NeurIPS 2018, "Visualizing the Loss Landscape of Neural Nets"): plot
L(theta* + a d1 + b d2) with random Gaussian directions rescaled row by row ("filter
normalization": each row of d has the norm of the matching row of W), so the picture does not
depend on the weights' scale; biases get zero direction (their default). Random directions
are nearly orthogonal to the training path (Li et al. section 7), so the trajectory's
least-squares projection onto them is tiny; the plane of the trajectory's top-2 principal
components (PCA) captures most of it and is drawn too.
Expected: 1 minimum for the bowl; 4 minima, 4 saddles, 1 maximum for the double well, each with
|grad| < 1e-8; toy GD converges for lr < 0.5 and diverges for 0.52; the slice's center is the
trained loss and the minimum of the slice sits at or near the center.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bpexp import report
from bpexp.theory import TOY_HESSIAN
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.landscape import text
from bpexp.experiments.landscape.figures import (
    fig_critical_points,
    fig_slice,
    fig_surfaces_3d,
    fig_toy_gd,
)
from bpexp.experiments.landscape.page import page  # noqa: F401  (the run page's figures)
from bpexp.experiments.landscape.run import Result, dataset
from bpexp.experiments.landscape.run import compute  # noqa: F401  (the experiment contract)
from bpexp.experiments.landscape.theory import by_kind

PRECISION = "float64"

USES = ("model", "data", "optimizer", "train")  # the sections read; make.check builds them first

# |coupling|, |tilt| and box at most this: f, its gradient and Hessian stay finite float64 over
# the Newton search
SURFACE_LIMIT = 1e6
MAX_STARTS = 1000      # starts^2 Newton runs at once
MAX_TOY_LRS = 8        # one figure panel each
MAX_TOY_STEPS = 1000   # one marker per step
TOY_LIMIT = 1e100      # |w_t| of the toy paths: their loss 0.5 w1^2 + 2 w2^2 stays finite
MAX_GRID = 201         # the grid^2 slice losses are one vmapped call: memory grows as grid^2
MAX_DIRECTION_SEED = 10 ** 9


@dataclass
class Params:
    name: str = "landscape"
    coupling: float = 0.5                 # c in the double well
    tilt: list = field(default_factory=lambda: [0.3, -0.2])   # (t1, t2)
    box: float = 2.0                      # critical points are searched in [-box, box]^2
    starts: int = 15                      # Newton starts per axis
    newton_iters: int = 60
    toy_w0: list = field(default_factory=lambda: [2.5, 2.0])
    toy_lrs: list = field(default_factory=lambda: [0.15, 0.4, 0.49, 0.52])
    toy_steps: int = 20
    grid: int = 41                        # slice: grid x grid loss evaluations (odd: 0 is a node)
    span: float = 1.0                     # slice: a, b in [-span, span] (units of the directions)
    bias_dirs: str = "zero"               # zero (Li et al. default) | filter (|d_i| = |b_i|)
    direction_seed: int = 1               # folded into the run seed for the random directions


def _finite(x, limit=math.inf) -> bool:
    return math.isfinite(x) and abs(x) <= limit


def validate(cfg):
    """One rule per key; lists are already lists of numbers (config checks their kind)."""
    P = cfg.experiment
    if not _finite(P.coupling, SURFACE_LIMIT):
        raise UserError(f"experiment.coupling={P.coupling!r} must be finite with |coupling| <= "
                        f"{SURFACE_LIMIT:g}")
    if len(P.tilt) != 2 or not all(_finite(t, SURFACE_LIMIT) for t in P.tilt):
        raise UserError(f"experiment.tilt={P.tilt!r} must be 2 finite numbers [t1, t2] with "
                        f"|t| <= {SURFACE_LIMIT:g}")
    if not (_finite(P.box, SURFACE_LIMIT) and P.box > 0):
        raise UserError(f"experiment.box={P.box!r} must be in (0, {SURFACE_LIMIT:g}]")
    if not 1 <= P.starts <= MAX_STARTS:
        raise UserError(f"experiment.starts={P.starts!r} must be in [1, {MAX_STARTS}]")
    if P.newton_iters < 1:
        raise UserError(f"experiment.newton_iters={P.newton_iters!r} must be >= 1")
    w0 = P.toy_w0
    # away from 0 so the loss curves have something to draw on a log axis
    if not (len(w0) == 2 and all(map(_finite, w0))
            and 1e-100 <= max(map(abs, w0)) <= TOY_LIMIT):
        raise UserError(f"experiment.toy_w0={w0!r} must be 2 finite numbers [w1, w2] with "
                        f"1e-100 <= max(|w1|, |w2|) <= {TOY_LIMIT:g}")
    lrs = P.toy_lrs
    # the summary keys each lr by its %g text
    if not (1 <= len(lrs) <= MAX_TOY_LRS and all(_finite(lr) and lr > 0 for lr in lrs)
            and len({f"{lr:g}" for lr in lrs}) == len(lrs)):
        raise UserError(f"experiment.toy_lrs={lrs!r} must be 1 to {MAX_TOY_LRS} distinct finite "
                        f"learning rates > 0")
    if not 1 <= P.toy_steps <= MAX_TOY_STEPS:
        raise UserError(f"experiment.toy_steps={P.toy_steps!r} must be in [1, {MAX_TOY_STEPS}]")
    grow = max(abs(1.0 - lr * h) for lr in lrs for h in np.diag(TOY_HESSIAN))
    if math.log10(max(map(abs, w0))) + P.toy_steps * math.log10(grow) > math.log10(TOY_LIMIT):
        raise UserError(f"experiment.toy_steps={P.toy_steps} with experiment.toy_lrs={lrs!r} "
                        f"overflows: max |w0| x max |1 - lr h|^toy_steps must be <= "
                        f"{TOY_LIMIT:g} (fewer steps or smaller lrs)")
    if not (3 <= P.grid <= MAX_GRID and P.grid % 2):
        raise UserError(f"experiment.grid={P.grid!r} must be odd and in [3, {MAX_GRID}] "
                        f"(the center is the trained point)")
    if not (_finite(P.span) and P.span > 0):
        raise UserError(f"experiment.span={P.span!r} must be finite and > 0")
    if P.bias_dirs not in ("zero", "filter"):
        raise UserError(f"experiment.bias_dirs={P.bias_dirs!r} is not allowed; choose one of "
                        f"zero, filter")
    if not 0 <= P.direction_seed <= MAX_DIRECTION_SEED:
        raise UserError(f"experiment.direction_seed={P.direction_seed!r} must be in "
                        f"[0, {MAX_DIRECTION_SEED}]")
    if cfg.train.steps % cfg.train.record_every:
        raise UserError(f"train.record_every={cfg.train.record_every} must divide "
                        f"train.steps={cfg.train.steps}")


# ---------------------------------------------------------------- save


def save(cfg, run, res: Result) -> dict:
    P, crit, r, p = cfg.experiment, res.crit, res.random, res.pca
    run.save_metrics(dataset(res))

    def points(k):  # the bowl lists its minima only
        return {kk: v for kk, v in by_kind(crit[k]).items() if k == "nonconvex" or kk == "minima"}

    def toy(lr, path, closed, factors, loss):
        return {"final": path[-1].tolist(), "diverged": bool(loss[-1] > loss[0]),
                "theory_diverges": bool(lr > res.bound), "factors": factors.tolist(),
                "loss_initial": float(loss[0]), "loss_final": float(loss[-1]),
                "max_abs_diff_closed_form": float(np.max(np.abs(path - closed)))}

    mid = P.grid // 2
    argmin = np.unravel_index(r.loss.argmin(), r.loss.shape)
    return {
        "convex": {"formula": res.formulas["convex"], **points("convex")},
        "nonconvex": {"formula": res.formulas["nonconvex"], **points("nonconvex")},
        "toy_gd": {"w0": list(P.toy_w0), "steps": P.toy_steps, "divergence_bound": res.bound,
                   "lr": {f"{lr:g}": toy(lr, *rest) for lr, *rest in zip(
                       res.toy_lrs, res.toy_paths, res.toy_closed, res.factors, res.toy_loss)}},
        "slice": {"model": cfg.model.name, "data": cfg.data.name,
                  "n_params": int(res.thetas.shape[1]), "grid": P.grid, "span": P.span,
                  "bias_dirs": P.bias_dirs,
                  "directions": "random N(0, I), filter-normalized per row (Li et al. 2018)",
                  "trained_loss": res.final_loss, "initial_loss": float(res.train_loss[0]),
                  "center_loss": float(r.loss[mid, mid]), "min_loss": float(r.loss.min()),
                  "min_at": [float(r.a[argmin[0]]), float(r.b[argmin[1]])],
                  "max_loss": float(r.loss.max()),
                  "final_projection": r.coeffs[-1].tolist(),
                  "initial_projection": r.coeffs[0].tolist(), "captured_fraction": r.captured,
                  "pca": {"center_loss": float(p.loss[mid, mid]), "min_loss": float(p.loss.min()),
                          "explained_variance": res.pca_var.tolist(),
                          "captured_fraction": p.captured,
                          "initial_projection": p.coeffs[0].tolist(),
                          "span": [float(p.a[-1]), float(p.b[-1])]}},
    }


# ---------------------------------------------------------------- present
FIGURES = ("surfaces_3d.png", "critical_points.png", "toy_gd.png", "slice_trajectory.png")


def draw(cfg, run, res: Result, summary: dict) -> list[str]:
    """The four figures, each titled with its takeaway computed from the summary (text.py)."""
    P, var, figs = cfg.experiment, res.pca_var, list(FIGURES)
    net = f"{cfg.model.name} on {cfg.data.name}"
    fig_surfaces_3d(res.grids, res.crit, res.formulas, res.random, net,
                    text.surfaces_title(summary), run.figure(figs[0]))
    fig_critical_points(res.grids, res.crit, res.formulas, text.critical_title(summary),
                        run.figure(figs[1]))
    fig_toy_gd(res.toy_paths, res.toy_loss, res.toy_lrs, res.factors, res.bound,
               text.toy_title(summary), run.figure(figs[2]))
    fig_slice(res.steps, res.train_loss, res.final_loss,
              [(res.random, "random plane", f"random plane (biases {P.bias_dirs})",
                "a (units of d1)", "b (units of d2)"),
               (res.pca, "PCA plane", f"PCA plane ({var[0]:.0%} + {var[1]:.0%} of variance)",
                "PC1 (parameter units)", "PC2 (parameter units)")],
              text.slice_title(summary), run.figure(figs[3]))
    return figs


def _rows(res: Result, summary: dict) -> list[list]:
    """The theory-vs-measurement table."""
    crit, sl, toy, bound, G = res.crit, summary["slice"], summary["toy_gd"], res.bound, \
        summary["slice"]["grid"]
    nc = summary["nonconvex"]
    grad_max = max((p["grad_norm"] for p in crit["nonconvex"]), default=None)
    rows = [["convex bowl: critical points", len(crit["convex"]), "1 minimum at (0, 0)",
             ", ".join(f"{p['kind']} at ({p['w'][0]:.2g}, {p['w'][1]:.2g})"
                       for p in crit["convex"])],
            ["double well: minima / saddles / maxima",
             f"{len(nc['minima'])} / {len(nc['saddles'])} / {len(nc['maxima'])}",
             "4 / 4 / 1 (small c, t)",
             "none found" if grad_max is None else f"max |grad| {grad_max:.1e}"],
            ["double well: global minimum", nc["minima"][0]["value"] if nc["minima"] else None,
             "-", "at (%.4f, %.4f)" % tuple(nc["minima"][0]["w"]) if nc["minima"] else ""]]
    for lr, rec in zip(res.toy_lrs, toy["lr"].values()):
        theory_says = (f"{'diverges' if lr > bound else 'converges'} "
                       f"(lr {'>' if lr > bound else '<'} 2/4)")
        fa, a0, aT = rec["factors"], rec["loss_initial"], rec["loss_final"]
        rows.append([f"toy GD lr={lr:g}: final w", "(%.3g, %.3g)" % tuple(rec["final"]),
                     theory_says, f"factors ({fa[0]:.3g}, {fa[1]:.3g}); "
                     f"{'diverged' if rec['diverged'] else 'converged'}: f {a0:.3g} -> {aT:.3g}"])
    pca = sl["pca"]
    rows += [["slice: center loss", sl["center_loss"], f"trained loss {sl['trained_loss']:.6g}",
              f"|diff| {abs(sl['center_loss'] - sl['trained_loss']):.1e}"],
             ["slice: min loss on the grid", sl["min_loss"], "<= center",
              "at (a, b) = (%.3g, %.3g), %dx%d grid" % (*sl["min_at"], G, G)],
             ["slice, PCA plane: min loss on the grid", pca["min_loss"], "<= center",
              f"center {pca['center_loss']:.6g}: below it means GD has not reached a minimum"],
             ["trajectory captured by the plane",
              f"random {sl['captured_fraction']:.2%}, PCA {pca['captured_fraction']:.2%}",
              "random: a small part; PCA: most (Li et al. s.7)",
              "|projection of theta_0 - theta*| / |theta_0 - theta*|"]]
    return rows


def present(cfg, run, res: Result, summary: dict) -> None:
    """The figures, the terminal table and report.md (opening with what the run shows)."""
    P, crit, G = cfg.experiment, res.crit, cfg.experiment.grid
    figs = draw(cfg, run, res, summary)
    rows = _rows(res, summary)
    header = ["quantity", "measured", "theory", "note"]
    report.print_table("landscape: theory vs measurement", header, rows)
    pts_rows = [[k, p["kind"], "(%.6f, %.6f)" % tuple(p["w"]), p["value"],
                 "(%.4g, %.4g)" % tuple(p["hessian_eigs"]), p["grad_norm"]]
                for k in ("convex", "nonconvex") for p in crit[k]]
    setup = (f"(a) Surfaces: {res.formulas['convex']} and {res.formulas['nonconvex']}; "
             f"Newton from a {P.starts}x{P.starts} grid in [-{P.box:g}, {P.box:g}]^2, float64. "
             f"(b) GD on 0.5 w1^2 + 2 w2^2 from ({P.toy_w0[0]:g}, {P.toy_w0[1]:g}), "
             f"{P.toy_steps} steps. "
             f"(c) `{cfg.model.name}` on `{cfg.data.name}` (n={res.n}, m={res.m}), "
             f"{cfg.optimizer.name} lr={cfg.optimizer.lr:g}, {cfg.train.steps} steps (hand "
             f"gradients, float64), parameters recorded every {cfg.train.record_every} steps; "
             f"{G}x{G} grid; random directions filter-normalized per row, biases {P.bias_dirs}; "
             "trajectory projected by least squares onto each plane.")
    run.save_report(report.report(
        "Loss landscapes", question(__doc__), run.reproduce(),
        [("Setup", setup),
         ("Theory vs measurement", report.markdown_table(header, rows)),
         ("Critical points", report.markdown_table(
             ["surface", "kind", "w", "f(w)", "Hessian eigenvalues", "|grad|"], pts_rows))],
        figs, shows=text.shows(summary)))
