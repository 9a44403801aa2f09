"""depth_sweep: the padded deep MLP against the library, the init draws, the theory helpers,
and the CLI run on a tiny config with its theory-vs-measurement checks."""
import functools
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bpexp

from bpexp import models, primitives, stacked, theory
from bpexp.errors import UserError
import bpexp.experiments.depth_sweep as DS
from bpexp.experiments.depth_sweep import engine
from bpexp.experiments.depth_sweep import theory as DT
from helpers import assert_trees_all_close, build_cfg

N, H, DOUT, M, DMAX = 5, 4, 3, 7, 4


def _padded(seed=0, scheme="xavier", dtype=jnp.float64, norm="none"):
    draws = engine.uniform_draws(jax.random.PRNGKey(seed), N, H, DOUT, DMAX, dtype)
    p = engine.init_stack(draws, scheme, 1.0, norm)
    rng = np.random.default_rng(seed)  # non-zero biases (gamma, beta) so they are checked too
    return {k: (v + 0.1 * rng.standard_normal(v.shape) if k[0] in "bg" else v)
            for k, v in p.items()}


def _data(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, M))
    Y = np.eye(DOUT)[:, rng.integers(0, DOUT, M)]
    return jnp.asarray(X), jnp.asarray(Y)


_fb = jax.jit(engine.forward_backward, static_argnums=(4, 5, 6, 7))


@functools.partial(jax.jit, static_argnames=("activation", "output", "residual", "norm"))
def _mlp(q, X, Y, activation, output, residual, norm):
    """(hand gradient, deltas, jax.grad, zs, acts) of the library's mlp (the list driver)."""
    m = models.get("mlp", activation=activation, output=output, residual=residual, norm=norm)
    _, g, fp, deltas = stacked.loss_and_grad(q, X, Y, activation, output, residual, norm)
    return g, deltas, jax.grad(m.loss)(q, X, Y), fp.zs(), fp.acts()


@pytest.mark.parametrize("activation,residual,norm", [
    ("sigmoid", False, "none"), ("tanh", False, "none"), ("relu", False, "none"),
    ("sigmoid", True, "none"), ("sigmoid", False, "batch"), ("relu", True, "batch")])
def test_padded_net_matches_library_mlp(activation, residual, norm):
    """Loss, gradient and per-layer statistics of the depth-D net inside the padded stack equal
    the library's mlp (bpexp.stacked's list driver, itself checked against jax.grad here) and a
    numpy recomputation, for plain, residual and batch-normalized nets."""
    p, (X, Y) = _padded(norm=norm), _data()
    out = "softmax_ce"
    for D in (1, 2, DMAX):
        loss, g, st = _fb(p, X, Y, D, activation, out, residual, norm)
        q = stacked.unstack(p, D)
        gq, deltas, g_ad, zs, acts = _mlp(q, X, Y, activation=activation, output=out,
                                          residual=residual, norm=norm)
        assert_trees_all_close(gq, g_ad, rtol=1e-10, atol=1e-14)   # independent of stacked
        np.testing.assert_allclose(loss, primitives.softmax_ce(zs[-1], Y), rtol=1e-12)
        if residual or norm == "batch":  # the statistics below are checked on plain nets
            assert_trees_all_close(stacked.unstack(g, D), gq, rtol=1e-10, atol=1e-14)
            L = D + 1
            gn = np.array([np.linalg.norm(gq[f"W{l}"]) for l in range(1, L + 1)])
            np.testing.assert_allclose(st["grad_norm"][:L], gn, rtol=1e-10)
            np.testing.assert_allclose(st["delta_norm"][:L],
                                       [np.linalg.norm(deltas[l]) for l in range(1, L + 1)],
                                       rtol=1e-10)
            if norm == "batch":
                zstd = [np.sqrt(np.mean(np.var(np.asarray(z), axis=1) + primitives.BN_EPS))
                        for z in zs[:D]]
                np.testing.assert_allclose(st["z_std"][:D], zstd, rtol=1e-10)
            continue
        assert_trees_all_close(stacked.unstack(g, D), gq, rtol=1e-10, atol=1e-14)
        # layers the depth-D net does not use get exactly zero gradient
        assert np.all(np.asarray(g["W_h"][D - 1:]) == 0)
        L = D + 1
        gn = np.array([np.linalg.norm(gq[f"W{l}"]) for l in range(1, L + 1)])
        dn = np.array([np.linalg.norm(deltas[l]) for l in range(1, L + 1)])
        np.testing.assert_allclose(st["grad_norm"][:L], gn, rtol=1e-10)
        np.testing.assert_allclose(st["delta_norm"][:L], dn, rtol=1e-10)
        assert np.all(np.isnan(st["grad_norm"][L:]))
        zs, acts = [np.asarray(z) for z in zs], [np.asarray(a) for a in acts]
        fp = {"sigmoid": lambda z, a: a * (1 - a), "tanh": lambda z, a: 1 - a ** 2,
              "relu": lambda z, a: (z > 0).astype(float)}[activation]
        fp2 = [np.mean(fp(zs[l], acts[l + 1]) ** 2) for l in range(D)]
        np.testing.assert_allclose(st["fprime_sq"][:D], fp2, rtol=1e-10)
        np.testing.assert_allclose(st["act_norm"][:L], [np.linalg.norm(a) for a in acts[:L]],
                                   rtol=1e-10)


