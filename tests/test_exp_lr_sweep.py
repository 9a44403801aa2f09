"""lr_sweep through the CLI: theory and measurement agree where the theory is exact."""

import json

import numpy as np
import pytest

from bpexp.experiments.lr_sweep import measured_threshold
from helpers import run_experiment


def independent_lambda_max(X):
    """numpy: top eigenvalue of (2/m) [X; 1][X; 1]^T."""
    Xt = np.vstack([X.astype(np.float64), np.ones((1, X.shape[1]))])
    return np.linalg.eigvalsh(2.0 / X.shape[1] * Xt @ Xt.T)[-1]


@pytest.mark.parametrize("optimizer,lrs,steps", [
    ("gd", "{start: 0.05, stop: 1.0, num: 24, log: true}", 300),
    ("momentum", "{start: 1.0, stop: 20.0, num: 24, log: true}", 400),
])
def test_measured_threshold_within_one_grid_step(tmp_path, optimizer, lrs, steps):
    d = run_experiment("lr_sweep", tmp_path, f"optimizer={optimizer}", f"sweep.lr={lrs}", "sweep.seeds=2",
                f"train.steps={steps}", "train.record_every=10")
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
    assert measured_threshold(lrs, np.array([0, 0, 0.5, 1, 1]))[:3] == pytest.approx((np.sqrt(0.2 * 0.8), 0.2, 0.8))
    assert measured_threshold(lrs, np.zeros(5)) == (None, None, None)
    assert measured_threshold(lrs, np.array([1.0, 1, 1, 1, 1]))[0] is None
