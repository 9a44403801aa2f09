"""THE network: the layer of Lecture 5, forward with its cache and its hand-derived backward,
written once for every MLP of the project (the ``mlp`` model, gradcheck, credit assignment,
the worked example, the depth and remedies experiments).

A layer is two steps, each with its derivative beside it (micrograd style):

    affine      z_l = W_l a_{l-1} + b_l           dW_l = delta_l a_{l-1}^T, db_l = delta_l 1,
                                                  dL/da_{l-1} = W_l^T delta_l
    hidden      y_l = BN(z_l) or z_l              delta_l = BN'(dL/dy_l) or dL/dy_l
                a_l = [a_{l-1} +] f(y_l)          dL/dy_l = dL/da_l * f'(y_l), and the skip
                                                  adds dL/da_l to dL/da_{l-1}

with the variants as options of the same step: ``norm`` (batch normalization over the m
columns, training mode, primitives.batch_norm) and ``residual`` (a layer that keeps the width
adds its input, primitives.is_residual). The output layer is an affine step whose delta_L comes
from the loss (primitives.OUTPUTS).

Two drivers run the same steps: :func:`forward` / :func:`backward` over the layers of a params
dict ``W1..WL, b1..bL (gamma_l, beta_l)`` of any widths (a Python loop), and
:func:`padded_forward` / :func:`padded_backward` over a stack of equal hidden layers whose
depth ``D`` is a traced loop bound (``lax.fori_loop``), so that one compile serves every depth.
Shapes: ``X: (n, m)``, ``a_l, z_l: (h_l, m)``, ``W_l: (h_l, h_{l-1})``, ``b_l: (h_l, 1)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from bpexp.primitives import activate, activation_prime, batch_norm, is_residual, n_layers, output


def sum_cols(A):
    """A 1 : (rows, 1), a sum over the m examples (the bias gradient)."""
    return jnp.sum(A, axis=1, keepdims=True)


# ---------------------------------------------------------------- the two steps of a layer
def affine(W, b, a_prev):
    """z_l = W_l a_{l-1} + b_l."""
    return W @ a_prev + b


def affine_backward(delta, W, a_prev):
    """(dW_l, db_l, dL/da_{l-1}) from delta_l = dL/dz_l."""
    return (delta @ a_prev.T,                        # dW_l = delta_l a_{l-1}^T
            sum_cols(delta),                         # db_l = delta_l 1
            W.T @ delta)                             # dL/da_{l-1} = W_l^T delta_l


class Cache(NamedTuple):
    """What a hidden layer's backward needs, kept by its forward."""

    z: Any          # z_l = W_l a_{l-1} + b_l            (h, m)
    y: Any          # y_l = BN(z_l), or z_l                (h, m)
    fprime: Any     # f'(y_l)                              (h, m)
    zhat: Any       # batch norm: (z - mu)/sqrt(var + eps) (h, m); else None
    inv_std: Any    # batch norm: (var + eps)^(-1/2)      (h, 1); else None
    a: Any          # a_l                                  (h, m)


def hidden(z, a_prev, activation: str, residual: bool, gamma=None, beta=None):
    """a_l from z_l: y_l = gamma_l zhat_l + beta_l if ``gamma`` is given (batch norm) else
    z_l; a_l = f(y_l), plus a_{l-1} if ``residual``. Returns (a_l, Cache)."""
    zhat = inv_std = None
    y = z
    if gamma is not None:
        y, zhat, inv_std = batch_norm(z, gamma, beta)   # y_l = gamma_l zhat_l + beta_l
    f = activate(activation, y)                         # f(y_l)
    a = a_prev + f if residual else f                   # a_l = [a_{l-1} +] f(y_l)
    return a, Cache(z, y, activation_prime(activation, y, f), zhat, inv_std, a)


def batch_norm_backward(dy, zhat, inv_std, gamma):
    """The classic batch-norm backward (Ioffe & Szegedy 2015) over the m columns, from
    dy = dL/dy: (h, m). Returns (dz, dgamma, dbeta)."""
    m = dy.shape[-1]
    dgamma = sum_cols(dy * zhat)                     # dgamma = (dy * zhat) 1
    dbeta = sum_cols(dy)                             # dbeta = dy 1
    dzhat = dy * gamma                               # dzhat = dy gamma
    # dz = (1/m) (var + eps)^(-1/2) [m dzhat - dzhat 1 - zhat (dzhat * zhat) 1]
    dz = (inv_std / m) * (m * dzhat - sum_cols(dzhat) - zhat * sum_cols(dzhat * zhat))
    return dz, dgamma, dbeta


def hidden_backward(da, c: Cache, gamma=None):
    """(delta_l = dL/dz_l, dgamma_l, dbeta_l) from da = dL/da_l. The residual skip's own
    term (dL/da_l added to dL/da_{l-1}) is the caller's: it crosses to the layer below."""
    dy = da * c.fprime                               # dL/dy_l = dL/da_l * f'(y_l)
    if gamma is None:
        return dy, None, None                        # delta_l = dL/dy_l (y_l = z_l)
    return batch_norm_backward(dy, c.zhat, c.inv_std, gamma)   # delta_l = BN'(dL/dy_l)


