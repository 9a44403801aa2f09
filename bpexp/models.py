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

from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp

from bpexp import grads
from bpexp.errors import UserError
from bpexp.primitives import activate, bce_from_logits, init_weights, mse, n_layers, output, sigmoid
from bpexp.primitives import ACTIVATIONS, INITS, OUTPUTS  # noqa: F401  (the models' options)

NAMES = ("univariate", "multivariate", "two_layer_linear", "two_layer_sigmoid", "logistic", "mlp")
HPARAMS = {"two_layer_linear": ("hidden",), "two_layer_sigmoid": ("hidden",),
           "mlp": ("hidden", "depth")}  # structural keywords of init besides init, scale, dtype
OPTIONS = {"mlp": ("activation", "output")}  # structural choices models.get takes


def init_weight(key, shape, scheme: str = "standard", scale=1.0, dtype=jnp.float32):
    """One weight of ``shape = (n_out, n_in)`` (or () / (1, n)); see primitives.init_weights."""
    return init_weights(key, [tuple(shape)], scheme, scale, dtype)[0]


# ---------------------------------------------------------------- the section models
def univariate_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(n == 1 and d_out == 1, f"model=univariate needs one feature and one target row, got "
                                  f"n={n}, d_out={d_out} (keep one feature with data.features=[i])")
    return {"w": init_weight(key, (), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def univariate_forward(p, X):  # yhat = w x + b : (1, m)
    return p["w"] * X + p["b"]


def multivariate_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(d_out == 1, f"model multivariate needs d_out=1, got {d_out}")
    return {"w": init_weight(key, (1, n), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def multivariate_forward(p, X):  # yhat = w X + b : (1, m)
    return p["w"] @ X + p["b"]


def two_layer_init(key, n, d_out, *, hidden=32, init="standard", init_scale=1.0, dtype=jnp.float32):
    _check(isinstance(hidden, int) and not isinstance(hidden, bool),
           f"model.hidden={list(hidden) if isinstance(hidden, tuple) else hidden!r} must be one "
           "int for the two-layer models; a list of widths is for model=mlp")
    W1, W2 = init_weights(key, [(hidden, n), (d_out, hidden)], init, init_scale, dtype)
    return {"W1": W1, "b1": jnp.zeros((hidden, 1), dtype),
            "W2": W2, "b2": jnp.zeros((d_out, 1), dtype)}


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


def mlp_init(key, n, d_out, *, hidden=32, depth=2, init="standard", init_scale=1.0,
             dtype=jnp.float32):
    """W_l: (h_l, h_{l-1}), b_l: (h_l, 1) for l = 1..depth+1; ``depth`` counts hidden layers."""
    widths = mlp_widths(n, d_out, hidden, depth)
    shapes = [(widths[l], widths[l - 1]) for l in range(1, len(widths))]
    Ws = init_weights(key, shapes, init, init_scale, dtype)
    p = {}
    for l, W in enumerate(Ws, 1):
        p[f"W{l}"], p[f"b{l}"] = W, jnp.zeros((widths[l], 1), dtype)
    return p


def mlp_logits(p, X, activation="sigmoid"):
    """z_l = W_l a_{l-1} + b_l, a_l = f(z_l) for hidden layers; returns z_L."""
    L, a = n_layers(p), X
    for l in range(1, L):
        a = activate(activation, p[f"W{l}"] @ a + p[f"b{l}"])
    return p[f"W{L}"] @ a + p[f"b{L}"]


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
    hparams: tuple      # structural keywords of ``init`` besides init, init_scale, dtype
    options: dict = field(default_factory=dict)   # the options ``get`` was called with


def _check(ok: bool, msg: str):
    if not ok:
        raise UserError(msg)


def _mse_model(name, init, forward, grad):
    return Model(name, init, forward, lambda p, X, Y: mse(forward(p, X), Y), grad, forward,
                 HPARAMS.get(name, ()))


def get(name: str, **options) -> Model:
    """The model called ``name``; ``options`` are its structural choices (OPTIONS: ``mlp``
    takes ``activation`` and ``output``). Unknown name or option -> UserError (a ValueError)
    listing the known ones."""
    _check(name in NAMES, f"model.name={name!r} is not a model; choose one of {', '.join(NAMES)}")
    unknown = sorted(set(options) - set(OPTIONS.get(name, ())))
    _check(not unknown, f"model {name} takes no option {unknown[0] if unknown else ''}; "
                        f"allowed: {', '.join(OPTIONS.get(name, ())) or 'none'}")
    if name == "univariate":
        return _mse_model(name, univariate_init, univariate_forward, grads.univariate)
    if name == "multivariate":
        return _mse_model(name, multivariate_init, multivariate_forward, grads.multivariate)
    if name == "two_layer_linear":
        return _mse_model(name, two_layer_init, two_layer_linear_forward, grads.two_layer_linear)
    if name == "two_layer_sigmoid":
        return _mse_model(name, two_layer_init, two_layer_sigmoid_forward, grads.two_layer_sigmoid)
    if name == "logistic":
        return Model(name, logistic_init, lambda p, X: sigmoid(logistic_logits(p, X)),
                     lambda p, X, Y: bce_from_logits(logistic_logits(p, X), Y), grads.logistic,
                     logistic_logits, ())
    options = {"activation": "sigmoid", "output": "identity_mse", **options}
    activation, out = options["activation"], output(options["output"])
    activate(activation, jnp.zeros(()))  # an unknown activation fails here, not when traced
    logits = lambda p, X: mlp_logits(p, X, activation)  # noqa: E731
    return Model(name, mlp_init, lambda p, X: out.value(logits(p, X)),
                 lambda p, X, Y: out.loss(logits(p, X), Y),
                 lambda p, X, Y: grads.mlp(p, X, Y, **options),
                 logits, HPARAMS[name], options)
