"""The networks of the CS230 section notes and Lecture 5 as pure ``init / forward / loss``.

Examples are columns: ``X: (n, m)``, ``Y: (d_out, m)``. Parameters are dict pytrees with the
notes' names and shapes. MSE is ``(1/m) * sum((Yhat - Y)**2)`` (section-notes convention; for
one example it is the lecture's ``(y - a)^2``); cross-entropies are means over the m examples.
``m.grad`` is the hand-derived backward pass of ``grads.py``.

    from bpexp import models
    m = models.get("mlp", activation="tanh", output="softmax_ce")
    p = m.init(key, n, d_out, hidden=32, depth=3, init="xavier")
    m.loss(p, X, Y); m.grad(p, X, Y)  # == jax.grad(m.loss)(p, X, Y)

``models.get("mlp", residual=True, norm="batch")``: hidden layers that keep the width add their
input (a_l = a_{l-1} + f(.)), and z_l is batch-normalized over the m columns before f with the
batch's own statistics (training mode: no running averages, so a network's output on one column
depends on the others in its batch), learned gamma_l (init 1), beta_l (init 0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp

from bpexp import grads
from bpexp.errors import UserError
from bpexp.primitives import (activate, batch_norm, bce_from_logits, init_weights, is_residual,
                              mse, n_layers, output, sigmoid)
from bpexp.primitives import ACTIVATIONS, INITS, NORMS, OUTPUTS  # noqa: F401  (the options)

NAMES = ("univariate", "multivariate", "two_layer_linear", "two_layer_sigmoid", "logistic", "mlp")
HPARAMS = {"two_layer_linear": ("hidden",), "two_layer_sigmoid": ("hidden",),
           "mlp": ("hidden", "depth")}  # structural keywords of init besides init, scale, dtype
OPTIONS = {"mlp": ("activation", "output", "residual", "norm")}  # structural choices of get


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
             dtype=jnp.float32, norm="none"):
    """W_l: (h_l, h_{l-1}), b_l: (h_l, 1) for l = 1..depth+1; ``depth`` counts hidden layers.
    ``norm="batch"`` adds gamma_l = 1, beta_l = 0: (h_l, 1) for each hidden layer l <= depth
    (``init_scale`` scales the weights only)."""
    widths = mlp_widths(n, d_out, hidden, depth)
    shapes = [(widths[l], widths[l - 1]) for l in range(1, len(widths))]
    Ws = init_weights(key, shapes, init, init_scale, dtype)
    p = {}
    for l, W in enumerate(Ws, 1):
        p[f"W{l}"], p[f"b{l}"] = W, jnp.zeros((widths[l], 1), dtype)
        if norm == "batch" and l < len(Ws):
            p[f"gamma{l}"], p[f"beta{l}"] = (jnp.ones((widths[l], 1), dtype),
                                             jnp.zeros((widths[l], 1), dtype))
    return p


def mlp_logits(p, X, activation="sigmoid", residual=False, norm="none"):
    """Hidden layers l < L: z_l = W_l a_{l-1} + b_l; y_l = BN(z_l) = gamma_l zhat_l + beta_l
    with norm="batch" (else y_l = z_l); a_l = f(y_l), plus a_{l-1} when residual and the
    width is kept. Returns z_L = W_L a_{L-1} + b_L."""
    L, a = n_layers(p), X
    for l in range(1, L):
        z = p[f"W{l}"] @ a + p[f"b{l}"]
        if norm == "batch":
            z = batch_norm(z, p[f"gamma{l}"], p[f"beta{l}"])[0]
        f = activate(activation, z)
        a = a + f if is_residual(residual, a.shape[0], f.shape[0]) else f
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
    takes ``activation``, ``output``, ``residual``, ``norm``). Unknown name or option ->
    UserError (a ValueError) listing the known ones."""
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
    options = {"activation": "sigmoid", "output": "identity_mse", "residual": False,
               "norm": "none", **options}
    activation, out, norm = options["activation"], output(options["output"]), options["norm"]
    activate(activation, jnp.zeros(()))  # an unknown activation fails here, not when traced
    _check(norm in NORMS, f"model.norm={norm!r} is not allowed; choose one of {', '.join(NORMS)}")
    _check(isinstance(options["residual"], bool),
           f"model.residual={options['residual']!r} must be true or false")
    residual = options["residual"]
    logits = lambda p, X: mlp_logits(p, X, activation, residual, norm)  # noqa: E731
    return Model(name, functools.partial(mlp_init, norm=norm), lambda p, X: out.value(logits(p, X)),
                 lambda p, X, Y: out.loss(logits(p, X), Y),
                 lambda p, X, Y: grads.mlp(p, X, Y, **options),
                 logits, HPARAMS[name], options)
