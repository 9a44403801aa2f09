"""Why backpropagation (Lecture 5, Q4) and why store the forward values (Q8), measured.

Question: (Q4) what does it cost to compute ALL the gradients of an MLP's loss, by backprop,
by forward mode (one JVP per parameter) and by finite differences, as the parameter count P
grows from ~1e2 to ~1e6? (Q8) what do the cached z_l, a_l of the forward pass buy: memory and
time of the backward pass that stores them, one that keeps only each layer's input
(jax.checkpoint) and one that stores nothing and recomputes, as the depth grows?
Theory: reverse mode returns every dL/dtheta for a small constant multiple of one forward pass
(Baur-Strassen; Griewank's cheap gradient principle, ~3 for matmul layers: the forward matmul,
then dW and delta); forward mode needs one JVP (~2-3 forwards) per parameter and central
differences two forwards per parameter: their cost in forward-pass equivalents grows like P
(log-log slope 1), backprop's stays flat (slope 0). Storing costs memory linear in depth
(z_l and a_l: 2 m h numbers per layer); checkpointing keeps a_{l-1} only (half) and
recomputes each layer once (~one extra forward); storing nothing costs O(1) memory in depth
but recomputes a_{l-1} from the input for every layer: L(L-1)/2 layer evaluations, time
quadratic in depth.
Expected: fitted slopes of forward-pass equivalents vs P: backprop ~0, forward mode and finite
differences ~1 (FLOPs from XLA's cost analysis; wall time agrees, noisier); temp memory from
the compiled executable grows linearly with depth when storing, ~half as fast with
checkpoints, flat when recomputing, whose time grows ~quadratically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.flatten_util import ravel_pytree

from bpexp import gradcheck, models, plots, report
from bpexp.errors import UserError
from bpexp.experiments._common import command, question
from bpexp.plots import plt
from bpexp.primitives import activate, activation_prime, output

USES = ()  # builds its own networks and random data
SIZES = ("small", "large")
# `size` fills every list left empty: small fits ~20 s on a 2-core CPU, large is for a GPU
PRESETS = {
    "small": {"widths": [4, 8, 16, 32, 128, 512], "max_params_forward": 4000,
              "depths": [2, 4, 8, 16, 32]},
    "large": {"widths": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
              "max_params_forward": 300_000, "depths": [2, 4, 8, 16, 32, 64, 128, 256]},
}
Q4_METHODS = ("forward", "backprop", "forward_mode", "finite_differences")
Q8_METHODS = ("store", "checkpoint", "recompute")
LABELS = {"forward": "one forward pass", "backprop": "backprop (grads.py, all P)",
          "forward_mode": "forward mode (P JVPs, vmapped)",
          "finite_differences": "central differences (2P forwards)",
          "store": "store z, a (grads.py)", "checkpoint": "jax.checkpoint per layer (scan)",
          "recompute": "store nothing, recompute"}


@dataclass
class Params:
    name: str = "backprop_cost"
    size: str = "small"          # small | large: the preset for the lists left empty
    activation: str = "tanh"
    # Q4: cost of all gradients vs parameter count
    widths: list = field(default_factory=list)   # hidden width h of each net ([] = preset)
    depth: int = 3               # hidden layers; inputs n = h, one output: P ~ depth h^2
    batch: int = 64              # m examples
    max_params_forward: int = 0  # forward mode / finite differences up to this P (0 = preset)
    chunk: int = 512             # directions per vmapped chunk (lax.map batch_size)
    # Q8: store vs recompute as depth grows
    depths: list = field(default_factory=list)   # layers L ([] = preset)
    q8_width: int = 64           # every layer h x h (inputs and targets h too)
    q8_batch: int = 256          # m > h: the activations dominate the memory
    repeats: int = 5             # timings: best of this many
    min_seconds: float = 0.02    # each timing repeats a call until it lasts this long


def validate(cfg):
    P = cfg.experiment
    if P.size not in SIZES:
        raise UserError(f"experiment.size={P.size!r} is not allowed; choose one of "
                        f"{', '.join(SIZES)}")
    if P.activation not in ("sigmoid", "tanh", "relu"):
        raise UserError(f"experiment.activation={P.activation!r} is not allowed; choose one of "
                        "sigmoid, tanh, relu")
    for k in ("widths", "depths"):
        v = getattr(P, k)
        if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 65536 for x in v):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: a list of ints in "
                            "[1, 65536] ([] = the size preset)")
        if len(set(v)) != len(v) or (v and len(v) < 2):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: >= 2 distinct values "
                            "(a slope needs two points) or []")
    for k, lo in (("depth", 1), ("batch", 1), ("chunk", 1), ("q8_width", 1), ("q8_batch", 1),
                  ("repeats", 1), ("max_params_forward", 0)):
        if not lo <= getattr(P, k) <= 10**9:
            raise UserError(f"experiment.{k}={getattr(P, k)!r} is not allowed; allowed: an int "
                            f">= {lo}")
    if not 0 <= P.min_seconds < 60:
        raise UserError(f"experiment.min_seconds={P.min_seconds!r} is not allowed; allowed: in "
                        "[0, 60)")


def resolved(P) -> dict:
    """The lists and limits after the size preset fills the ones left empty."""
    pre = PRESETS[P.size]
    return {"widths": sorted(P.widths or pre["widths"]),
            "depths": sorted(P.depths or pre["depths"]),
            "max_params_forward": P.max_params_forward or pre["max_params_forward"]}


# ---------------------------------------------------------------- measuring
def best_time(f, args, repeats, min_seconds) -> float:
    """Seconds per call of the compiled ``f``: each repeat runs it k times back to back (k
    chosen so a repeat lasts >= min_seconds), the best repeat wins."""
    jax.block_until_ready(f(*args))  # warm
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    k = max(1, min(1000, math.ceil(min_seconds / max(time.perf_counter() - t, 1e-7))))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(k):
            out = f(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / k)
    return best


def looped(f):
    """jit: (x, k, *rest) -> (acc, f(x, *rest)): f called k times (k traced: no recompile) in one
    compiled loop, each call's input x shifted by 1e-30 x the previous output's sum, so XLA can
    neither hoist nor skip a call; the per-call dispatch overhead is paid once, not k times."""

    def g(x, k, *rest):
        def body(_, carry):
            acc, _out = carry
            out = f(jax.tree_util.tree_map(lambda v: v + acc.astype(v.dtype), x), *rest)
            s = sum(jnp.sum(o).astype(jnp.float32) for o in jax.tree_util.tree_leaves(out))
            return 1e-30 * s, out

        out0 = jax.eval_shape(f, x, *rest)
        zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), out0)
        return jax.lax.fori_loop(0, k, body, (jnp.zeros((), jnp.float32), zeros))

    return jax.jit(g)


def loop_time(g, x, repeats, min_seconds) -> tuple[float, object]:
    """Seconds per call of ``looped`` g (best of ``repeats`` loops lasting >= min_seconds) and
    the output of one call."""
    out = jax.block_until_ready(g(x, 1))[1]
    t = time.perf_counter()
    jax.block_until_ready(g(x, 1))
    k = max(1, min(100_000, math.ceil(min_seconds / max(time.perf_counter() - t, 1e-7))))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(g(x, k))
        best = min(best, (time.perf_counter() - t) / k)
    return best, out


def flops(f, *args) -> float:
    """FLOPs of ``f`` from XLA's HLO cost analysis of the lowered computation (no compile)."""
    return float(jax.jit(f).lower(*args).cost_analysis()["flops"])


