"""The optimizers experiment: helpers against numpy, sweep.run_fused against the sweep engine,
validation, and a tiny CLI run (schema, figures, manual == optax, momentum/adam faster than GD
on the quadratic)."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import np_gd_path

import bpexp
from bpexp import config, optim, sweep, theory, train
from bpexp.errors import UserError
from bpexp.experiments import _common
from bpexp.experiments import optimizers as E
from bpexp.experiments.optimizers import run as OR
from bpexp.experiments.optimizers import theory as OT

IMPLS = optim.IMPLS


# ---------------------------------------------------------------- pure helpers
def test_best_lr_index_skips_lrs_with_a_diverged_seed():
    final = np.array([[0.5, 0.7], [0.1, np.nan], [0.2, 0.3], [0.4, 0.4]])   # [lr, seed]
    div = ~np.isfinite(final)
    assert _common.best_lr_index(final, div) == 2           # lr 1 is lower but one seed diverged
    assert _common.best_lr_index(final, np.ones_like(div)) is None


def test_diverged_mask():
    loss = np.array([[[1.0, 0.5]], [[1.0, 2.0]], [[1.0, np.inf]]])          # [lr, seed, step]
    final = np.array([[0.4], [3.0], [np.nan]])
    first = np.array([[-1], [-1], [1]])
    np.testing.assert_array_equal(_common.diverged_mask(loss, final, first, 1.0),
                                  [[False], [True], [True]])


def test_steps_to_tol_and_max_abs_diff():
    steps = np.arange(5) * 10
    assert OR.steps_to_tol(steps, [4.0, 3.0, 1.0, 0.5, 0.1], 1.0) == 20
    assert OR.steps_to_tol(steps, [4.0, 3.0, 2.0, 2.0, 2.0], 1.0) is None
    a = np.array([[1.0, 2.0], [4.0, 8.0]])
    b = a + np.array([[0.0, 1e-3], [0.5, 0.0]])
    assert OR.max_abs_diff(a, b) == (0.5, 0.5 / 8)
    np.testing.assert_allclose(OR.max_abs_diff(a, b, np.array([True, False])), (1e-3, 1e-3 / 2),
                               rtol=1e-12)


def test_diff_per_lr_and_twin_summary_against_numpy():
    """Per lr: the max over the kept seeds of max_t |a - b|, its relative value and the loss
    growth; the summary splits lrs at the growth limit and names the worst spiking one."""
    rng = np.random.default_rng(1)
    a = rng.uniform(1, 2, size=(3, 2, 5))                   # [lr, seed, step]
    a[2, 1, 2] = 50.0                                       # lr 2, seed 1 spikes 50 / a[2, 1, 0]
    b = a + rng.normal(scale=1e-6, size=a.shape)
    b[2, 1, 3] += 0.25
    ok = np.array([[True, True], [False, False], [True, True]])
    d, rel, g = OR.diff_per_lr(a, b, a, ok)
    ref = np.abs(a - b).max(-1)
    np.testing.assert_allclose(d[[0, 2]], ref[[0, 2]].max(-1), rtol=1e-15)
    assert np.isnan(d[1]) and np.isnan(rel[1]) and np.isnan(g[1])
    np.testing.assert_allclose(rel[0], (ref[0] / np.abs(a[0]).max(-1)).max(), rtol=1e-15)
    np.testing.assert_allclose(g[[0, 2]], (a.max(-1) / a[..., 0])[[0, 2]].max(-1), rtol=1e-15)
    lrs = np.array([0.1, 1.0, 10.0])
    fit = OR.Fit(lrs, ~ok.any(1), a[:, :, -1].max(1), 0, None, OR.NAN2, OR.NAN2, d, rel, g)
    tw = OR.twin_summary({"p": {"x": fit}}, limit=10.0)
    assert (tw["calm_lrs"], tw["spiking_lrs"], tw["lrs_left_out_diverged"]) == (1, 1, 1)
    assert tw["calm_max_abs"] == d[0] and tw["spiking_max_abs"] == d[2] > 0.2
    assert tw["worst"] == {"problem": "p", "optimizer": "x", "lr": 10.0,
                           "loss_growth": g[2], "max_abs_diff": d[2]}


def test_quadratic_rate_and_predicted_steps_match_closed_forms():
    kappa, beta = 50.0, 0.9
    lr = 2 / (1 + kappa)
    assert math.isclose(OT.quadratic_rate("gd", lr, [1.0, kappa], beta), (kappa - 1) / (kappa + 1),
                        rel_tol=1e-12)
    # inside the complex-root band every eigendirection contracts by sqrt(beta)
    assert math.isclose(OT.quadratic_rate("momentum", 0.09, [1.0, kappa], beta), math.sqrt(beta),
                        rel_tol=1e-12)
    assert math.isclose(OT.predicted_steps(0.5, 1.0, 1.0 / 16), 2.0)  # 0.5^(2t) = 1/16 at t = 2
    assert OT.predicted_steps(1.2, 1.0, 0.1) is None


# ---------------------------------------------------------------- the quadratic scan
def _numpy_paths(H, w0, lr, steps, beta=0.9, b1=0.9, b2=0.999, eps=1e-8):
    """Independent float64 loops of the CS230 updates."""
    out = {}
    for name in ("gd", "momentum", "rmsprop", "adam"):
        w, v, s = np.array(w0, float), np.zeros(2), np.zeros(2)
        path = [w.copy()]
        for t in range(1, steps + 1):
            g = H @ w
            if name == "gd":
                w = w - lr * g
            elif name == "momentum":
                v = beta * v + (1 - beta) * g
                w = w - lr * v
            elif name == "rmsprop":
                s = b2 * s + (1 - b2) * g * g
                w = w - lr * g / (np.sqrt(s) + eps)
            else:
                v = b1 * v + (1 - b1) * g
                s = b2 * s + (1 - b2) * g * g
                w = w - lr * (v / (1 - b1 ** t)) / (np.sqrt(s / (1 - b2 ** t)) + eps)
            path.append(w.copy())
        out[name] = np.array(path)
    return out


def test_quadratic_paths_match_numpy_and_optax_twins_in_float64():
    _, _, H = theory.ill_conditioned_quadratic(20.0, 30.0)
    w0 = np.array([2.5, 2.0])
    fixed = {"beta": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    lrs = {n: np.array([0.01, 0.05]) for n in E.NAMES}
    out = OT.quadratic_paths(H, w0, lrs, fixed, steps=40, dtype="float64")
    gd_ref = np_gd_path(lambda w: H @ w, w0, 0.05, 40)
    np.testing.assert_allclose(out[("gd", "manual")][0][1], gd_ref, rtol=1e-12, atol=1e-14)
    for i, lr in enumerate(lrs["gd"]):
        ref = _numpy_paths(H, w0, lr, 40)
        for n in E.NAMES:
            path, loss = out[(n, "manual")]
            np.testing.assert_allclose(path[i], ref[n], rtol=1e-10, atol=1e-12, err_msg=n)
            np.testing.assert_allclose(loss[i], 0.5 * np.einsum("ti,ij,tj->t", ref[n], H, ref[n]),
                                       rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(out[(n, "optax")][0][i], path[i], rtol=1e-12, atol=1e-13,
                                       err_msg=n)
    # Adam's first step is lr * sign(g) (up to eps)
    adam = out[("adam", "manual")][0]
    np.testing.assert_allclose(adam[:, 1] - w0, -lrs["adam"][:, None] * np.sign(H @ w0), rtol=1e-6)


# ---------------------------------------------------------------- fused runner == sweep engine
def test_run_fused_equals_run_grid_per_spec():
    """Three specs (different optimizers, impls and lr grids) in one compile give, per spec,
    the same arrays, dims, coords and run count as the sweep engine."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 24))
    Y = rng.normal(size=(1, 3)) @ X + 0.1 * rng.normal(size=(1, 24))
    lrs = {"momentum": np.array([0.01, 0.1, 100.0]), "adam": np.array([0.003, 0.03]),
           "gd": np.array([0.05])}
    seeds = np.array([0, 1])
    fixed = {"init_scale": 1.0, "beta": 0.8, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    specs = {(o, impl): train.TrainSpec(model="multivariate", n=3, d_out=1, m=24, steps=12,
                                        optimizer=o, impl=impl, dtype="float64",
                                        opt_hparams=tuple(optim.HYPERPARAMS[o]),
                                        model_hparams=(("init", "standard"),))
             for o, impl in (("momentum", "manual"), ("adam", "optax"), ("gd", "manual"))}
    before = sweep.COMPILES["count"]
    fused = sweep.run_fused(specs, lrs, seeds, fixed, X, Y)
    assert sweep.COMPILES["count"] - before == 1
    assert fused.keys() == specs.keys()
    for (o, impl), spec in specs.items():
        got = fused[(o, impl)]
        ref = sweep.run_grid(spec, X, Y, sweep.Grid({"lr": lrs[o], "seed": seeds}), fixed,
                             progress=False)
        assert got.metrics.keys() == ref.metrics.keys() and got.dims == ref.dims, o
        assert got.stats["runs"] == ref.stats["runs"] == len(lrs[o]) * len(seeds)
        for k in ("lr", "seed"):
            np.testing.assert_array_equal(got.axes[k], ref.axes[k])
        for k in ("step", "param"):
            np.testing.assert_array_equal(got.coords[k], ref.coords[k])
        for k in ref.metrics:
            assert got.metrics[k].shape == ref.metrics[k].shape, (o, k)
            np.testing.assert_allclose(got.metrics[k], ref.metrics[k], rtol=1e-12, atol=1e-300,
                                       err_msg=f"{o}/{impl} {k}")
    m = fused[("momentum", "manual")].metrics
    div = _common.diverged_mask(m["loss"], m["final_loss"], m["first_nonfinite"], 1.0)
    np.testing.assert_array_equal(div, [[False, False], [False, False], [True, True]])  # lr 100


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("key, value", [
    ("optimizers", []), ("optimizers", ["gd", "nesterov"]), ("optimizers", ["gd", "gd"]),
    ("lr_range", {"gd": ["a", 0.1]}), ("lr_range", {"gd": [0.1]}),
    ("lr_range", {"gd": [1.0, 0.1]}), ("lr_range", {"gd": [0.0, 1.0]}),
    ("lr_range", {"gd": [0.1, math.inf]}), ("lr_range", {"gd": [True, 1]}),
    ("lr_range", {"gd": None}), ("lr_range", {"gdd": [0.1, 1.0]}),
    ("quad_lr_range", {"adam": [math.nan, 1.0]}),
    ("lr_num", 0), ("quad_lr_num", 0), ("quad_steps", 0), ("path_steps", -1),
    ("tol_factor", 0.0), ("tol_factor", math.nan), ("quad_tol", -1e-6), ("quad_tol", math.inf),
    ("divergence_factor", 0.0), ("divergence_factor", math.nan),
    ("quad_kappa", 0.5), ("quad_kappa", math.nan), ("quad_kappa", math.inf),
    ("quad_angle", math.inf), ("quad_start", [0, 0]), ("quad_start", [1e-200, 0.0]),
    ("quad_start", [1.0]), ("quad_start", ["a", "b"]), ("quad_start", [math.nan, 1.0]),
])
def test_validate_rejects_bad_values(key, value):
    """One line naming the key (a dict entry merges into the default, as an override does)."""
    P = E.Params()
    value = {**getattr(P, key), **value} if isinstance(value, dict) else value
    cfg = config.Cfg(experiment=dataclasses.replace(P, **{key: value}))
    with pytest.raises(UserError, match=rf"^experiment\.{key}[.=][^\n]+$"):
        E.validate(cfg)


def test_validate_accepts_the_defaults_and_a_subset():
    E.validate(config.Cfg(experiment=E.Params()))
    # ranges of optimizers that are not compared are not read
    E.validate(config.Cfg(experiment=E.Params(optimizers=["adam"], lr_range={"adam": [0.1, 1]})))


# ---------------------------------------------------------------- CLI
TINY = ["data.m=64", "model.hidden=4", "train.steps=20", "experiment.lr_num=3", "sweep.seeds=1",
        "experiment.optimizers=[gd,momentum,adam]", "sweep.progress=false"]


def _run_cli(tmp_path, *extra):
    cmd = [sys.executable, "-m", "bpexp", "+experiment=optimizers", f"outputs.root={tmp_path}",
           *TINY, *extra]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    last = p.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: ")
    run_dir = Path(last.removeprefix("run dir: "))
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def _check(run_dir, s, names, rel_tol):
    assert set(s["problems"]) == {"digits", "quadratic"}
    keys = {"best_lr", "final_loss", "steps_to_tol", "max_abs_diff_manual_vs_optax",
            "max_rel_diff_manual_vs_optax"}
    for prob, per in s["problems"].items():
        assert list(per) == names, prob
        for n, v in per.items():
            assert keys <= set(v), (prob, n)
            assert v["best_lr"] is not None and v["best_lr"] > 0, (prob, n)
            rel = v["max_rel_diff_manual_vs_optax"]
            assert rel < rel_tol, (prob, n, rel)
    assert s["tolerance"]["quadratic"] == 1e-6 and s["tolerance"]["digits"] > 0
    for f in ("loss_at_best_lr.png", "final_loss_vs_lr.png", "quadratic_paths.png",
              "manual_vs_optax.png"):
        png = (run_dir / "figures" / f).read_bytes()
        assert len(png) > 10_000, f
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert w <= 2.2 * h and w >= 1000, (f, w, h)           # a slide, not a strip
    assert (run_dir / "report.md").exists()
    _check_metrics(run_dir, s, names)


def _finite_or_none(a):
    """The summary's JSON writes a non-finite number as null."""
    return [float(x) if np.isfinite(x) else None for x in np.asarray(a, np.float64)]


def _check_metrics(run_dir, s, names):
    """metrics.zarr: one array per quantity stacked over optimizer x impl, each optimizer's own
    lr grid as the 2-D coordinate lr (quad_lr) over (optimizer, lr_index (quad_lr_index))."""
    ds = bpexp.load(run_dir)
    net = ("optimizer", "impl", "lr_index", "seed")
    assert ds["net_loss"].dims == ds["net_param_norm"].dims == (*net, "step")
    assert ds["net_grad_norm"].dims == (*net, "step", "param")
    assert ds["net_final_loss"].dims == ds["net_first_nonfinite"].dims == net
    assert ds["net_loss"].shape == (len(names), 2, 3, 1, 20)
    assert ds["optimizer"].values.tolist() == names
    assert ds["impl"].values.tolist() == ["manual", "optax"]
    assert ds["seed"].values.tolist() == s["seeds"] == [0]
    assert ds["step"].values.tolist() == list(range(20))
    assert ds["param"].values.tolist() == ["W1", "W2", "b1", "b2"]
    assert ds["lr"].dims == ("optimizer", "lr_index")
    quad = ("optimizer", "impl", "quad_lr_index", "quad_step")
    assert ds["quad_path"].dims == (*quad, "w") and ds["quad_loss"].dims == quad
    assert ds["quad_path"].shape == (len(names), 2, 24, 301, 2)
    assert ds["quad_lr"].dims == ("optimizer", "quad_lr_index")
    assert ds["quad_step"].values.tolist() == list(range(301))
    assert ds["w"].values.tolist() == ["w1", "w2"]
    assert ds["quad_H"].dims == ("w_row", "w_col")
    np.testing.assert_allclose(ds["quad_H"].values,
                               theory.ill_conditioned_quadratic(50.0, 30.0)[2], rtol=1e-15)
    np.testing.assert_array_equal(ds["quad_path"].isel(quad_step=0).values,
                                  np.broadcast_to([2.5, 2.0], (len(names), 2, 24, 2)))
    P = E.Params()
    for n in names:
        digits, q = s["problems"]["digits"][n], s["problems"]["quadratic"][n]
        at = ds.sel(optimizer=n)
        assert at["lr"].values.tolist() == digits["lrs"]
        np.testing.assert_allclose(at["lr"].values, np.geomspace(*P.lr_range[n], 3), rtol=1e-15)
        assert at["quad_lr"].values.tolist() == q["lrs"]
        np.testing.assert_allclose(at["quad_lr"].values, np.geomspace(*P.quad_lr_range[n], 24),
                                   rtol=1e-15)
        manual = at.sel(impl="manual")
        final = manual["net_final_loss"].values                      # [lr_index, seed]
        assert _finite_or_none(_common.finite_median(final, axis=1)) == digits["final_loss_median"]
        assert _finite_or_none(manual["quad_loss"].values[:, -1]) == q["final_loss_per_lr"]
        # select by lr: the best lr's final loss is the summary's
        by_lr = manual["net_final_loss"].swap_dims(lr_index="lr")
        assert float(by_lr.sel(lr=digits["best_lr"]).median()) == digits["final_loss"]
    _check_twins(ds, s, names)


def _check_twins(ds, s, names):
    """The per-lr manual-vs-optax numbers and their split by loss growth, recomputed with numpy
    from the store (loss curves + final loss on the network, the path on the quadratic)."""
    rows = []
    for n in names:
        at = ds.sel(optimizer=n)
        m, t = (np.concatenate([at["net_loss"].sel(impl=i).values,
                                at["net_final_loss"].sel(impl=i).values[..., None]], -1)
                .astype(np.float64) for i in ("manual", "optax"))
        first = at["net_first_nonfinite"].values                    # [impl, lr, seed]
        ok = ((first < 0).all(0) & np.isfinite(m[..., -1]) & np.isfinite(t[..., -1])
              & (m[..., -1] <= m[..., 0]) & (t[..., -1] <= t[..., 0]))
        qp, qt = (at["quad_path"].sel(impl=i).values.astype(np.float64) for i in IMPLS)
        ql = at["quad_loss"].sel(impl="manual").values.astype(np.float64)
        qok = (np.isfinite(ql).all(-1) & (ql[:, -1] <= ql[:, 0])
               & np.isfinite(at["quad_loss"].sel(impl="optax").values).all(-1))
        for prob, a, b, loss, keep in (("digits", m, t, m, ok),
                                       ("quadratic", qp[:, None], qt[:, None], ql[:, None],
                                        qok[:, None])):
            v = s["problems"][prob][n]
            for i in range(a.shape[0]):
                k = keep[i]
                if not k.any():
                    assert v["max_abs_diff_manual_vs_optax_per_lr"][i] is None, (prob, n, i)
                    rows.append(None)
                    continue
                d = np.abs(a[i][k] - b[i][k]).reshape(k.sum(), -1).max(-1).max()
                g = (loss[i][k].max(-1) / loss[i][k][:, 0]).max()
                assert math.isclose(v["max_abs_diff_manual_vs_optax_per_lr"][i], d,
                                    rel_tol=1e-12, abs_tol=0), (prob, n, i)
                assert math.isclose(v["loss_growth_per_lr"][i], g, rel_tol=1e-12), (prob, n, i)
                rows.append((prob, n, g, d))
    tw = s["manual_vs_optax"]
    kept = [r for r in rows if r is not None]
    calm = [r[3] for r in kept if r[2] <= tw["loss_growth_limit"]]
    assert tw["lrs_left_out_diverged"] == len(rows) - len(kept)
    assert tw["calm_lrs"] == len(calm) and tw["calm_max_abs"] == max(calm)
    assert tw["spiking_lrs"] == len(kept) - len(calm)
    if tw["spiking_lrs"]:
        assert tw["spiking_max_abs"] == max(r[3] for r in kept if r[2] > tw["loss_growth_limit"])
    for p, v in tw["spiking_max_abs_by_problem"].items():
        sp = [r[3] for r in kept if r[0] == p and r[2] > tw["loss_growth_limit"]]
        assert v == (max(sp) if sp else None), p


def _check_words(run_dir, s):
    """Every figure title and the report's opening claim only what the summary says."""
    from bpexp.experiments.optimizers import figures as OF

    q, tw = s["problems"]["quadratic"], s["manual_vs_optax"]
    t = OF.takeaways(s, "digits")
    reached = {n: v["steps_to_tol"] for n, v in q.items() if v["steps_to_tol"] is not None}
    fast = min(reached, key=reached.get)
    assert t["loss_at_best_lr"].startswith(f"quadratic: {fast} reaches 1e-6 first "
                                           f"({reached[fast]} steps")
    net = s["problems"]["digits"]
    low = min(net, key=lambda n: net[n]["final_loss"])
    assert f"digits: {low} ends lowest ({net[low]['final_loss']:.3g})" in t["loss_at_best_lr"]
    r = q["gd"]["best_lr"] / s["quadratic"]["gd_threshold"]
    assert r < 1 and f"GD's best lr is {r:.2f} x its stability bound" in t["final_loss_vs_lr"]
    for n, v in q.items():
        assert f"{n} {v['steps_to_tol']}" in t["quadratic_paths"]
    assert f"to {tw['calm_max_abs']:.1e} where the loss stays < 10x" in t["manual_vs_optax"]
    if tw["worst"]:
        assert f"up to {tw['worst']['max_abs_diff']:.2g}" in t["manual_vs_optax"]
    text = (run_dir / "report.md").read_text()
    shows = text.split("## What this run shows\n\n")[1].split("\n")[0]
    assert 3 <= shows.count(". ") + 1 <= 5, shows
    assert f"equal their optax twins to {tw['calm_max_abs']:.1e}" in shows
    assert f"at all {tw['calm_lrs']} lrs" in shows
    assert f"{fast} reaches f <= 1e-06 first ({reached[fast]} steps)" in shows
    assert "![manual_vs_optax.png]" in text


def test_cli_tiny_float32(tmp_path):
    """float32: hand-written vs optax within 1e-4 relative (observed ~1e-7). On the default
    kappa=50 quadratic, (49/51) = 0.961 > sqrt(0.9) = 0.949, so momentum must reach f <= 1e-6
    before GD; Adam does too at the defaults (observed 120 vs 212 steps). Where the loss never
    rises above 10x its start the twins agree to 1e-5 relative at every lr."""
    run_dir, s = _run_cli(tmp_path)
    _check_words(run_dir, s)
    assert s["manual_vs_optax"]["calm_max_rel"] < 1e-5
    _check(run_dir, s, ["gd", "momentum", "adam"], 1e-4)
    q = s["problems"]["quadratic"]
    assert q["gd"]["steps_to_tol"] is not None
    assert q["momentum"]["steps_to_tol"] < q["gd"]["steps_to_tol"]
    assert q["adam"]["steps_to_tol"] < q["gd"]["steps_to_tol"]
    # GD's measured steps agree with the linear-rate prediction within 15%
    assert abs(q["gd"]["steps_to_tol"] / q["gd"]["steps_to_tol_theory"] - 1) < 0.15
    assert q["gd"]["best_lr"] < s["quadratic"]["gd_threshold"]


@pytest.mark.parametrize("arg", ["experiment.lr_range.gd=[a,0.1]", "experiment.quad_start=[0,0]"])
def test_cli_bad_value_is_one_line_before_any_run(tmp_path, arg):
    p = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=optimizers",
                        f"outputs.root={tmp_path}", arg], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"error: {arg.split('=')[0]}=")
    assert not (tmp_path / "optimizers").exists()  # rejected in the validation phase


@pytest.mark.slow
def test_cli_tiny_float64(tmp_path):
    """float64: hand-written vs optax agree to ~1e-15 relative; assert < 1e-10. Over every lr
    where the loss stays below 10x its start: < 1e-12 relative; and at every lr the float64
    difference is at most the float32 one (the difference is rounding: it shrinks with it)."""
    run_dir, s = _run_cli(_mk(tmp_path / "f64"), "precision=float64")
    _check(run_dir, s, ["gd", "momentum", "adam"], 1e-10)
    assert s["manual_vs_optax"]["calm_max_rel"] < 1e-12
    _, s32 = _run_cli(_mk(tmp_path / "f32"))
    for p in ("digits", "quadratic"):
        for n, v in s["problems"][p].items():
            for d64, d32 in zip(v["max_abs_diff_manual_vs_optax_per_lr"],
                                s32["problems"][p][n]["max_abs_diff_manual_vs_optax_per_lr"]):
                if d64 is not None and d32 is not None:
                    assert d64 <= max(d32, 1e-12), (p, n, d64, d32)


def _mk(path):
    path.mkdir()
    return path
