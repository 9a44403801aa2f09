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
from bpexp.experiments.remedies import bn
from bpexp.experiments.remedies import figures as RF
from bpexp.experiments.remedies import text as RX
from bpexp.report import fmt
from bpexp.experiments.remedies import theory as RT
from bpexp.experiments.remedies import width as W



def _np_relu_forward(Ws, x):
    """numpy reference: (last hidden activation, ReLU masks per hidden layer, output logits)
    of the plain ReLU stack ``Ws`` (bias-free) on ``x``; batched weights broadcast."""
    a, masks = x, []
    for Wl in Ws[:-1]:
        z = Wl @ a
        masks.append(z > 0)
        a = np.maximum(z, 0)
    return a, masks, Ws[-1] @ a

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
           "experiment.depths=[2,30]", "data.m=200", "experiment.widths=[16,64]",
           "experiment.width_seeds=4", "train.steps=5", "sweep.seeds=2", "sweep.progress=false"]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = Path(r.stdout.strip().splitlines()[-1][len("run dir: "):])
    s = json.loads((run_dir / "summary.json").read_text())
    for f in ("remedies_grad_norms.png", "remedies_summary.png", "relu_width.png",
              "remedies_weight_grads.png"):
        assert (run_dir / "figures" / f).stat().st_size > 1000, f
    assert (run_dir / "report.md").read_text().split("\n")[2] == "## What this run shows"
    _check_width_study(run_dir, s)
    _check_bn_parts(s)
    _check_claims(s)
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


