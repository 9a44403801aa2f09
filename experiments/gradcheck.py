"""Are the hand-derived gradients of grads.py right, for every model?

Question: does each backward pass written by hand (the CS230 section equations and the
Lecture 5 delta recursion) equal the gradient that autodiff computes, and the slope that
finite differences measure?
Theory: they are the same function, so in float64 the manual and autodiff gradients agree to
rounding (~1e-16 relative) and central differences agree to O(eps^2) + O(1e-16 / eps).
Expected: every model below 1e-10 vs jax.grad and below 1e-6 vs finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import gradcheck, models, plots, report
from bpexp.errors import UserError
from bpexp.experiments._common import question

PRECISION = "float64"
TOL_AUTODIFF, TOL_FD = 1e-10, 1e-6


USES = ()  # config sections read (make.check builds them first)


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
    if not p.depths or any(not isinstance(d, int) or d < 1 for d in p.depths):
        raise UserError(f"experiment.depths={p.depths!r} must be a non-empty list of ints >= 1")
    for k in ("max_features", "max_hidden", "max_examples", "n_dirs"):
        if getattr(p, k) < 1:
            raise UserError(f"experiment.{k}={getattr(p, k)!r} must be >= 1")
    if not p.fd_eps > 0:
        raise UserError(f"experiment.fd_eps={p.fd_eps!r} must be > 0")


def cases(depths, all_combinations=False):
    """(label, model, hparams, d_out kind) for every model and mlp variant."""
    out = [("univariate", models.get("univariate"), {}, "one_feature"),
           ("multivariate", models.get("multivariate"), {}, "regression"),
           ("two_layer_linear", models.get("two_layer_linear"), {"hidden": None}, "multi_regression"),
           ("two_layer_sigmoid", models.get("two_layer_sigmoid"), {"hidden": None}, "multi_regression"),
           ("logistic", models.get("logistic"), {}, "binary")]
    kinds = {"identity_mse": "multi_regression", "sigmoid_mse": "binary",
             "sigmoid_ce": "binary", "softmax_ce": "multiclass"}
    pairs = [(a, o) for a in models.ACTIVATIONS for o in models.OUTPUTS]
    # each compile costs ~0.5 s on a small CPU: by default every activation, output and depth
    # appears, without the full product
    combos = ([(a, o, d) for d in depths for a, o in pairs] if all_combinations
              else [(a, o, depths[j % len(depths)]) for j, (a, o) in enumerate(pairs)])
    for act, o, depth in combos:
        out.append((f"mlp_{act}_{o}_d{depth}", models.get("mlp", activation=act, output=o),
                    {"hidden": None, "depth": depth}, kinds[o]))
    return out


def random_problem(rng, kind, P):
    """Random shapes, inputs and targets of the right kind, float64 (numpy: no compiles)."""
    n = 1 if kind == "one_feature" else int(rng.integers(1, P.max_features + 1))
    m = int(rng.integers(1, P.max_examples + 1))
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


def run(cfg, run):
    P = cfg.experiment
    rng = np.random.default_rng(cfg.seed)
    results, rows = {}, []
    for i, (label, model, hp, kind) in enumerate(cases(P.depths, P.all_combinations)):
        X, Y = random_problem(rng, kind, P)
        hp = {k: (int(rng.integers(1, P.max_hidden + 1)) if v is None else v) for k, v in hp.items()}
        shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), X.shape[0], Y.shape[0],
                                                   dtype=jnp.float64, **hp))
        p = random_params(rng, shapes)
        r = gradcheck.check(model, p, X, Y, seed=cfg.seed + i,
                            n_dirs=P.n_dirs, eps=P.fd_eps)
        results[label] = {"rel_err_autodiff": r["rel_err_autodiff"], "rel_err_fd": r["rel_err_fd"],
                          "n_params": r["n_params"]}
        ok = r["rel_err_autodiff"] < TOL_AUTODIFF and r["rel_err_fd"] < TOL_FD
        shape = f"n={X.shape[0]} m={X.shape[1]} d={Y.shape[0]}" + "".join(f" {k}={v}" for k, v in hp.items())
        rows.append([label, shape, r["n_params"], r["rel_err_autodiff"], r["rel_err_fd"], "ok" if ok else "FAIL"])
    passed = all(v["rel_err_autodiff"] < TOL_AUTODIFF and v["rel_err_fd"] < TOL_FD for v in results.values())

    header = ["model", "shapes", "params", "rel err vs jax.grad", "rel err vs finite diff", ""]
    report.print_table(f"gradient check, float64 (tolerances {TOL_AUTODIFF:g} / {TOL_FD:g})", header, rows)
    names = list(results)
    plots.gradcheck_errors(names, np.array([results[n]["rel_err_autodiff"] for n in names]),
                           np.array([results[n]["rel_err_fd"] for n in names]),
                           TOL_AUTODIFF, TOL_FD, run.figure("gradcheck_errors.png"))
    worst_ad = max(v["rel_err_autodiff"] for v in results.values())
    worst_fd = max(v["rel_err_fd"] for v in results.values())
    run.save_report(report.report(
        "Gradient check", question(__doc__),
        "python -m bpexp +experiment=gradcheck",
        [("Result", f"{'PASSED' if passed else 'FAILED'}: worst relative error {worst_ad:.2e} vs "
                    f"jax.grad (tolerance {TOL_AUTODIFF:g}), {worst_fd:.2e} vs central finite "
                    f"differences along {P.n_dirs} random directions, eps={P.fd_eps:g} "
                    f"(tolerance {TOL_FD:g}); float64, seed {cfg.seed}."),
         ("Per model", report.markdown_table(header, rows))],
        ["gradcheck_errors.png"]))
    print(f"{'PASSED' if passed else 'FAILED'}: {len(results)} models, worst {worst_ad:.1e} (autodiff), {worst_fd:.1e} (finite differences)")
    return {"dtype": "float64", "models": results, "passed": passed}
