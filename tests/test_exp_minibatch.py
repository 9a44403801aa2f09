"""minibatch: the gradient noise scale against numpy, the steps-to-target helpers by hand, the
full-batch GD with B_noise against a Python loop, and the CLI on a tiny config."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import build_cfg, run_experiment

import bpexp
from bpexp import models
from bpexp.errors import UserError
from bpexp.experiments.minibatch import run as MR
from bpexp.experiments.minibatch import theory as MT


def _problem(seed=0, n=5, k=4, d=3, m=9):
    rng = np.random.default_rng(seed)
    p = {"W1": rng.standard_normal((k, n)), "b1": rng.standard_normal((k, 1)),
         "W2": rng.standard_normal((d, k)), "b2": rng.standard_normal((d, 1))}
    return p, rng.standard_normal((n, m)), rng.standard_normal((d, m))


def np_per_example_grads(p, X, Y):
    """Section-notes gradients of l_i = ||yhat_i - y_i||^2 for each column, in numpy."""
    out = []
    for i in range(X.shape[1]):
        x, y = X[:, i:i + 1], Y[:, i:i + 1]
        A = 1 / (1 + np.exp(-(p["W1"] @ x + p["b1"])))
        dy = 2 * (p["W2"] @ A + p["b2"] - y)              # (2/m)(yhat - y), m = 1
        dZ = (p["W2"].T @ dy) * A * (1 - A)
        g = {"W1": dZ @ x.T, "b1": dZ, "W2": dy @ A.T, "b2": dy}
        out.append(np.concatenate([g[k].ravel() for k in ("W1", "W2", "b1", "b2")]))
    return np.array(out)


def test_noise_scale_equals_numpy_from_per_example_gradients():
    """B_noise = tr(Sigma)/|G|^2 with Sigma the population covariance of the per-example
    gradients, recomputed in numpy from the section formulas; G is the full gradient."""
    model = models.get("two_layer_sigmoid")
    for seed in range(3):
        p, X, Y = _problem(seed)
        g = np.asarray(MT.per_example_grads(model, p, X, Y))
        ref = np_per_example_grads(p, X, Y)
        # ravel_pytree orders leaves by sorted key: W1, W2, b1, b2
        np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-14)
        G = ref.mean(0)
        full = model.grad(p, X, Y)
        np.testing.assert_allclose(G, np.concatenate([np.ravel(full[k]) for k in
                                                      ("W1", "W2", "b1", "b2")]), rtol=1e-12)
        tr = np.trace(np.cov(ref.T, bias=True))
        b, tr_got, G2 = (float(v) for v in MT.noise_scale(jnp.asarray(g)))
        np.testing.assert_allclose(tr_got, tr, rtol=1e-12)
        np.testing.assert_allclose(G2, G @ G, rtol=1e-12)
        np.testing.assert_allclose(b, tr / (G @ G), rtol=1e-10)


def test_gd_with_noise_scale_follows_a_python_loop():
    model = models.get("two_layer_sigmoid")
    p, X, Y = _problem(4, m=12)
    f = MT.gd_with_noise_scale(model, 6, 3)
    b, tr, G2, loss = f(p, jnp.asarray(0.1), jnp.asarray(X), jnp.asarray(Y))
    q, want = p, []
    for t in range(7):
        if t % 3 == 0:
            ref = np_per_example_grads(q, X, Y)
            G = ref.mean(0)
            want.append((np.trace(np.cov(ref.T, bias=True)) / (G @ G),
                         float(model.loss(q, X, Y))))
        q = jax.tree.map(lambda w, d: w - 0.1 * d, q, model.grad(q, X, Y))
    np.testing.assert_allclose(b, [w[0] for w in want], rtol=1e-9)
    np.testing.assert_allclose(loss, [w[1] for w in want], rtol=1e-12)


def test_steps_to_target_helpers_by_hand():
    loss = np.array([[4.0, 2.0, 6.0, 1.0, 1.0, 0.5]])
    np.testing.assert_allclose(MR.smooth(loss, 2), [[4.0, 3.0, 4.0, 3.5, 1.0, 0.75]])
    np.testing.assert_allclose(MR.smooth(loss, 1), loss)
    assert MR.first_below(MR.smooth(loss, 2), 1.0).tolist() == [4]
    assert MR.first_below(loss, 0.1).tolist() == [-1]
    steps = np.array([[10, 12], [5, -1], [7, 9], [3, 4]])
    div = np.array([[False, False], [False, False], [False, False], [False, True]])
    assert MR.best_lr(steps, div) == 2          # row 1 misses the target, row 3 diverged
    assert MR.best_lr(steps[1:2], div[1:2]) is None
    b = np.array([1, 4, 16, 64, 256])
    bc, smin = MT.fit_critical_batch(b, 30 * (1 + 12.0 / b))
    assert bc == pytest.approx(12.0, rel=0.01) and smin == pytest.approx(30, rel=0.01)
    s, smin = MT.predicted_steps([1, 512], 40.0, 512, 10.0)
    np.testing.assert_allclose(smin, 40 / (1 + 10 / 512))
    np.testing.assert_allclose(s, smin * np.array([11, 1 + 10 / 512]))


@pytest.mark.parametrize("exp", [{"batch_sizes": []}, {"batch_sizes": [-1]},
                                 {"batch_sizes": [4, 4]}, {"target": 0.0},
                                 {"window": 0}, {"noise_every": 0}])
def test_validate_rejects_bad_values(exp):
    (key, value), = exp.items()
    with pytest.raises(UserError, match=f"experiment.{key}="):
        build_cfg({"model": {"name": "two_layer_sigmoid"}, "train": {"record_every": 1},
                   "experiment": {"name": "minibatch", **exp}})


def test_cli_tiny(tmp_path):
    run_dir = run_experiment("minibatch", tmp_path, "data.m=128", "train.steps=60",
                             "experiment.batch_sizes=[1,8,0]", "sweep.lr=[0.05,0.1,0.2,0.4]",
                             "sweep.seeds=2", "experiment.target=1.0",
                             "experiment.noise_every=10", "sweep.progress=false")
    s = json.loads((run_dir / "summary.json").read_text())
    for f in ("steps_to_target.png", "best_lr_vs_batch.png", "loss_curves.png",
              "noise_scale.png"):
        assert (run_dir / "figures" / f).stat().st_size > 1000, f
    ds = bpexp.load(run_dir)
    assert ds["loss"].dims == ("batch", "lr", "seed", "step")
    assert list(ds["batch"].values) == [1, 8, 128] and ds.sizes["step"] == 60
    assert list(ds["noise_step"].values) == [0, 10, 20, 30, 40, 50, 60]
    # steps to the target recomputed from the stored batch losses with an independent
    # trailing mean (np.convolve) over ceil(64 / B) steps
    loss = ds["loss"].values
    for i, b in enumerate([1, 8, 128]):
        w = -(-64 // b)
        for j in range(4):
            for k in range(2):
                x = loss[i, j, k]
                if not np.all(np.isfinite(x)):   # a diverged run: NaN from its first inf on
                    assert np.isnan(ds["smoothed_loss"].values[i, j, k, -1])
                    continue
                num = np.convolve(x, np.ones(w))[: len(x)]
                sm = num / np.minimum(np.arange(1, len(x) + 1), w)
                np.testing.assert_allclose(ds["smoothed_loss"].values[i, j, k], sm, rtol=1e-9)
                hit = np.flatnonzero(sm <= 1.0)
                assert ds["steps_to_target"].values[i, j, k] == (hit[0] if hit.size else -1)
    for b in ("1", "8", "128"):
        d = s["per_batch"][b]
        if d["best_lr"] is not None:
            j = list(ds["lr"].values).index(d["best_lr"])
            st = ds["steps_to_target"].values[[1, 8, 128].index(int(b)), j]
            assert d["steps_to_target"] == float(np.median(st))
            assert d["epochs_to_target"] == pytest.approx(np.median(st) * int(b) / 128)
    assert s["b_noise"]["init"] == pytest.approx(float(ds["b_noise"].values[0]))
    assert s["b_noise"]["values"][0] > 0 and len(s["b_noise"]["values"]) == 7


@pytest.mark.slow
def test_default_run_theory_vs_measurement(tmp_path):
    """The README's run (~40 s): steps to the target never grow with B, epochs grow, the best lr
    never falls; the fitted critical batch lies between B_noise at init and at the target, and
    the geometric mean of B_noise on the way is within x3 of it."""
    run_dir = run_experiment("minibatch", tmp_path, "sweep.progress=false")
    s = json.loads((run_dir / "summary.json").read_text())
    per = [s["per_batch"][str(b)] for b in s["batch_sizes"]]
    steps = [d["steps_to_target"] for d in per]
    assert all(x is not None for x in steps)
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    epochs = [d["epochs_to_target"] for d in per]
    assert all(a < b for a, b in zip(epochs, epochs[1:]))
    lrs = [d["best_lr"] for d in per]
    assert all(a <= b for a, b in zip(lrs, lrs[1:]))
    bn, fit = s["b_noise"], s["fit"]
    assert fit["b_crit_between_init_and_target"] is True
    assert bn["init"] < fit["b_crit"] < bn["at_target"]
    assert 1 / 3 < bn["geomean_to_target"] / fit["b_crit"] < 3
    # the fitted curve reproduces the measured steps within 15%
    for b, d in zip(s["batch_sizes"], per):
        assert fit["steps"][str(b)] == pytest.approx(d["steps_to_target"], rel=0.15)
