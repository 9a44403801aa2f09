"""experiments/credit_assignment.py: a tiny CLI run checked against an independent numpy
backward pass, and the pure helpers (edge widths, layer mass, per-example loss)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpexp
from bpexp import config, primitives
from bpexp.errors import UserError
from bpexp.experiments import credit_assignment as C
from helpers import run_experiment


def np_sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("credit")
    run_dir = run_experiment("credit_assignment", tmp, "data.m=16", "experiment.example=3")
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, summary, bpexp.load(run_dir)


def test_cli_outputs_and_schema(tiny_run):
    run_dir, s, M = tiny_run
    for f in ("network.png", "layer_mass.png", "backprop_flow.png"):
        assert (run_dir / "figures" / f).stat().st_size > 10_000
    assert (run_dir / "report.md").exists()
    assert s["network"] == [5, 3, 2, 1] and s["m"] == 16 and s["flow_example"] == 3
    assert set(s["layers"]) == {"W1", "W2", "W3", "b1", "b2", "b3"}
    for v in s["layers"].values():
        assert set(v) >= {"grad_abs_sum", "grad_abs_mean", "grad_norm"}
    assert set(s["deltas"]) == {"delta1", "delta2", "delta3"}
    assert s["max_abs_diff_vs_autodiff"] < 1e-12
    assert s["features"] == ["age", "sex", "bmi", "bp", "s1"]


def test_cli_metrics_dims_and_coordinates(tiny_run):
    """metrics.zarr: each layer's units are a named dim (the inputs ``feature``, named), the
    batch column is ``example``; W_l is (unit_l, unit_{l-1}), b_l (unit_l,)."""
    _, s, M = tiny_run
    units = ["feature", "unit1", "unit2", "unit3"]
    assert M["feature"].values.tolist() == s["features"]
    assert M["example"].values.tolist() == list(range(16))
    for l in (1, 2, 3):
        assert M[f"unit{l}"].values.tolist() == list(range(s["network"][l]))
        for pre in ("grad", "autodiff", "param"):
            assert M[f"{pre}_W{l}"].dims == (units[l], units[l - 1]), (pre, l)
            assert M[f"{pre}_b{l}"].dims == (units[l],), (pre, l)
        assert M[f"width_W{l}"].dims == (units[l], units[l - 1])
        assert M[f"delta{l}"].dims == M[f"z{l}"].dims == (units[l], "example")
        assert M[f"a{l - 1}"].dims == (units[l - 1], "example")
    assert "a3" not in M and "width_b1" not in M
    assert M["yhat"].dims == ("unit3", "example") and M["yhat"].shape == (1, 16)
    assert M["network"].dims == ("layer",) and M["network"].values.tolist() == s["network"]
    assert M["layer"].values.tolist() == [0, 1, 2, 3]


def test_cli_gradient_equals_independent_numpy_backprop(tiny_run):
    run_dir, s, M = tiny_run
    D = np.load(run_dir / "data.npz")
    X, Y = D["X"].astype(np.float64), D["Y"].astype(np.float64)
    p = {k[len("param_"):]: M[k].values for k in M.data_vars if k.startswith("param_")}
    p = {k: v if k.startswith("W") else v[:, None] for k, v in p.items()}   # b_l: (d_l, 1)
    np.testing.assert_array_equal(M["a0"].values, X)                        # a_0 = X
    m = X.shape[1]
    a1 = np_sigmoid(p["W1"] @ X + p["b1"])
    a2 = np_sigmoid(p["W2"] @ a1 + p["b2"])
    z3 = p["W3"] @ a2 + p["b3"]
    assert abs(np.sum((z3 - Y) ** 2) / m - s["loss"]) < 1e-12
    d3 = 2.0 / m * (z3 - Y)
    d2 = (p["W3"].T @ d3) * a2 * (1 - a2)
    d1 = (p["W2"].T @ d2) * a1 * (1 - a1)
    ref = {"W3": d3 @ a2.T, "W2": d2 @ a1.T, "W1": d1 @ X.T,
           "b3": d3.sum(1, keepdims=True), "b2": d2.sum(1, keepdims=True),
           "b1": d1.sum(1, keepdims=True)}
    for k, v in ref.items():
        v = v if k.startswith("W") else v[:, 0]
        np.testing.assert_allclose(M[f"grad_{k}"].values, v, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(M[f"autodiff_{k}"].values, v, rtol=1e-12, atol=1e-15)
    for l, d in ((1, d1), (2, d2), (3, d3)):
        np.testing.assert_allclose(M[f"delta{l}"].values, d, rtol=1e-12, atol=1e-15)
    z1 = p["W1"] @ X + p["b1"]
    z2 = p["W2"] @ a1 + p["b2"]
    for name, ref_v in (("z1", z1), ("z2", z2), ("z3", z3), ("a1", a1), ("a2", a2),
                        ("yhat", z3)):
        np.testing.assert_allclose(M[name].values, ref_v, rtol=1e-12, atol=1e-15, err_msg=name)
        assert abs(np.mean(np.abs(d)) - s["deltas"][f"delta{l}"]) < 1e-15


def test_cli_layer_mass_and_widths_from_saved_gradients(tiny_run):
    _, s, M = tiny_run
    for k, v in s["layers"].items():
        g = M[f"grad_{k}"].values
        np.testing.assert_allclose(v["grad_abs_sum"], np.sum(np.abs(g)), rtol=1e-13)
        np.testing.assert_allclose(v["grad_abs_mean"], np.sum(np.abs(g)) / g.size, rtol=1e-13)
        np.testing.assert_allclose(v["grad_norm"], np.sqrt(np.sum(g * g)), rtol=1e-13)
    # drawn widths / |dL/dW| is one constant over every weight of every layer
    gmax = max(np.abs(M[f"grad_W{l}"].values).max() for l in (1, 2, 3))
    for l in (1, 2, 3):
        np.testing.assert_allclose(M[f"width_W{l}"].values,
                                   9.0 * np.abs(M[f"grad_W{l}"].values) / gmax, rtol=1e-13)
    np.testing.assert_allclose(s["edge_width_scale"], 9.0 / gmax, rtol=1e-13)


def test_edge_widths_proportional():
    rng = np.random.default_rng(0)
    g = {"W1": rng.normal(size=(3, 5)), "b1": rng.normal(size=(3, 1)) * 100,
         "W2": rng.normal(size=(1, 3))}
    w = C.edge_widths(g, 7.0)
    assert set(w) == {"W1", "W2"}  # biases are not edges (and do not set the scale)
    ratios = np.concatenate([(w[k] / np.abs(g[k])).ravel() for k in w])
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-13)
    assert max(float(v.max()) for v in w.values()) == pytest.approx(7.0, rel=1e-15)
    z = C.edge_widths({"W1": np.zeros((2, 2))}, 5.0)
    assert not np.any(z["W1"])


def test_layer_mass_numpy():
    g = {"W1": np.array([[1.0, -2.0], [3.0, -4.0]]), "b1": np.array([[-0.5], [0.5]])}
    m = C.layer_mass(g)
    assert m["W1"]["grad_abs_sum"] == 10.0 and m["W1"]["grad_abs_mean"] == 2.5
    assert m["W1"]["grad_norm"] == pytest.approx(np.sqrt(30.0), rel=1e-15)
    assert m["b1"]["shape"] == [2, 1] and m["b1"]["grad_abs_sum"] == 1.0


@pytest.mark.parametrize("output", ["identity_mse", "sigmoid_mse", "sigmoid_ce", "softmax_ce"])
def test_per_example_loss_averages_to_model_loss(output):
    rng = np.random.default_rng(2)
    d = 3 if output == "softmax_ce" else 1
    Z = rng.normal(size=(d, 6))
    Y = (np.eye(d)[:, rng.integers(0, d, 6)] if d > 1
         else (rng.uniform(size=(1, 6)) > 0.5).astype(float))
    ref = float(primitives.output(output).loss(jnp.asarray(Z), jnp.asarray(Y)))
    mean = np.mean([C.per_example_loss(output, Z[:, i], Y[:, i]) for i in range(6)])
    assert abs(mean - ref) < 1e-12


def _cfg(name="mlp", hidden=(3, 2), m=16, **experiment):
    return config.Cfg(experiment=C.Params(**experiment),
                      model=config.ModelCfg(name=name, hidden=list(hidden), depth=len(hidden)),
                      data=config.DataCfg(name="diabetes", m=m, features=[0, 1, 2, 3, 4]))


def test_validate_accepts_the_last_column():
    C.validate(_cfg(example=15))
    C.validate(_cfg(m=0, example=441))  # m=0: all 442 diabetes examples


@pytest.mark.parametrize("kw, key", [
    ({"name": "two_layer_sigmoid"}, "model.name"),
    ({"hidden": (40, 2)}, "model.hidden"),
    ({"example": 16}, "experiment.example"),
    ({"example": -1}, "experiment.example"),
    ({"m": 0, "example": 442}, "experiment.example"),
    ({"min_width": -0.1}, "experiment.min_width"),
    ({"min_width": float("nan")}, "experiment.min_width"),
    ({"max_width": 0.2}, "experiment.max_width"),
    ({"max_width": float("inf")}, "experiment.max_width"),
])
def test_validate_rejects_bad_configs(kw, key):
    with pytest.raises(UserError, match=rf"^{re.escape(key)}=\S+ [^\n]+$"):
        C.validate(_cfg(**kw))


def test_feature_names():
    assert C.feature_names("diabetes", [0, 2], 2) == ["age", "bmi"]
    assert C.feature_names("moons", None, 2) == ["x1", "x2"]
    assert jax.config.jax_enable_x64  # conftest: the numpy references above run against float64


def test_cli_report_opens_with_claims_from_the_stored_gradients(tiny_run):
    """The opening sentences name the layer with the largest mean |dL/dW| and the first/last
    ratio, both recomputed here from the stored gradients."""
    run_dir, s, M = tiny_run
    shows = (run_dir / "report.md").read_text().split("## What this run shows\n\n")[1]
    shows = shows.split("\n")[0]
    mean = {l: np.mean(np.abs(M[f"grad_W{l}"].values)) for l in (1, 2, 3)}
    top = max(mean, key=mean.get)
    assert f"is W{top}, {mean[top]:.3g}" in shows
    ratio = mean[1] / mean[3]
    assert f"{ratio:.3g}x the last layer's" in shows
    assert ("shrinks" in shows) == (ratio < 1)
