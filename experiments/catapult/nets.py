"""The catapult experiment's networks in NTK parametrisation, as pure JAX functions with their
hand-derived backward pass beside the forward (checked against jax.grad in the tests).

    a_0 = x,   z_l = W_l a_{l-1} / sqrt(h_{l-1}),   a_l = phi(z_l)   (l = 1..depth)
    f(x) = v a_depth / sqrt(h_depth)

every weight drawn N(0, 1), no biases; h_0 = d (input features), h_l = width. With
phi = identity and depth 1 this is the paper's uv model f(x) = v^T u x / sqrt(width)
(Lewkowycz et al. 2020, section 2; the extra 1/sqrt(d) is 1 for their one-dimensional input);
phi = relu gives the ReLU nets of their section 3. Examples are columns: X (d, n), Y (1, n).

Loss (the paper's convention, written out): L = 1/(2n) sum_a (f(x_a) - y_a)^2, i.e. WITH the
1/2 and the 1/n. Then the Gauss-Newton part of the Hessian, (1/n) J^T J, has the top eigenvalue
of the NTK Gram matrix Theta/n, and the full Hessian's top eigenvalue equals it up to
O(|f - y| / sqrt(width)) at initialization. (The thresholds in units of 2/lambda0 do not depend
on the normalisation as long as lambda0 is the Hessian of the loss that GD descends.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    # name: (phi, phi')
    "linear": (lambda z: z, lambda z: jnp.ones_like(z)),
    "relu": (lambda z: jnp.maximum(z, 0.0), lambda z: (z > 0).astype(z.dtype)),
}
MODELS = {"uv": ("linear", 1), "relu": ("relu", None)}   # model -> (activation, depth or None)


def activation_fns(activation):
    """(phi, phi') of ``activation``: a name from ACTIVATIONS, or a traced bool (ReLU where
    true, identity where false), so that one compiled program serves both models."""
    if isinstance(activation, str):
        return ACTIVATIONS[activation]
    relu = activation
    return (lambda z: jnp.where(relu, jnp.maximum(z, 0.0), z),
            lambda z: jnp.where(relu, (z > 0).astype(z.dtype), jnp.ones_like(z)))


def names(depth: int) -> list[str]:
    """Parameter names in order: W1..W_depth, v."""
    return [f"W{i}" for i in range(1, depth + 1)] + ["v"]


def init(key, d: int, width: int, depth: int, dtype=jnp.float64) -> dict:
    """W1 (width, d), W2..W_depth (width, width), v (1, width), every entry N(0, 1)."""
    keys = jax.random.split(key, depth + 1)
    shapes = [(width, d)] + [(width, width)] * (depth - 1) + [(1, width)]
    return {k: jax.random.normal(kk, s, dtype) for k, kk, s in zip(names(depth), keys, shapes)}


def _shapes(d, width, depth):
    return [(width, d)] + [(width, width)] * (depth - 1) + [(1, width)]


def init_padded(key, d: int, width, pad: int, depth: int, dtype=jnp.float64):
    """``init(key, d, width, depth)`` zero-padded to ``pad`` >= width hidden units (``width``
    may be traced): (params with the shapes of init(key, d, pad, depth), and for the flat
    vector ravel_pytree(params): the index of each entry in ravel_pytree(init(key, d, width,
    depth)) and the mask of the true entries). The true entries are the same numbers as the
    unpadded init's (jax.random.normal of n values is the first n of a longer draw from the
    same key: threefry's partitionable counters; checked in the tests)."""
    keys = jax.random.split(key, depth + 1)
    params, index, mask, off = {}, [], [], 0
    for k, kk, (r, c), (R, C) in zip(names(depth), keys, _shapes(d, width, depth),
                                     _shapes(d, pad, depth)):
        i, j = jnp.meshgrid(jnp.arange(R), jnp.arange(C), indexing="ij")
        ok, local = (i < r) & (j < c), i * c + j
        draw = jax.random.normal(kk, (R * C,), dtype)
        params[k] = jnp.where(ok, jnp.take(draw, local, mode="clip"), 0.0)
        index.append((off + local).ravel())
        mask.append(ok.ravel())
        off = off + r * c
    return params, jnp.concatenate(index), jnp.concatenate(mask)


def depth_of(params) -> int:
    return len(params) - 1


def _sqrt_h(a, width):
    """sqrt of the layer width h: the rows of ``a``, or ``width`` (the true width of a net whose
    arrays are zero-padded to more rows; the padding units are 0 and stay 0 under GD)."""
    return jnp.sqrt(a.shape[0] if width is None else jnp.asarray(width, a.dtype))


def forward(params, X, activation, width=None):
    """f: (1, n), and the cache [(a_{l-1}, z_l)] of the hidden layers. ``activation``: see
    activation_fns; ``width``: the true hidden width when the arrays are zero-padded."""
    phi, _ = activation_fns(activation)
    a, cache = X, []
    for i in range(1, depth_of(params) + 1):
        s = jnp.sqrt(a.shape[0]) if i == 1 else _sqrt_h(a, width)
        z = params[f"W{i}"] @ a / s                              # z_l = W_l a_{l-1} / sqrt(h)
        cache.append((a, z))
        a = phi(z)
    return params["v"] @ a / _sqrt_h(a, width), (cache, a)      # f = v a_L / sqrt(h_L)


def loss(params, X, Y, activation, width=None):
    """L = 1/(2n) sum (f - y)^2."""
    f, _ = forward(params, X, activation, width)
    return 0.5 * jnp.mean((f - Y) ** 2)


def grad(params, X, Y, activation, width=None) -> dict:
    """dL/dparams by hand (the same pytree as jax.grad(loss))."""
    return loss_and_grad(params, X, Y, activation, width)[1]


def loss_and_grad(params, X, Y, activation, width=None):
    """(L, dL/dparams) from one forward pass; the gradient by hand."""
    _, dphi = activation_fns(activation)
    f, (cache, a) = forward(params, X, activation, width)
    value = 0.5 * jnp.mean((f - Y) ** 2)
    r = (f - Y) / X.shape[1]                        # dL/df = (f - y)/n          (1, n)
    sh = _sqrt_h(a, width)
    g = {"v": r @ a.T / sh}                         # dL/dv = r a_L^T / sqrt(h_L)
    da = params["v"].T @ r / sh                     # dL/da_L = v^T r / sqrt(h_L)
    for i in range(depth_of(params), 0, -1):
        a_prev, z = cache[i - 1]
        dz = da * dphi(z)                           # dL/dz_l = dL/da_l * phi'(z_l)
        s = jnp.sqrt(a_prev.shape[0]) if i == 1 else _sqrt_h(a_prev, width)
        g[f"W{i}"] = dz @ a_prev.T / s              # dL/dW_l = dz_l a_{l-1}^T / sqrt(h_{l-1})
        da = params[f"W{i}"].T @ dz / s             # dL/da_{l-1} = W_l^T dz_l / sqrt(h_{l-1})
    return value, g
