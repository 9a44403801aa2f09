"""Are the hand-derived gradients of grads.py right, for every model?

Question: does each backward pass written by hand (the CS230 section equations and the
Lecture 5 delta recursion, with residual and batch-normalized layers) equal the gradient that
autodiff computes, and the slope that finite differences measure?
Theory: they are the same function, so in float64 the manual and autodiff gradients agree to
rounding (~1e-16 relative) and central differences agree to O(eps^2) + O(1e-16 / eps).
Expected: every model below 1e-10 vs jax.grad and below 1e-6 vs finite differences.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import gradcheck, grads, models, plots, report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.plots import plt

PRECISION = "float64"
TOL_AUTODIFF, TOL_FD = 1e-10, 1e-6
USES = ()  # config sections read (make.check builds them first)
# dense float64 problems of at most these sizes stay small (gradcheck is about correctness)
MAX_SIZE, MAX_DEPTH = 100, 16


@dataclass
class Params:
    name: str = "gradcheck"
    depths: list = field(default_factory=lambda: [1, 2, 4])  # mlp depths
    all_combinations: bool = False  # false: activation x output pairs cycle through depths
    max_features: int = 6       # shapes drawn in [1, max] from the config seed
    max_hidden: int = 6
    max_examples: int = 9
    n_dirs: int = 8             # random directions for finite differences
    fd_eps: float = 1e-5


def validate(cfg):
    p = cfg.experiment
    if not (p.depths and all(isinstance(d, int) and not isinstance(d, bool)
                             and 1 <= d <= MAX_DEPTH for d in p.depths)):
        raise UserError(f"experiment.depths={p.depths!r} is not allowed; allowed: a non-empty "
                        f"list of ints in [1, {MAX_DEPTH}]")
    for k in ("max_features", "max_hidden", "max_examples", "n_dirs"):
        if not 1 <= getattr(p, k) <= MAX_SIZE:
            raise UserError(f"experiment.{k}={getattr(p, k)!r} is not allowed; "
                            f"allowed: an int in [1, {MAX_SIZE}]")
    if not 0 < p.fd_eps < math.inf:
        raise UserError(f"experiment.fd_eps={p.fd_eps!r} is not allowed; "
                        "allowed: a finite number > 0")
    if cfg.seed < 0:  # numpy's default_rng draws the shapes and parameters
        raise UserError(f"seed={cfg.seed} is not allowed; allowed: an int >= 0")


def cases(depths, all_combinations=False):
    """(label, model, hparams, d_out kind) for every model and mlp variant."""
    two_layer = {"hidden": None}  # None: drawn per problem
    out = [("univariate", models.get("univariate"), {}, "one_feature"),
           ("multivariate", models.get("multivariate"), {}, "regression"),
           ("two_layer_linear", models.get("two_layer_linear"), two_layer, "multi_regression"),
           ("two_layer_sigmoid", models.get("two_layer_sigmoid"), two_layer, "multi_regression"),
           ("logistic", models.get("logistic"), {}, "binary"),
           ("sharpe_portfolio", SHARPE, {}, "returns")]
    kinds = {"identity_mse": "multi_regression", "sigmoid_mse": "binary",
             "sigmoid_ce": "binary", "softmax_ce": "multiclass"}
    pairs = [(a, o) for a in models.ACTIVATIONS for o in models.OUTPUTS]
    # each compile costs ~0.5 s on a small CPU: by default every activation, output and depth
    # appears, without the full product
    combos = ([(a, o, d) for d in depths for a, o in pairs] if all_combinations
              else [(a, o, depths[j % len(depths)]) for j, (a, o) in enumerate(pairs)])
    combos = [(a, o, d, False, "none") for a, o, d in combos]
    # residual and batch-norm layers (hidden widths are equal, so every hidden-to-hidden layer
    # is residual): the full product, or by default each activation once per variant with the
    # outputs and depths cycling
    variants = [(True, "none"), (False, "batch"), (True, "batch")]
    acts, outs = list(models.ACTIVATIONS), list(models.OUTPUTS)
    combos += ([(a, o, d, r, nm) for r, nm in variants for d in depths for a, o in pairs]
               if all_combinations else
               [(a, outs[(i + j) % len(outs)], depths[(i + 2 * j) % len(depths)], r, nm)
                for j, (r, nm) in enumerate(variants) for i, a in enumerate(acts)])
    for act, o, depth, res, norm in combos:
        tag = ("_res" if res else "") + ("_bn" if norm == "batch" else "")
        out.append((f"mlp_{act}_{o}_d{depth}{tag}",
                    models.get("mlp", activation=act, output=o, residual=res, norm=norm),
                    {"hidden": None, "depth": depth}, kinds[o]))
    return out


# the finance experiment's loss: -Sharpe of a portfolio w^T X, X: (n assets, m periods) returns
SHARPE = models.Model("sharpe_portfolio",
                      lambda key, n, d_out, dtype=jnp.float32: {"w": jnp.zeros((n,), dtype)},
                      lambda p, X: p["w"] @ X, grads.neg_sharpe, grads.neg_sharpe_grad,
                      lambda p, X: p["w"] @ X, ())


def random_problem(rng, kind, P):
    """Random shapes, inputs X: (n, m) and targets Y: (d, m) of the right kind, float64
    (numpy: no compiles)."""
    n = 1 if kind == "one_feature" else int(rng.integers(1, P.max_features + 1))
    m = int(rng.integers(1, P.max_examples + 1))
    if kind == "returns":  # a standard deviation needs >= 2 periods; mean 0.5 keeps S away from 0
        m = max(m, 3)
        return 0.5 + rng.standard_normal((n, m)), np.zeros((1, m))
    d = {"one_feature": 1, "regression": 1, "binary": 1}.get(kind, int(rng.integers(2, 5)))
    X = rng.standard_normal((n, m))
    if kind == "binary":
        Y = (rng.uniform(size=(d, m)) > 0.5).astype(np.float64)
    elif kind == "multiclass":
        Y = np.eye(d)[:, rng.integers(0, d, size=m)]
    else:
        Y = rng.standard_normal((d, m))
    return X, Y


def random_params(rng, p):
    """Every leaf (biases too) ~ N(0, 1): no exact zeros at relu kinks, no linear regime."""
    return {k: rng.standard_normal(np.shape(v)) for k, v in p.items()}


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    names: list          # [model] the case labels, in the order checked
    shapes: list         # [model] "n=.. m=.. d=.." and the drawn hyperparameters
    n_params: list       # [model] int
    err_ad: np.ndarray   # [model] relative error of the manual gradient vs jax.grad
    err_fd: np.ndarray   # [model] relative error vs central finite differences


def compute(cfg, run) -> Result:
    P = cfg.experiment
    rng = np.random.default_rng(cfg.seed)
    names, shapes, n_params, err_ad, err_fd = [], [], [], [], []
    problems = []
    for i, (label, model, hp, kind) in enumerate(cases(P.depths, P.all_combinations)):
        X, Y = random_problem(rng, kind, P)
        hp = {k: (int(rng.integers(1, P.max_hidden + 1)) if v is None else v)
              for k, v in hp.items()}
        leaves = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), X.shape[0],
                                                   Y.shape[0], dtype=jnp.float64, **hp))
        problems.append((label, model, hp, X, Y, random_params(rng, leaves)))

    def prepare(i):   # one compile per case: the cost of this experiment
        _, model, _, X, Y, p = problems[i]
        return gradcheck.prepare(model, p, X, Y, seed=cfg.seed + i, n_dirs=P.n_dirs,
                                 eps=P.fd_eps)

    # the compiles run in threads (XLA compiles outside the GIL): the same programs and
    # numbers, in less wall time on several cores
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        checks = list(pool.map(prepare, range(len(problems))))
    for (label, _, hp, X, Y, _), finish in zip(problems, checks):
        r = finish()
        names.append(label)
        shapes.append(f"n={X.shape[0]} m={X.shape[1]} d={Y.shape[0]}"
                      + "".join(f" {k}={v}" for k, v in hp.items()))
        n_params.append(r["n_params"])
        err_ad.append(r["rel_err_autodiff"])
        err_fd.append(r["rel_err_fd"])
    return Result(names, shapes, n_params, np.array(err_ad), np.array(err_fd))


def _passed(res: Result) -> np.ndarray:
    """[model] bool: both errors below their tolerances."""
    return (res.err_ad < TOL_AUTODIFF) & (res.err_fd < TOL_FD)


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    models_ = {name: {"rel_err_autodiff": float(ad), "rel_err_fd": float(fd), "n_params": n}
               for name, ad, fd, n in zip(res.names, res.err_ad, res.err_fd, res.n_params)}
    return {"dtype": "float64", "models": models_, "passed": bool(_passed(res).all())}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    header = ["model", "shapes", "params", "rel err vs jax.grad", "rel err vs finite diff", ""]
    rows = [[name, shape, n, float(ad), float(fd), "ok" if ok else "FAIL"]
            for name, shape, n, ad, fd, ok in zip(res.names, res.shapes, res.n_params,
                                                  res.err_ad, res.err_fd, _passed(res))]
    report.print_table(f"gradient check, float64 (tolerances {TOL_AUTODIFF:g} / {TOL_FD:g})",
                       header, rows)
    gradcheck_errors(res.names, res.err_ad, res.err_fd, TOL_AUTODIFF, TOL_FD,
                     run.figure("gradcheck_errors.png"))
    verdict = "PASSED" if summary["passed"] else "FAILED"
    worst_ad, worst_fd = float(res.err_ad.max()), float(res.err_fd.max())
    run.save_report(report.report(
        "Gradient check", question(__doc__),
        "python -m bpexp +experiment=gradcheck",
        [("Result", f"{verdict}: worst relative error {worst_ad:.2e} vs jax.grad (tolerance "
                    f"{TOL_AUTODIFF:g}), {worst_fd:.2e} vs central finite differences along "
                    f"{P.n_dirs} random directions, eps={P.fd_eps:g} (tolerance {TOL_FD:g}); "
                    f"float64, seed {cfg.seed}."),
         ("Per model", report.markdown_table(header, rows))],
        ["gradcheck_errors.png"], shows=shows(summary, P)))
    print(f"{verdict}: {len(res.names)} models, worst {worst_ad:.1e} (autodiff), "
          f"{worst_fd:.1e} (finite differences)")


def shows(s: dict, P) -> list[str]:
    """report.md's opening sentences, computed from the summary."""
    m = s["models"]
    ad = max(m, key=lambda k: m[k]["rel_err_autodiff"])
    fd = max(m, key=lambda k: m[k]["rel_err_fd"])
    fails = [k for k, r in m.items()
             if not (r["rel_err_autodiff"] < TOL_AUTODIFF and r["rel_err_fd"] < TOL_FD)]
    big = max(m, key=lambda k: m[k]["n_params"])
    return [
        (f"All {len(m)} models pass" if not fails else f"{len(fails)} of {len(m)} models fail "
         f"({', '.join(fails)})") + f": the hand-derived gradients equal jax.grad to "
        f"{m[ad]['rel_err_autodiff']:.1e} relative at worst ({ad}; tolerance {TOL_AUTODIFF:g}) "
        f"in float64.",
        f"Against central finite differences along {P.n_dirs} random directions (eps "
        f"{P.fd_eps:g}) the worst relative error is {m[fd]['rel_err_fd']:.1e} ({fd}; tolerance "
        f"{TOL_FD:g}): the difference quotient's own O(eps^2) truncation and rounding error, "
        "which is why its tolerance is looser than autodiff's.",
        f"The largest network checked has {m[big]['n_params']} parameters ({big})."]


