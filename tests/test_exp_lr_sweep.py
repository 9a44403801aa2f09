"""lr_sweep through the CLI: theory and measurement agree where the theory is exact; its
compute and save called directly; its validation."""

import json

import numpy as np
import pytest

from bpexp.errors import UserError
from bpexp.experiments import lr_sweep
from bpexp.experiments.lr_sweep import measured_threshold
from bpexp.outputs import Run
from helpers import build_cfg, run_experiment


def independent_lambda_max(X):
    """numpy: top eigenvalue of (2/m) [X; 1][X; 1]^T."""
    Xt = np.vstack([X.astype(np.float64), np.ones((1, X.shape[1]))])
    return np.linalg.eigvalsh(2.0 / X.shape[1] * Xt @ Xt.T)[-1]


@pytest.mark.parametrize("optimizer,lrs,steps", [
    ("gd", "{start: 0.05, stop: 1.0, num: 24, log: true}", 300),
    ("momentum", "{start: 1.0, stop: 20.0, num: 24, log: true}", 400),
])
def test_measured_threshold_within_one_grid_step(tmp_path, optimizer, lrs, steps):
    d = run_experiment("lr_sweep", tmp_path, f"optimizer={optimizer}", f"sweep.lr={lrs}",
                       "sweep.seeds=2", f"train.steps={steps}", "train.record_every=10")
    s = json.loads((d / "summary.json").read_text())
    for key in ("lrs", "diverged_fraction", "final_loss_median", "lambda_max", "threshold_theory",
                "threshold_measured", "theory_kind"):
        assert key in s
    assert s["theory_kind"] == "exact"
    X = np.load(d / "data.npz")["X"]
    lam = independent_lambda_max(X)
    assert s["lambda_max"] == pytest.approx(lam, rel=1e-9)
    beta = 0.9
    theory = 2 / lam if optimizer == "gd" else 2 * (1 + beta) / ((1 - beta) * lam)
    assert s["threshold_theory"] == pytest.approx(theory, rel=1e-9)
    lr = np.array(s["lrs"])
    step = lr[1] / lr[0]
    assert abs(np.log(s["threshold_measured"] / theory)) <= np.log(step) + 1e-12
    frac = np.array(s["diverged_fraction"])
    assert np.all(frac[lr < theory / step] == 0) and np.all(frac[lr > theory * step] == 1)
    m = np.load(d / "metrics.npz")
    assert list(m["loss__dims"]) == ["lr", "seed", "step"]
    assert m["loss"].shape == (24, 2, steps // 10)
    for f in ("loss_curves.png", "final_loss_vs_lr.png", "too_small_good_too_large.png"):
        assert (d / "figures" / f).stat().st_size > 10_000
    assert "Theory vs measurement" in (d / "report.md").read_text()


def test_measured_threshold_helper():
    lrs = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    assert measured_threshold(lrs, np.array([0, 0, 0.5, 1, 1]))[:3] == pytest.approx(
        (np.sqrt(0.2 * 0.8), 0.2, 0.8))
    assert measured_threshold(lrs, np.zeros(5)) == (None, None, None)
    assert measured_threshold(lrs, np.array([1.0, 1, 1, 1, 1]))[0] is None


TINY = {"experiment": {"name": "lr_sweep"}, "model": {"name": "multivariate"},
        "data": {"name": "diabetes"}, "train": {"steps": 20, "record_every": 5},
        "sweep": {"lr": [0.01, 0.1, 1.0], "seeds": 2, "progress": False}}


def test_compute_and_save_without_the_cli(tmp_path):
    """compute -> save on a tiny grid: compute writes only data.npz, save the metrics, and the
    summary's threshold is 2/lambda_max of H = (2/m) Xt Xt^T computed here with numpy."""
    cfg = build_cfg(TINY)
    run = Run(tmp_path, "lr_sweep")
    res = lr_sweep.compute(cfg, run)
    assert sorted(p.name for p in run.dir.iterdir()) == ["config.yaml", "data.npz", "env.json",
                                                          "figures"]
    assert res.loss.shape == (3, 2, 4) and res.final.shape == res.diverged.shape == (3, 2)
    s = lr_sweep.save(cfg, run, res)
    assert not any((run.dir / "figures").iterdir()) and not (run.dir / "report.md").exists()

    X = np.load(run.dir / "data.npz")["X"].astype(np.float64)    # what it trained on: (10, 442)
    m = X.shape[1]
    Xt = np.vstack([X, np.ones((1, m))])
    lam = np.linalg.eigvalsh(2.0 / m * Xt @ Xt.T)[-1]
    assert s["theory_kind"] == "exact"
    assert s["lambda_max"] == pytest.approx(lam, rel=1e-9)
    assert s["threshold_theory"] == pytest.approx(2 / lam, rel=1e-9)
    # 0.01 and 0.1 lie below 2/lambda_max ~ 0.25, 1.0 above: |1 - lr lambda| ~ 7 per step
    np.testing.assert_array_equal(s["lrs"], [0.01, 0.1, 1.0])
    np.testing.assert_array_equal(s["diverged_fraction"], [0, 0, 1])
    assert s["threshold_measured"] == pytest.approx(np.sqrt(0.1 * 1.0))
    assert s["threshold_bracket"] == [0.1, 1.0] and s["grid_step_ratio"] is None
    assert s["runs"] == 6
    mz = np.load(run.dir / "metrics.npz")
    assert list(mz["loss__dims"]) == ["lr", "seed", "step"] and mz["loss"].shape == (3, 2, 4)
    assert mz["diverged"].shape == (3, 2) and mz["diverged"][2].all()


@pytest.mark.parametrize("key,value", [("sharpness_iters", 0), ("sharpness_iters", 2**31),
                                       ("divergence_factor", 0.0),
                                       ("divergence_factor", -1.0),
                                       ("divergence_factor", float("nan")),
                                       ("divergence_factor", float("inf"))])
def test_bad_experiment_values_are_one_line_user_errors(key, value):
    tree = {**TINY, "experiment": {"name": "lr_sweep", key: value}}
    with pytest.raises(UserError) as e:
        build_cfg(tree)
    msg = str(e.value)
    assert f"experiment.{key}={value!r}" in msg and "allowed" in msg and "\n" not in msg