def test_gd_step_of_make_train():
    """make_train's first recorded loss is the library loss at init, the next one the loss after
    w -= lr * grad with the library gradient."""
    X, Y = _data()
    f = engine.make_train("sigmoid", "softmax_ce", 1, ("standard", "normal"), H, DMAX, jnp.float64)
    p0, hist = f(jnp.array([0, 3]), jnp.array([1.0, 0.5]), X, Y, 3, 0.7)
    model = models.get("mlp", activation="sigmoid", output="softmax_ce")
    loss, grad = jax.jit(model.loss), jax.jit(model.grad)
    for r in (1, 2):
        q = stacked.unstack(jax.tree.map(lambda a: a[r], p0), 3)
        q1 = jax.tree.map(lambda w, d: w - 0.7 * d, q, grad(q, X, Y))
        np.testing.assert_allclose(hist["loss"][r], [loss(q, X, Y), loss(q1, X, Y)], rtol=1e-10)
    # runs are scheme-major: run 0 and run 2 share the seed and the uniform draws
    np.testing.assert_allclose(p0["W_h"][2], 0.5 * np.sqrt(2) * jax.scipy.special.erfinv(
        p0["W_h"][0] / np.sqrt(3 * theory.init_variance("standard", H, H))), rtol=1e-8)


def test_weights_follow_models_init_weight():
    """Same family, support and variance as the library's models.init_weight (x scale 1.5)."""
    rng = np.random.default_rng(0)
    for scheme, n_in, n_out in (("standard", 64, 32), ("xavier", 32, 10), ("normal", 32, 32),
                                ("he", 32, 10)):
        u = rng.uniform(np.nextafter(-1.0, 0.0), 1.0, (100, n_out, n_in))
        w = np.asarray(engine.weight_from_uniform(jnp.asarray(u), scheme, n_in, n_out, 1.5))
        ref = np.asarray(models.init_weight(jax.random.PRNGKey(1), (n_out, n_in), scheme, 1.5,
                                            jnp.float64))
        var = theory.init_variance(scheme, n_in, n_out, 1.0) * 1.5 ** 2
        np.testing.assert_allclose(w.var(), var, rtol=0.03, err_msg=scheme)
        np.testing.assert_allclose(ref.var(), var, rtol=0.15, err_msg=scheme)
        if scheme in ("standard", "xavier"):   # uniform: same support [-a, a]
            a = np.sqrt(3 * var)
            assert a * 0.99 < np.abs(w).max() <= a * (1 + 1e-12)
            assert a * 0.9 < np.abs(ref).max() <= a * (1 + 1e-6)
        else:                             # Gaussian: kurtosis 3
            np.testing.assert_allclose(np.mean(w ** 4) / w.var() ** 2, 3.0, atol=0.1,
                                       err_msg=scheme)


def test_predicted_ratios_and_bound_by_hand():
    fp2 = np.array([0.05, 0.06, 0.07])
    an = np.array([8.0, 4.0, 3.0, 2.0])
    gl, pw = DT.predicted_ratios(3, 32, 10, "standard", 1.0, fp2, an)
    n = np.array([32, 32, 10])
    var = np.array([1 / 96, 1 / 96, 1 / 96])          # standard: 1 / (3 n_in), n_in = 32
    np.testing.assert_allclose(gl, np.sqrt(n * var * fp2), rtol=1e-12)
    np.testing.assert_allclose(pw, gl * np.sqrt(32 / n) * an[:-1] / an[1:], rtol=1e-12)
    np.testing.assert_allclose(DT.attenuation_bound("sigmoid", 3, [2.0, 1.0, 0.5]), 0.25 ** 3,
                               rtol=1e-12)
    np.testing.assert_allclose(DT.attenuation_bound("tanh", 3, [2.0, 1.0, 0.5]), 1.0, rtol=1e-12)
    assert DT.fprime_max("relu") == 1.0 and DT.fprime_max("sigmoid") == 0.25


