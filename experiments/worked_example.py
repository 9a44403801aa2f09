"""The Lecture 5 worked example (section 8), computed in full precision.

Question: for the 2-1-1 sigmoid network with x = [1, 2], W1 = [0.5, 0.5], b1 = 0, W2 = 0.5,
b2 = 0, target 1, loss L = (y - a2)^2 and learning rate 0.5, what are the forward values,
the gradients and the updated weights, and do they match the numbers the lecture prints?
Theory: delta2 = dL/da2 * sigma'(z2); delta1 = W2 delta2 * sigma'(z1); dW = delta a^T.
Expected: every number agrees with the lecture to its printed decimals, except dW1[1], which
the lecture computes from the rounded delta1 (-0.014 x 2 = -0.028); exactly it is -0.02856.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bpexp import data, models, optim, plots, primitives, report, stacked
from bpexp.errors import UserError
from bpexp.experiments._common import question

PRECISION = "float64"

# The lecture's printed (rounded) numbers and how many decimals it printed.
LECTURE = {"z1": (1.5, 1), "a1": (0.82, 2), "z2": (0.41, 2), "a2": (0.60, 2), "loss": (0.16, 2),
           "dL/da2": (-0.80, 2), "delta2": (-0.19, 2), "dW2": (-0.16, 2), "db2": (-0.19, 2),
           "delta1": (-0.014, 3), "dW1[0]": (-0.014, 3), "dW1[1]": (-0.028, 3),
           "W2_new": (0.58, 2), "W1_new[0]": (0.507, 3), "W1_new[1]": (0.514, 3)}

USES = ()  # config sections read (make.check builds them first)


@dataclass
class Params:
    name: str = "worked_example"
    lr: float = 0.5
    W1: list = field(default_factory=lambda: [0.5, 0.5])
    b1: float = 0.0
    W2: float = 0.5
    b2: float = 0.0


def validate(cfg):
    P = cfg.experiment
    optim.check_range("experiment.lr", "lr", P.lr)  # GD's range: (0, inf)
    if len(P.W1) != 2 or not all(-math.inf < w < math.inf for w in P.W1):
        raise UserError(f"experiment.W1={P.W1!r} is not allowed; allowed: 2 finite numbers "
                        "(x has 2 features)")
    for key in ("b1", "W2", "b2"):
        if not -math.inf < getattr(P, key) < math.inf:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; "
                            "allowed: a finite number")


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    x: np.ndarray         # [2] the input
    y: float              # the target
    full: dict            # LECTURE's quantity -> its full-precision value (z1 ... W1_new[1])
    db1: float            # dL/db1 (the lecture does not print it)
    dL_dx: np.ndarray     # [2] W1^T delta1, dL at the input node
    dL_da1: float         # W2 delta2
    max_abs_diff: float   # manual backward pass vs jax.grad, max over every parameter entry


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = data.load("lecture5", dtype=np.float64)
    X, Y = jnp.asarray(ds.X), jnp.asarray(ds.Y)         # x = [1, 2]^T, y = 1
    run.save_data(ds.X, ds.Y)
    model = models.get("mlp", activation="sigmoid", output="sigmoid_mse")
    p = {"W1": jnp.array([P.W1], jnp.float64), "b1": jnp.full((1, 1), P.b1),
         "W2": jnp.full((1, 1), P.W2), "b2": jnp.full((1, 1), P.b2)}

    _, g, fp, deltas = stacked.loss_and_grad(p, X, Y, "sigmoid", "sigmoid_mse")
    zs, acts = fp.zs(), fp.acts()
    a2 = float(primitives.sigmoid(zs[1])[0, 0])
    g_ad = jax.grad(model.loss)(p, X, Y)

    opt = optim.get("gd", lr=P.lr)                       # w -= lr * g
    upd, _ = opt.update(g, opt.init(p), p)
    new = optax.apply_updates(p, upd)

    full = {"z1": float(zs[0][0, 0]), "a1": float(acts[1][0, 0]), "z2": float(zs[1][0, 0]),
            "a2": a2, "loss": float(model.loss(p, X, Y)),  # (1/m)||a2 - y||^2 with m = 1
            "dL/da2": -2 * (float(Y[0, 0]) - a2), "delta2": float(deltas[2][0, 0]),
            "dW2": float(g["W2"][0, 0]), "db2": float(g["b2"][0, 0]),
            "delta1": float(deltas[1][0, 0]), "dW1[0]": float(g["W1"][0, 0]),
            "dW1[1]": float(g["W1"][0, 1]), "W2_new": float(new["W2"][0, 0]),
            "W1_new[0]": float(new["W1"][0, 0]), "W1_new[1]": float(new["W1"][0, 1])}
    return Result(x=np.asarray(X[:, 0]), y=float(Y[0, 0]), full=full, db1=float(g["b1"][0, 0]),
                  dL_dx=np.asarray((p["W1"].T @ deltas[1])[:, 0]),
                  dL_da1=float(p["W2"][0, 0] * deltas[2][0, 0]),
                  max_abs_diff=max(float(jnp.max(jnp.abs(g[k] - g_ad[k]))) for k in g))


def is_lecture(P) -> bool:
    """The lecture's numbers (lr, W1, b1, W2, b2) are the ones run."""
    return (P.lr, P.W1, P.b1, P.W2, P.b2) == (0.5, [0.5, 0.5], 0.0, 0.5, 0.0)


