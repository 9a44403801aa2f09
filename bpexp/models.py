"""The networks of the CS230 section notes and Lecture 5 as pure ``init / forward / loss``.

Examples are columns: ``X: (n, m)``, ``Y: (d_out, m)``. Parameters are dict pytrees with the
notes' names and shapes. MSE is ``(1/m) * sum((Yhat - Y)**2)`` (section-notes convention; for
one example it is the lecture's ``(y - a)^2``); cross-entropies are means over the m examples.
``m.grad`` is the hand-derived backward pass (grads.py; the mlp's is bpexp.stacked).

    from bpexp import models
    m = models.get("mlp", activation="tanh", output="softmax_ce")
    p = m.init(key, n, d_out, hidden=32, depth=3, init="xavier")
    m.loss(p, X, Y); m.grad(p, X, Y)  # == jax.grad(m.loss)(p, X, Y)

``MODELS`` is the one table: a row per model with its forward (logits and output/loss pair),
hand gradient, parameter init, validation rule and config schema. ``models.get``, the config
(``model.*`` keys and choices), the engine and the tests read it; a new model is one row here,
one YAML in conf/model and its tests.

``models.get("mlp", residual=True, norm="batch")``: hidden layers that keep the width add their
input (a_l = a_{l-1} + f(.)), and z_l is batch-normalized over the m columns before f with the
batch's own statistics (training mode: no running averages, so a network's output on one column
depends on the others in its batch), learned gamma_l (init 1), beta_l (init 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax.numpy as jnp

from bpexp import grads, stacked
from bpexp.errors import UserError
from bpexp.primitives import ACTIVATIONS, INITS, NORMS, OUTPUTS, choose, init_weights, output


def init_weight(key, shape, scheme: str = "standard", scale=1.0, dtype=jnp.float32):
    """One weight of ``shape = (n_out, n_in)`` (or () / (1, n)); see primitives.init_weights."""
    return init_weights(key, [tuple(shape)], scheme, scale, dtype)[0]


def _check(ok: bool, msg: str):
    if not ok:
        raise UserError(msg)


# ---------------------------------------------------------------- the section models
def _one_target(name):
    def check(opts, n, d_out):
        _check(d_out == 1, f"model {name} needs d_out=1 (one target row), got d_out={d_out}")
    return check


def _univariate_check(opts, n, d_out):
    _check(n == 1 and d_out == 1, f"model=univariate needs one feature and one target row, got "
                                  f"n={n}, d_out={d_out} (keep one feature with data.features=[i])")


def _mlp_check(opts, n, d_out):
    _check(not (opts["output"] == "softmax_ce" and d_out < 2),
           f"model.output=softmax_ce needs >= 2 classes; the data have {d_out} target row (use "
           "sigmoid_ce for a binary target)")


def univariate_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    """w (), b ()."""
    _univariate_check({}, n, d_out)
    return {"w": init_weight(key, (), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def row_init(key, n, d_out, *, init="standard", init_scale=1.0, dtype=jnp.float32):
    """multivariate, logistic: w (1, n), b ()."""
    _check(d_out == 1, f"model needs d_out=1 (one target row), got d_out={d_out}")
    return {"w": init_weight(key, (1, n), init, init_scale, dtype), "b": jnp.zeros((), dtype)}


def two_layer_init(key, n, d_out, *, hidden=32, init="standard", init_scale=1.0,
                   dtype=jnp.float32):
    """W1 (k, n), b1 (k, 1), W2 (d_out, k), b2 (d_out, 1) with k = ``hidden``."""
    _check(isinstance(hidden, int) and not isinstance(hidden, bool),
           f"model.hidden={list(hidden) if isinstance(hidden, tuple) else hidden!r} must be one "
           "int for the two-layer models; a list of widths is for model=mlp")
    W1, W2 = init_weights(key, [(hidden, n), (d_out, hidden)], init, init_scale, dtype)
    return {"W1": W1, "b1": jnp.zeros((hidden, 1), dtype),
            "W2": W2, "b2": jnp.zeros((d_out, 1), dtype)}


def univariate_logits(p, X):  # yhat = w x + b : (1, m)
    return p["w"] * X + p["b"]


def linear_logits(p, X):  # z = w X + b : (1, m) (multivariate: yhat; logistic: the logit)
    return p["w"] @ X + p["b"]


def two_layer_linear_logits(p, X):  # Z = W1 X + b1 ; yhat = W2 Z + b2
    return p["W2"] @ (p["W1"] @ X + p["b1"]) + p["b2"]


def two_layer_sigmoid_logits(p, X):  # A = sigma(W1 X + b1) ; yhat = W2 A + b2
    return p["W2"] @ ACTIVATIONS["sigmoid"].f(p["W1"] @ X + p["b1"]) + p["b2"]


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


def mlp_logits(p, X, activation="sigmoid", residual=False, norm="none", output=None):
    """z_L of the mlp (bpexp.stacked.forward; ``output`` plays no part in the logits)."""
    del output
    return stacked.forward(p, X, activation, residual, norm).zL


def mlp_grad(p, X, Y, activation="sigmoid", output="identity_mse", residual=False,
             norm="none"):
    """The hand-derived gradient of the mlp (bpexp.stacked: one forward, one backward)."""
    return stacked.loss_and_grad(p, X, Y, activation, output, residual, norm)[1]


# ---------------------------------------------------------------- the table
def _no_check(opts, n, d_out):
    del opts, n, d_out


@dataclass(frozen=True)
class Row:
    """One model of the table."""

    init: Callable       # (key, n, d_out, *, init, init_scale, dtype, **hparams) -> params
    logits: Callable     # (params, X, **options) -> last pre-activation z_L
    grad: Callable       # (params, X, Y, **options) -> grads like params, by hand
    output: str          # the output/loss pair (primitives.OUTPUTS), unless options["output"]
    doc: str             # the forward pass, one line
    hparams: dict = field(default_factory=dict)   # structural keywords of init -> default
    options: dict = field(default_factory=dict)   # structural options of get -> default
    check: Callable = _no_check   # (options, n, d_out) -> None; UserError if the data don't fit
    init_options: tuple = ()      # options that init also takes (mlp: norm adds gamma, beta)

    def schema(self) -> dict:
        """The ``model.*`` keys this model reads (besides name, init, init_scale) -> default."""
        return {**self.hparams, **self.options}


MLP_OPTIONS = {"activation": "sigmoid", "output": "identity_mse", "residual": False,
               "norm": "none"}
MODELS: dict[str, Row] = {
    "univariate": Row(univariate_init, univariate_logits, grads.univariate, "identity_mse",
                      "yhat = w x + b", check=_univariate_check),
    "multivariate": Row(row_init, linear_logits, grads.multivariate, "identity_mse",
                        "yhat = w X + b", check=_one_target("multivariate")),
    "two_layer_linear": Row(two_layer_init, two_layer_linear_logits, grads.two_layer_linear,
                            "identity_mse", "Z = W1 X + b1; yhat = W2 Z + b2",
                            hparams={"hidden": 32}),
    "two_layer_sigmoid": Row(two_layer_init, two_layer_sigmoid_logits, grads.two_layer_sigmoid,
                             "identity_mse", "A = sigma(W1 X + b1); yhat = W2 A + b2",
                             hparams={"hidden": 32}),
    "logistic": Row(row_init, linear_logits, grads.logistic, "sigmoid_ce",
                    "a = sigma(w X + b), binary cross-entropy", check=_one_target("logistic")),
    "mlp": Row(mlp_init, mlp_logits, mlp_grad, "identity_mse",
               "z_l = W_l a_{l-1} + b_l, a_l = f(z_l)", hparams={"hidden": 32, "depth": 2},
               options=MLP_OPTIONS, check=_mlp_check, init_options=("norm",)),
}
NAMES = tuple(MODELS)
HPARAMS = {k: tuple(r.hparams) for k, r in MODELS.items() if r.hparams}
OPTIONS = {k: tuple(r.options) for k, r in MODELS.items() if r.options}
CHOICES = {"activation": tuple(ACTIVATIONS), "output": tuple(OUTPUTS), "norm": NORMS,
           "init": tuple(INITS)}   # the allowed values of the models' string keys
ANY_KEYS = ("hidden",)             # keys of more than one type: an int or one int per layer


# ---------------------------------------------------------------- a model from its row
@dataclass(frozen=True)
class Model:
    """A model: pure functions plus the structural options it was built with."""

    name: str
    init: Callable      # (key, n, d_out, **hparams) -> params
    forward: Callable   # (params, X: (n, m)) -> Yhat: (d_out, m)
    loss: Callable      # (params, X, Y) -> scalar
    grad: Callable      # (params, X, Y) -> pytree like params, by hand
    logits: Callable    # (params, X) -> last pre-activation (== forward for identity outputs)
    hparams: tuple      # structural keywords of ``init`` besides init, init_scale, dtype
    options: dict = field(default_factory=dict)   # the options ``get`` was called with

    def check(self, n: int, d_out: int) -> None:
        """UserError if data of n features and d_out target rows do not fit this model."""
        MODELS[self.name].check(self.options, n, d_out)


def _options(name: str, row: Row, given: dict) -> dict:
    unknown = sorted(set(given) - set(row.options))
    _check(not unknown, f"model {name} takes no option {unknown[0] if unknown else ''}; "
                        f"allowed: {', '.join(row.options) or 'none'}")
    opts = {**row.options, **given}
    for key, allowed in CHOICES.items():
        if key in opts:
            choose(dict.fromkeys(allowed), f"model.{key}", opts[key])
    for key, default in row.options.items():
        if isinstance(default, bool):
            _check(isinstance(opts[key], bool), f"model.{key}={opts[key]!r} must be true or false")
    return opts


def get(name: str, **options) -> Model:
    """The model called ``name``; ``options`` are its structural choices (its row's
    ``options``: the mlp takes activation, output, residual, norm). Unknown name or option ->
    UserError (a ValueError) listing the known ones."""
    _check(name in MODELS, f"model.name={name!r} is not a model; choose one of "
                           f"{', '.join(NAMES)}")
    row = MODELS[name]
    opts = _options(name, row, options)
    out = output(opts.get("output", row.output))
    init_kw = {k: opts[k] for k in row.init_options}

    def init(key, n, d_out, **kw):
        return row.init(key, n, d_out, **init_kw, **kw)

    def logits(p, X):
        return row.logits(p, X, **opts)

    return Model(name, init, lambda p, X: out.value(logits(p, X)),
                 lambda p, X, Y: out.loss(logits(p, X), Y),
                 lambda p, X, Y: row.grad(p, X, Y, **opts), logits, tuple(row.hparams), opts)