# ---------------------------------------------------------------- a params dict, any widths
class Pass(NamedTuple):
    """A forward pass through ``W1..WL``: the logits z_L, the hidden caches (layer l at
    index l - 1), the input a_0 = X and which hidden layers added their input."""

    zL: Any
    caches: list
    X: Any
    skips: list

    def acts(self) -> list:
        """[a_0 = X, a_1, ..., a_{L-1}]."""
        return [self.X] + [c.a for c in self.caches]

    def zs(self) -> list:
        """[z_1, ..., z_L]."""
        return [c.z for c in self.caches] + [self.zL]


def forward(p, X, activation: str = "sigmoid", residual: bool = False, norm: str = "none"):
    """Forward pass of the mlp ``p`` (Lecture 5 section 6 with the variants): a :class:`Pass`."""
    L, a = n_layers(p), X
    caches, skips = [], []
    for l in range(1, L):
        z = affine(p[f"W{l}"], p[f"b{l}"], a)
        skip = is_residual(residual, a.shape[0], z.shape[0])
        g, be = (p[f"gamma{l}"], p[f"beta{l}"]) if norm == "batch" else (None, None)
        a, c = hidden(z, a, activation, skip, g, be)
        caches.append(c)
        skips.append(skip)
    return Pass(affine(p[f"W{L}"], p[f"b{L}"], a), caches, X, skips)


def backward(p, fp: Pass, delta_L):
    """The delta recursion of Lecture 5 from delta_L = dL/dz_L, written through
    da = dL/da_l so that the variants slot in:
        delta_l = BN'(da_l * f'(y_l));  dW_l = delta_l a_{l-1}^T;  db_l = delta_l 1;
        dL/da_{l-1} = W_l^T delta_l  (+ dL/da_l when a_l = a_{l-1} + f(y_l)).
    Returns (grads like ``p``, deltas {l: delta_l}, dL/dX)."""
    L = n_layers(p)
    acts = fp.acts()
    g, deltas = {}, {L: delta_L}
    g[f"W{L}"], g[f"b{L}"], da = affine_backward(delta_L, p[f"W{L}"], acts[L - 1])
    for l in range(L - 1, 0, -1):
        gamma = p.get(f"gamma{l}")
        delta, dgamma, dbeta = hidden_backward(da, fp.caches[l - 1], gamma)
        if gamma is not None:
            g[f"gamma{l}"], g[f"beta{l}"] = dgamma, dbeta
        deltas[l] = delta
        g[f"W{l}"], g[f"b{l}"], da_below = affine_backward(delta, p[f"W{l}"], acts[l - 1])
        da = da_below + da if fp.skips[l - 1] else da_below   # the identity path
    return {k: g[k] for k in p}, deltas, da


def loss_and_grad(p, X, Y, activation="sigmoid", out="identity_mse", residual=False,
                  norm="none"):
    """(loss, grads, Pass, deltas) of the mlp ``p`` on (X, Y): one forward, one backward."""
    fp = forward(p, X, activation, residual, norm)
    o = output(out)
    g, deltas, _ = backward(p, fp, o.delta(fp.zL, Y))           # delta_L = dL/dz_L
    return o.loss(fp.zL, Y), g, fp, deltas


# ---------------------------------------------------------------- a stack with a traced depth
# p = {W_in (h, n), b_in (h, 1), W_h (S, h, h), b_h (S, h, 1), W_out (d_out, h), b_out
# (d_out, 1)} and, with batch norm, g_in, be_in (h, 1), g_h, be_h (S, h, 1): the net of depth
# D (1 <= D <= S + 1) is the mlp W1 = W_in, W_l = W_h[l - 2] (l = 2..D), W_{D+1} = W_out.
class Buffers(NamedTuple):
    """The hidden caches of a padded pass, [t] = layer t + 1 (t = 0..S); only what the
    backward reads, so that memory stays (S + 1) x h x m per array."""

    a: Any          # a_l                                     (S + 1, h, m)
    fprime: Any     # f'(y_l)                                 (S + 1, h, m)
    zhat: Any       # batch norm: zhat_l (S + 1, h, m); else zeros (S + 1, h, 1)
    inv_std: Any    # batch norm: (S + 1, h, 1); else ones

    def at(self, t) -> Cache:
        return Cache(None, None, self.fprime[t], self.zhat[t], self.inv_std[t], self.a[t])

    def put(self, t, c: Cache) -> Buffers:
        return Buffers(self.a.at[t].set(c.a), self.fprime.at[t].set(c.fprime),
                       self.zhat if c.zhat is None else self.zhat.at[t].set(c.zhat),
                       self.inv_std if c.inv_std is None else self.inv_std.at[t].set(c.inv_std))