def slope(x, y) -> float:
    """Least-squares slope of log y vs log x over the finite points."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if ok.sum() >= 2 else math.nan


def problems(model, key, specs):
    """specs: [(h, d_out, m, depth)] -> [(X: (h, m), Y: (d_out, m), params)], float32: X, Y ~
    N(0, 1), W_l ~ N(0, 2 / (fan_in + fan_out)) (Glorot normal), b_l = 0; all from ONE
    jax.random draw sliced in numpy (a draw per shape would compile once per shape)."""
    shapes = [jax.eval_shape(lambda h=h, d=d, depth=depth: model.init(
        jax.random.PRNGKey(0), h, d, hidden=h, depth=depth)) for h, d, _, depth in specs]
    sizes = [(h + d) * m + sum(v.size for k, v in sh.items() if k.startswith("W"))
             for (h, d, m, _), sh in zip(specs, shapes)]
    buf = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    out, o = [], 0
    for (h, d, m, _), sh in zip(specs, shapes):
        X, Y = buf[o:o + h * m].reshape(h, m), buf[o + h * m:o + (h + d) * m].reshape(d, m)
        o += (h + d) * m
        p = {}
        for k, v in sh.items():
            if k.startswith("W"):
                p[k] = buf[o:o + v.size].reshape(v.shape) * np.sqrt(2.0 / sum(v.shape))
                o += v.size
            else:
                p[k] = np.zeros(v.shape, np.float32)
        out.append((jnp.asarray(X), jnp.asarray(Y), {k: jnp.asarray(v) for k, v in p.items()}))
    return out


# ---------------------------------------------------------------- Q4: all the gradients
def q4_functions(model, p, X, Y, chunk):
    """Each way of getting dL/dtheta for all P parameters, as a function of the flat theta,
    plus the single-direction pieces whose FLOPs times P count the whole sweep."""
    theta, unravel = ravel_pytree(p)
    P = theta.size

    def loss(th):
        return model.loss(unravel(th), X, Y)

    def backprop(th):
        return ravel_pytree(model.grad(unravel(th), X, Y))[0]

    def e(i):
        return jax.nn.one_hot(i, P, dtype=theta.dtype)

    def jvp_dir(th, i):  # dL/dtheta_i = the JVP along the i-th basis vector
        return jax.jvp(loss, (th,), (e(i),))[1]

    h = 1e-3  # float32: only the cost is of interest here, not the accuracy

    def fd_dir(th, i):  # (L(theta + h e_i) - L(theta - h e_i)) / 2h
        return (loss(th + h * e(i)) - loss(th - h * e(i))) / (2 * h)

    def all_dirs(one):
        return lambda th: jax.lax.map(lambda i: one(th, i), jnp.arange(P), batch_size=chunk)

    return theta, {"forward": loss, "backprop": backprop,
                   "forward_mode": all_dirs(jvp_dir), "finite_differences": all_dirs(fd_dir)}, \
        {"forward": (loss, 1), "backprop": (backprop, 1), "forward_mode": (jvp_dir, P),
         "finite_differences": (fd_dir, P)}


@dataclass
class Q4:
    widths: np.ndarray     # [net]
    params: np.ndarray     # [net] P
    seconds: np.ndarray    # [method, net] (nan: not run)
    flops: np.ndarray      # [method, net] one-direction FLOPs x directions
    fm_err: float          # backprop vs forward mode (jax.jvp), max rel err where both ran
    fd_err: float          # finite differences vs backprop (float32, h = 1e-3)


def run_q4(P, R, key) -> Q4:
    model = models.get("mlp", activation=P.activation, output="identity_mse")
    widths = np.array(R["widths"])
    n_params, secs, fl = [], np.full((4, len(widths)), np.nan), np.full((4, len(widths)), np.nan)
    fm_err = fd_err = 0.0
    probs = problems(model, key, [(int(h), 1, P.batch, P.depth) for h in widths])
    for j, (h, (X, Y, p)) in enumerate(zip(widths, probs)):
        theta, fns, pieces = q4_functions(model, p, X, Y, P.chunk)
        size = theta.size
        n_params.append(size)
        run_fwd = size <= R["max_params_forward"]
        outs = {}
        for i, name in enumerate(Q4_METHODS):
            one, count = pieces[name]
            args = (theta,) if count == 1 else (theta, jnp.int32(0))
            fl[i, j] = flops(one, *args) * count
            if name in ("forward_mode", "finite_differences") and not run_fwd:
                continue
            if name in ("forward", "backprop"):  # microseconds: time them in a compiled loop
                secs[i, j], out = loop_time(looped(fns[name]), theta, P.repeats, P.min_seconds)
            else:  # P directions per call: the dispatch overhead is negligible
                f = jax.jit(fns[name])
                secs[i, j], out = best_time(f, (theta,), P.repeats, P.min_seconds), f(theta)
            outs[name] = np.asarray(out, np.float64)
        if run_fwd:  # forward mode is autodiff: an independent reference for grads.py
            fm_err = max(fm_err, gradcheck.rel_err(outs["forward_mode"], outs["backprop"]))
            fd_err = max(fd_err, gradcheck.rel_err(outs["finite_differences"], outs["backprop"]))
    return Q4(widths, np.array(n_params), secs, fl, fm_err, fd_err)


# ---------------------------------------------------------------- Q8: store vs recompute
def stacked(p, L):
    """{W1..WL, b1..bL} (all h x h) -> W: (L, h, h), b: (L, h, 1)."""
    return (jnp.asarray(np.stack([p[f"W{l}"] for l in range(1, L + 1)])),  # numpy: no compile
            jnp.asarray(np.stack([p[f"b{l}"] for l in range(1, L + 1)])))


def checkpoint_grad(activation, out):
    """jax.grad through a scan of jax.checkpoint layers (the usual JAX idiom): the backward pass
    keeps each layer's input a_{l-1} only and recomputes z_l = W_l a_{l-1} + b_l and f(z_l)
    from it inside the backward loop. W: (L, h, h), b: (L, h, 1) -> (dW, db)."""

    @jax.checkpoint
    def hidden(a, wb):
        return activate(activation, wb[0] @ a + wb[1]), None

    def loss(W, b, X, Y):
        a, _ = jax.lax.scan(hidden, X, (W[:-1], b[:-1]))
        return out.loss(W[-1] @ a + b[-1], Y)

    return jax.grad(loss, argnums=(0, 1))


def recompute_grad(activation, out):
    """The delta recursion with NOTHING stored: for each layer l = L..1 the input a_{l-1} (and
    z_{l-1} for f') is recomputed from X through layers 1..l-1. Memory O(1) in depth, time
    L(L-1)/2 layer evaluations. W: (L, h, h), b: (L, h, 1) -> (dW, db) of the same shapes."""

    def grad(W, b, X, Y):
        L = W.shape[0]

        def layer(i, a):
            return activate(activation, W[i] @ a + b[i])

        def a_of(i):  # a_i = f(z_i), a_0 = X: i layers from the input
            return jax.lax.fori_loop(0, i, layer, X)

        zL = W[L - 1] @ a_of(L - 1) + b[L - 1]
        delta = out.delta(zL, Y)                                  # delta_L = dL/dz_L

        def back(j, carry):
            delta, gW, gb = carry
            i = L - 1 - j                                         # layer l = i + 1
            a_before = a_of(jnp.maximum(i - 1, 0))                # a_{l-2}
            z_prev = W[i - 1] @ a_before + b[i - 1]               # z_{l-1}
            a_prev = jnp.where(i > 0, activate(activation, z_prev), X)  # a_{l-1}
            gW = gW.at[i].set(delta @ a_prev.T)                   # dW_l = delta_l a_{l-1}^T
            gb = gb.at[i].set(jnp.sum(delta, axis=1, keepdims=True))  # db_l = delta_l 1
            # delta_{l-1} = W_l^T delta_l * f'(z_{l-1})
            delta = (W[i].T @ delta) * activation_prime(activation, z_prev, a_prev)
            return delta, gW, gb

        _, gW, gb = jax.lax.fori_loop(0, L, back, (delta, jnp.zeros_like(W), jnp.zeros_like(b)))
        return gW, gb

    return grad


@dataclass
class Q8:
    depths: np.ndarray       # [depth]
    temp_bytes: np.ndarray   # [method, depth] compiled temp memory
    seconds: np.ndarray      # [method, depth]
    layer_evals: np.ndarray  # [method, depth] layer matmuls of the backward pass (counted)
    err: float               # max rel err of checkpoint / recompute vs the stored backward


def run_q8(P, R, key) -> Q8:
    out = output("identity_mse")
    model = models.get("mlp", activation=P.activation, output="identity_mse")
    h, m = P.q8_width, P.q8_batch
    depths = np.array(R["depths"])
    mem = np.zeros((3, len(depths)))
    secs = np.zeros((3, len(depths)))
    err = 0.0
    ck, rc = checkpoint_grad(P.activation, out), recompute_grad(P.activation, out)
    probs = problems(model, key, [(h, h, m, int(L) - 1) for L in depths])
    for j, (L, (X, Y, p)) in enumerate(zip(depths, probs)):
        L = int(L)
        W, b = stacked(p, L)
        fns = {"store": (jax.jit(model.grad), (p, X, Y)),
               "checkpoint": (jax.jit(ck), (W, b, X, Y)),
               "recompute": (jax.jit(rc), (W, b, X, Y))}
        res = {}
        for i, name in enumerate(Q8_METHODS):
            f, args = fns[name]
            compiled = f.lower(*args).compile()
            mem[i, j] = compiled.memory_analysis().temp_size_in_bytes
            secs[i, j] = best_time(compiled, args, P.repeats, P.min_seconds)
            g = compiled(*args)
            parts = (list(g) if name != "store" else  # (dW, db) stacked, or per layer
                     [g[f"{k}{l}"] for k in "Wb" for l in range(1, L + 1)])
            res[name] = np.concatenate([np.asarray(x).ravel() for x in parts])  # numpy
        for name in ("checkpoint", "recompute"):
            err = max(err, gradcheck.rel_err(res[name], res["store"]))
    Ls = depths.astype(np.float64)
    # work in layer matmuls (h x h by h x m), counted: every method does L forward and 2L
    # backward (dW_l, delta_{l-1}); checkpoint recomputes the L - 1 hidden layers once more;
    # recompute evaluates 1 + sum_{l<L} l = 1 + L(L-1)/2 layers again
    evals = np.stack([3 * Ls, 4 * Ls - 1, 3 * Ls + 1 + Ls * (Ls - 1) / 2])
    return Q8(depths, mem, secs, evals, err)


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    q4: Q4
    q8: Q8
    resolved: dict
    backend: str
    device: str


def compute(cfg, run) -> Result:
    P = cfg.experiment
    R = resolved(P)
    k4, k8 = jax.random.split(jax.random.PRNGKey(cfg.seed))
    with run.timed("q4"):
        q4 = run_q4(P, R, k4)
    with run.timed("q8"):
        q8 = run_q8(P, R, k8)
    return Result(q4, q8, R, jax.default_backend(), str(jax.devices()[0]))


# ---------------------------------------------------------------- save
def q4_table(q4: Q4) -> dict:
    """Forward-pass equivalents (time and FLOPs) and their fitted log-log slopes vs P."""
    fpe_t = q4.seconds / q4.seconds[0]
    fpe_f = q4.flops / q4.flops[0]
    return {"fpe_time": fpe_t, "fpe_flops": fpe_f,
            "slope_time": {k: slope(q4.params, fpe_t[i]) for i, k in enumerate(Q4_METHODS)
                           if i > 0},
            "slope_flops": {k: slope(q4.params, fpe_f[i]) for i, k in enumerate(Q4_METHODS)
                            if i > 0}}


def q8_table(q8: Q8) -> dict:
    """Temp bytes per layer (linear fit) and the log-log slope of time vs depth."""
    return {"bytes_per_layer": {k: float(np.polyfit(q8.depths, q8.temp_bytes[i], 1)[0])
                                for i, k in enumerate(Q8_METHODS)},
            "slope_time": {k: slope(q8.depths, q8.seconds[i]) for i, k in enumerate(Q8_METHODS)},
            "slope_matmuls": {k: slope(q8.depths, q8.layer_evals[i])
                              for i, k in enumerate(Q8_METHODS)},
            "slope_time_last_half": {k: slope(q8.depths[len(q8.depths) // 2:],
                                              q8.seconds[i, len(q8.depths) // 2:])
                                     for i, k in enumerate(Q8_METHODS)},
            # at the deepest net: time / the stored backward's time, measured and counted
            "time_ratio_deepest": {k: float(q8.seconds[i, -1] / q8.seconds[0, -1])
                                   for i, k in enumerate(Q8_METHODS)},
            "matmul_ratio_deepest": {k: float(q8.layer_evals[i, -1] / q8.layer_evals[0, -1])
                                     for i, k in enumerate(Q8_METHODS)}}


def save(cfg, run, res: Result) -> dict:
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    t4, t8 = q4_table(q4), q8_table(q8)
    run.save_metrics(xr.Dataset(
        {"q4_seconds": (("q4_method", "net"), q4.seconds),
         "q4_flops": (("q4_method", "net"), q4.flops),
         "q4_fpe_time": (("q4_method", "net"), t4["fpe_time"]),
         "q4_fpe_flops": (("q4_method", "net"), t4["fpe_flops"]),
         "q8_temp_bytes": (("q8_method", "depth"), q8.temp_bytes),
         "q8_seconds": (("q8_method", "depth"), q8.seconds),
         "q8_layer_evals": (("q8_method", "depth"), q8.layer_evals)},
        coords={"q4_method": list(Q4_METHODS), "net": np.arange(len(q4.widths)),
                "width": ("net", q4.widths), "params": ("net", q4.params),
                "q8_method": list(Q8_METHODS), "depth": q8.depths}))
    h, m = P.q8_width, P.q8_batch
    return {
        "backend": res.backend, "device": res.device, "size": P.size, "dtype": "float32",
        "q4": {"depth": P.depth, "batch": P.batch, "activation": P.activation,
               "widths": q4.widths, "params": q4.params,
               "max_params_forward": res.resolved["max_params_forward"],
               "seconds": {k: q4.seconds[i] for i, k in enumerate(Q4_METHODS)},
               "flops": {k: q4.flops[i] for i, k in enumerate(Q4_METHODS)},
               "forward_pass_equivalents_time": {k: t4["fpe_time"][i]
                                                 for i, k in enumerate(Q4_METHODS)},
               "forward_pass_equivalents_flops": {k: t4["fpe_flops"][i]
                                                  for i, k in enumerate(Q4_METHODS)},
               "slope_time": t4["slope_time"], "slope_flops": t4["slope_flops"],
               "backprop_vs_forward_mode_rel_err": q4.fm_err,
               "finite_differences_vs_backprop_rel_err": q4.fd_err,
               "theory": {"slope": {"backprop": 0, "forward_mode": 1, "finite_differences": 1},
                          "backprop_fpe": "~3 (forward matmul, then dW and delta)",
                          "finite_differences_fpe": "2 P"}},
        "q8": {"width": h, "batch": m, "activation": P.activation, "depths": q8.depths,
               "temp_bytes": {k: q8.temp_bytes[i] for i, k in enumerate(Q8_METHODS)},
               "seconds": {k: q8.seconds[i] for i, k in enumerate(Q8_METHODS)},
               "layer_matmuls": {k: q8.layer_evals[i] for i, k in enumerate(Q8_METHODS)},
               "bytes_per_layer": t8["bytes_per_layer"],
               "slope_time": t8["slope_time"],
               "slope_time_last_half": t8["slope_time_last_half"],
               "time_ratio_deepest": t8["time_ratio_deepest"],
               "matmul_ratio_deepest": t8["matmul_ratio_deepest"],
               "grad_rel_err_vs_store": q8.err,
               "theory": {"bytes_per_layer_store_z_and_a": 2 * m * h * 4,
                          "bytes_per_layer_checkpoint_a_and_dW": (m * h + h * h) * 4,
                          "bytes_per_layer_recompute": 0,
                          "slope_time": t8["slope_matmuls"],
                          "slope_time_asymptotic": {"store": 1, "checkpoint": 1,
                                                    "recompute": 2}}}}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    s4, s8 = summary["q4"], summary["q8"]
    figs = ["q4_cost_vs_params.png", "q8_store_vs_recompute.png"]
    fig_q4(q4, s4, res.device, run.figure(figs[0]))
    fig_q8(q8, s8, res.device, run.figure(figs[1]))

    fpe_t, fpe_f = s4["forward_pass_equivalents_time"], s4["forward_pass_equivalents_flops"]
    hdr4 = ["width", "P", "forward (ms)", "backprop fpe (time / FLOPs)",
            "forward mode fpe", "finite diff fpe"]
    rows4 = [[int(w), int(n), 1e3 * q4.seconds[0, j],
              f"{fpe_t['backprop'][j]:.3g} / {fpe_f['backprop'][j]:.3g}",
              f"{_g(fpe_t['forward_mode'][j])} / {fpe_f['forward_mode'][j]:.3g}",
              f"{_g(fpe_t['finite_differences'][j])} / {fpe_f['finite_differences'][j]:.3g}"]
             for j, (w, n) in enumerate(zip(q4.widths, q4.params))]
    report.print_table(f"Q4: cost of ALL gradients in forward-pass equivalents (fpe), mlp depth "
                       f"{P.depth}, batch {P.batch}, {res.device}", hdr4, rows4)
    hdr_s = ["method", "slope (FLOPs)", "slope (time)", "theory"]
    rows_s = [[LABELS[k], s4["slope_flops"][k], s4["slope_time"][k],
               s4["theory"]["slope"][k]] for k in Q4_METHODS[1:]]
    rows_s.append(["backprop vs forward mode, rel err", s4["backprop_vs_forward_mode_rel_err"],
                   "", "float32 rounding"])
    report.print_table("Q4: fitted log-log slope of forward-pass equivalents vs P", hdr_s, rows_s)
    ran = np.flatnonzero(np.isfinite(q4.seconds[2]))
    j = int(ran[-1]) if ran.size else 0
    note4 = (f"Backprop costs {min(fpe_f['backprop']):.2f}..{max(fpe_f['backprop']):.2f} forward "
             f"passes in FLOPs over P = {q4.params[0]}..{q4.params[-1]} (fitted slope "
             f"{s4['slope_flops']['backprop']:.3f}); forward mode and central differences grow "
             f"like P (slopes {s4['slope_flops']['forward_mode']:.3f} and "
             f"{s4['slope_flops']['finite_differences']:.3f}). In wall time the largest P run "
             f"both ways (P = {q4.params[j]}) gives forward mode {fpe_t['forward_mode'][j]:.3g} "
             f"fpe vs {fpe_f['forward_mode'][j]:.3g} in FLOPs: there time tracks FLOPs. At small "
             f"P one forward pass takes {1e6 * q4.seconds[0, 0]:.1f} us, mostly per-operation "
             "overhead, while the P directions run as a few large batched operations, so the "
             "time ratios there fall below P and the fitted time slopes exceed 1.")
    print(note4)
    hdr8 = ["depth L", *[f"{k} temp MB" for k in Q8_METHODS], *[f"{k} ms" for k in Q8_METHODS]]
    rows8 = [[int(L), *[q8.temp_bytes[i, j] / 1e6 for i in range(3)],
              *[1e3 * q8.seconds[i, j] for i in range(3)]] for j, L in enumerate(q8.depths)]
    report.print_table(f"Q8: backward pass that stores vs recomputes, width {P.q8_width}, batch "
                       f"{P.q8_batch}, float32", hdr8, rows8)
    th = s8["theory"]
    rows_t = [[LABELS[k], s8["bytes_per_layer"][k], th[f"bytes_per_layer_{suffix}"],
               s8["slope_time"][k], th["slope_time"][k]]
              for k, suffix in zip(Q8_METHODS, ("store_z_and_a", "checkpoint_a_and_dW",
                                                "recompute"))]
    for r, k in zip(rows_t, Q8_METHODS):
        r += [s8["time_ratio_deepest"][k], s8["matmul_ratio_deepest"][k]]
    hdr_t = ["method", "temp bytes / layer", "theory", "time slope vs L",
             "theory (counted matmuls)", f"time / store's at L={int(q8.depths[-1])}",
             "theory (counted)"]
    report.print_table("Q8: theory vs measurement", hdr_t, rows_t)
    Lmax = int(q8.depths[-1])
    note8 = (f"At L = {Lmax} the stored backward needs {q8.temp_bytes[0, -1] / 1e6:.2f} MB of "
             f"temp memory ({s8['bytes_per_layer']['store'] / 1e3:.0f} kB a layer, theory "
             f"{th['bytes_per_layer_store_z_and_a'] / 1e3:.0f}), the recomputing one "
             f"{q8.temp_bytes[2, -1] / 1e6:.2f} MB whatever the depth, but it takes "
             f"{s8['time_ratio_deepest']['recompute']:.1f}x the time (counted "
             f"{s8['matmul_ratio_deepest']['recompute']:.1f}x); checkpointing takes "
             f"{s8['time_ratio_deepest']['checkpoint']:.2f}x (counted "
             f"{s8['matmul_ratio_deepest']['checkpoint']:.2f}x) for "
             f"{s8['bytes_per_layer']['checkpoint'] / 1e3:.0f} kB a layer.")
    print(note8)
    run.save_report(report.report(
        "Backprop cost (Q4) and store vs recompute (Q8)", question(__doc__), command(cfg),
        [("Q4: all gradients vs parameter count",
          f"MLP, {P.depth} hidden {P.activation} layers of width h, h inputs, one output, MSE, "
          f"batch {P.batch}, float32 on {res.device}. Forward-pass equivalents (fpe) = cost of "
          f"all P gradients / cost of one forward pass, as wall time (best of {P.repeats}) and "
          f"as FLOPs from XLA's cost analysis (one direction's FLOPs x P for forward mode and "
          f"finite differences). Forward mode and finite differences run up to P = "
          f"{res.resolved['max_params_forward']}; beyond, their FLOPs are counted only.\n\n"
          + report.markdown_table(hdr4, rows4) + "\n" + report.markdown_table(hdr_s, rows_s)
          + "\n" + note4),
         ("Q8: store vs recompute",
          f"Depth-L MLP, every layer {P.q8_width} x {P.q8_width}, batch {P.q8_batch}. Temp "
          "memory is the compiled executable's `memory_analysis().temp_size_in_bytes` "
          "(deterministic); time is best of "
          f"{P.repeats}. The stored backward is grads.py's; the checkpointed one is jax.grad "
          "through a lax.scan of jax.checkpoint layers (it also stacks the per-layer dW, h^2 x "
          "4 B a layer); the recomputing one is the same delta recursion with nothing "
          "stored (a_{l-1} recomputed from X for each l).\n\n"
          + report.markdown_table(hdr8, rows8) + "\n" + report.markdown_table(hdr_t, rows_t)
          + "\n" + note8)],
        figs))


def _g(v):
    return "-" if not np.isfinite(v) else f"{v:.3g}"


COLORS = {"backprop": "tab:blue", "forward_mode": "tab:orange", "finite_differences": "tab:red",
          "forward": "0.3", "store": "tab:blue", "checkpoint": "tab:green",
          "recompute": "tab:red"}


def fig_q4(q4: Q4, s4, device, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    x = q4.params.astype(np.float64)
    for ax, key, what in ((axes[0], "forward_pass_equivalents_flops", "FLOPs"),
                          (axes[1], "forward_pass_equivalents_time", "wall time")):
        sl = s4["slope_flops" if what == "FLOPs" else "slope_time"]
        for k in Q4_METHODS[1:]:
            y = np.asarray(s4[key][k], np.float64)
            ok = np.isfinite(np.asarray(s4["seconds"][k], np.float64))  # run (else counted)
            ax.loglog(x[ok], y[ok], "o-", color=COLORS[k], label=f"{LABELS[k]}: slope {sl[k]:.2f}")
            if what == "FLOPs" and (~ok).any():
                ax.loglog(x[ok.sum() - 1:], y[ok.sum() - 1:], "--", color=COLORS[k])
                ax.loglog(x[~ok], y[~ok], "o", color=COLORS[k], mfc="w")
        bp = np.asarray(s4[key]["backprop"], np.float64)
        ax.loglog(x, np.full_like(x, np.median(bp)), ":", color="k", lw=1,
                  label="slope 0 (a constant)")
        ref = np.asarray(s4[key]["finite_differences"], np.float64)
        i0 = int(np.flatnonzero(np.isfinite(ref))[-1])  # through the largest measured P
        ax.loglog(x, ref[i0] * x / x[i0], "--", color="0.5", lw=1, label="slope 1 (∝ P)")
        ax.set_xlabel("parameters P")
        ax.set_ylabel(f"cost of all P gradients / one forward pass ({what})")
        ax.legend(fontsize=7.5, loc="upper left")
    axes[0].set_title("FLOPs (XLA cost analysis); open markers: counted, not run", fontsize=10)
    axes[1].set_title(f"measured wall time on {device}", fontsize=10)
    fig.suptitle("Q4: backprop costs a few forward passes whatever P; forward mode and finite "
                 "differences grow like P", fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)


def fig_q8(q8: Q8, s8, device, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    L = q8.depths.astype(np.float64)
    for i, k in enumerate(Q8_METHODS):
        axes[0].plot(L, q8.temp_bytes[i] / 1e6, "o-", color=COLORS[k],
                     label=f"{LABELS[k]}: {s8['bytes_per_layer'][k] / 1e3:.0f} kB/layer")
        axes[1].loglog(L, 1e3 * q8.seconds[i], "o-", color=COLORS[k],
                       label=f"{LABELS[k]}: slope {s8['slope_time'][k]:.2f}")
    th = s8["theory"]
    per = th["bytes_per_layer_store_z_and_a"]
    axes[0].plot(L, L * per / 1e6, ":", color="tab:blue", lw=1,
                 label=f"theory: z and a, 2mh x 4 B = {per / 1e3:.0f} kB/layer")
    per = th["bytes_per_layer_checkpoint_a_and_dW"]
    axes[0].plot(L, L * per / 1e6, ":", color="tab:green", lw=1,
                 label=f"theory: a and dW, (mh + h²) x 4 B = {per / 1e3:.0f} kB/layer")
    axes[0].set_xlabel("depth L (layers)")
    axes[0].set_ylabel("temp memory of the compiled backward (MB)")
    axes[0].set_title("memory: storing grows with depth, recomputing does not", fontsize=10)
    axes[0].legend(fontsize=7.5)
    # theory: counted layer matmuls x the time of one, taken from the stored backward at max L
    per = q8.seconds[0, -1] / q8.layer_evals[0, -1]
    for i, k in enumerate(Q8_METHODS):
        axes[1].loglog(L, 1e3 * per * q8.layer_evals[i], ":", color=COLORS[k], lw=1.2,
                       label="theory: counted matmuls" if i == 0 else None)
    axes[1].set_xticks(L, [str(int(v)) for v in L])
    axes[1].minorticks_off()
    axes[1].set_xlabel("depth L (layers)")
    axes[1].set_ylabel("time of one backward pass (ms)")
    axes[1].set_title(f"time on {device}: recomputing costs L(L-1)/2 layer evaluations",
                      fontsize=10)
    axes[1].legend(fontsize=7.5)
    fig.suptitle(f"Q8: why store z and a (width {s8['width']}, batch {s8['batch']}, float32)",
                 fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)
