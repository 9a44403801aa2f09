"""The sharpness (edge of stability) experiment: the GD + Lanczos sharpness scan
against numpy, a small CLI run where the sharpness climbs to 2/lr and hovers there, and the
validation of its keys."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax.flatten_util

import bpexp
from bpexp import models, theory, train
from bpexp.errors import UserError
from bpexp.experiments import sharpness as E
from helpers import build_cfg


def test_late_ratio_median():
    steps = np.arange(10) * 10                       # 0..90; last third: steps >= 60
    sharp = np.array([1, 2, 3, 4, 5, 6, 9.0, 10.0, np.nan, 11.0])
    assert E.late_ratio_median(sharp, steps, 0.2, 1 / 3) == pytest.approx(
        np.median([9.0, 10.0, 11.0]) * 0.1)
    assert np.isnan(E.late_ratio_median(np.full(10, np.nan), steps, 0.2, 1 / 3))


def test_gd_with_sharpness_on_a_quadratic_matches_numpy():
    """Linear model + MSE: the Hessian is (2/m) Xt Xt^T everywhere, so every measurement equals
    theory.lambda_max_quadratic(X), and the loss follows a float64 numpy GD."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 30))
    Y = rng.normal(size=(1, 4)) @ X + 0.1 * rng.normal(size=(1, 30))
    model = models.get("multivariate")

    def init_fn(key):
        return model.init(key, 4, 1, dtype=jnp.float64)

    one = train.gd_with_sharpness(model.loss, model.grad, init_fn, steps=20, every=5, iters=5,
                                   check_iters=5)
    lrs = jnp.array([0.05, 0.1])
    key = jax.random.PRNGKey(3)
    out = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))(lrs, key, jnp.asarray(X),
                                                                 jnp.asarray(Y))
    lam = theory.lambda_max_quadratic(X)
    ev = np.linalg.eigvalsh(theory.quadratic_hessian(X))   # 5 parameters: Lanczos is exact
    np.testing.assert_allclose(np.asarray(out["sharpness"]), lam, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(out["second"]), ev[-2], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(out["end_check"]), lam, rtol=1e-10)
    assert float(jnp.max(out["residual"])) < 1e-8 * lam
    assert out["sharpness"].shape == (2, 5) and out["loss"].shape == (2, 21)
    p0 = init_fn(jax.random.split(key)[0])              # same init as the scan
    Xt = np.vstack([X, np.ones((1, 30))])
    for i, lr in enumerate(np.asarray(lrs)):
        th = np.append(np.asarray(p0["w"]).ravel(), float(p0["b"]))
        ref = []
        for _ in range(21):
            r = th @ Xt - Y[0]
            ref.append(np.mean(r ** 2))                  # (1/m) ||yhat - y||^2
            th = th - lr * (2 / 30) * Xt @ r
        np.testing.assert_allclose(np.asarray(out["loss"][i]), ref, rtol=1e-10)


