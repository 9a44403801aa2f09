"""experiments/backprop_cost.py: a tiny CLI run (schema, fitted slopes near 0 and 1 recomputed
from metrics.zarr, memory per layer against the counted theory) and the three backward passes
against jax.grad in float64."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpexp
from bpexp import config, models
from bpexp.errors import UserError
from bpexp.experiments import backprop_cost as B
from bpexp.experiments.backprop_cost import q4 as BQ4
from bpexp.experiments.backprop_cost import q8 as BQ8
from bpexp.experiments.backprop_cost import timing as BT
from bpexp.primitives import output
from helpers import run_experiment

TINY = ["experiment.widths=[4,16,64]", "experiment.depths=[2,4,8]",
        "experiment.max_params_forward=1000", "experiment.repeats=3",
        "experiment.min_seconds=0.002", "experiment.q8_width=16", "experiment.q8_batch=64",
        "experiment.batch=16"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = run_experiment("backprop_cost", tmp_path_factory.mktemp("bpcost"), *TINY)
    return run_dir, json.loads((run_dir / "summary.json").read_text()), bpexp.load(run_dir)


def test_schema_and_files(tiny_run):
    run_dir, s, ds = tiny_run
    for f in ("q4_cost_vs_params.png", "q8_store_vs_recompute.png"):
        assert (run_dir / "figures" / f).stat().st_size > 10_000
    assert (run_dir / "report.md").exists() and not (run_dir / "metrics.npz").exists()
    assert set(s) == {"backend", "device", "size", "dtype", "q4", "q8"}
    q4, q8 = s["q4"], s["q8"]
    assert q4["widths"] == [4, 16, 64] and q8["depths"] == [2, 4, 8]
    for key in ("seconds", "flops", "forward_pass_equivalents_time",
                "forward_pass_equivalents_flops"):
        assert set(q4[key]) == set(BQ4.Q4_METHODS)
    assert set(q4["slope_flops"]) == set(q4["slope_time"]) == set(BQ4.Q4_METHODS[1:])
    assert set(q8["temp_bytes"]) == set(q8["seconds"]) == set(BQ8.Q8_METHODS)
    assert ds["q4_flops"].dims == ("q4_method", "net")
    assert list(ds["q4_method"].values) == list(BQ4.Q4_METHODS)
    assert ds["q8_temp_bytes"].dims == ("q8_method", "depth")
    # forward mode and finite differences run only up to max_params_forward
    P = ds["params"].values
    run = P <= 1000
    sec = ds["q4_seconds"].sel(q4_method="forward_mode").values
    assert np.all(np.isfinite(sec[run])) and np.all(np.isnan(sec[~run]))


def test_parameter_counts(tiny_run):
    _, s, _ = tiny_run
    for h, P in zip(s["q4"]["widths"], s["q4"]["params"]):
        # n = h inputs, 3 hidden layers of h, one output: 3 (h^2 + h) + h + 1
        assert P == 3 * (h * h + h) + h + 1


def test_fitted_slopes_near_0_and_1(tiny_run):
    _, s, ds = tiny_run
    P = ds["params"].values.astype(float)
    fl = ds["q4_flops"].values
    fpe = fl / fl[0]
    fit = {k: np.polyfit(np.log(P), np.log(fpe[i]), 1)[0] for i, k in enumerate(BQ4.Q4_METHODS)}
    assert abs(fit["backprop"]) < 0.1
    assert abs(fit["forward_mode"] - 1) < 0.05 and abs(fit["finite_differences"] - 1) < 0.05
    for k in BQ4.Q4_METHODS[1:]:
        assert s["q4"]["slope_flops"][k] == pytest.approx(fit[k], abs=1e-9)
    # central differences are exactly two forward passes per parameter (plus the axpy's)
    np.testing.assert_allclose(fpe[3], 2 * P, rtol=0.2)  # + O(P) to build theta + h e_i
    assert np.all((fpe[1] > 1.5) & (fpe[1] < 4.5))        # backprop: a few forward passes
    # the forward pass itself: ~2 P m FLOPs of matmuls (m = 16) at the largest net
    assert 0.9 < fl[0, -1] / (2 * P[-1] * 16) < 1.3
    # wall time is measured and reported, never asserted (shared, noisy machines): only that
    # it was measured for every method where it ran
    t = ds["q4_seconds"].values
    assert np.all(t[:2] > 0) and np.isfinite(t[2]).any() and np.isfinite(t[3]).any()
    assert np.isfinite(s["q4"]["slope_time"]["forward_mode"])
    assert s["q4"]["backprop_vs_forward_mode_rel_err"] < 1e-4     # float32


def test_memory_per_layer_against_counted_theory(tiny_run):
    _, s, ds = tiny_run
    q8 = s["q8"]
    m, h = 64, 16
    L = ds["depth"].values.astype(float)
    mem = ds["q8_temp_bytes"]
    per = {k: np.polyfit(L, mem.sel(q8_method=k).values, 1)[0] for k in BQ8.Q8_METHODS}
    assert per["store"] == pytest.approx(2 * m * h * 4, rel=0.1)          # z_l and a_l
    assert per["checkpoint"] == pytest.approx((m * h + h * h) * 4, rel=0.25)
    assert abs(per["recompute"]) < 0.01 * per["store"]                    # flat in depth
    for k in BQ8.Q8_METHODS:
        assert q8["bytes_per_layer"][k] == pytest.approx(per[k], rel=1e-9, abs=1e-6)
    assert q8["grad_rel_err_vs_store"] < 1e-5
    ev = ds["q8_layer_evals"].sel(q8_method="recompute").values
    np.testing.assert_array_equal(ev, 3 * L + 1 + L * (L - 1) / 2)


# ---------------------------------------------------------------- the backward passes, float64
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_checkpoint_and_recompute_equal_jax_grad(activation):
    L, h, m = 4, 5, 7
    out = output("identity_mse")
    model = models.get("mlp", activation=activation, output="identity_mse")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    X = jax.random.normal(k1, (h, m), jnp.float64)
    Y = jax.random.normal(k2, (h, m), jnp.float64)
    # jit everything: eager ops compile one by one
    p = jax.jit(lambda k: model.init(k, h, h, hidden=h, depth=L - 1, init="xavier",
                                     dtype=jnp.float64))(k3)
    ref = jax.jit(jax.grad(model.loss))(p, X, Y)
    W, b = BQ8.stack(p, L)
    for gW, gb in (jax.jit(BQ8.checkpoint_grad(activation, out))(W, b, X, Y),
                   jax.jit(BQ8.recompute_grad(activation, out))(W, b, X, Y)):
        for l in range(1, L + 1):
            np.testing.assert_allclose(gW[l - 1], ref[f"W{l}"], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(gb[l - 1], ref[f"b{l}"], rtol=1e-12, atol=1e-15)


def test_q4_functions_give_the_gradient():
    model = models.get("mlp", activation="tanh", output="identity_mse")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    X = jax.random.normal(k1, (3, 6), jnp.float64)
    Y = jax.random.normal(k2, (1, 6), jnp.float64)
    p = jax.jit(lambda k: model.init(k, 3, 1, hidden=3, depth=2, dtype=jnp.float64))(k3)
    theta, fns, pieces = BQ4.q4_functions(model, p, X, Y, chunk=4)
    ref = jax.jit(jax.grad(fns["forward"]))(theta)
    for name in ("backprop", "forward_mode"):
        np.testing.assert_allclose(jax.jit(fns[name])(theta), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.jit(fns["finite_differences"])(theta), ref, atol=1e-5)
    assert pieces["forward_mode"][1] == theta.size and pieces["backprop"][1] == 1
    # the looped timer returns f's output and a time
    t, out = BT.loop_time(BT.looped(fns["backprop"]), theta, 1, 0.0)
    assert t > 0
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


def test_slope():
    x = np.array([10.0, 100.0, 1000.0])
    assert BT.slope(x, 3 * x) == pytest.approx(1.0)
    assert BT.slope(x, [2.0, 2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert BT.slope(x, [np.nan, 5.0, 50.0]) == pytest.approx(1.0)


def _cfg(**kw):
    return config.Cfg(experiment=B.Params(**kw))


@pytest.mark.parametrize("kw, key", [
    ({"size": "huge"}, "experiment.size"),
    ({"activation": "gelu"}, "experiment.activation"),
    ({"widths": [4]}, "experiment.widths"),
    ({"widths": [4, 4]}, "experiment.widths"),
    ({"depths": [0, 2]}, "experiment.depths"),
    ({"repeats": 0}, "experiment.repeats"),
    ({"min_seconds": -1.0}, "experiment.min_seconds"),
])
def test_validate_rejects_bad_configs(kw, key):
    with pytest.raises(UserError, match=rf"^{re.escape(key)}=\S+ [^\n]+$"):
        B.validate(_cfg(**kw))


def test_presets():
    small, large = B.resolved(B.Params()), B.resolved(B.Params(size="large"))
    assert small["widths"][0] == 4 and small["widths"][-1] == 512
    assert large["widths"][-1] > small["widths"][-1] and large["depths"][-1] >= 128
    assert B.resolved(B.Params(widths=[8, 4]))["widths"] == [4, 8]
