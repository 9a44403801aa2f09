"""The pieces that models (forward) and grads (backward) share, each beside its derivative.

Three tables, read everywhere else:
- ``ACTIVATIONS``: f(z) beside f'(z) (written with the cached a = f(z), as backprop uses it);
- ``OUTPUTS``: each output/loss pair's value, loss (from logits) and delta_L = dL/dz_L;
- ``INITS``: each initialization scheme's map from u ~ U(-1, 1) beside its Var(W);
and the mlp's layer variants: ``NORMS`` (batch normalization's forward, whose backward is in
grads.py) and the residual rule (:func:`is_residual`).
Shapes: ``Z, Y: (d_out, m)``; examples are columns, ``m = Y.shape[-1]``.
This module imports only jax and numpy.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from bpexp.errors import UserError


def choose(table: dict, key: str, value):
    """``table[value]``, or a UserError naming the key and the allowed values."""
    if value not in table:
        raise UserError(f"{key}={value!r} is not allowed; choose one of {', '.join(table)}")
    return table[value]


def n_layers(p) -> int:
    """Number of weight matrices W1..WL of an mlp's params."""
    return sum(1 for k in p if k.startswith("W"))


# ---------------------------------------------------------------- activations
class Activation(NamedTuple):
    f: Callable        # a = f(z)
    prime: Callable    # f'(z) from (z, a)


def sigmoid(z):
    return jax.nn.sigmoid(z)


def sigmoid_prime(z):
    """sigma'(z) = sigma(z) sigma(-z) = a (1 - a) <= 1/4, computed from z: a (1 - a) loses
    every digit of 1 - a once a rounds near 1 (z = 30: 1 - a ~ 1e-13, relative error 1e-3)."""
    return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


def tanh_prime(z):
    """tanh'(z) = 1 - a^2 = sech(z)^2, from z for the same reason (exact to rounding even
    where a = tanh(z) rounds to +-1)."""
    return jnp.square(1 / jnp.cosh(z))


def relu(z):
    """max(z, 0) written as where(z > 0, z, 0): jax.grad of it is 1[z > 0], so autodiff
    agrees with the hand derivative at the tie z = 0 (jnp.maximum's gradient splits it, 0.5)."""
    return jnp.where(z > 0, z, jnp.zeros_like(z))


ACTIVATIONS = {
    "sigmoid": Activation(sigmoid, lambda z, a: sigmoid_prime(z)),     # sigma' <= 1/4
    "tanh": Activation(jnp.tanh, lambda z, a: tanh_prime(z)),          # tanh' <= 1
    "relu": Activation(relu, lambda z, a: (z > 0).astype(z.dtype)),    # relu' = 1[z > 0], 0 at 0
}


def activate(name: str, z):
    """a = f(z) for a hidden layer."""
    return choose(ACTIVATIONS, "model.activation", name).f(z)


def activation_prime(name: str, z, a):
    """f'(z), written with the cached forward value a = f(z)."""
    return choose(ACTIVATIONS, "model.activation", name).prime(z, a)


# ---------------------------------------------------------------- losses and output deltas
def mse(Yhat, Y):
    """(1/m) * sum((Yhat - Y)^2) over all entries; m = number of columns."""
    return jnp.sum((Yhat - Y) ** 2) / Y.shape[-1]


def bce_from_logits(Z, Y):
    """-(1/m) sum[y log sigma(z) + (1 - y) log(1 - sigma(z))] = (1/m) sum[softplus(z) - y z]."""
    return jnp.sum(jax.nn.softplus(Z) - Y * Z) / Y.shape[-1]


def softmax_ce(Z, Y):
    """-(1/m) sum Y * log softmax(Z) over classes (rows) and examples (columns)."""
    return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / Y.shape[-1]


def _softmax_delta(Z, Y):
    """(P sum_k Y_k - Y)/m: the general form, for targets that need not sum to 1 (soft or
    unnormalized); it is the familiar (P - Y)/m for one-hot columns."""
    e = jnp.exp(Z - jnp.max(Z, axis=0, keepdims=True))
    P = e / jnp.sum(e, axis=0, keepdims=True)
    return (P * jnp.sum(Y, axis=0, keepdims=True) - Y) / Y.shape[-1]


def _sigmoid_mse_delta(Z, Y):
    return (2.0 / Y.shape[-1]) * (sigmoid(Z) - Y) * sigmoid_prime(Z)   # dL/da * sigma'(z)


class Output(NamedTuple):
    value: Callable    # network output from the last pre-activation z_L
    loss: Callable     # L(z_L, Y), cross-entropies from logits
    delta: Callable    # delta_L = dL/dz_L


OUTPUTS = {
    "identity_mse": Output(lambda Z: Z, mse,
                           lambda Z, Y: (2.0 / Y.shape[-1]) * (Z - Y)),  # d/dz (1/m)||z - y||^2
    "sigmoid_mse": Output(sigmoid, lambda Z, Y: mse(sigmoid(Z), Y), _sigmoid_mse_delta),
    "sigmoid_ce": Output(sigmoid, bce_from_logits,
                         lambda Z, Y: (sigmoid(Z) - Y) / Y.shape[-1]),    # (a - y)/m
    "softmax_ce": Output(lambda Z: jax.nn.softmax(Z, axis=0), softmax_ce, _softmax_delta),
}