# ---------------------------------------------------------------- ReLU + He at finite width
def test_relu_log_ratio_moments_against_scipy_and_sampling():
    """E[log R] and Var[log R] of R = (2/h) chi^2_K, K ~ Bin(h, 1/2), K >= 1: the closed-form
    digammas against scipy, the whole law against 400k samples (4 standard errors), and the
    large-width form -5/(2h) to within 6/h^2."""
    from scipy.special import digamma, polygamma
    from scipy.stats import binom

    rng = np.random.default_rng(0)
    k = np.arange(1, 40)
    psi, psi1 = W._psi_half(k)
    np.testing.assert_allclose(psi, digamma(k / 2), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(psi1, polygamma(1, k / 2), rtol=1e-12)
    for h in (16, 32, 64, 128):
        e, v = W.relu_log_ratio_moments(h)
        kk = np.arange(1, h + 1)
        p = binom.pmf(kk, h, 0.5) / (1 - 0.5 ** h)
        ref = np.log(2 / h) + np.sum(p * (digamma(kk / 2) + np.log(2)))
        np.testing.assert_allclose(e, ref, rtol=1e-10)
        K = rng.binomial(h, 0.5, 400_000)
        K = K[K > 0]
        logR = np.log(2 / h * rng.chisquare(K))
        assert abs(logR.mean() - e) < 4 * logR.std() / np.sqrt(K.size), h
        np.testing.assert_allclose(logR.var(), v, rtol=0.02)
        assert abs(e + 5 / (2 * h)) < 6 / h ** 2, h
        t = W.relu_width_theory(h, 30, 10)
        np.testing.assert_allclose(t["factor_per_example"], np.exp(e / 2), rtol=1e-12)
        np.testing.assert_allclose(t["hidden_end_to_end_median"], np.exp(29 * e / 2), rtol=1e-12)
        np.testing.assert_allclose(t["first_last_mean_field"], np.sqrt(10 / h), rtol=1e-12)


def _numpy_relu_log_ratios(h, D, nets, rng, softmax, n=8, d_out=5):
    """Per net (one example each, He weights, zero biases) the mean over its D - 1 hidden
    pairs of log ||delta_l||^2 / ||delta_l+1||^2, in numpy; delta_L from softmax +
    cross-entropy, or (``softmax`` False) drawn independently of the forward pass."""
    x = rng.standard_normal((nets, n, 1))
    Ws = [rng.standard_normal((nets, h, n)) * np.sqrt(2 / n)] + \
         [rng.standard_normal((nets, h, h)) * np.sqrt(2 / h) for _ in range(D - 1)] + \
         [rng.standard_normal((nets, d_out, h)) * np.sqrt(2 / h)]
    a, masks, zL = _np_relu_forward(Ws, x)
    P = np.exp(zL - zL.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    d = P - np.eye(d_out)[rng.integers(0, d_out, nets)][..., None]
    if not softmax:
        d = rng.standard_normal(d.shape)
    sq = []
    for Wl, mk in zip(Ws[:0:-1], masks[::-1]):
        d = np.swapaxes(Wl, 1, 2) @ d * mk
        sq.append(np.sum(d[..., 0] ** 2, axis=1))
    sq = np.array(sq[::-1])                                   # [layer 1..D, net]
    alive = np.all(sq > 0, axis=0)
    return np.mean(np.log(sq[:-1, alive] / sq[1:, alive]), axis=0)


def test_relu_finite_width_law_in_deep_numpy_nets():
    """Deep numpy nets (depth 6, 3000 one-example nets per width): with delta_L independent of
    the forward pass the law is exact, E[log R] to 4 standard errors and clearly below the
    mean-field 0 at width 16; with softmax + cross-entropy, positive homogeneity ties one
    direction of delta_l to the output (dL/da_l . a_l = delta_L . z_L) and lifts E[log R]
    slightly: by less than 0.025 (the effect itself is -0.176 at width 16)."""
    rng = np.random.default_rng(1)
    for h in (16, 64):
        e, _ = W.relu_log_ratio_moments(h)
        per_net = _numpy_relu_log_ratios(h, 6, 3000, rng, softmax=False)
        se = per_net.std() / np.sqrt(per_net.size)
        assert abs(per_net.mean() - e) < 4 * se, (h, per_net.mean(), e, se)
        if h == 16:
            assert per_net.mean() < -10 * se
        soft = _numpy_relu_log_ratios(h, 6, 3000, rng, softmax=True).mean()
        assert 0 < soft - e < 0.025, (h, soft, e)


def test_width_measure_by_hand():
    """measure() on squared norms built by hand: ratios 1/2 at every hidden pair, one dead
    example left out, the batch and per-example factors and the standard error of equal seeds."""
    S, D, m, h, d_out = 3, 4, 5, 8, 2
    sq = np.ones((S, D + 1, m))
    for l in range(D):
        sq[:, l] = 0.5 ** l                                   # R = sq_l / sq_l+1 = 2
    sq[:, D] = 3.0
    sq[1, 2, 4] = 0.0                                          # a dead example
    out = W.measure(sq, h, d_out)
    assert out["dead_examples"] == 1 and out["examples"] == S * m
    np.testing.assert_allclose(out["factor_per_example"], np.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(out["mean_sq_ratio"], 2, rtol=1e-12)
    assert out["log_factor_se"] == pytest.approx(0, abs=1e-12)
    np.testing.assert_allclose(out["hidden_end_to_end_median"], np.sqrt(2) ** (D - 1), rtol=1e-12)
    np.testing.assert_allclose(out["first_last_batch_median"], np.sqrt((1 / h) / (3 / d_out)),
                               rtol=1e-12)


# ---------------------------------------------------------------- batch norm in three parts
def test_bn_decomposition_against_autodiff_deltas():
    """bn.decompose's parts multiply to measured / predicted (an identity per pair), and the
    transfer T of one pair recomputed from deltas that jax.grad finds (dL/dz_l by a zero
    perturbation added to z_l in a forward written here) equals the one built from the hand
    backward; with batch norm T < 1 clearly, with independent weights T ~ 1."""
    rng = np.random.default_rng(2)
    n, h, m, D, d_out = 6, 16, 40, 4, 3
    X = jnp.asarray(rng.standard_normal((n, m)))
    Y = jnp.asarray(np.eye(d_out)[:, rng.integers(0, d_out, m)])
    seeds = [0, 1, 2, 3, 4, 5]
    out = bn.decompose(X, Y, D, h, seeds, jnp.float64)
    np.testing.assert_allclose(out["measured_over_predicted"],
                               out["transfer"] * out["gain_over_predicted"] * out["projection"],
                               rtol=1e-10)
    draws = engine.uniform_draws(jax.random.split(jax.random.PRNGKey(0))[0], n, h, d_out, D,
                                 jnp.float64)
    q = stacked.unstack(engine.init_stack(draws, "standard", 1.0, "batch"), D)

    def loss(E):
        a = X
        for l in range(1, D + 1):
            z = q[f"W{l}"] @ a + q[f"b{l}"] + E[l - 1]
            mu, var = z.mean(1, keepdims=True), z.var(1, keepdims=True)
            a = jax.nn.sigmoid(q[f"gamma{l}"] * (z - mu) / jnp.sqrt(var + 1e-5) + q[f"beta{l}"])
        zL = q[f"W{D + 1}"] @ a + q[f"b{D + 1}"]
        return -jnp.sum(Y * jax.nn.log_softmax(zL, axis=0)) / m

    deltas = jax.jit(jax.grad(loss))([jnp.zeros((h, m))] * D)
    W3, d3 = np.asarray(q["W3"]), np.asarray(deltas[2])       # pair (2, 3)
    T = np.linalg.norm(W3.T @ d3) / (np.sqrt(h * theory.init_variance("standard", h, h))
                                      * np.linalg.norm(d3))
    _, ds, _, _ = bn._pieces(X, Y, D, h, seeds, jnp.float64, "softmax_ce")  # compiled once
    np.testing.assert_allclose(ds[2][0], d3, rtol=1e-9, atol=1e-14)
    assert 0 < T < 1.5
    assert out["transfer"] < out["transfer_independent"] - 0.03
    assert abs(out["transfer_independent"] - 1) < 0.1


def _check_width_study(run_dir, s):
    """The ReLU + He width study of the CLI run: theory beside measurement per width, the
    stored squared norms recomputed in numpy for one seed, the summary recomputed from them."""
    rw = s["relu_width"]
    assert rw["depth"] == 30 and len(rw["seeds"]) == 4 and list(rw["widths"]) == ["16", "64"]
    ds = bpexp.load(run_dir)
    sq = ds["relu_width_sq_norms"]
    assert sq.dims == ("width", "width_seed", "layer", "example")
    Xy = np.load(run_dir / "data.npz")
    X, Y = Xy["X"].astype(np.float64), Xy["Y"].astype(np.float64)
    for h, e in rw["widths"].items():
        t, m = e["theory"], e["measured"]
        # per-example factor: within 4 standard errors (+0.01: the softmax's homogeneity lift)
        assert abs(np.log(m["factor_per_example"] / t["factor_per_example"])) < \
            4 * m["log_factor_se"] + 0.01, (h, m, t)
        assert abs(m["mean_sq_ratio"] - 1) < 4 * m["mean_sq_ratio_se"] + 0.02, (h, m)
        # the batch factor lies between the per-example law and the mean field
        assert t["factor_per_example"] - 0.02 < m["factor_batch"] < 1.02, (h, m)
        np.testing.assert_allclose(m["log_ratio_var"], t["log_ratio_var"], rtol=0.35)
        got = sq.sel(width=int(h)).values
        again = W.measure(got, int(h), Y.shape[0])
        for k in ("factor_per_example", "mean_sq_ratio", "factor_batch"):
            np.testing.assert_allclose(again[k], m[k], rtol=1e-12)
    # seed 0, width 16 in numpy from the same draws (float32 weights, float64 arithmetic)
    h = 16
    draws = engine.uniform_draws(jax.random.split(jax.random.PRNGKey(0))[0], X.shape[0], h,
                                 Y.shape[0], 30, jnp.float32)
    p = {k: np.asarray(v, np.float64) for k, v in engine.init_stack(draws, "he", 1.0).items()}
    Ws = [p["W_in"]] + list(p["W_h"]) + [p["W_out"]]
    a, masks, zL = _np_relu_forward(Ws, X)
    P = np.exp(zL - zL.max(0))
    P /= P.sum(0)
    d = (P - Y) / Y.shape[1]
    ref = [np.sum(d ** 2, axis=0)]
    for Wl, mk in zip(Ws[:0:-1], masks[::-1]):
        d = (Wl.T @ d) * mk
        ref.append(np.sum(d ** 2, axis=0))
    ref = np.array(ref[::-1])                                  # [layer 1..31, example]
    got = sq.sel(width=h).values[0]
    alive = np.all(ref[:30] > 0, axis=0)
    np.testing.assert_allclose(got[:, alive], ref[:, alive], rtol=2e-3)


def _check_bn_parts(s):
    """The batch-norm decomposition: parts multiply to measured / predicted; the shortfall is
    the transfer (dz tied to W), which independent weights remove; compounded over the hidden
    layers it explains the summary's gap between the predicted and measured dz ratio at depth
    30 to within x1.5."""
    b = s["bn_parts"]
    np.testing.assert_allclose(b["measured_over_predicted"],
                               b["transfer"] * b["gain_over_predicted"] * b["projection"],
                               rtol=1e-9)
    assert b["transfer"] < b["transfer_independent"] - 0.03
    assert abs(b["gain_over_predicted"] - 1) < 0.02 and 0.97 < b["projection"] <= 1
    d = s["remedies"]["batchnorm"]["depths"]["30"]
    gap = d["dz_ratio_first_last_predicted"] / d["dz_ratio_first_last"]
    assert 1 / 1.5 < RX.bn_compound(s) / gap < 1.5, (RX.bn_compound(s), gap)


def _check_claims(s):
    """Every sentence and title states numbers of the summary: recomputed here."""
    n = len(s["seeds"])
    div = RX.diverged_text(s)
    for name, e in s["remedies"].items():
        for D, d in e["depths"].items():
            said = f"{d['diverged']} of {n} seeds at depth {D}"
            assert (said in div) == (d["diverged"] > 0), (name, D, div)
    rows = RX.width_rows(s)
    dev = max(abs(e["measured"]["factor_per_example"] / e["theory"]["factor_per_example"] - 1)
              for e in s["relu_width"]["widths"].values())
    assert RX.width_max_dev(s) == pytest.approx(dev, rel=1e-12)
    assert f"within {dev:.1%}" in RX.width_title(s)
    m16 = s["relu_width"]["widths"]["16"]["measured"]["factor_per_example"]
    assert f"{m16:.3f} (width 16)" in RX.width_title(s) and len(rows) == 2
    shows = " ".join(RX.shows(s))
    assert f"x{RX.bn_compound(s):.0f} over {s['bn_parts']['pairs']} layers" in shows
    sig = s["remedies"]["sigmoid"]["depths"]["30"]["dz_ratio_first_last"]
    assert RF.dz_title(s).startswith(f"Depth 30: dL/dz at layer 1 over layer L is "
                                     f"{fmt(sig, 1)} with no remedy")
    rest = [s["remedies"][k]["depths"]["30"]["dz_ratio_first_last"]
            for k in ("relu_he", "residual", "batchnorm")]
    assert f"{fmt(min(rest), 2)} to {fmt(max(rest), 2)} with a remedy" in RF.dz_title(s)
    assert "ReLU + He" in RX.readme({"summary": s, "command": "python -m bpexp x",
                                     "machine": {}})


@pytest.mark.parametrize("exp", [{"widths": [0]}, {"widths": [16, 2.5]}, {"width_seeds": 1},
                                 {"width_seeds": 0}])
def test_validate_rejects_bad_width_study_values(exp):
    """One-line UserError naming the key and the value; widths=[] (no width study) passes."""
    from bpexp.errors import UserError
    from helpers import build_cfg
    (key, value), = exp.items()
    with pytest.raises(UserError, match=f"experiment.{key}=") as e:
        build_cfg({"model": {"name": "mlp"}, "experiment": {"name": "remedies", **exp}})
    assert repr(value) in str(e.value) and "\n" not in str(e.value)
    build_cfg({"model": {"name": "mlp"}, "experiment": {"name": "remedies", "widths": []}})
