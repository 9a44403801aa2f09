"""Shared test helpers (optax style; no chex)."""
import jax
import numpy as np


def assert_trees_all_close(a, b, rtol=1e-7, atol=0.0):
    """Same pytree structure and leaf shapes, and every leaf |a - b| <= atol + rtol * |b|."""
    (la, ta), tb = jax.tree_util.tree_flatten_with_path(a), jax.tree_util.tree_structure(b)
    assert ta == tb, f"tree structures differ: {ta} vs {tb}"
    for (path, x), y in zip(la, jax.tree_util.tree_leaves(b)):
        x, y, where = np.asarray(x), np.asarray(y), jax.tree_util.keystr(path)
        assert x.shape == y.shape, f"{where}: shape {x.shape} != {y.shape}"
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=where)
