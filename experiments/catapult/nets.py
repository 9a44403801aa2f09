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


def names(depth: int) -> list[str]:
    """Parameter names in order: W1..W_depth, v."""
    return [f"W{i}" for i in range(1, depth + 1)] + ["v"]


def init(key, d: int, width: int, depth: int, dtype=jnp.float64) -> dict:
    """W1 (width, d), W2..W_depth (width, width), v (1, width), every entry N(0, 1)."""
    keys = jax.random.split(key, depth + 1)
    shapes = [(width, d)] + [(width, width)] * (depth - 1) + [(1, width)]
    return {k: jax.random.normal(kk, s, dtype) for k, kk, s in zip(names(depth), keys, shapes)}


def depth_of(params) -> int:
    return len(params) - 1


def forward(params, X, activation: str):
    """f: (1, n), and the cache [(a_{l-1}, z_l)] of the hidden layers."""
    phi, _ = ACTIVATIONS[activation]
    a, cache = X, []
    for i in range(1, depth_of(params) + 1):
        z = params[f"W{i}"] @ a / jnp.sqrt(a.shape[0])          # z_l = W_l a_{l-1} / sqrt(h)
        cache.append((a, z))
        a = phi(z)
    return params["v"] @ a / jnp.sqrt(a.shape[0]), (cache, a)   # f = v a_L / sqrt(h_L)


def loss(params, X, Y, activation: str):
    """L = 1/(2n) sum (f - y)^2."""
    f, _ = forward(params, X, activation)
    return 0.5 * jnp.mean((f - Y) ** 2)


def grad(params, X, Y, activation: str) -> dict:
    """dL/dparams by hand (the same pytree as jax.grad(loss))."""
    _, dphi = ACTIVATIONS[activation]
    f, (cache, a) = forward(params, X, activation)
    r = (f - Y) / X.shape[1]                        # dL/df = (f - y)/n          (1, n)
    h = a.shape[0]
    g = {"v": r @ a.T / jnp.sqrt(h)}                # dL/dv = r a_L^T / sqrt(h_L)
    da = params["v"].T @ r / jnp.sqrt(h)            # dL/da_L = v^T r / sqrt(h_L)
    for i in range(depth_of(params), 0, -1):
        a_prev, z = cache[i - 1]
        dz = da * dphi(z)                           # dL/dz_l = dL/da_l * phi'(z_l)
        s = jnp.sqrt(a_prev.shape[0])
        g[f"W{i}"] = dz @ a_prev.T / s              # dL/dW_l = dz_l a_{l-1}^T / sqrt(h_{l-1})
        da = params[f"W{i}"].T @ dz / s             # dL/da_{l-1} = W_l^T dz_l / sqrt(h_{l-1})
    return g