def readme(record: dict) -> str:
    """The README block: the worst errors of the recorded run, overall and for the residual /
    batch-norm cases, with the number of cases."""
    m = record["summary"]["models"]
    rb = {k: r for k, r in m.items() if k.endswith(("_res", "_bn"))}

    def worst(rows, key):
        return max(r[key] for r in rows.values())

    out = (f"`{record['command']}`: {'all' if record['summary']['passed'] else 'NOT all'} "
           f"{len(m)} cases pass; worst relative errors {worst(m, 'rel_err_autodiff'):.1e} vs "
           f"jax.grad and {worst(m, 'rel_err_fd'):.1e} vs finite differences")
    if rb:
        out += (f" (the {len(rb)} residual / batch-norm cases: "
                f"{worst(rb, 'rel_err_autodiff'):.1e} and {worst(rb, 'rel_err_fd'):.1e})")
    return out + ".\n"


def gradcheck_errors(names, err_ad, err_fd, tol_ad, tol_fd, path):
    """Horizontal bars: relative error of the manual gradient vs autodiff (``err_ad[model]``)
    and vs finite differences (``err_fd[model]``) per model (log scale), with the pass
    thresholds."""
    names = list(names)
    y = np.arange(len(names))
    floor = 1e-18  # exact zeros drawn at the floor so they stay visible on a log axis
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.6))
    ax.barh(y - 0.2, np.maximum(err_ad, floor), 0.4, label="vs jax.grad (float64)",
            color="tab:blue")
    ax.barh(y + 0.2, np.maximum(err_fd, floor), 0.4, label="vs central finite differences",
            color="tab:orange")
    ax.axvline(tol_ad, color="tab:blue", ls="--", lw=1, label=f"autodiff tolerance {tol_ad:g}")
    ax.axvline(tol_fd, color="tab:orange", ls="--", lw=1,
               label=f"finite-difference tolerance {tol_fd:g}")
    ax.set_xscale("log")
    ax.set_xlim(floor / 2, 1)
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relative error ||g_manual - g_ref|| / ||g_ref||  (bars at 1e-18 are exact "
                  "zeros)")
    ax.set_title("Hand-derived gradients vs references, per model")
    ax.legend(fontsize=7, loc="lower right")
    return plots.save(fig, path)
