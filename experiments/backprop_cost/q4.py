"""Q4: the cost of all P gradients by backprop, forward mode and finite differences, each
measured on the compiled program that computes all of them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp import gradcheck, models
from bpexp.experiments.backprop_cost.timing import best_time, cost, loop_time, looped

Q4_METHODS = ("forward", "backprop", "forward_mode", "finite_differences")
EPS = 1e-3  # central-difference step; float32: only the cost is of interest, not the accuracy


def problems(model, key, specs):
    """specs: [(h, d_out, m, depth)] -> [(X: (h, m), Y: (d_out, m), params)], float32: X, Y ~
    N(0, 1), W_l ~ N(0, 2 / (fan_in + fan_out)) (Glorot normal), b_l = 0; all from ONE numpy
    draw (``key``: numpy's default_rng seed, e.g. an int or a raw jax PRNGKey), placed on the
    device with jax.device_put (jax.random and jnp.asarray would compile a program per
    shape)."""
    shapes = [jax.eval_shape(lambda h=h, d=d, depth=depth: model.init(
        jax.random.PRNGKey(0), h, d, hidden=h, depth=depth)) for h, d, _, depth in specs]
    sizes = [(h + d) * m + sum(v.size for k, v in sh.items() if k.startswith("W"))
             for (h, d, m, _), sh in zip(specs, shapes)]
    buf = np.random.default_rng(np.asarray(key)).standard_normal(sum(sizes), np.float32)
    out, o = [], 0
    for (h, d, m, _), sh in zip(specs, shapes):
        X, Y = buf[o:o + h * m].reshape(h, m), buf[o + h * m:o + (h + d) * m].reshape(d, m)
        o += (h + d) * m
        p = {}
        for k, v in sh.items():
            if k.startswith("W"):
                p[k] = buf[o:o + v.size].reshape(v.shape) * np.float32(np.sqrt(2.0 / sum(v.shape)))
                o += v.size
            else:
                p[k] = np.zeros(v.shape, np.float32)
        out.append(jax.device_put((X, Y, p)))
    return out


def ravel(p):
    """(theta, unravel) as jax.flatten_util.ravel_pytree (leaves in sorted key order), theta
    concatenated in numpy: eager jnp reshapes would compile a program per shape."""
    keys = sorted(p)
    shapes = [np.shape(p[k]) for k in keys]
    ends = np.cumsum([int(np.prod(s)) for s in shapes])
    theta = jax.device_put(np.concatenate([np.ravel(np.asarray(p[k])) for k in keys]))

    def unravel(th):
        return {k: th[e - int(np.prod(s)):e].reshape(s) for k, s, e in zip(keys, shapes, ends)}

    return theta, unravel


def q4_programs(model, p, X, Y, chunk):
    """Each way of getting dL/dtheta for all P parameters as ONE function of the flat theta:
    (theta, whole, chunked). ``whole``: the loss, the hand backward (grads.py), jax.jacfwd (a
    JVP along each of the P basis vectors, vmapped) and central differences vmapped over the 2P
    perturbations theta +- eps e_i; ``chunked``: the same forward mode and differences over
    the P directions ``chunk`` at a time (lax.map over blocks), for when the whole program's
    P x P tangents do not fit in memory."""
    theta, unravel = ravel(p)
    P = theta.size

    def loss(th):
        return model.loss(unravel(th), X, Y)

    def backprop(th):
        return ravel_pytree(model.grad(unravel(th), X, Y))[0]

    def jvp_dir(th, e):  # dL/dtheta . e
        return jax.jvp(loss, (th,), (e,))[1]

    def fd_dir(th, e):  # (L(theta + eps e) - L(theta - eps e)) / 2 eps
        return (loss(th + EPS * e) - loss(th - EPS * e)) / (2 * EPS)

    def all_dirs(one):  # rows of the identity: the P basis directions
        return lambda th: jax.vmap(lambda e: one(th, e))(jnp.eye(P, dtype=th.dtype))

    def blocks(one):
        return lambda th: jax.lax.map(lambda i: one(th, jax.nn.one_hot(i, P, dtype=th.dtype)),
                                      jnp.arange(P), batch_size=chunk)

    whole = {"forward": loss, "backprop": backprop, "forward_mode": jax.jacfwd(loss),
             "finite_differences": all_dirs(fd_dir)}
    return theta, whole, {"forward_mode": blocks(jvp_dir), "finite_differences": blocks(fd_dir)}


@dataclass
class Q4:
    widths: np.ndarray      # [net]
    params: np.ndarray      # [net] P
    seconds: np.ndarray     # [method, net] wall time of all P gradients (nan: not run)
    flops: np.ndarray       # [method, net] XLA cost analysis of the compiled all-P program
    temp_bytes: np.ndarray  # [method, net] its compiled temp memory
    chunked: np.ndarray     # [method, net] bool: the timed program ran the directions in blocks
    fm_err: float           # backprop vs forward mode (jax.jvp), max rel err where both ran
    fd_err: float           # finite differences vs backprop (float32, eps = 1e-3)


def compile_all(whole, theta, threads=2) -> dict:
    """Every program of one net lowered here and compiled on ``threads`` threads (XLA compiles
    release the GIL): {name: (compiled, FLOPs, temp bytes)} for the all-P programs, and
    {loop_name: compiled} for forward and backprop inside a timing loop (timing.looped)."""
    lowered = {k: jax.jit(f).lower(theta) for k, f in whole.items()}
    lowered |= {f"loop_{k}": looped(whole[k]).lower(theta, 1) for k in ("forward", "backprop")}
    with ThreadPoolExecutor(threads) as pool:
        compiled = dict(zip(lowered, pool.map(lambda lo: lo.compile(), lowered.values())))
    return {k: c if k.startswith("loop_") else (c, *cost(c)) for k, c in compiled.items()}


def run_q4(P, R, key) -> Q4:
    """Long because each net's four programs are compiled, costed, timed and cross-checked in
    one pass (the compiled program is the one timed)."""
    model = models.get("mlp", activation=P.activation, output="identity_mse")
    widths = np.array(R["widths"])
    n = len(widths)
    secs, fl, tmp = np.full((4, n), np.nan), np.full((4, n), np.nan), np.full((4, n), np.nan)
    chunked = np.zeros((4, n), bool)
    n_params, fm_err, fd_err = [], 0.0, 0.0
    probs = problems(model, key, [(int(h), 1, P.batch, P.depth) for h in widths])
    for j, (X, Y, p) in enumerate(probs):
        theta, whole, blocks = q4_programs(model, p, X, Y, P.chunk)
        n_params.append(theta.size)
        progs = compile_all(whole, theta)
        outs = {}
        for i, name in enumerate(Q4_METHODS):
            compiled, fl[i, j], tmp[i, j] = progs[name]
            if name in ("forward", "backprop"):  # microseconds: the same function timed k
                secs[i, j], out = loop_time(progs[f"loop_{name}"], theta,  # times in one
                                            P.repeats, P.min_seconds)      # program
            elif theta.size <= R["max_params_forward"]:
                if tmp[i, j] > P.max_temp_mb * 1e6:  # the P x P tangents do not fit: blocks
                    compiled, chunked[i, j] = jax.jit(blocks[name]).lower(theta).compile(), True
                secs[i, j], out = best_time(compiled, (theta,), P.repeats, P.min_seconds)
            else:
                continue
            outs[name] = np.asarray(out, np.float64)
        if "forward_mode" in outs:  # forward mode is autodiff: an independent check of grads.py
            fm_err = max(fm_err, gradcheck.rel_err(outs["forward_mode"], outs["backprop"]))
            fd_err = max(fd_err, gradcheck.rel_err(outs["finite_differences"], outs["backprop"]))
    return Q4(widths, np.array(n_params), secs, fl, tmp, chunked, fm_err, fd_err)