def unstack(p, D: int) -> dict:
    """The mlp params ``W1..W_{D+1}, b1.. (gamma_l, beta_l)`` of the depth-D net in ``p``."""
    q = {"W1": p["W_in"], "b1": p["b_in"]}
    if "g_in" in p:
        q["gamma1"], q["beta1"] = p["g_in"], p["be_in"]
    for l in range(2, D + 1):
        q[f"W{l}"], q[f"b{l}"] = p["W_h"][l - 2], p["b_h"][l - 2]
        if "g_h" in p:
            q[f"gamma{l}"], q[f"beta{l}"] = p["g_h"][l - 2], p["be_h"][l - 2]
    q[f"W{D + 1}"], q[f"b{D + 1}"] = p["W_out"], p["b_out"]
    return q


def empty_buffers(p, X) -> Buffers:
    """Buffers for :func:`padded_forward` over the stack ``p`` and input ``X``."""
    S, (h, m), bn = p["W_h"].shape[0], (p["W_in"].shape[0], X.shape[-1]), "g_in" in p
    return Buffers(jnp.zeros((S + 1, h, m), X.dtype), jnp.zeros((S + 1, h, m), X.dtype),
                   jnp.zeros((S + 1, h, m if bn else 1), X.dtype),
                   jnp.ones((S + 1, h, 1), X.dtype))


def padded_forward(p, X, D, activation: str, residual: bool = False, buf=None):
    """Forward pass of the depth-D net inside the padded stack ``p`` (``D`` may be traced):
    (z_L, a_D, Buffers). ``residual``: the hidden-to-hidden layers add their input (and the
    first one too if n == h); batch norm when ``p`` holds g_in. ``buf``: Buffers to write
    into (e.g. the previous step's, carried through a training loop so that they are not
    allocated anew each step); only layers 1..D are written, and only those are read back."""
    h = p["W_in"].shape[0]
    a, c = hidden(affine(p["W_in"], p["b_in"], X), X, activation,
                  is_residual(residual, X.shape[0], h), p.get("g_in"), p.get("be_in"))
    bn = c.zhat is not None
    buf = (empty_buffers(p, X) if buf is None else buf).put(0, c)

    def layer(j, carry):                             # hidden layer j + 1, j = 1..D - 1
        a, buf = carry
        g, be = (p["g_h"][j - 1], p["be_h"][j - 1]) if bn else (None, None)
        a, c = hidden(affine(p["W_h"][j - 1], p["b_h"][j - 1], a), a, activation, residual,
                      g, be)
        return a, buf.put(j, c)

    a, buf = lax.fori_loop(1, D, layer, (a, buf))
    return affine(p["W_out"], p["b_out"], a), a, buf


def padded_backward(p, X, D, a_D, buf: Buffers, delta_L, residual: bool = False, stat=None):
    """The same recursion as :func:`backward` over the padded stack, from delta_L: (grads like
    ``p``, per-layer measurements ``stat(delta_l, dW_l)`` -> (k,) stacked as [S + 2, k] at
    index l - 1, NaN beyond the net; k = 0 if ``stat`` is None). Unused padded layers get zero
    gradients."""
    S, h = p["W_h"].shape[0], p["W_in"].shape[0]
    stat = stat or (lambda d, w: jnp.zeros((0,), d.dtype))
    g_out, gb_out, da = affine_backward(delta_L, p["W_out"], a_D)   # da = dL/da_D
    first = stat(delta_L, g_out)
    stats = jnp.full((S + 2,) + first.shape, jnp.nan, X.dtype).at[D].set(first)
    bn = "g_in" in p
    zeros = jnp.zeros((S + 1, h, 1), X.dtype)

    def layer(i, carry):                             # hidden layer t + 1, t = D - 1 .. 1
        da, gW, gb, dG, dB, stats = carry
        t = D - 1 - i
        gamma = p["g_h"][t - 1] if bn else None
        delta, dg, db = hidden_backward(da, buf.at(t), gamma)
        w, b_, da_below = affine_backward(delta, p["W_h"][t - 1], buf.a[t - 1])
        if bn:
            dG, dB = dG.at[t].set(dg), dB.at[t].set(db)
        return (da_below + da if residual else da_below, gW.at[t - 1].set(w),
                gb.at[t - 1].set(b_), dG, dB, stats.at[t].set(stat(delta, w)))

    c0 = (da, jnp.zeros_like(p["W_h"]), jnp.zeros_like(p["b_h"]), zeros, zeros, stats)
    da, gW, gb, dG, dB, stats = lax.fori_loop(0, D - 1, layer, c0)
    delta, dg, db = hidden_backward(da, buf.at(0), p.get("g_in"))   # layer 1
    g_in, gb_in, _ = affine_backward(delta, p["W_in"], X)
    g = {"W_in": g_in, "b_in": gb_in, "W_h": gW, "b_h": gb, "W_out": g_out, "b_out": gb_out}
    if bn:
        g.update(g_in=dg, be_in=db, g_h=dG[1:], be_h=dB[1:])
    return {k: g[k] for k in p}, stats.at[0].set(stat(delta, g_in))
