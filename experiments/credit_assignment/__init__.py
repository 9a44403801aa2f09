"""Credit assignment: which weights of a small network does the real gradient blame, and how much?

Question: on a real batch, how is dL/dW spread over the weights and layers of a small MLP
(5-3-2-1 by default: 5 diabetes features, sigmoid hidden layers of 3 and 2 units, one linear
output, MSE)? The lecture draws the network with line width ~ |dL/dW|; here the widths come
from the real gradient, and the backprop flow shows the real forward values and deltas.
Theory (Lecture 5, section 6): z_l = W_l a_{l-1} + b_l, a_l = f(z_l); delta_L = dL/dz_L,
delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l), dW_l = delta_l a_{l-1}^T, db_l = delta_l 1. So a
weight's credit is (error signal at its target unit) x (activity of its source unit); with
sigmoid hidden layers every step back multiplies by sigma'(z) <= 1/4, so earlier layers tend
to receive smaller per-weight gradients. The hand-derived gradient equals jax.grad.
Expected: hand gradient == jax.grad to ~1e-16 in float64; the mean |dW_l| shrinks from the
output layer towards the input layer; widths are exactly proportional to |dL/dW|.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from matplotlib.lines import Line2D
from sklearn import datasets as skd

from bpexp.experiments.credit_assignment.text import shows
from bpexp import make, plots, primitives, report, stacked, train
from bpexp.errors import UserError
from bpexp.experiments._common import load_data, question
from bpexp.plots import plt
from bpexp.xla import FAST_COMPILE

PRECISION = "float64"
MAX_UNITS = 12  # per layer, so the drawing stays readable


USES = ("model", "data")


@dataclass
class Params:
    name: str = "credit_assignment"
    example: int = 0          # column of the batch shown in the backprop flow
    max_width: float = 9.0    # line width (points) of the largest |dL/dW|
    min_width: float = 0.3    # floor so that tiny gradients stay visible (not part of the scale)


def validate(cfg):
    P = cfg.experiment
    if cfg.model.name != "mlp":
        raise UserError(f"model.name={cfg.model.name!r} is not supported by credit_assignment; "
                        f"allowed: mlp")
    hidden = (cfg.model.hidden if isinstance(cfg.model.hidden, list)
              else [cfg.model.hidden] * cfg.model.depth)
    if max(hidden) > MAX_UNITS:
        raise UserError(f"model.hidden={cfg.model.hidden!r} is too wide to draw; allowed: at most "
                        f"{MAX_UNITS} units per layer")
    if not 0 <= P.min_width < math.inf:
        raise UserError(f"experiment.min_width={P.min_width} must be finite and >= 0")
    if not P.min_width < P.max_width < math.inf:
        raise UserError(f"experiment.max_width={P.max_width} must be finite and > "
                        f"experiment.min_width={P.min_width}")
    m = make.dataset(cfg).m  # the batch is the whole data set; loading it is cheap
    if not 0 <= P.example < m:
        raise UserError(f"experiment.example={P.example} is not a column of the batch; "
                        f"allowed: 0..{m - 1}")


# ---------------------------------------------------------------- pure helpers (numpy)
def edge_widths(g: dict, max_width: float) -> dict:
    """Line width of each weight, proportional to |dL/dW|: the largest |dL/dW_ij| over all
    weight matrices (keys W*) gets ``max_width``. Returns {W_l: array like g[W_l]}."""
    W = {k: np.abs(np.asarray(v, np.float64)) for k, v in g.items() if k.startswith("W")}
    top = max(float(v.max()) for v in W.values())
    return {k: max_width * v / top if top > 0 else np.zeros_like(v) for k, v in W.items()}


def layer_mass(g: dict) -> dict:
    """Per leaf: sum |g|, mean |g| and the l2 norm."""
    out = {}
    for k, v in g.items():
        a = np.abs(np.asarray(v, np.float64))
        out[k] = {"grad_abs_sum": float(a.sum()), "grad_abs_mean": float(a.mean()),
                  "grad_norm": float(np.sqrt(np.sum(a * a))), "shape": list(a.shape)}
    return out


def feature_names(name: str, features, n: int) -> list[str]:
    """Column names of the bundled sklearn sets (no download), else x1..xn."""
    loaders = {"diabetes": "load_diabetes", "breast_cancer": "load_breast_cancer",
               "iris": "load_iris", "wine": "load_wine"}
    if name in loaders:
        names = list(getattr(skd, loaders[name])().feature_names)
        return [str(names[i]) for i in (features if features is not None else range(len(names)))]
    return [f"x{i + 1}" for i in range(n)]


def make_compute(model, n, d_out, hparams, activation, output):
    """jit: (seed, X, Y) -> params (init as the sweep engine does), hand gradient + deltas,
    jax.grad, forward cache (z_l, a_l), loss and per-example output."""

    def compute(seed, X, Y):
        k_init, _ = train.run_keys(seed)
        p = model.init(k_init, n, d_out, dtype=X.dtype, **hparams)
        _, g, fp, deltas = stacked.loss_and_grad(p, X, Y, activation, output)
        g_ad = jax.grad(model.loss)(p, X, Y)
        return p, g, deltas, g_ad, fp.zs(), fp.acts(), model.loss(p, X, Y), model.forward(p, X)

    return jax.jit(compute)


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    """The gradient at the initial weights on one batch: L layers, d_l units in layer l
    (d_0 = n features, d_L = d_out), m examples; i = experiment.example."""

    params: dict             # W_l (d_l, d_{l-1}), b_l (d_l, 1): the initial parameters
    grads: dict              # dL/dW_l, dL/db_l, shaped like params: hand-derived backward pass
    autodiff: dict           # the same by jax.grad
    deltas: dict             # l -> delta_l = dL/dz_l (d_l, m), l = 1..L
    zs: list                 # z_l (d_l, m) at index l - 1, l = 1..L
    acts: list               # a_l (d_l, m) at index l, l = 0..L-1 (a_0 = X)
    yhat: np.ndarray         # (d_out, m) network output
    Y: np.ndarray            # (d_out, m) targets
    loss: float              # batch loss L
    widths: list             # [d_0, ..., d_L] units per layer
    features: list           # d_0 names of the input features
    max_abs_diff: float      # max |hand - jax.grad| over every entry
    max_rel_diff: float      # max over leaves of that / max |jax.grad|
    mass: dict               # leaf -> {grad_abs_sum, grad_abs_mean, grad_norm, shape}
    edge_widths: dict        # W_l -> (d_l, d_{l-1}) drawn line widths ~ |dL/dW_l|
    edge_width_scale: float  # points of line width per unit of |dL/dW|
    delta_mean: dict         # "delta{l}" -> mean |delta_l|
    ratio_first_last: float  # mean |dW_1| / mean |dW_L|
    dldx: np.ndarray         # (d_0,) d l_i/dx = W_1^T (m delta_1[:, i]), example i's own loss


def compute(cfg, run) -> Result:
    P = cfg.experiment
    ds = load_data(cfg, run)
    act, out = cfg.model.activation, cfg.model.output
    model = make.model(cfg)
    hparams = {**make.model_hparams(cfg, model), "init_scale": cfg.model.init_scale}
    X, Y = jnp.asarray(ds.X, jnp.float64), jnp.asarray(ds.Y, jnp.float64)
    with run.timed("gradient"):
        args = (cfg.seed, X, Y)
        f = make_compute(model, ds.n, ds.d_out, hparams, act, out)
        res = f.lower(*args).compile(FAST_COMPILE)(*args)
        p, g, deltas, g_ad, zs, acts, loss, yhat = jax.tree_util.tree_map(np.asarray,
                                                                          jax.device_get(res))
    L = primitives.n_layers(p)
    diff = max(float(np.max(np.abs(g[k] - g_ad[k]))) for k in g)
    rel = max(float(np.max(np.abs(g[k] - g_ad[k])) / max(np.max(np.abs(g_ad[k])), 1e-300))
              for k in g)
    mass = layer_mass(g)
    ew = edge_widths(g, P.max_width)
    return Result(
        p, g, g_ad, deltas, zs, acts, yhat, np.asarray(ds.Y), float(loss),
        [ds.n] + [p[f"W{l}"].shape[0] for l in range(1, L + 1)],
        feature_names(cfg.data.name, cfg.data.features, ds.n), diff, rel, mass, ew,
        P.max_width / max(float(np.max(np.abs(g[k]))) for k in ew),
        {f"delta{l}": float(np.mean(np.abs(deltas[l]))) for l in range(1, L + 1)},
        mass["W1"]["grad_abs_mean"] / mass[f"W{L}"]["grad_abs_mean"],
        ds.m * p["W1"].T @ deltas[1][:, P.example])


# ---------------------------------------------------------------- save
def unit_dims(L: int) -> list[str]:
    """The dim of each layer's units in metrics.zarr: ``feature`` (the inputs, coordinate: their
    names), then ``unit1`` .. ``unitL`` (coordinates 0..d_l - 1; unitL is the output)."""
    return ["feature"] + [f"unit{l}" for l in range(1, L + 1)]


def leaf_dims(k: str, L: int) -> tuple:
    """W_l: (unit_l, unit_{l-1}); b_l (and any other per-unit leaf of layer l, shaped (d_l, 1)):
    (unit_l,), the trailing column of length 1 dropped."""
    dims, l = unit_dims(L), int(re.search(r"\d+$", k)[0])
    return (dims[l], dims[l - 1]) if k.startswith("W") else (dims[l],)


def dataset(res: Result) -> xr.Dataset:
    """Every array of ``res`` with named dims: the units of each layer (:func:`unit_dims`) and
    ``example`` (the batch column); ``network`` (the units per layer) over ``layer``."""
    L = len(res.widths) - 1
    dims = unit_dims(L)

    def leaves(prefix, tree):
        return {f"{prefix}_{k}": (leaf_dims(k, L), v if k.startswith("W") else np.ravel(v))
                for k, v in tree.items()}

    def cols(l):
        return dims[l], "example"

    data = {**leaves("grad", res.grads), **leaves("autodiff", res.autodiff),
            **leaves("param", res.params), **leaves("width", res.edge_widths),
            **{f"delta{l}": (cols(l), res.deltas[l]) for l in range(1, L + 1)},
            **{f"z{l}": (cols(l), res.zs[l - 1]) for l in range(1, L + 1)},
            **{f"a{l}": (cols(l), res.acts[l]) for l in range(L)},
            "yhat": (cols(L), res.yhat), "network": ("layer", np.array(res.widths))}
    coords = {"feature": np.array(res.features), "example": np.arange(res.yhat.shape[1]),
              "layer": np.arange(L + 1),
              **{dims[l]: np.arange(res.widths[l]) for l in range(1, L + 1)}}
    return xr.Dataset(data, coords=coords)


def save(cfg, run, res: Result) -> dict:
    run.save_metrics(dataset(res))
    return {"network": res.widths, "activation": cfg.model.activation,
            "output": cfg.model.output, "data": cfg.data.name, "features": res.features,
            "m": res.Y.shape[1], "loss": res.loss, "layers": res.mass, "deltas": res.delta_mean,
            "max_abs_diff_vs_autodiff": res.max_abs_diff,
            "max_rel_diff_vs_autodiff": res.max_rel_diff,
            "mean_grad_ratio_first_last": res.ratio_first_last,
            "flow_example": cfg.experiment.example,
            "flow_convention": "one example: forward a_l[:, i]; backward m * delta_l[:, i]",
            "edge_width_scale": res.edge_width_scale}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, act, out = cfg.experiment, cfg.model.activation, cfg.model.output
    L, m, i, names = len(res.widths) - 1, summary["m"], P.example, res.features
    figs = ["network.png", "layer_mass.png", "backprop_flow.png"]
    arch = "-".join(map(str, res.widths))
    fig_network(res.widths, {k: res.grads[k] for k in res.edge_widths}, res.edge_widths,
                P.min_width, names, {l: np.sum(res.deltas[l], axis=1) for l in range(1, L + 1)},
                f"{arch} MLP ({act} hidden, {out}) on {m} {cfg.data.name} examples: line width "
                f"~ |dL/dW|", run.figure(figs[0]))
    fig_layer_mass(L, res.mass, res.delta_mean, m, run.figure(figs[1]))
    fig_flow(res.widths, names, res.acts, res.zs, res.deltas, res.yhat, res.Y, i, m, out,
             res.dldx, run.figure(figs[2]))

    mass = res.mass
    header = ["layer", "shape", "sum |dW|", "mean |dW|", "||dW||", "sum |db|", "mean |delta_l|"]
    rows = [[f"W{l}", "x".join(map(str, res.params[f"W{l}"].shape)), mass[f"W{l}"]["grad_abs_sum"],
             mass[f"W{l}"]["grad_abs_mean"], mass[f"W{l}"]["grad_norm"],
             mass[f"b{l}"]["grad_abs_sum"], res.delta_mean[f"delta{l}"]] for l in range(1, L + 1)]
    report.print_table(f"credit_assignment: {arch} {act} MLP, loss {res.loss:.6g} on {m} "
                       f"{cfg.data.name} examples", header, rows)
    check = [["max |hand - jax.grad|", res.max_abs_diff, "0 up to float64 rounding (~1e-16)"],
             ["max relative difference", res.max_rel_diff, "< 1e-10"],
             ["mean |dW| ratio first/last layer", res.ratio_first_last,
              f"< 1 expected with {act} hidden layers"]]
    report.print_table("theory vs measurement", ["quantity", "measured", "theory"], check)
    run.save_report(report.report(
        "Credit assignment", question(__doc__), run.reproduce(),
        [("Setup", f"`mlp` {arch} ({act} hidden, output `{out}`), init `{cfg.model.init}` from "
                   f"seed {cfg.seed}, gradient at the initial weights on a batch of m = {m} "
                   f"`{cfg.data.name}` examples (features: {', '.join(names)}), float64. Loss "
                   f"convention: {_loss_text(out)}. delta_l = dL/dz_l for the batch loss (it "
                   f"carries the 1/m); the flow figure shows ONE example (column {i}) with m x "
                   f"delta_l[:, {i}] = d l_{i}/dz_l, the gradient of that example's own loss."),
         ("Per layer", report.markdown_table(header, rows)),
         ("Theory vs measurement", report.markdown_table(["quantity", "measured", "theory"],
                                                         check))],
        figs, shows=shows(summary)))


def _loss_text(output):
    return {"identity_mse": "L = (1/m) sum (yhat - y)^2",
            "sigmoid_mse": "L = (1/m) sum (sigma(z) - y)^2",
            "sigmoid_ce": "mean binary cross-entropy",
            "softmax_ce": "mean softmax cross-entropy"}[output]


POS, NEG = "tab:red", "tab:blue"  # dL/dW > 0 (GD lowers the weight), < 0 (GD raises it)
XGAP = 3.0  # horizontal distance between layers (vertical distance between units is 1)


def _node_xy(widths):
    """Node centres: layer l at x = XGAP l, units 1 apart, centred on y = 0."""
    return [np.stack([np.full(w, XGAP * l), np.arange(w)[::-1] - (w - 1) / 2], -1)
            for l, w in enumerate(widths)]


def fig_network(widths, g, ew, min_width, names, db, title, path):
    """Edges W_l[j, k]: source unit k of layer l-1 -> unit j of layer l, width ~ |dW|, red for
    dL/dW > 0 (GD lowers that weight), blue for < 0; each edge labelled with dL/dW, the labels
    of different sources staggered along the edges so they do not pile up."""
    xy = _node_xy(widths)
    L = len(widths) - 1
    H = max(widths)
    fig, ax = plt.subplots(figsize=(2.6 * L + 3.5, 0.95 * H + 2.4))
    for l in range(1, L + 1):
        G, Wd = g[f"W{l}"], ew[f"W{l}"]
        n_src = G.shape[1]
        for j in range(G.shape[0]):
            for k in range(n_src):
                (x0, y0), (x1, y1) = xy[l - 1][k], xy[l][j]
                ax.plot([x0, x1], [y0, y1], color=POS if G[j, k] > 0 else NEG,
                        lw=max(Wd[j, k], min_width), alpha=0.7, solid_capstyle="round", zorder=1)
                t = 0.22 + 0.56 * (k + 0.5) / n_src
                ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), f"{G[j, k]:.2g}", fontsize=6.5,
                        ha="center", va="center", zorder=3, color=POS if G[j, k] > 0 else NEG,
                        bbox=dict(boxstyle="round,pad=0.08", fc="w", ec="none", alpha=0.85))
    for l, pts in enumerate(xy):
        for u, (x, y) in enumerate(pts):
            ax.add_patch(plt.Circle((x, y), 0.17, fc="#dbe9f6" if 0 < l < L else "#eeeeee", ec="k",
                                    lw=1, zorder=4))
            if l == 0:
                ax.text(x - 0.25, y, names[u], ha="right", va="center", fontsize=9)
            else:
                ax.text(x, y + 0.2, f"db={db[l][u]:.2g}", ha="center", va="bottom", fontsize=7,
                        color="0.2", zorder=5,
                        bbox=dict(boxstyle="round,pad=0.08", fc="#fff8dc", ec="none", alpha=0.9))
    top = (H - 1) / 2
    for l in range(L + 1):
        name = "input" if l == 0 else ("output" if l == L else f"hidden {l}")
        ax.text(XGAP * l, top + 0.6, f"{name} ({widths[l]})", ha="center", va="bottom", fontsize=9)
    gmax = max(float(np.abs(v).max()) for v in g.values())
    ax.legend(handles=[Line2D([], [], color=POS, lw=3, label="dL/dW > 0 (GD lowers W)"),
                       Line2D([], [], color=NEG, lw=3, label="dL/dW < 0 (GD raises W)")],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title_fontsize=8,
              title=f"line width ~ |dL/dW|\n(widest = {gmax:.2g})")
    ax.set_xlim(-1.4, XGAP * L + 0.5)
    ax.set_ylim(-top - 0.6, top + 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    return plots.save(fig, path)


def fig_layer_mass(L, mass, delta_mean, m, path):
    fig, axes = plots.slide(1, 3)
    x = np.arange(1, L + 1)
    labels = [f"layer {l}" for l in x]
    for ax, key, title in ((axes[0], "grad_abs_sum", "sum of |gradient| per layer"),
                           (axes[1], "grad_abs_mean", "mean |gradient| per weight")):
        ax.bar(x - 0.2, [mass[f"W{l}"][key] for l in x], 0.4, label="weights W_l",
               color="tab:purple")
        ax.bar(x + 0.2, [mass[f"b{l}"][key] for l in x], 0.4, label="biases b_l",
               color="tab:olive")
        ax.set_yscale("log")
        ax.set_xticks(x, labels)
        ax.set_ylabel(f"{key.replace('grad_abs_', '')} |dL/d.| (log)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    vals = [delta_mean[f"delta{l}"] for l in x]
    ax.bar(x, vals, 0.5, color="tab:gray")
    for xi, v in zip(x, vals):
        ax.text(xi, v, f"{v:.2g}", ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel("mean |delta_l| = mean |dL/dz_l| (log)")
    ax.set_title(f"error signal per layer (batch of m = {m}, includes 1/m)", fontsize=10)
    fig.suptitle("Gradient mass per layer: where the real gradient puts the blame", fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)


def _vec(name, v, digits=3):
    return "\n".join(f"{name}[{j}] = {x:+.{digits}f}" for j, x in enumerate(np.ravel(v)))


def per_example_loss(output, z, y):
    """l_i of one example from its last pre-activation z (d_out,) and target y (d_out,), so that
    the batch loss is the mean of l_i over the examples."""
    if output == "identity_mse":
        return float(np.sum((z - y) ** 2))
    if output == "sigmoid_mse":
        return float(np.sum((1 / (1 + np.exp(-z)) - y) ** 2))
    if output == "sigmoid_ce":
        return float(np.sum(np.logaddexp(0, z) - y * z))
    zs = z - z.max()
    return float(-np.sum(y * (zs - np.log(np.sum(np.exp(zs))))))  # softmax_ce


def fig_flow(widths, names, acts, zs, deltas, yhat, Y, i, m, output, dldx, path):
    """x -> h1 -> ... -> yhat -> loss for ONE example i: forward values above the nodes, the
    example's own backward signal m * delta_l[:, i] = d l_i / d z_l below (the lecture's flow
    with vectors; drawn by plots.backprop_flow with room for several lines per node)."""
    L = len(widths) - 1
    lname = {"identity_mse": "(ŷ - y)^2", "sigmoid_mse": "(σ(z) - y)^2",
             "sigmoid_ce": "BCE(z, y)", "softmax_ce": "CE(softmax z, y)"}[output]
    inputs = "\n".join(f"{n} = {v:+.3f}" for n, v in zip(names, acts[0][:, i]))
    nodes = [("x", inputs, _vec("dℓ/dx", dldx, 4))]
    for l in range(1, L):
        nodes.append((f"h{l}", _vec(f"a{l}", acts[l][:, i]), _vec(f"δ{l}", m * deltas[l][:, i], 4)))
    nodes.append(("ŷ", "\n".join([_vec(f"z{L}", zs[-1][:, i]), _vec("ŷ", yhat[:, i]),
                                   _vec("y", Y[:, i])]),
                  _vec(f"δ{L}", m * deltas[L][:, i], 4)))
    loss_i = per_example_loss(output, zs[-1][:, i], Y[:, i])
    nodes.append(("ℓ", f"ℓ = {lname}\n= {loss_i:.4f}", "dℓ/dℓ = 1"))
    edges = [(j - 1, j, f"W{j} ({widths[j]}x{widths[j - 1]})" if j <= L else "")
             for j in range(1, len(nodes))]
    return plots.backprop_flow(
        nodes, edges, path, height=2.4, title_size=10,
        backward_label=f"backward dℓ/d(node)\n(example {i}'s own loss)",
        title=f"Backprop flow for ONE example (column {i} of the batch, not an average); "
              f"red δ_l = dℓ/dz_l = m x (batch delta_l)[:, {i}]")