def output(name: str) -> Output:
    return choose(OUTPUTS, "model.output", name)


# ---------------------------------------------------------------- layer variants of the mlp
BN_EPS = 1e-5       # batch norm's eps: zhat = (z - mu) / sqrt(var + eps)
NORMS = ("none", "batch")


def batch_norm(z, gamma, beta, eps=BN_EPS):
    """Batch normalization over the m examples (columns), training mode (the batch's own
    statistics, no running averages): z, y: (h, m); gamma, beta: (h, 1).
    Returns (y, zhat, inv_std) with y = gamma zhat + beta; zhat and inv_std are what the
    backward pass needs. At m = 1 every z - mu is exactly 0: zhat = 0, y = beta."""
    mu = jnp.mean(z, axis=1, keepdims=True)               # mu = z 1 / m
    zc = z - mu
    var = jnp.mean(zc * zc, axis=1, keepdims=True)        # var = (z - mu)^2 1 / m
    inv_std = 1.0 / jnp.sqrt(var + eps)                   # (var + eps)^(-1/2)
    zhat = zc * inv_std                                   # zhat = (z - mu) / sqrt(var + eps)
    return gamma * zhat + beta, zhat, inv_std             # y = gamma zhat + beta


def is_residual(residual: bool, n_in: int, n_out: int) -> bool:
    """Whether a hidden layer adds its input (a_l = a_{l-1} + f(...)): only with the option on
    and when the layer keeps the width (the first/last layers that change it stay plain)."""
    return bool(residual) and n_in == n_out


# ---------------------------------------------------------------- initialization
def _normal(u):
    return math.sqrt(2.0) * jax.scipy.special.erfinv(u)          # N(0, 1) from U(-1, 1)


class Init(NamedTuple):
    from_uniform: Callable   # (u, n_in, n_out) -> W at scale 1
    variance: Callable       # (n_in, n_out) -> Var(W_ij) at scale 1


INITS = {
    # U[-1/sqrt(n_in), 1/sqrt(n_in)]: Var = 1/(3 n_in), n Var(W) = 1/3
    "standard": Init(lambda u, n_in, n_out: u / math.sqrt(n_in),
                     lambda n_in, n_out: 1.0 / (3.0 * n_in)),
    # Glorot normalized: U[+-sqrt(6/(n_in + n_out))], Var = 2/(n_in + n_out)
    "xavier": Init(lambda u, n_in, n_out: u * math.sqrt(6.0 / (n_in + n_out)),
                   lambda n_in, n_out: 2.0 / (n_in + n_out)),
    # N(0, 2/n_in)
    "he": Init(lambda u, n_in, n_out: math.sqrt(2.0 / n_in) * _normal(u),
               lambda n_in, n_out: 2.0 / n_in),
    # N(0, 1)
    "normal": Init(lambda u, n_in, n_out: _normal(u), lambda n_in, n_out: 1.0),
}


def weight_from_uniform(u, scheme: str, n_in: int, n_out: int, scale=1.0):
    """A scheme's weights from u ~ U(-1, 1) (open): the uniform schemes are a * u, the normal
    ones std * sqrt(2) erfinv(u) (how jax.random.normal maps its uniforms); ``scale``
    multiplies every scheme and may be a traced array."""
    w = choose(INITS, "model.init", scheme).from_uniform(u, n_in, n_out)
    return (w * scale).astype(u.dtype)


def uniforms(key, shapes, dtype=jnp.float32) -> list:
    """u ~ U(-1, 1) (open at -1, so erfinv stays finite) of every shape in ``shapes`` from ONE
    random draw: every jax.random call costs a compile of its own (~0.5 s on a small CPU).
    Drawn in float32 whatever ``dtype``, then cast: the same seed gives the same weights in
    float32 and float64 (to float32 rounding), so precision comparisons are not confounded."""
    sizes = [math.prod(s) if s else 1 for s in shapes]
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = jax.random.uniform(key, (sum(sizes),), jnp.float32, lo, 1.0).astype(dtype)
    offsets = np.cumsum([0, *sizes])
    return [u[o:o + size].reshape(shape) for o, size, shape in zip(offsets, sizes, shapes)]


def init_weights(key, shapes, scheme: str = "standard", scale=1.0, dtype=jnp.float32) -> list:
    """Weights of ``shapes`` (each (n_out, n_in), or () / (1, n)) from one draw of
    :func:`uniforms`."""
    shapes = [tuple(s) for s in shapes]
    fans = [(s if len(s) == 2 else (1, max(1, math.prod(s)))) for s in shapes]
    return [weight_from_uniform(u, scheme, n_in, n_out, scale)
            for u, (n_out, n_in) in zip(uniforms(key, shapes, dtype), fans)]
