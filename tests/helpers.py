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


def run_experiment(name, root, *overrides, timeout=600, outputs_root=None):
    """``python -m bpexp +experiment=NAME outputs.root=ROOT ...`` in a subprocess (cwd ROOT, no
    JAX_/XLA_ variables inherited); asserts exit 0 and the closing ``run dir:`` line, returns it
    (under ROOT). ``outputs_root`` passes another value, e.g. a path relative to ROOT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-m", "bpexp", f"+experiment={name}",
                        f"outputs.root={outputs_root or root}", *overrides],
                       cwd=root, capture_output=True, text=True, env=env, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: "), last
    return Path(root) / last[len("run dir: "):]


def build_cfg(tree: dict):
    """config.build with the experiment module the entry point would choose (the validation
    phase of ``python -m bpexp``)."""
    from bpexp import config
    from bpexp.experiments import get as experiment_module

    name = (tree.get("experiment") or {}).get("name")
    if name is None:
        raise config.ConfigError("experiment is not set")
    return config.build(tree, experiment_module(name))


def np_gd_path(grad_fn, w0, lr, steps):
    """Reference GD in numpy float64: iterates of w <- w - lr grad_fn(w), (steps + 1, len(w0)),
    row 0 = w0 (independent of bpexp's train.loop)."""
    path = np.empty((steps + 1, len(w0)))
    path[0] = np.asarray(w0, dtype=np.float64)
    for t in range(steps):
        path[t + 1] = path[t] - lr * np.asarray(grad_fn(path[t]))
    return path
