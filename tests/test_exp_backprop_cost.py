"""experiments/backprop_cost: a tiny CLI run (schema; the FLOPs of each all-P program, read from
XLA's cost analysis, fitted against P and held to the theory's slopes 1, 1, 2, 2; the fits and
the time-vs-FLOPs verdicts recomputed from metrics.zarr; every title and takeaway checked
against the summary; memory per layer against the counted theory), XLA's FLOP count against a
hand count, and the gradient programs against jax.grad in float64."""

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
from bpexp.experiments.backprop_cost import text as BX
from bpexp.experiments.backprop_cost import timing as BT
from bpexp.primitives import output
from helpers import run_experiment

# max_temp_mb=1: the all-P programs of P = 833 and 12545 need more, so the timed P = 833 runs
# its directions in blocks of 128 (833 = 6 x 128 + 65: a partial block too)
TINY = ["experiment.widths=[4,16,64]", "experiment.depths=[2,4,8]",
        "experiment.max_params_forward=1000", "experiment.repeats=3",
        "experiment.min_seconds=0.002", "experiment.q8_width=16", "experiment.q8_batch=64",
        "experiment.batch=16", "experiment.max_temp_mb=1", "experiment.chunk=128"]
M = 16  # experiment.batch


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = run_experiment("backprop_cost", tmp_path_factory.mktemp("bpcost"), *TINY)
    return run_dir, json.loads((run_dir / "summary.json").read_text()), bpexp.load(run_dir)


def _png_size(path):
    data = path.read_bytes()[:24]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_schema_and_files(tiny_run):
    run_dir, s, ds = tiny_run
    for f in ("q4_cost_vs_params.png", "q8_store_vs_recompute.png"):
        w, h = _png_size(run_dir / "figures" / f)
        assert w * h > 300_000 and w <= 2.2 * h            # a slide, never a strip
    assert (run_dir / "report.md").read_text().split("\n")[2] == "## What this run shows"
    assert set(s) == {"backend", "device", "size", "dtype", "cpu_count", "load_average", "q4",
                      "q8", *B.HEADLINE}
    for k in B.HEADLINE:   # top-level copies, for the run index and comparison tables
        assert s[k] == s["q4"]["slope_flops"][k.removeprefix("flop_slope_")]
    q4, q8 = s["q4"], s["q8"]
    assert q4["widths"] == [4, 16, 64] and q8["depths"] == [2, 4, 8]
    for key in ("seconds", "flops", "temp_bytes", "timed_in_blocks",
                "forward_pass_equivalents_time", "forward_pass_equivalents_flops",
                "slope_flops", "slope_flops_stderr", "slope_time", "slope_time_stderr"):
        assert set(q4[key]) == set(BQ4.Q4_METHODS), key
    assert set(q4["time_vs_flops"]) == set(BQ4.Q4_METHODS[1:])
    assert set(q8["temp_bytes"]) == set(q8["seconds"]) == set(BQ8.Q8_METHODS)
    assert ds["q4_flops"].dims == ("q4_method", "net")
    assert list(ds["q4_method"].values) == list(BQ4.Q4_METHODS)
    assert ds["q8_temp_bytes"].dims == ("q8_method", "depth")
    # forward mode and finite differences are timed up to max_params_forward, costed at all P
    P = ds["params"].values
    run = P <= 1000
    for k in ("forward_mode", "finite_differences"):
        sec = ds["q4_seconds"].sel(q4_method=k).values
        assert np.all(np.isfinite(sec[run])) and np.all(np.isnan(sec[~run]))
        assert np.all(ds["q4_flops"].sel(q4_method=k).values > 0)
        # the timed program needing more than 1 MB ran in blocks; the others whole
        tmp = ds["q4_temp_bytes"].sel(q4_method=k).values
        np.testing.assert_array_equal(ds["q4_chunked"].sel(q4_method=k).values,
                                      run & (tmp > 1e6))
    assert ds["q4_chunked"].values.sum() == 2                 # P = 833, both methods
    assert q4["backprop_vs_forward_mode_rel_err"] < 1e-4      # float32, blocks included


