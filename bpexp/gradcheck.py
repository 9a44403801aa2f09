"""Manual gradient vs ``jax.grad`` vs central finite differences, as relative errors.

Run in float64 (``jax_enable_x64``): float32 finite differences cannot resolve 1e-6.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from bpexp.xla import FAST_COMPILE  # runs once per shape: compile time dominates


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| (absolute error when ||b|| == 0)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    nb = np.linalg.norm(b)
    d = np.linalg.norm(a - b)
    return float(d / nb) if nb > 0 else float(d)




def check(model, p, X, Y, *, seed: int = 0, n_dirs: int = 8, eps: float = 1e-5) -> dict:
    """Compare ``model.grad`` with ``jax.grad(model.loss)`` and with finite differences.

    Finite differences: for ``n_dirs`` random unit directions u of the flattened parameters,
    (L(p + eps u) - L(p - eps u)) / (2 eps) against the directional derivative g_manual . u.
    Returns {"rel_err_autodiff", "rel_err_fd", "per_leaf": {leaf: rel err}, "n_params"}.
    """
    return prepare(model, p, X, Y, seed=seed, n_dirs=n_dirs, eps=eps)()


def prepare(model, p, X, Y, *, seed: int = 0, n_dirs: int = 8, eps: float = 1e-5):
    """:func:`check` in two parts: this one compiles its one program (XLA's compile runs
    outside the GIL, so several ``prepare`` calls may run in threads at once) and returns a
    function of no arguments that runs it and returns check's dict."""
    size = sum(int(np.size(v)) for v in jax.tree_util.tree_leaves(p))
    U = np.random.default_rng(seed).standard_normal((n_dirs, size))  # numpy: no compile
    U = U / np.linalg.norm(U, axis=1, keepdims=True)

    def all_three(p, U):  # one compiled call per shape; eager jnp ops would each compile
        flat_p, unravel = ravel_pytree(p)
        U = U.astype(flat_p.dtype)
        g_man, g_ad = model.grad(p, X, Y), jax.grad(model.loss)(p, X, Y)
        loss_flat = jax.vmap(lambda v: model.loss(unravel(v), X, Y))
        fd = (loss_flat(flat_p[None, :] + eps * U)
              - loss_flat(flat_p[None, :] - eps * U)) / (2 * eps)
        flat_man, flat_ad = ravel_pytree(g_man)[0], ravel_pytree(g_ad)[0]
        return g_man, g_ad, flat_man, flat_ad, fd, U @ flat_man

    compiled = jax.jit(all_three, compiler_options=FAST_COMPILE).lower(p, U).compile()

    def finish() -> dict:
        g_man, g_ad, flat_man, flat_ad, fd, directional = compiled(p, U)
        return {"rel_err_autodiff": rel_err(flat_man, flat_ad),
                "rel_err_fd": rel_err(fd, directional),
                "per_leaf": {k: rel_err(g_man[k], g_ad[k]) for k in g_ad},
                "n_params": size}

    return finish
