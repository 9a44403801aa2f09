"""The sharpness (edge of stability) experiment: power iteration and the GD + sharpness scan
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

from bpexp import models, theory
from bpexp.errors import UserError
from bpexp.experiments import sharpness as E
from helpers import build_cfg


def test_power_iteration_finds_the_top_eigenvalue():
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    lams = np.array([9.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.2, 0.1, 0.0, -1.0])
    A = Q @ np.diag(lams) @ Q.T
    lam, v = E.power_iteration(lambda u: jnp.asarray(A) @ u, jnp.asarray(rng.normal(size=12)), 60)
    assert abs(float(lam) - 9.0) < 1e-10
    assert abs(abs(float(np.asarray(v) @ Q[:, 0])) - 1) < 1e-10
    # warm start from the eigenvector: already converged after one step
    lam1, _ = E.power_iteration(lambda u: jnp.asarray(A) @ u, jnp.asarray(Q[:, 0]), 1)
    assert abs(float(lam1) - 9.0) < 1e-12


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

    one = E.make_gd_with_sharpness(model.loss, model.grad, init_fn, steps=20, every=5, iters=200,
                                   check_iters=200)
    lrs = jnp.array([0.05, 0.1])
    key = jax.random.PRNGKey(3)
    out = jax.jit(jax.vmap(one, in_axes=(0, None, None, None)))(lrs, key, jnp.asarray(X),
                                                                 jnp.asarray(Y))
    lam = theory.lambda_max_quadratic(X)
    np.testing.assert_allclose(np.asarray(out["sharpness"]), lam, rtol=1e-8)
    np.testing.assert_allclose(np.asarray(out["sharpness_end_check"]), lam, rtol=1e-8)
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
           "data.m=200", "model.hidden=16", "train.steps=400", "experiment.lrs=[0.25,0.35]"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: ")
    run_dir = Path(last.removeprefix("run dir: "))
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["lrs"] == [0.25, 0.35]
    assert s["steps"] == list(range(0, 401, 10))
    assert set(s["sharpness"]) == set(s["loss"]) == set(s["late_ratio_median"]) == {"0.25", "0.35"}
    assert len(s["sharpness"]["0.25"]) == 41 and len(s["loss"]["0.25"]) == 401
    assert (run_dir / "figures" / "sharpness.png").stat().st_size > 10_000
    assert (run_dir / "report.md").exists() and (run_dir / "metrics.npz").exists()
    for lr, r in s["late_ratio_median"].items():
        assert 0.9 <= r <= 1.15, (lr, r)
    sh = np.array(s["sharpness"]["0.25"], float)
    assert sh[0] < 0.8 * 8 and np.max(sh) >= 0.95 * 8     # progressive sharpening up to 2/lr
    hit = s["first_step_sharpness_ge_0.9_2_over_lr"]["0.25"]
    assert hit is not None and hit > 0
    # the loss keeps falling overall (non-monotonically) at the edge of stability
    rises = []
    for lr, loss in s["loss"].items():
        loss = np.array(loss, float)
        assert np.all(np.isfinite(loss)) and loss[-1] < 0.2 * loss[0], lr
        rises.append(np.any(np.diff(loss) > 0))
    assert any(rises)
    # the warm-started estimate agrees with a cold 200-step power iteration at the end
    for lr in s["lrs"]:
        warm, cold = s["sharpness"][str(lr)][-1], s["sharpness_end_check"][str(lr)]
        assert abs(warm - cold) < 0.05 * cold, (lr, warm, cold)


@pytest.mark.parametrize("key,value", [
    ("lrs", []), ("lrs", [0.1, 0.0]), ("lrs", [-0.1]), ("lrs", [float("inf")]),
    ("lrs", [float("nan")]), ("lrs", [0.1, 0.1]), ("every", 0), ("every", 7),
    ("power_iters", 0), ("check_iters", 2**31), ("late_fraction", 0.0),
    ("late_fraction", 1.5), ("late_fraction", float("nan"))])
def test_bad_experiment_values_are_one_line_user_errors(key, value):
    """train.steps = 200 (the schema default): every = 7 does not divide it."""
    with pytest.raises(UserError) as e:
        build_cfg({"experiment": {"name": "sharpness", key: value}, "model": {"name": "mlp"}})
    msg = str(e.value)
    assert f"experiment.{key}={value!r}" in msg and "allowed" in msg and "\n" not in msg