def test_parameter_counts(tiny_run):
    _, s, _ = tiny_run
    for h, P in zip(s["q4"]["widths"], s["q4"]["params"]):
        # n = h inputs, 3 hidden layers of h, one output: 3 (h^2 + h) + h + 1
        assert P == 3 * (h * h + h) + h + 1


def test_measured_flop_slopes_against_theory(tiny_run):
    """The FLOPs are XLA's count of each compiled all-P program (nothing multiplied by P
    here or in the experiment). Tolerance 0.05 on the slope: the counts are deterministic,
    and the terms below the theory's power (bias adds, the loss: O(m h) per layer against the
    matmuls' O(m h^2)) bend the log-log line by less than that from h = 4 on (measured: every
    slope within 0.015 of theory over P = 65..197,633)."""
    _, s, ds = tiny_run
    q4 = s["q4"]
    P = ds["params"].values.astype(float)
    fl = ds["q4_flops"].values
    for i, k in enumerate(BQ4.Q4_METHODS):
        coef, res = np.polyfit(np.log(P), np.log(fl[i]), 1, full=True)[:2]
        se = np.sqrt(res[0] / (len(P) - 2) / np.sum((np.log(P) - np.log(P).mean()) ** 2))
        assert q4["slope_flops"][k] == pytest.approx(coef[0], abs=1e-9)
        assert q4["slope_flops_stderr"][k] == pytest.approx(se, rel=1e-6, abs=1e-12)
        assert abs(coef[0] - B.THEORY_SLOPE[k]) < 0.05, (k, coef[0])
        assert BX.agrees(q4, k)
    fpe = fl / fl[0]
    # backprop: a few forward passes (the forward matmul, then dW and delta) at every P
    assert np.all((fpe[1] > 2.0) & (fpe[1] < 4.0))
    # central differences: two forward passes per direction, plus O(P) arithmetic on each
    # perturbed theta +- eps e_i (XLA counts ~48 FLOPs a parameter a direction): P^2 either way
    extra = (fl[3] - 2 * P * fl[0]) / P**2
    assert np.all((extra > 1) & (extra < 100))
    # forward mode: one tangent pass per direction, the primal shared: 1..3 forwards each
    assert np.all((fpe[2] / P > 1.0) & (fpe[2] / P < 3.0))


def test_time_fits_and_tracking_rule(tiny_run):
    """Wall time is machine-dependent: never asserted, but every derived number is recomputed
    from the stored seconds and FLOPs, and the tracks verdict from the written rule."""
    _, s, ds = tiny_run
    q4 = s["q4"]
    P = ds["params"].values.astype(float)
    t, fl = ds["q4_seconds"].values, ds["q4_flops"].values
    assert np.all(t[:2] > 0)
    for i, k in enumerate(BQ4.Q4_METHODS):
        ok = np.isfinite(t[i])
        assert q4["slope_time"][k] == pytest.approx(
            np.polyfit(np.log(P[ok]), np.log(t[i, ok]), 1)[0], abs=1e-9)
    j = int(np.flatnonzero(np.isfinite(t).all(0))[-1])
    assert P[j] == 833
    for i, k in enumerate(BQ4.Q4_METHODS[1:], 1):
        tv = q4["time_vs_flops"][k]
        r = (t[i, j] / t[0, j]) / (fl[i, j] / fl[0, j])
        assert tv["params"] == 833 and tv["ratio"] == pytest.approx(r, rel=1e-9)
        assert tv["tracks"] == (1 / 1.5 <= r <= 1.5)
        assert BX.tracks_text(q4, k).count("does not track") == (not tv["tracks"])