def test_bound_holds_on_random_nets():
    """||delta_1|| / ||delta_L|| <= 0.25^D prod ||W_l||_2 on random sigmoid nets, with deltas
    recomputed in numpy."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        D = int(rng.integers(1, 6))
        Ws = [rng.standard_normal((H, N)) * rng.uniform(0.1, 3)] + \
             [rng.standard_normal((H, H)) * rng.uniform(0.1, 3) for _ in range(D - 1)] + \
             [rng.standard_normal((DOUT, H))]
        X = rng.standard_normal((N, M))
        a, fps = X, []
        for W in Ws[:-1]:
            a = 1 / (1 + np.exp(-(W @ a)))
            fps.append(a * (1 - a))
        delta = rng.standard_normal((DOUT, M))           # any output delta
        dL = np.linalg.norm(delta)
        for W, fp in zip(Ws[:0:-1], fps[::-1]):
            delta = (W.T @ delta) * fp
        bound = DT.attenuation_bound("sigmoid", D, [np.linalg.norm(W, 2) for W in Ws[1:]])
        assert np.linalg.norm(delta) / dL <= bound * (1 + 1e-12)


@pytest.mark.parametrize("exp", [
    {"depths": [0, 2]}, {"depths": []}, {"depths": [2.5]},
    {"widths": []}, {"widths": [-1]}, {"inits": ["nope"]}, {"inits": []},
    {"inits": ["xavier", "xavier"]}, {"normal_scale": 0.0}, {"normal_scale": float("inf")},
    {"normal_scale": float("nan")}])
def test_validate_rejects_bad_experiment_values(exp):
    """One-line UserError naming the key and the value, before anything runs."""
    (key, value), = exp.items()
    with pytest.raises(UserError, match=f"experiment.{key}=") as e:
        build_cfg({"model": {"name": "mlp"}, "experiment": {"name": "depth_sweep", **exp}})
    assert repr(value) in str(e.value) and "allowed" in str(e.value)
    assert "\n" not in str(e.value)


def test_validate_rejects_bad_configs():
    build_cfg({"model": {"name": "mlp"}, "experiment": {"name": "depth_sweep"}})
    with pytest.raises(UserError, match="model.name"):
        build_cfg({"experiment": {"name": "depth_sweep"}})


# ---------------------------------------------------------------- CLI, tiny config
def _cli(tmp_path, *overrides):
    cmd = [sys.executable, "-m", "bpexp", "+experiment=depth_sweep", f"outputs.root={tmp_path}",
           "experiment.depths=[1,3,5]", "data.m=200", "train.steps=20", "sweep.seeds=3",
           "sweep.progress=false", *overrides]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: ")
    run_dir = Path(last[len("run dir: "):])
    s = json.loads((run_dir / "summary.json").read_text())
    for f in ("activation.png", "grad_norms_vs_layer.png", "final_loss_vs_depth.png",
              "ratio_measured_vs_predicted.png"):
        assert (run_dir / "figures" / f).stat().st_size > 1000, f
    assert "Depth sweep" in (run_dir / "report.md").read_text()
    ds = bpexp.load(run_dir)
    assert ds["grad_norm_init"].dims == ("width", "depth", "init", "seed", "layer")
    assert ds["grad_norm_init"].shape == (1, 3, len(s["inits"]), 3, 6)
    assert ds["ratio_measured"].dims[-1] == "pair" and ds.sizes["pair"] == 5
    assert list(ds["depth"].values) == [1, 3, 5] and list(ds["layer"].values) == [1, 2, 3, 4, 5, 6]
    # the stored arrays are the summary's numbers (medians over seeds)
    g = ds["grad_norm_init"].sel(width=32, depth=5, init="standard").values
    np.testing.assert_allclose(np.median(g, axis=0),
                               s["inits"]["standard"]["depths"]["5"]["grad_norms_init"],
                               rtol=1e-12)
    assert ds["loss"].dims[-1] == "step" and ds.sizes["step"] == 21
    # the class entropy and the outside-band counts, recomputed from data.npz and the store
    freq = np.load(run_dir / "data.npz")["Y"].astype(np.float64).mean(axis=1)
    freq = freq[freq > 0]
    np.testing.assert_allclose(s["class_entropy"], -np.sum(freq * np.log(freq)),
                               rtol=1e-10)
    r = (ds["ratio_measured"] / ds["ratio_predicted_weight"]).isel(width=0).values
    ok = np.isfinite(r)
    ob = s["ratio_outside_band"]
    assert ob["total"] == ok.sum() and ob["count"] == np.sum(np.abs(np.log(r[ok])) > np.log(2))
    assert ob["at_first"] == np.sum(np.abs(np.log(r[..., 0])) > np.log(2))
    report = (run_dir / "report.md").read_text()
    assert report.split("\n")[2] == "## What this run shows"
    from bpexp.experiments.depth_sweep import text as DX
    assert " ".join(DX.shows(s)) in report.replace("\n", " ")
    return s


@pytest.mark.slow
def test_cli_sigmoid_theory_vs_measurement(tmp_path):
    s = _cli(tmp_path)
    assert s["activation"] == "sigmoid" and s["depths"] == [1, 3, 5] and s["m"] == 200
    assert set(s["inits"]) == {"standard", "xavier", "normal"}
    for init, e in s["inits"].items():
        for D in (1, 3, 5):
            d = e["depths"][str(D)]
            assert len(d["grad_norms_init"]) == len(d["grad_norms_final"]) == D + 1
            assert len(d["ratio_measured"]) == len(d["ratio_predicted"]) == D
            assert np.isfinite(d["final_loss"])
    std, xav = s["inits"]["standard"]["depths"], s["inits"]["xavier"]["depths"]
    # gradient at the first layer falls with depth (standard init): by more than 0.25^2 over 4
    # layers
    assert std["5"]["grad_norms_init"][0] < 0.25 ** 2 * std["1"]["grad_norms_init"][0]
    # ... and more slowly with Xavier: larger per-layer factor, both below 1
    assert std["5"]["factor_measured"] < xav["5"]["factor_measured"] < 1
    assert xav["5"]["grad_norms_init"][0] > 10 * std["5"]["grad_norms_init"][0]
    for init in ("standard", "xavier"):
        for D in ("3", "5"):
            d = s["inits"][init]["depths"][D]
            # Glorot: dL/dz per-unit RMS ratio = sqrt(n Var(W) E[f'^2]) within 1.5x at every layer
            r = np.array(d["ratio_measured_dz"]) / np.array(d["ratio_predicted"])
            assert np.all((r > 1 / 1.5) & (r < 1.5)), (init, D, r)
            # weight-gradient ratios: within 2x of sqrt(n Var E f'^2) between hidden layers
            # (l = 2..D-1) and of the width/activation-corrected prediction at every layer
            r = np.array(d["ratio_measured"]) / np.array(d["ratio_predicted"])
            assert np.all((r[1:-1] > 0.5) & (r[1:-1] < 2)), (init, D, r)
            r = np.array(d["ratio_measured"]) / np.array(d["ratio_predicted_weight"])
            assert np.all((r > 1 / 2.5) & (r < 2.5)), (init, D, r)
    # the rigorous bound (||W||_2 factors included) holds in every run; 0.25^D alone is given too
    assert s["bound"]["fprime_max"] == 0.25 and s["bound"]["holds_everywhere"] is True
    for e in s["inits"].values():
        for D, d in e["depths"].items():
            assert d["delta_attenuation"] <= d["bound_with_weight_norms"]
            assert d["fprime_max_pow_depth"] == pytest.approx(0.25 ** int(D))
    # standard init: Glorot factor ~0.13 < 0.25, so it is even below 0.25^D without ||W||_2
    assert std["5"]["delta_attenuation"] < 0.25 ** 5


@pytest.mark.slow
def test_cli_tanh_override(tmp_path):
    s = _cli(tmp_path, "model.activation=tanh", "experiment.inits=[standard,xavier]")
    assert s["activation"] == "tanh" and s["bound"]["fprime_max"] == 1.0
    assert s["bound"]["holds_everywhere"] is True
    d = s["inits"]["standard"]["depths"]["5"]
    assert d["fprime_max_pow_depth"] == 1.0
    assert d["factor_measured_dz"] == pytest.approx(d["factor_predicted"], rel=0.5)


# ---------------------------------------------------------------- claims from the summary
def test_outside_band_by_hand():
    """outside_band counts measured / predicted outside [1/2, 2] per pair, first and last
    pairs apart (a depth-1 net's one pair is its first), per init; NaN pairs beyond a net skip."""
    nan = np.nan
    pred = np.ones((2, 2, 1, 3))
    pred[0, :, :, 1:] = nan                                    # depth 1: one pair
    meas = np.ones_like(pred)
    meas[0, 0, 0, 0] = 3.0                                     # D=1, init 0: first pair out
    meas[1, 0, 0, 0] = 0.3                                     # D=3, init 0: first pair out
    meas[1, 1, 0, 2] = 2.5                                     # D=3, init 1: last pair out
    meas[1, 1, 0, 1] = 1.9                                     # inside
    dz = np.ones_like(pred)
    dz[1, 1, 0, 1] = 5.0
    o = DS.outside_band(meas, pred, dz, pred, ["a", "b"])
    assert (o["total"], o["count"], o["at_first"], o["at_last"], o["dz_count"]) == (8, 3, 2, 1, 1)
    assert o["by_init"] == {"a": 2, "b": 1}
    np.testing.assert_allclose(o["first_pair_ratio_median"]["a"], np.median([3.0, 0.3]))
    assert o["first_pair_ratio_median"]["b"] == 1.0


def _summary():
    def depth(fm, fp, fmw, fpw, loss):
        return {"factor_measured_dz": fm, "factor_predicted": fp, "factor_measured": fmw,
                "factor_predicted_weight": fpw, "final_loss": loss,
                "final_loss_iqr": [loss - 0.01, loss + 0.01], "delta_attenuation": 1e-3,
                "grad_norms_init": [1e-4, 1e-2, 1.0], "grad_norms_final": [2e-3, 1e-3, 1e-2],
                "bound_with_weight_norms": 2e-3}
    inits = {"standard": {"n_var_w_hidden": 1 / 3, "depths": {
                 "1": depth(0.2, 0.21, 0.3, 0.31, 0.3), "4": depth(0.13, 0.133, 0.17, 0.16,
                                                                    2.2951)}},
             "normal": {"n_var_w_hidden": 32.0, "depths": {
                 "1": depth(0.7, 0.72, 0.6, 0.7, 0.25), "4": depth(0.67, 0.69, 0.64, 0.8,
                                                                   1.66)}}}
    return {"depths": [1, 4], "seeds": [0, 1], "activation": "sigmoid", "steps": 10,
            "lr": 0.5, "width": 32, "class_entropy": 2.2953, "inits": inits,
            "bound": {"fprime_max": 0.25, "holds_everywhere": True},
            "ratio_outside_band": {"band": 2.0, "total": 20, "count": 3, "at_first": 2,
                                   "at_last": 1, "dz_count": 0,
                                   "by_init": {"standard": 1, "normal": 2},
                                   "first_pair_ratio_median": {"standard": 1.6,
                                                               "normal": 0.36}}}


def test_titles_and_sentences_state_the_summary():
    """Each figure title and report sentence says what the summary holds: per-layer factors
    beside their theory, which inits sit at the class entropy, the outside-band counts."""
    from bpexp.experiments.depth_sweep import figures as DF
    from bpexp.experiments.depth_sweep import text as DX
    s = _summary()
    assert DF.grad_title(s) == ("At init (D = 4), ||dL/dW_l|| shrinks per layer by x0.17 "
                                "standard (theory 0.16), x0.64 normal (theory 0.80)")
    assert DF.loss_title(s) == ("Depth 4: standard stay at the class entropy 2.295; normal "
                                "reaches 1.66")
    assert DF.ratio_title(s) == ("dL/dz: all within x2 of Glorot; dW: 3 of 20 outside, 2 of "
                                 "them the first layer pair")
    assert "standard x1.60\nnormal x0.36" in DF.first_note(s)
    assert DF.after_title(s) == ("After 10 GD steps, ||dW_1|| / ||dW_L|| at D = 4: standard "
                                 "0.2 (init 0.0001), normal 0.2 (init 0.0001)")
    shows = " ".join(DX.shows(s))
    assert "x0.130 with the standard init (Glorot predicts 0.133)" in shows
    assert f"within {abs(0.67 / 0.69 - 1):.1%}" in shows and "every run" in shows
    assert "3 of 20 fall outside x2" in shows and "2 of them are the first pair" in shows
    assert DX.bound_slack(s) == (2.0, 2.0)
    block = DX.readme({"summary": s, "command": "python -m bpexp +experiment=depth_sweep",
                       "machine": {"platform": "p", "cpu_count": 2}})
    assert "| standard | 0.333 | 0.133 | 0.130 | 0.160 | 0.170 |" in block
    assert block.count("\n| ") == 3
