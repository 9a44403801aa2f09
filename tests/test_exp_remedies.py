"""The remedies experiment: each remedy's theory by hand, and a CLI run whose stored gradient
norms equal the library's mlp from the same initial weights."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpexp
from bpexp import models, stacked, theory
from bpexp.experiments.depth_sweep import engine
from bpexp.experiments.remedies import theory as RT


def test_remedy_predictions_by_hand():
    """remedy_predicted_dz against the formulas written out, and the batch-norm limit
    sqrt(E[sigma'^2] / Var[sigma]) against Monte Carlo."""
    fp2, gain = np.array([0.05, 0.06, 0.04]), np.array([2.0, 3.0, 1.5])
    D, h, d = 3, 32, 10
    n = np.array([32, 32, 10])
    var = lambda s: np.array([theory.init_variance(s, h, k) for k in n])  # noqa: E731
    np.testing.assert_allclose(RT.remedy_predicted_dz(RT.REMEDIES["sigmoid"], D, h, d, fp2),
                               np.sqrt(n * var("standard") * fp2), rtol=1e-12)
    np.testing.assert_allclose(RT.remedy_predicted_dz(RT.REMEDIES["relu_he"], D, h, d,
                                                     np.full(3, 0.5))[:2], 1.0, rtol=1e-12)
    res = RT.remedy_predicted_dz(RT.REMEDIES["residual"], D, h, d, fp2)
    v = var("standard")
    np.testing.assert_allclose(res[:2], np.sqrt(fp2[:2] / fp2[1:] * (1 + n[:2] * v[:2] * fp2[1:])),
                               rtol=1e-12)
    np.testing.assert_allclose(res[2], np.sqrt(10 * v[2] * fp2[2]), rtol=1e-12)
    np.testing.assert_allclose(RT.remedy_predicted_dz(RT.REMEDIES["batchnorm"], D, h, d, fp2, gain),
                               np.sqrt(n * v * gain), rtol=1e-12)
    x = np.random.default_rng(0).standard_normal(2_000_000)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(RT.bn_factor_limit(), np.sqrt(np.mean((s * (1 - s)) ** 2) / s.var()),
                               rtol=2e-3)


def test_cli_remedies_order_as_theory_says(tmp_path):
    """At depth 30 the plain sigmoid's first/last gradient ratio is far below the residual and
    batch-normalized nets' (and ReLU + He's); the stored norms equal those the library's mlp
    (models.get("mlp").grad) computes from the same initial weights; the theory factors match."""
    cmd = [sys.executable, "-m", "bpexp", "+experiment=remedies", f"outputs.root={tmp_path}",
           "experiment.depths=[2,30]", "data.m=200",
           "train.steps=5", "sweep.seeds=2", "sweep.progress=false"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1][len("run dir: "):])
    s = json.loads((run_dir / "summary.json").read_text())
    for f in ("remedies_grad_norms.png", "remedies_summary.png"):
        assert (run_dir / "figures" / f).stat().st_size > 1000, f
    R = {k: v["depths"]["30"] for k, v in s["remedies"].items()}
    for k in ("residual", "batchnorm", "relu_he"):
        assert R["sigmoid"]["ratio_first_last"] < 1e-12 * R[k]["ratio_first_last"], k
        assert R["sigmoid"]["dz_ratio_first_last"] < 1e-12 * R[k]["dz_ratio_first_last"], k
        assert R[k]["ratio_first_last"] > 1e-4, k
    assert R["sigmoid"]["ratio_first_last"] < R["xavier"]["ratio_first_last"] < 1e-10
    assert R["sigmoid"]["bound_holds"] is True and R["xavier"]["bound_holds"] is True
    assert R["sigmoid"]["dz_ratio_first_last"] < 0.25 ** 30
    # theory per layer: Glorot-type factors within 5%, batch norm's is an upper estimate
    for k in ("sigmoid", "xavier", "relu_he", "residual"):
        assert R[k]["factor_measured_dz"] == pytest.approx(R[k]["factor_predicted_dz"], rel=0.05)
    assert 0.8 < R["batchnorm"]["factor_measured_dz"] / R["batchnorm"]["factor_predicted_dz"] < 1
    assert R["relu_he"]["factor_predicted_dz"] == pytest.approx(1.0, rel=0.05)
    # the stored arrays: medians = summary; seed 0 recomputed with the library's mlp backward
    ds = bpexp.load(run_dir)
    assert ds["grad_norm_init"].dims == ("remedy", "depth", "seed", "layer")
    assert list(ds["remedy"].values) == list(RT.REMEDIES) and ds.sizes["layer"] == 31
    Xy = np.load(run_dir / "data.npz")
    X, Y = jnp.asarray(Xy["X"]), jnp.asarray(Xy["Y"])
    key = jax.random.split(jax.random.PRNGKey(0))[0]   # train.run_keys(seed 0)
    for k in ("sigmoid", "residual", "batchnorm"):
        rem = RT.REMEDIES[k]
        draws = engine.uniform_draws(key, X.shape[0], 32, Y.shape[0], 30, jnp.float32)
        q = stacked.unstack(engine.init_stack(draws, rem.init, 1.0, rem.norm), 30)
        g = models.get("mlp", activation=rem.activation, output="softmax_ce",
                       residual=rem.residual, norm=rem.norm).grad(q, X, Y)
        norms = np.array([np.linalg.norm(np.asarray(g[f"W{l}"], np.float64)) for l in (1, 31)])
        got = ds["grad_norm_init"].sel(remedy=k, depth=30).values[0]
        np.testing.assert_allclose(got[[0, 30]], norms, rtol=2e-3, err_msg=k)
        np.testing.assert_allclose(np.median(ds["ratio_first_last"].sel(remedy=k, depth=30)),
                                   R[k]["ratio_first_last"], rtol=1e-12)