def test_titles_and_takeaways_state_the_summary(tiny_run):
    run_dir, s, _ = tiny_run
    q4, q8 = s["q4"], s["q8"]
    nums = [float(v) for v in re.findall(r"P\^\{(-?[\d.]+)\}", BX.q4_title(q4))]
    assert nums == [round(q4["slope_flops"][k], 2) for k in BQ4.Q4_METHODS[1:]]
    bp = q4["forward_pass_equivalents_flops"]["backprop"]
    assert BX.fpe_title(q4).startswith(f"backprop = {min(bp):.1f}..{max(bp):.1f} forward")
    tracks = {BX.NAMES[k] for k, v in q4["time_vs_flops"].items() if v["tracks"]}
    title = BX.rate_title(q4)
    if tracks and len(tracks) < 3:
        yes, no = title.split("; not for ")
        assert {n for n in BX.NAMES.values() if n in yes} == tracks
        assert not any(n in no for n in tracks)
    else:
        assert ("does not track" in title) == (not tracks)
    assert "at no P" in BX.rate_title({**q4, "time_vs_flops": {}})
    assert "at no P" in BX.shows({**s, "q4": {**q4, "time_vs_flops": {}}})[2]
    t8 = BX.q8_title(q8)
    assert f"{q8['bytes_per_layer']['store'] / 1e3:.0f} kB a layer" in t8
    assert f"takes {q8['time_ratio_deepest']['recompute']:.1f}x the time at L = 8" in t8
    assert f"counted {q8['matmul_ratio_deepest']['recompute']:.1f}x" in t8
    shows = BX.shows(s)
    assert 3 <= len(shows) <= 5
    for k in BQ4.Q4_METHODS:
        assert f"{BX.NAMES[k]} P^{q4['slope_flops'][k]:.3f}" in shows[0]
    assert "disagrees" not in shows[0]
    assert f"backprop costs {min(bp):.2f}..{max(bp):.2f} forward passes" in shows[1]
    for k in ("forward_mode", "finite_differences"):
        r = np.array(q4["forward_pass_equivalents_flops"][k]) / np.array(q4["params"])
        assert f"{r.min():.2f}..{r.max():.2f} x P" in shows[1]
    assert " ".join(shows) in (run_dir / "report.md").read_text()
    rec = {"summary": s, "command": "python -m bpexp +experiment=backprop_cost",
           "machine": {"platform": "Linux", "backend": "cpu", "cpu_count": s["cpu_count"]}}
    md = B.readme(rec)
    assert f"Wall time (machine-dependent: measured on a {s['cpu_count']}-core CPU machine)" in md
    assert f"load average {s['load_average'][0]:.1f} before" in md
    for k in BQ4.Q4_METHODS:
        assert f"| {q4['slope_flops'][k]:.3f} ± {q4['slope_flops_stderr'][k]:.3f} |" in md


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


# ---------------------------------------------------------------- XLA's count vs a hand count
def test_xla_flops_against_hand_count():
    n, k, m = 24, 40, 16
    a, b = jnp.ones((n, k), jnp.float32), jnp.ones((k, m), jnp.float32)
    fl, _ = BT.cost(jax.jit(jnp.matmul).lower(a, b).compile())
    assert fl == 2 * n * k * m                                # a matmul: 2 n k m, exactly
    model = models.get("mlp", activation="tanh", output="identity_mse")
    h, mb = 16, 64
    X, Y, p = BQ4.problems(model, jax.random.PRNGKey(0), [(h, 1, mb, 3)])[0]
    theta, whole, _ = BQ4.q4_programs(model, p, X, Y, 128)
    fl, _ = BT.cost(jax.jit(whole["forward"]).lower(theta).compile())
    # numpy's count of the forward pass: 3 hidden h x h matmuls and the 1 x h output (2 FLOPs
    # a multiply-add), a bias add per output, the loss (difference, square, sum); tanh is a
    # transcendental, not a FLOP, in XLA's count
    W = [np.asarray(p[f"W{l}"]) for l in range(1, 5)]
    hand = sum(2 * w.shape[0] * w.shape[1] * mb + w.shape[0] * mb for w in W) + 3 * mb
    assert fl == pytest.approx(hand, rel=0.01)


def test_whole_program_count_equals_its_blocks():
    """XLA counts a loop's body once: the blocked program (7 blocks of 119 of the P = 833
    directions) reports one block's FLOPs, and the whole vmapped program ~7 times that (the
    same work, counted over all P; 5%: the blocks' slicing and loop bookkeeping differ)."""
    model = models.get("mlp", activation="tanh", output="identity_mse")
    X, Y, p = BQ4.problems(model, jax.random.PRNGKey(0), [(16, 1, 16, 3)])[0]
    theta, whole, blocks = BQ4.q4_programs(model, p, X, Y, 119)
    assert theta.size == 7 * 119
    for k in ("forward_mode", "finite_differences"):
        w = BT.cost(jax.jit(whole[k]).lower(theta).compile())[0]
        b = BT.cost(jax.jit(blocks[k]).lower(theta).compile())[0]
        assert w / b == pytest.approx(7, rel=0.05), k