def test_cli_small_config_reaches_edge_of_stability(tmp_path):
    """m=200, hidden 16, 400 steps: at lr 0.25 the sharpness starts below 2/lr = 8 and climbs to
    it (progressive sharpening); at lr 0.35 it starts near 2/lr = 5.7. Over the last third of
    training both hover at 2/lr: median sharpness * lr / 2 within [0.9, 1.15] (observed 1.03
    and 1.01)."""
    cmd = [sys.executable, "-m", "bpexp", "+experiment=sharpness", f"outputs.root={tmp_path}",
           "data.m=200", "model.hidden=16", "train.steps=400", "experiment.lrs=[0.25,0.35]",
           "experiment.seeds=2", "experiment.every=10"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: ")
    run_dir = Path(last.removeprefix("run dir: "))
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["lrs"] == [0.25, 0.35] and s["seeds"] == [0, 1]
    assert s["steps"] == list(range(0, 401, 10))
    assert set(s["sharpness"]) == set(s["loss"]) == set(s["late_ratio_median"]) == {"0.25", "0.35"}
    assert np.shape(s["sharpness"]["0.25"]) == (2, 41) and np.shape(s["loss"]["0.25"]) == (2, 401)
    assert (run_dir / "figures" / "sharpness.png").stat().st_size > 10_000
    assert (run_dir / "report.md").exists()
    # metrics.zarr: the arrays of the summary with named dims and their coordinates
    ds = bpexp.load(run_dir)
    per = ("lr", "seed", "measurement_step")
    assert ds["sharpness"].dims == ds["second"].dims == ds["residual"].dims == per
    assert ds["loss"].dims == ("lr", "seed", "step")
    assert ds["end_check"].dims == ds["end_check_residual"].dims == ("lr", "seed")
    assert ds["sharpness"].shape == (2, 2, 41) and ds["loss"].shape == (2, 2, 401)
    assert ds["lr"].values.tolist() == [0.25, 0.35] and ds["seed"].values.tolist() == [0, 1]
    assert ds["measurement_step"].values.tolist() == s["steps"]
    assert ds["step"].values.tolist() == list(range(401))
    for lr in s["lrs"]:
        at = ds.sel(lr=lr)
        np.testing.assert_array_equal(at["sharpness"].values, s["sharpness"][str(lr)])
        np.testing.assert_array_equal(at["second"].values, s["second_eigenvalue"][str(lr)])
        np.testing.assert_array_equal(at["loss"].values, s["loss"][str(lr)])
        np.testing.assert_array_equal(at["end_check"].values, s["sharpness_end_check"][str(lr)])
    assert float((ds["residual"] / abs(ds["sharpness"])).max()) == s["max_rel_residual"]
    for lr, rs in s["late_ratio"].items():
        assert all(0.9 <= r <= 1.15 for r in rs), (lr, rs)
        assert s["late_ratio_range"][lr] == [min(rs), max(rs)]
    for sh in np.array(s["sharpness"]["0.25"], float):
        assert sh[0] < 0.8 * 8 and np.max(sh) >= 0.95 * 8     # progressive sharpening to 2/lr
    assert all(h is not None and h > 0 for h in s["first_step_sharpness_ge_0.9_2_over_lr"]["0.25"])
    # the loss keeps falling overall (non-monotonically) at the edge of stability
    rises = []
    for lr, losses in s["loss"].items():
        for loss in np.array(losses, float):
            assert np.all(np.isfinite(loss)) and loss[-1] < 0.2 * loss[0], lr
            rises.append(np.any(np.diff(loss) > 0))
    assert any(rises)
    # Lanczos residuals bound the error; the warm estimate agrees with a cold run at the end
    assert s["max_rel_residual"] < 1e-2
    for lr in s["lrs"]:
        warms = np.array(s["sharpness"][str(lr)])[:, -1]
        for warm, cold in zip(warms, s["sharpness_end_check"][str(lr)]):
            assert abs(warm - cold) < 0.01 * cold, (lr, warm, cold)
        second = np.array(s["second_eigenvalue"][str(lr)])
        assert np.all(second <= np.array(s["sharpness"][str(lr)]) + 1e-9)
    # the report opens with claims computed from the summary; each one checked here
    md = (run_dir / "report.md").read_text()
    shows = md.split("## What this run shows\n\n")[1].split("\n")[0]
    med = [float(np.median(s["late_ratio"][str(lr)])) for lr in s["lrs"]]
    assert ", ".join(f"{r:.3f}" for r in med) in shows
    edge = all(0.9 <= r <= 1.1 for r in med)
    assert ("every lr hovers at the edge of stability" in shows) == edge
    assert ("hovers there at every lr" in E.text.title(s)) == edge
    first = min(h for h in s["first_step_sharpness_ge_0.9_2_over_lr"]["0.25"] if h)
    assert f"lr 0.25 at step {first}" in shows


def test_lanczos_sharpness_of_a_small_net_matches_the_full_hessian():
    """The engine's warm-started Lanczos values at steps 0 and 10 vs numpy eigvalsh of the
    dense Hessian at the same parameters (the GD steps replayed by hand)."""
    from bpexp import data
    ds = data.load("digits", m=40, dtype=np.float64)
    X, Y = jnp.asarray(ds.X[:8]), jnp.asarray(ds.Y)
    model = models.get("mlp", activation="tanh", output="identity_mse")

    def init_fn(key):
        return model.init(key, 8, 10, hidden=4, depth=1, dtype=jnp.float64)

    one = train.gd_with_sharpness(model.loss, model.grad, init_fn, steps=10, every=10, iters=20,
                                   check_iters=40)
    key = jax.random.PRNGKey(5)
    out = jax.jit(one)(0.3, key, X, Y)
    p = init_fn(jax.random.split(key)[0])
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    for t in range(2):
        H = jax.hessian(lambda x: model.loss(unravel(x), X, Y))(flat)
        ev = np.linalg.eigvalsh(np.asarray(H))
        assert float(out["sharpness"][t]) == pytest.approx(ev[-1], rel=1e-6), t
        assert float(out["second"][t]) == pytest.approx(ev[-2], rel=1e-4), t
        for _ in range(10):
            flat = flat - 0.3 * jax.flatten_util.ravel_pytree(model.grad(unravel(flat), X, Y))[0]


@pytest.mark.parametrize("key,value", [
    ("lrs", []), ("lrs", [0.1, 0.0]), ("lrs", [-0.1]), ("lrs", [float("inf")]),
    ("lrs", [float("nan")]), ("lrs", [0.1, 0.1]), ("every", 0), ("every", 7),
    ("lanczos_iters", 1), ("check_iters", 2**31), ("seeds", 0), ("late_fraction", 0.0),
    ("late_fraction", 1.5), ("late_fraction", float("nan"))])
def test_bad_experiment_values_are_one_line_user_errors(key, value):
    """train.steps = 200 (the schema default): every = 7 does not divide it."""
    with pytest.raises(UserError) as e:
        build_cfg({"experiment": {"name": "sharpness", key: value}, "model": {"name": "mlp"}})
    msg = str(e.value)
    assert f"experiment.{key}={value!r}" in msg and "allowed" in msg and "\n" not in msg