# ---------------------------------------------------------------- save
def save(cfg, run, res: Result) -> dict:
    f = res.full
    lecture = {}
    for k, v in f.items():
        printed, dec = LECTURE[k]
        lecture[k] = {"full": v, "lecture": printed, "decimals": dec,
                      "matches": abs(v - printed) <= 0.5 * 10 ** -dec + 1e-12}
    return {"forward": {k: f[k] for k in ("z1", "a1", "z2", "a2", "loss")},
            "grads": {"W1": [f["dW1[0]"], f["dW1[1]"]], "b1": res.db1, "W2": f["dW2"],
                      "b2": f["db2"]},
            "updated": {"W1": [f["W1_new[0]"], f["W1_new[1]"]], "W2": f["W2_new"]},
            "deltas": {"delta1": f["delta1"], "delta2": f["delta2"]},
            "max_abs_diff_vs_autodiff": res.max_abs_diff,
            "lecture": lecture if is_lecture(cfg.experiment) else None}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, f, lecture = cfg.experiment, res.full, summary["lecture"]
    rows = []
    for k, v in f.items():
        printed, dec = LECTURE[k]
        if lecture is None:  # other numbers than the lecture's: nothing to compare with
            rows.append([k, f"{v:.15f}", "-", f"{v:.{dec}f}", "-"])
            continue
        ok = lecture[k]["matches"]
        note = "" if ok else "lecture multiplies rounded numbers" if k == "dW1[1]" else "differs"
        rows.append([k, f"{v:.15f}", f"{printed:.{dec}f}", f"{v:.{dec}f}",
                     "yes" if ok else f"no: {note}"])
    header = ["quantity", "full precision", "lecture", "rounded as printed", "matches lecture"]
    report.print_table("Lecture 5 worked example (L = (y - a2)^2, lr = %g)" % P.lr, header, rows)
    diff = summary["max_abs_diff_vs_autodiff"]
    print(f"manual backward vs jax.grad: max abs difference {diff:.1e}")

    plots.backprop_flow(
        [("x", "x = [%g, %g]" % tuple(res.x), "dL/dx = [%.4f, %.4f]" % tuple(res.dL_dx)),
         ("h", f"z1 = {f['z1']:.4f}\na1 = sigma(z1) = {f['a1']:.4f}",
          f"dL/da1 = {res.dL_da1:.4f}\ndL/dz1 = {f['delta1']:.5f}"),
         ("ŷ", f"z2 = {f['z2']:.4f}\na2 = sigma(z2) = {f['a2']:.4f}",
          f"dL/da2 = {f['dL/da2']:.4f}\ndL/dz2 = {f['delta2']:.4f}"),
         ("L", f"L = (y - a2)^2\n= {f['loss']:.4f}", "dL/dL = 1")],
        [(0, 1, "W1 = [%g, %g]\ndW1 = [%.4f, %.4f]" % (*P.W1, f["dW1[0]"], f["dW1[1]"])),
         (1, 2, f"W2 = {P.W2:g}\ndW2 = {f['dW2']:.4f}"), (2, 3, f"y = {res.y:g}")],
        run.figure("backprop_flow.png"),
        title="Lecture 5 worked example: forward values (blue) and dL/d(node) (red), one real "
              "pass")
    run.save_report(report.report(
        "Lecture 5 worked example", question(__doc__),
        "python -m bpexp +experiment=worked_example",
        [("Numbers", "Loss convention: L = (y - a2)^2 for the single example, i.e. the section "
                     "notes' (1/m)||yhat - y||^2 with m = 1.\n\n"
                     + report.markdown_table(header, rows)),
         ("Check", f"Hand-derived backward pass vs jax.grad: max abs difference {diff:.1e}. "
                   "The lecture's dW1[1] = -0.028 is -0.014 x 2 from the rounded delta1; the "
                   "exact value -0.028565 rounds to -0.029.")],
        ["backprop_flow.png"], shows=shows(summary)))


def shows(s: dict) -> list[str]:
    """report.md's opening sentences, computed from the summary."""
    fw, g = s["forward"], s["grads"]
    out = [f"One forward pass gives a1 = {fw['a1']:.4f}, a2 = {fw['a2']:.4f} and loss "
           f"{fw['loss']:.4f}; the backward pass gives delta2 = {s['deltas']['delta2']:.4f}, "
           f"delta1 = {s['deltas']['delta1']:.5f}, dW2 = {g['W2']:.4f} and dW1 = "
           f"[{g['W1'][0]:.5f}, {g['W1'][1]:.5f}].",
           f"The hand-derived backward pass equals jax.grad to {s['max_abs_diff_vs_autodiff']:.1e}"
           " (largest absolute difference)."]
    lec = s["lecture"]
    if lec is not None:
        bad = [k for k, v in lec.items() if not v["matches"]]
        out.append(f"{len(lec) - len(bad)} of {len(lec)} numbers match the lecture's as printed"
                   + (f"; {', '.join(bad)} differ{'s' if len(bad) == 1 else ''}: the lecture "
                      "multiplies numbers it had already rounded." if bad else "."))
    return out