# ---------------------------------------------------------------- the gradient programs, float64
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


def test_q4_programs_give_the_gradient():
    model = models.get("mlp", activation="tanh", output="identity_mse")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    X = jax.random.normal(k1, (3, 6), jnp.float64)
    Y = jax.random.normal(k2, (1, 6), jnp.float64)
    p = jax.jit(lambda k: model.init(k, 3, 1, hidden=3, depth=2, dtype=jnp.float64))(k3)
    theta, whole, blocks = BQ4.q4_programs(model, p, X, Y, chunk=4)   # P = 25: 6 x 4 + 1
    ref = jax.jit(jax.grad(whole["forward"]))(theta)
    for g in (whole["backprop"], whole["forward_mode"], blocks["forward_mode"]):
        np.testing.assert_allclose(jax.jit(g)(theta), ref, rtol=1e-12, atol=1e-15)
    for g in (whole["finite_differences"], blocks["finite_differences"]):
        np.testing.assert_allclose(jax.jit(g)(theta), ref, atol=1e-5)
    # the looped timer returns f's output and a time
    t, out = BT.loop_time(BT.looped(whole["backprop"]), theta, 1, 0.0)
    assert t > 0
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-15)


def test_fit_and_slope():
    x = np.array([10.0, 100.0, 1000.0])
    assert BT.slope(x, 3 * x) == pytest.approx(1.0)
    assert BT.slope(x, [2.0, 2.0, 2.0]) == pytest.approx(0.0, abs=1e-12)
    assert BT.slope(x, [np.nan, 5.0, 50.0]) == pytest.approx(1.0)
    assert np.isnan(BT.fit(x, [np.nan, 5.0, 50.0])[1])       # two points: no error left
    x = np.array([1.0, 3.0, 10.0, 30.0, 100.0])
    y = x ** 2 * np.array([1.0, 1.2, 0.9, 1.1, 1.0])
    s, se = BT.fit(x, y)
    coef, cov = np.polyfit(np.log(x), np.log(y), 1, cov=True)  # numpy scales by SSR/(n-2)
    assert s == pytest.approx(coef[0], rel=1e-12)
    assert se == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-9)


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
    ({"max_temp_mb": 0.0}, "experiment.max_temp_mb"),
])
def test_validate_rejects_bad_configs(kw, key):
    with pytest.raises(UserError, match=rf"^{re.escape(key)}=\S+ [^\n]+$"):
        B.validate(_cfg(**kw))


def test_presets():
    small, large = B.resolved(B.Params()), B.resolved(B.Params(size="large"))
    assert small["widths"][0] == 4 and small["widths"][-1] == 256
    # the default run costs FLOPs past P = 1e5: 3 (h^2 + h) + h + 1 at h = 256
    assert 3 * (256 ** 2 + 256) + 257 > 100_000
    assert large["widths"][-1] > small["widths"][-1] and large["depths"][-1] >= 128
    assert B.resolved(B.Params(widths=[8, 4]))["widths"] == [4, 8]


@pytest.mark.slow
def test_default_range_flop_slopes():
    """The default preset's nets (P = 65..197,633) costed, nothing timed beyond P = 1: the
    measured FLOP slopes stay within 0.05 of the theory's over 3.5 decades, and the fit's
    standard error is small against that tolerance."""
    P = B.Params(max_params_forward=1, repeats=1, min_seconds=0.0)
    R = B.resolved(P)
    q4 = BQ4.run_q4(P, R, jax.random.PRNGKey(0))
    assert q4.params[-1] > 100_000
    t4 = B.q4_table(q4)
    for k in BQ4.Q4_METHODS:
        assert abs(t4["slope_flops"][k] - B.THEORY_SLOPE[k]) < 0.05, (k, t4["slope_flops"][k])
        assert t4["slope_flops_stderr"][k] < 0.01
    assert np.isnan(q4.seconds[2:]).all() and np.all(q4.seconds[:2] > 0)
