"""Q8: why store z, a: memory and time of storing vs checkpointing vs recomputing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import gradcheck, models, primitives, stacked
from bpexp.experiments.backprop_cost.q4 import problems
from bpexp.experiments.backprop_cost.timing import best_time

Q8_METHODS = ("store", "checkpoint", "recompute")


def stack(p, L):
    """{W1..WL, b1..bL} (all h x h) -> W: (L, h, h), b: (L, h, 1)."""
    return jax.device_put((np.stack([p[f"W{l}"] for l in range(1, L + 1)]),  # numpy: no compile
                           np.stack([p[f"b{l}"] for l in range(1, L + 1)])))


def _layer(activation, W, b, a):
    """a_l = f(W_l a_{l-1} + b_l) and its cache: bpexp.stacked's two steps."""
    return stacked.hidden(stacked.affine(W, b, a), a, activation, False)


def checkpoint_grad(activation, out):
    """jax.grad through a scan of jax.checkpoint layers (the usual JAX idiom): the backward pass
    keeps each layer's input a_{l-1} only and recomputes z_l = W_l a_{l-1} + b_l and f(z_l)
    from it inside the backward loop. W: (L, h, h), b: (L, h, 1) -> (dW, db)."""

    @jax.checkpoint
    def hidden(a, wb):
        return _layer(activation, wb[0], wb[1], a)[0], None

    def loss(W, b, X, Y):
        a, _ = jax.lax.scan(hidden, X, (W[:-1], b[:-1]))
        return out.loss(stacked.affine(W[-1], b[-1], a), Y)

    return jax.grad(loss, argnums=(0, 1))


def recompute_grad(activation, out):
    """The delta recursion with NOTHING stored: for each layer l = L..1 the input a_{l-1} and
    the cache of layer l - 1 (for f') are recomputed from X through layers 1..l-1 (bpexp.stacked's
    steps). Memory O(1) in depth, time L(L-1)/2 layer evaluations. W: (L, h, h), b: (L, h, 1) ->
    (dW, db) of the same shapes."""

    def grad(W, b, X, Y):
        L = W.shape[0]

        def a_of(i):  # a_i, a_0 = X: i layers from the input
            return jax.lax.fori_loop(0, i, lambda k, a: _layer(activation, W[k], b[k], a)[0], X)

        zL = stacked.affine(W[L - 1], b[L - 1], a_of(L - 1))
        delta = out.delta(zL, Y)                                  # delta_L = dL/dz_L

        def back(j, carry):
            delta, gW, gb = carry
            i = L - 1 - j                                         # layer l = i + 1
            a_prev, c = _layer(activation, W[i - 1], b[i - 1], a_of(jnp.maximum(i - 1, 0)))
            a_prev = jnp.where(i > 0, a_prev, X)                  # a_{l-1}
            dW, db, da = stacked.affine_backward(delta, W[i], a_prev)
            delta = stacked.hidden_backward(da, c)[0]             # delta_{l-1}
            return delta, gW.at[i].set(dW), gb.at[i].set(db)

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
    out = primitives.output("identity_mse")
    model = models.get("mlp", activation=P.activation, output="identity_mse")
    h, m = P.q8_width, P.q8_batch
    depths = np.array(R["depths"])
    mem = np.zeros((3, len(depths)))
    secs = np.zeros((3, len(depths)))
    err = 0.0
    ck, rc = checkpoint_grad(P.activation, out), recompute_grad(P.activation, out)
    probs = problems(model, key, [(h, h, m, int(L) - 1) for L in depths])
    calls = []   # (j, method, function, args) of every program
    for j, (L, (X, Y, p)) in enumerate(zip(depths, probs)):
        W, b = stack(p, int(L))
        calls += [(j, "store", jax.jit(model.grad), (p, X, Y)),
                  (j, "checkpoint", jax.jit(ck), (W, b, X, Y)),
                  (j, "recompute", jax.jit(rc), (W, b, X, Y))]
    lowered = [f.lower(*args) for _, _, f, args in calls]
    with ThreadPoolExecutor(2) as pool:   # XLA compiles release the GIL
        compiled_all = list(pool.map(lambda lo: lo.compile(), lowered))
    res = [{} for _ in depths]
    for (j, name, _, args), compiled in zip(calls, compiled_all):   # timed one at a time
        i, L = Q8_METHODS.index(name), int(depths[j])
        mem[i, j] = compiled.memory_analysis().temp_size_in_bytes
        secs[i, j], g = best_time(compiled, args, P.repeats, P.min_seconds)
        parts = (list(g) if name != "store" else  # (dW, db) stacked, or per layer
                 [g[f"{k}{l}"] for k in "Wb" for l in range(1, L + 1)])
        res[j][name] = np.concatenate([np.asarray(x).ravel() for x in parts])  # numpy
    for r in res:
        for name in ("checkpoint", "recompute"):
            err = max(err, gradcheck.rel_err(r[name], r["store"]))
    Ls = depths.astype(np.float64)
    # work in layer matmuls (h x h by h x m), counted: every method does L forward and 2L
    # backward (dW_l, delta_{l-1}); checkpoint recomputes the L - 1 hidden layers once more;
    # recompute evaluates 1 + sum_{l<L} l = 1 + L(L-1)/2 layers again
    evals = np.stack([3 * Ls, 4 * Ls - 1, 3 * Ls + 1 + Ls * (Ls - 1) / 2])
    return Q8(depths, mem, secs, evals, err)
