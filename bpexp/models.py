"""The networks of the CS230 section notes and Lecture 5 as pure ``init / forward / loss``.

Examples are columns: ``X: (n, m)``, ``Y: (d_out, m)``. Parameters are dict pytrees with the
notes' names and shapes. MSE is ``(1/m) * sum((Yhat - Y)**2)`` (section-notes convention; for
one example it is the lecture's ``(y - a)^2``); cross-entropies are means over the m examples.
``m.grad`` is the hand-derived backward pass of ``grads.py``.

    from bpexp import models
    m = models.get("mlp", activation="tanh", output="softmax_ce")
    p = m.init(key, n, d_out, hidden=32, depth=3, init="xavier")
    m.loss(p, X, Y); m.grad(p, X, Y)  # == jax.grad(m.loss)(p, X, Y)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

NAMES = ("univariate", "multivariate", "two_layer_linear", "two_layer_sigmoid", "logistic", "mlp")
INITS = ("standard", "xavier", "he", "normal")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
OUTPUTS = ("identity_mse", "sigmoid_mse", "sigmoid_ce", "softmax_ce")


# ---------------------------------------------------------------- initialization
def weight_from_uniform(u, scheme: str, n_in: int, n_out: int, scale=1.0):
    """A scheme's weights from u ~ U(-1, 1) (open): the uniform schemes are a * u, the normal
    ones std * sqrt(2) erfinv(u) (how jax.random.normal maps its uniforms); ``scale``
    multiplies every scheme and may be a traced array."""
    if scheme == "standard":    # U[-1/sqrt(n_in), 1/sqrt(n_in)]: n Var(W) = 1/3
        w = u / math.sqrt(n_in)
    elif scheme == "xavier":    # Glorot normalized: U[+-sqrt(6/(n_in + n_out))]
        w = u * math.sqrt(6.0 / (n_in + n_out))
    elif scheme == "he":        # N(0, 2/n_in)
        w = math.sqrt(2.0 / n_in) * math.sqrt(2.0) * jax.scipy.special.erfinv(u)
    elif scheme == "normal":    # N(0, 1), times scale
        w = math.sqrt(2.0) * jax.scipy.special.erfinv(u)
    else:
        raise ValueError(f"model.init={scheme!r} is not an init scheme; choose one of {', '.join(INITS)}")
    return (w * scale).astype(u.dtype)


def init_weights(key, shapes, scheme: str = "standard", scale=1.0, dtype=jnp.float32) -> list:
    """Weights of ``shapes`` (each (n_out, n_in), or () / (1, n)) from ONE random draw: every
    jax.random call costs a compile of its own (~0.5 s on a small CPU), so a model draws once."""
    fans = [(s if len(s) == 2 else (1, max(1, math.prod(s)))) for s in shapes]
    sizes = [math.prod(s) if s else 1 for s in shapes]
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))  # open at -1: erfinv finite
    u = jax.random.uniform(key, (sum(sizes),), dtype, lo, 1.0)
    out, o = [], 0
    for shape, size, (n_out, n_in) in zip(shapes, sizes, fans):
        out.append(weight_from_uniform(u[o:o + size].reshape(shape), scheme, n_in, n_out, scale))
        o += size
    return out


def init_weight(key, shape, scheme: str = "standard", scale=1.0, dtype=jnp.float32):
    """One weight of ``shape = (n_out, n_in)`` (or () / (1, n)); see :func:`init_weights`."""
    return init_weights(key, [tuple(shape)], scheme, scale, dtype)[0]


# ---------------------------------------------------------------- activations
def sigmoid(z):
    return jax.nn.sigmoid(z)


def activate(name: str, z):
    """f(z) for a hidden layer."""
    if name == "sigmoid":
        return jax.nn.sigmoid(z)
    if name == "tanh":
        return jnp.tanh(z)
    if name == "relu":
        return jnp.maximum(z, 0)
    raise ValueError(f"model.activation={name!r} is not an activation; choose one of {', '.join(ACTIVATIONS)}")


def mse(Yhat, Y):
    """(1/m) * sum((Yhat - Y)^2) over all entries; m = number of columns."""
    return jnp.sum((Yhat - Y) ** 2) / Y.shape[-1]


def bce_from_logits(Z, Y):
    """-(1/m) sum[y log sigma(z) + (1 - y) log(1 - sigma(z))] = (1/m) sum[softplus(z) - y z]."""
    return jnp.sum(jax.nn.softplus(Z) - Y * Z) / Y.shape[-1]


def softmax_ce(Z, Y):
    """-(1/m) sum Y * log softmax(Z) over classes (rows) and examples (columns)."""
    return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / Y.shape[-1]


# ---------------------------------------------------------------- the section models
def univariate_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(n == 1 and d_out == 1, f"model univariate needs n=1 feature and d_out=1, got n={n}, d_out={d_out} (use data.features=[i])")
    return {"w": init_weight(key, (), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def univariate_forward(p, X):  # yhat = w x + b : (1, m)
    return p["w"] * X + p["b"]


def multivariate_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(d_out == 1, f"model multivariate needs d_out=1, got {d_out}")
    return {"w": init_weight(key, (1, n), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def multivariate_forward(p, X):  # yhat = w X + b : (1, m)
    return p["w"] @ X + p["b"]


def two_layer_init(key, n, d_out, *, hidden=16, init="standard", init_scale=1.0, dtype=jnp.float32):
    W1, W2 = init_weights(key, [(hidden, n), (d_out, hidden)], init, init_scale, dtype)
    return {"W1": W1, "b1": jnp.zeros((hidden, 1), dtype), "W2": W2, "b2": jnp.zeros((d_out, 1), dtype)}


def two_layer_linear_forward(p, X):  # Z = W1 X + b1 ; yhat = W2 Z + b2
    Z = p["W1"] @ X + p["b1"]
    return p["W2"] @ Z + p["b2"]


def two_layer_sigmoid_forward(p, X):  # A = sigma(W1 X + b1) ; yhat = W2 A + b2
    A = sigmoid(p["W1"] @ X + p["b1"])
    return p["W2"] @ A + p["b2"]


def logistic_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(d_out == 1, f"model logistic needs a binary target (d_out=1), got d_out={d_out}")
    return {"w": init_weight(key, (1, n), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def logistic_logits(p, X):  # z = w X + b : (1, m)
    return p["w"] @ X + p["b"]


# ---------------------------------------------------------------- deep MLP (Lecture 5, s. 6)
def mlp_widths(n, d_out, hidden, depth):
    """Layer widths [n, h_1, ..., h_depth, d_out]; ``hidden`` is an int or one int per layer."""
    hs = [int(hidden)] * int(depth) if isinstance(hidden, int) else [int(h) for h in hidden]
    _check(len(hs) == depth, f"model.hidden lists {len(hs)} widths but model.depth={depth}")
    return [n, *hs, d_out]


def mlp_init(key, n, d_out, *, hidden=16, depth=2, init="standard", init_scale=1.0, dtype=jnp.float32):
    """W_l: (h_l, h_{l-1}), b_l: (h_l, 1) for l = 1..depth+1; ``depth`` counts hidden layers."""
    widths = mlp_widths(n, d_out, hidden, depth)
    Ws = init_weights(key, [(widths[l], widths[l - 1]) for l in range(1, len(widths))], init, init_scale, dtype)
    p = {}
    for l, W in enumerate(Ws, 1):
        p[f"W{l}"], p[f"b{l}"] = W, jnp.zeros((widths[l], 1), dtype)
    return p


def n_layers(p) -> int:
    return sum(1 for k in p if k.startswith("W"))


def mlp_logits(p, X, activation="sigmoid"):
    """z_l = W_l a_{l-1} + b_l, a_l = f(z_l) for hidden layers; returns z_L."""
    L, a = n_layers(p), X
    for l in range(1, L):
        a = activate(activation, p[f"W{l}"] @ a + p[f"b{l}"])
    return p[f"W{L}"] @ a + p[f"b{L}"]


def output_value(output, Z):
    """Network output from the last pre-activation."""
    if output in ("identity_mse",):
        return Z
    if output in ("sigmoid_mse", "sigmoid_ce"):
        return sigmoid(Z)
    if output == "softmax_ce":
        return jax.nn.softmax(Z, axis=0)
    raise ValueError(f"model.output={output!r} is not an output; choose one of {', '.join(OUTPUTS)}")


def output_loss(output, Z, Y):
    """Loss from the last pre-activation (cross-entropies from logits, never from probabilities)."""
    if output == "identity_mse":
        return mse(Z, Y)
    if output == "sigmoid_mse":
        return mse(sigmoid(Z), Y)
    if output == "sigmoid_ce":
        return bce_from_logits(Z, Y)
    if output == "softmax_ce":
        return softmax_ce(Z, Y)
    raise ValueError(f"model.output={output!r} is not an output; choose one of {', '.join(OUTPUTS)}")


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class Model:
    """A model: pure functions plus the structural options it was built with."""

    name: str
    init: Callable      # (key, n, d_out, **hparams) -> params
    forward: Callable   # (params, X: (n, m)) -> Yhat: (d_out, m)
    loss: Callable      # (params, X, Y) -> scalar
    grad: Callable      # (params, X, Y) -> pytree like params, by hand (grads.py)
    logits: Callable    # (params, X) -> last pre-activation (== forward for identity outputs)
    hparams: tuple      # keyword names ``init`` accepts
    options: dict = field(default_factory=dict)


def _check(ok: bool, msg: str):
    if not ok:
        raise ValueError(msg)


def get(name: str, *, activation: str = "sigmoid", output: str = "identity_mse") -> Model:
    """The model called ``name``; ``activation``/``output`` configure ``mlp`` only.

    Unknown name -> ValueError listing the known ones."""
    from bpexp import grads  # grads imports this module's forward pieces

    _check(name in NAMES, f"model.name={name!r} is not a model; choose one of {', '.join(NAMES)}")
    base = ("init", "init_scale", "dtype")
    if name == "univariate":
        return Model(name, univariate_init, univariate_forward,
                     lambda p, X, Y: mse(univariate_forward(p, X), Y), grads.univariate,
                     univariate_forward, base)
    if name == "multivariate":
        return Model(name, multivariate_init, multivariate_forward,
                     lambda p, X, Y: mse(multivariate_forward(p, X), Y), grads.multivariate,
                     multivariate_forward, base)
    if name == "two_layer_linear":
        return Model(name, two_layer_init, two_layer_linear_forward,
                     lambda p, X, Y: mse(two_layer_linear_forward(p, X), Y), grads.two_layer_linear,
                     two_layer_linear_forward, ("hidden", *base))
    if name == "two_layer_sigmoid":
        return Model(name, two_layer_init, two_layer_sigmoid_forward,
                     lambda p, X, Y: mse(two_layer_sigmoid_forward(p, X), Y), grads.two_layer_sigmoid,
                     two_layer_sigmoid_forward, ("hidden", *base))
    if name == "logistic":
        return Model(name, logistic_init, lambda p, X: sigmoid(logistic_logits(p, X)),
                     lambda p, X, Y: bce_from_logits(logistic_logits(p, X), Y), grads.logistic,
                     logistic_logits, base)
    # mlp
    _check(activation in ACTIVATIONS, f"model.activation={activation!r} is not an activation; choose one of {', '.join(ACTIVATIONS)}")
    _check(output in OUTPUTS, f"model.output={output!r} is not an output; choose one of {', '.join(OUTPUTS)}")
    logits = lambda p, X: mlp_logits(p, X, activation)  # noqa: E731
    return Model(name, mlp_init, lambda p, X: output_value(output, logits(p, X)),
                 lambda p, X, Y: output_loss(output, logits(p, X), Y),
                 lambda p, X, Y: grads.mlp(p, X, Y, activation=activation, output=output),
                 logits, ("hidden", "depth", *base), {"activation": activation, "output": output})


def n_params(p) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(p)))
