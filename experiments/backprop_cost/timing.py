"""Measuring time and FLOPs of compiled programs: best-of-repeats wall time, loops that keep
XLA from hoisting work, XLA's cost analysis, fitted log-log slopes."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np


def best_time(f, args, repeats, min_seconds) -> tuple[float, object]:
    """Seconds per call of the compiled ``f`` and the output of one call: each repeat runs it k
    times back to back (k chosen so a repeat lasts >= min_seconds), the best repeat wins. The
    warm-up call's output is the one returned; when one call already lasts min_seconds (k = 1)
    the call that chose k is the first repeat (no call is run only to be thrown away)."""
    out = jax.block_until_ready(f(*args))  # warm
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    once = time.perf_counter() - t
    k = max(1, min(1000, math.ceil(min_seconds / max(once, 1e-7))))
    best = once if k == 1 else math.inf
    for _ in range(repeats - (k == 1)):
        t = time.perf_counter()
        for _ in range(k):
            last = f(*args)
        jax.block_until_ready(last)
        best = min(best, (time.perf_counter() - t) / k)
    return best, out


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


def cost(compiled) -> tuple[float, float]:
    """(FLOPs, temp bytes) of a compiled program: XLA's cost analysis and memory analysis of the
    optimized program (nothing is run). XLA counts a loop's body once, whatever its trip
    count: cost a program without loops over the quantity that grows (vmap, not lax.map)."""
    return (float(compiled.cost_analysis()["flops"]),
            float(compiled.memory_analysis().temp_size_in_bytes))


def fit(x, y) -> tuple[float, float]:
    """(slope, its standard error) of the least-squares line log y = a + s log x over the
    finite positive points; the error is nan below three points (no residual left)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 2:
        return math.nan, math.nan
    lx, ly = np.log(x[ok]), np.log(y[ok])
    s, a = np.polyfit(lx, ly, 1)
    if ok.sum() < 3:
        return float(s), math.nan
    sxx = np.sum((lx - lx.mean()) ** 2)
    return float(s), float(np.sqrt(np.sum((ly - a - s * lx) ** 2) / (ok.sum() - 2) / sxx))


def slope(x, y) -> float:
    """Least-squares slope of log y vs log x over the finite points."""
    return fit(x, y)[0]
