"""Q4: the cost of all P gradients by backprop, forward mode and finite differences."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp import gradcheck, models
from bpexp.experiments.backprop_cost.timing import best_time, flops, loop_time, looped

Q4_METHODS = ("forward", "backprop", "forward_mode", "finite_differences")


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
