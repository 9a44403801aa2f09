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
    s, smin = MT.predicted_steps([1, 512], 40.0, 512, 10.0, replace=True)
    np.testing.assert_allclose(smin, 40 / (1 + 10 / 512))
    np.testing.assert_allclose(s, smin * np.array([11, 1 + 10 / 512]))
    s, smin = MT.predicted_steps([1, 4, 512], 40.0, 512, 10.0, replace=False)
    np.testing.assert_allclose(smin, 40.0)               # the full batch is noiseless
    np.testing.assert_allclose(s, 40 * np.array([11, 1 + 10 / 4 * 508 / 511, 1]), rtol=1e-14)


def test_finite_population_variance_by_exact_enumeration():
    """E|mean of a batch - G|^2 over every B-subset of m = 7 vectors is phi(B) tr(Sigma)/B with
    phi = (m - B)/(m - 1); over every ordered B-tuple drawn with replacement it is
    tr(Sigma)/B (Sigma the population covariance)."""
    from itertools import combinations, product

    g = np.random.default_rng(3).standard_normal((7, 3)) + [1.0, -2.0, 0.5]
    m, G = len(g), g.mean(0)
    tr = np.trace(np.cov(g.T, bias=True))
    for B in range(1, m + 1):
        dev = [np.sum((g[list(S)].mean(0) - G) ** 2) for S in combinations(range(m), B)]
        want = MT.batch_noise(tr, B, m, replace=False)
        np.testing.assert_allclose(np.mean(dev), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(want, tr / B * (m - B) / (m - 1), rtol=1e-14)
    for B in (1, 2, 3):
        dev = [np.sum((g[list(S)].mean(0) - G) ** 2) for S in product(range(m), repeat=B)]
        np.testing.assert_allclose(np.mean(dev), MT.batch_noise(tr, B, m, replace=True),
                                   rtol=1e-12)
    assert MT.phi(7, 7, False) == 0 and MT.phi(1, 7, False) == 1 and MT.phi(5, 7, True) == 1


def test_the_sweeps_batches_are_drawn_without_replacement():
    """bpexp.train's own batches, read back from the recorded batch losses at lr 0 (fixed
    parameters): with B = 1 each epoch is a permutation of the m per-example losses l_i; with
    B = 8 of m = 16 the batch loss varies about the full loss L by var(l) / B * (m - B)/(m - 1)
    (mean over 8 seeds, each 1000 steps; Monte Carlo error ~2%; with replacement it would be
    x1.9 larger)."""
    from bpexp import train

    rng = np.random.default_rng(0)
    m, B, seeds = 16, 8, 8
    X, Y = rng.standard_normal((3, m)), rng.standard_normal((2, m))

    def losses(b, steps):
        spec = train.TrainSpec(model="two_layer_sigmoid", n=3, d_out=2, m=m, steps=steps,
                               batch_size=b, dtype="float64", model_hparams=(("hidden", 4),))
        hp = {"seed": jnp.arange(seeds), "init_scale": jnp.ones(seeds), "lr": jnp.zeros(seeds)}
        f = jax.jit(jax.vmap(train.make_run(spec), in_axes=(0, None, None)))
        return np.asarray(f(hp, jnp.asarray(X), jnp.asarray(Y))["loss"])   # [seed, step]

    single = losses(1, 2 * m)
    np.testing.assert_allclose(np.sort(single[:, :m]), np.sort(single[:, m:]), rtol=1e-12)
    L, var = single[:, :m].mean(1), single[:, :m].var(1)
    got = np.mean((losses(B, 1000) - L[:, None]) ** 2, axis=1)
    ratio = np.mean(got / MT.batch_noise(var, B, m, replace=False))
    assert ratio == pytest.approx(1.0, abs=0.08)


def test_both_models_fitted_and_compared():
    """Steps made by either model are fitted back by it (B_crit, S_min to the grid's 0.5%); the
    other model fits them as well, its parameters mapped through S = a + c/B (theory.py), so
    the summary calls the fit a tie; only B_noise measured tells them apart: predicted with the
    true B_noise the generating model is exact and the other off by > 10% (rms log)."""
    from types import SimpleNamespace

    from bpexp.experiments import minibatch as M

    m, b = 64, np.array([1, 4, 16, 32, 48, 64])
    for replace in (True, False):
        steps = MT.steps_model(b, 30.0, 20.0, m, replace)
        bc, smin = MT.fit_critical_batch(b, steps, m, replace)
        assert bc == pytest.approx(20.0, rel=0.005) and smin == pytest.approx(30.0, rel=0.005)
        bc2, smin2 = MT.fit_critical_batch(b, steps, m, not replace)
        np.testing.assert_allclose(MT.steps_model(b, smin2, bc2, m, not replace), steps,
                                   rtol=0.005)
        (sw, bw), (so, bo) = ((smin, bc), (smin2, bc2)) if replace else ((smin2, bc2),
                                                                         (smin, bc))
        assert sw == pytest.approx(so * (1 - bo / (m - 1)), rel=0.01)
        assert sw * bw == pytest.approx(so * bo * m / (m - 1), rel=0.01)
        per = {str(x): {"steps_to_target": float(v)} for x, v in zip(b, steps)}
        pred, fit = M._models(SimpleNamespace(batches=list(b), m=m), per, 20.0)
        name = "with_replacement" if replace else "without_replacement"
        other = "without_replacement" if replace else "with_replacement"
        assert fit[name]["b_crit"] == bc and fit[other]["b_crit"] == bc2
        assert fit["better"] is None and fit["curves_max_rel_difference"] < 0.005
        assert fit[name]["rms_log_error"] < 0.003 and fit[other]["rms_log_error"] < 0.003
        assert pred["better"] == name and pred[name]["max_rel_error"] < 1e-12
        assert pred[other]["rms_log_error"] > 0.1
        assert fit["b_crit"] == fit["without_replacement"]["b_crit"]     # the sampler's
    e = MT.fit_errors([10.0, 20.0, np.nan], [11.0, 18.0, 5.0])
    assert e["max_rel_error"] == pytest.approx(0.1)
    assert e["rms_log_error"] == pytest.approx(np.sqrt((np.log(1.1) ** 2 + np.log(0.9) ** 2) / 2))
    np.testing.assert_allclose(MT.lr_model([1, 64], 0.2, 20.0, 64, False), [0.2 / 21, 0.2])


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
    assert s["fit"]["sampler"] == "without_replacement"
    assert set(s["fit"]) >= {"with_replacement", "without_replacement", "better"}
    rep = (run_dir / "report.md").read_text()
    assert rep.index("## What this run shows") < rep.index("**Question.**")


@pytest.mark.slow
def test_default_run_theory_vs_measurement(tmp_path):
    """The README's run (~20 s): steps to the target never grow with B, epochs grow, the best lr
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
    # both fitted curves reproduce the measured steps within 15%, and coincide (a + c/B)
    for name in ("with_replacement", "without_replacement"):
        for b, d in zip(s["batch_sizes"], per):
            assert fit[name]["steps"][str(b)] == pytest.approx(d["steps_to_target"], rel=0.15)
    assert fit["curves_max_rel_difference"] < 0.01
    # the recorded run (README) is this run: the same numbers on this machine's CPU
    rec = json.loads((ROOT / "docs" / "results" / "minibatch.json").read_text())["summary"]
    for b in s["batch_sizes"]:
        assert s["per_batch"][str(b)]["steps_to_target"] == pytest.approx(
            rec["per_batch"][str(b)]["steps_to_target"], abs=2)


# ---------------------------------------------------------------- the recorded run's words
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _recorded():
    return json.loads((ROOT / "docs" / "results" / "minibatch.json").read_text())["summary"]


def test_recorded_fits_and_predictions_recomputed():
    """The recorded summary's models refitted by scipy (continuous B_crit, not the grid) and
    predicted again from the per-seed steps and the B_noise series: every number the words
    quote agrees with the recomputation."""
    from scipy.optimize import minimize_scalar

    s = _recorded()
    b, m = np.array(s["batch_sizes"], float), s["m"]
    med = np.array([np.median(s["per_batch"][str(int(x))]["steps_to_target_seeds"]) for x in b])
    np.testing.assert_allclose(med, [s["per_batch"][str(int(x))]["steps_to_target"] for x in b])
    for name, ph in (("with_replacement", np.ones_like(b)),
                     ("without_replacement", (m - b) / (m - 1))):
        def sse(lbc):
            lf = np.log1p(np.exp(lbc) * ph / b)
            return np.sum((np.log(med) - lf - np.mean(np.log(med) - lf)) ** 2)
        lbc = minimize_scalar(sse, bounds=(-4, 12), method="bounded",
                              options={"xatol": 1e-10}).x
        f = s["fit"][name]
        assert f["b_crit"] == pytest.approx(np.exp(lbc), rel=0.005)
        curve = np.array([f["steps"][str(int(x))] for x in b])
        np.testing.assert_allclose(curve, f["s_min"] * (1 + f["b_crit"] * ph / b), rtol=1e-12)
        assert f["max_rel_error"] == pytest.approx(np.max(np.abs(curve / med - 1)), rel=1e-12)
        assert f["rms_log_error"] == pytest.approx(np.sqrt(np.mean(np.log(curve / med) ** 2)))
        # the prediction: S_min from the full batch, B_noise the geometric mean to the target
        bn = s["b_noise"]
        vals, loss = np.array(bn["values"]), np.array(bn["loss"])
        k = int(np.flatnonzero(loss <= s["target"])[0])
        assert bn["at_target"] == vals[k] and bn["at_target_step"] == bn["steps"][k]
        geo = np.exp(np.mean(np.log(vals[: k + 1])))
        assert s["prediction"]["b_noise"] == pytest.approx(geo, rel=1e-12)
        s_min = med[-1] / (1 + geo * ph[-1] / m)
        p = s["prediction"][name]
        assert p["s_min"] == pytest.approx(s_min, rel=1e-12)
        assert p["max_rel_error"] == pytest.approx(
            np.max(np.abs(s_min * (1 + geo * ph / b) / med - 1)), rel=1e-12)
    f, p = s["fit"], s["prediction"]
    assert f["curves_max_rel_difference"] < 0.01 and f["better"] is None     # one family
    errs = {n: p[n]["rms_log_error"] for n in ("with_replacement", "without_replacement")}
    assert p["better"] == min(errs, key=errs.get)


def test_recorded_best_lr_growth_recomputed():
    """The best-lr claims (growth, shape, saturation, the theory curve's offset and the B_noise
    each best lr implies) recomputed from per_batch, the lr grid and the fitted B_crit."""
    s = _recorded()
    b, m = np.array(s["batch_sizes"], float), s["m"]
    lr = np.array([s["per_batch"][str(int(x))]["best_lr"] for x in b])
    g = s["best_lr_growth"]
    k = int(np.argmax(lr))                         # the first B at the largest best lr
    assert (g["b_from"], g["b_sat"]) == (int(b[0]), int(b[k]))
    slope = np.log(lr[k] / lr[0]) / np.log(b[k] / b[0])
    assert g["slope"] == pytest.approx(slope, rel=1e-12)
    assert g["shape"] == ("flat" if k == 0 else "sub-linear" if slope < 0.9
                          else "linear" if slope <= 1.1 else "super-linear")
    for x, r in g["x4_ratios"].items():
        i = list(b).index(float(x))
        assert r == pytest.approx(lr[list(b).index(4 * float(x))] / lr[i], rel=1e-12)
    assert g["flat_after_sat"] == bool(np.all(lr[k:] == lr[k]))
    nxt = min(x for x in s["lrs"] if x > lr[k])
    assert g["next_lr"] == nxt
    assert g["next_lr_diverged"] == [int(x) for x in b[k:]
                                     if nxt in s["per_batch"][str(int(x))]["diverged_lrs"]]
    th, bc = g["theory"], s["fit"]["b_crit"]
    ph = (m - b) / (m - 1)
    opt = lr[-1] / (1 + bc * ph / b)
    np.testing.assert_allclose([th["measured_over_theory"][str(int(x))] for x in b], lr / opt,
                               rtol=1e-12)
    assert th["below_every_smaller_batch"] == bool(np.all(lr[:-1] > opt[:-1]))
    for x, v in th["implied_b_noise"].items():
        i = list(b).index(float(x))
        assert lr[-1] / (1 + v * ph[i] / b[i]) == pytest.approx(lr[i], rel=1e-12)
    assert th["b_noise_init"] == s["b_noise"]["values"][0]


def test_recorded_words_quote_the_summary():
    """Titles, 'What this run shows' and the README block state the recorded numbers with the
    right comparison words; python -m bpexp.docs check passes (README = the record)."""
    from bpexp import docs
    from bpexp.experiments.minibatch import text

    s = _recorded()
    per, b = s["per_batch"], s["batch_sizes"]
    s0, sm = (np.median(per[str(x)]["steps_to_target_seeds"]) for x in (b[0], b[-1]))
    assert text.steps_title(s) == (f"B = {b[-1]} needs x{s0 / sm:.0f} fewer steps than B = "
                                   f"{b[0]} but x{sm * b[-1] / (s0 * b[0]):.0f} more epochs")
    g = s["best_lr_growth"]
    r = per[str(4 * b[0])]["best_lr"] / per[str(b[0])]["best_lr"]
    assert f"grows {g['shape']}ly with B (x{r:.1f} for x4 from B = {b[0]})" in text.lr_title(s)
    assert r < 4 and g["shape"] == "sub-linear"          # the data the title describes
    bn = s["b_noise"]
    assert f"x{bn['at_target'] / bn['values'][0]:.0f} from init" in text.noise_title(s)
    assert f"seed {s['seeds'][0]}" in text.noise_title(s)
    sp = [per[str(x)]["final_loss_spread"] for x in (b[0], b[-1])]
    assert ("wider" if sp[0] > sp[1] else "narrower") in text.curves_title(s)
    short = " ".join(text.shows(s))
    assert 3 <= len(text.shows(s)) <= 5
    assert f"x{s0 / sm:.0f} ({s0:.4g} to {sm:.4g})" in short
    for name in ("with_replacement", "without_replacement"):
        f = s["fit"][name]
        assert f"within {f['max_rel_error']:.1%}" in short or \
            f"and {f['max_rel_error']:.1%} with phi = 1" in short
    assert "the same curve" in short and f"x{r:.1f} for x4" in short
    shows = " ".join(text.details(s))
    for name in ("with_replacement", "without_replacement"):
        f = s["fit"][name]
        assert f"within {f['max_rel_error']:.1%} at every B" in shows or \
            f"within {f['max_rel_error']:.1%}." in shows
        assert f"S_min = {f['s_min']:.4g}" in shows and f"B_crit = {f['b_crit']:.3g}" in shows
    assert "cannot be told apart" in shows and "predicts better" in shows
    assert f"{bn['values'][0]:.3g} at init" in shows and f"{bn['at_target']:.3g}" in shows
    rec = json.loads((ROOT / "docs" / "results" / "minibatch.json").read_text())
    block = text.readme(rec)
    assert all(x in block for x in text.details(s)) and rec["command"] in block
    assert docs.main(["check"]) == 0


def test_lr_words_follow_the_growth_shape():
    """The lr title's verb comes from the measured shape, 'flat' included."""
    from bpexp.experiments.minibatch import text

    g = {"b_from": 1, "b_sat": 1, "lr_sat": 0.2, "slope": 0.0, "x4_ratios": {"1": 1.0},
         "shape": "flat", "flat_after_sat": True, "next_lr": None, "next_lr_diverged": [],
         "theory": None}
    assert text.lr_title({"best_lr_growth": g}).startswith("Best lr does not grow with B")
    g |= {"b_sat": 16, "slope": 1.0, "x4_ratios": {"1": 4.0, "4": 4.0}, "shape": "linear"}
    assert text.lr_title({"best_lr_growth": g}) == ("Best lr grows linearly with B (x4.0 for x4 "
                                                    "from B = 1), flat at 0.2 from B = 16")
