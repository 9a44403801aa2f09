"""lr_sweep through the CLI: theory and measurement agree where the theory is exact; its
compute and save called directly; its validation."""

import math
import json

import jax
import jax.flatten_util
import numpy as np
import pytest

from bpexp import data
from bpexp.errors import UserError
from bpexp.experiments import lr_sweep
from bpexp.experiments.lr_sweep import run as lr_run
from bpexp.experiments.lr_sweep.theory import measured_threshold
from bpexp.runfolder import Run
from helpers import build_cfg, run_experiment


def _check_takeaways(d, s, theory):
    """report.md opens with the sentences computed from the summary; each claim they make (the
    threshold, the sign and size of the miss, whether the interval holds the theory) is checked
    here against the independent theory value."""
    md = (d / "report.md").read_text()
    shows = md.split("## What this run shows\n\n")[1].split("\n")[0]
    assert md.index("What this run shows") < md.index("**Question.**")
    assert f"{s['lambda_max']:.4g}" in shows and f"{theory:.4g}" in shows
    lo, hi = s["threshold_bracket"]
    miss = s["threshold_measured"] / theory - 1
    assert f"{lo:.4g} and" in shows and f"{hi:.4g}:" in shows
    assert (f"{miss:+.2%} from theory" if abs(miss) >= 1e-3 else f"{miss:+.4%} from theory") \
        in shows
    if s["threshold_interval"]:
        a, b = s["threshold_interval"]
        assert ("holds the theory" in shows) == (a <= theory <= b * (1 + 1e-12))
    title = lr_sweep.final_title(s)
    edge = s["threshold_refined"] or s["threshold_measured"]
    assert f"{edge:.5g}" in title and f"{theory:.5g}" in title
    assert ("+" in title.split("%")[0]) == (edge > theory)


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
    X32 = np.load(d / "data.npz")["X"]                      # what it trained on
    X = data.load("diabetes", dtype=np.float64).X          # theory is float64 whatever the run
    np.testing.assert_allclose(X32, X, rtol=1e-6, atol=1e-6)
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
    _check_takeaways(d, s, theory)
    import xarray as xr
    m = xr.open_zarr(d / "metrics.zarr")             # readable without bpexp
    assert m["loss"].dims == ("lr", "seed", "step")
    assert m["loss"].shape == (24, 2, steps // 10)
    np.testing.assert_allclose(m["lr"].values, lr, rtol=1e-12)
    np.testing.assert_array_equal(m["seed"].values, [0, 1])
    np.testing.assert_array_equal(m["step"].values, np.arange(0, steps, 10))
    assert m["grad_norm"].dims == ("lr", "seed", "step", "param")
    assert m["chunk_done"].values.all()
    np.testing.assert_allclose(m["diverged"].values.mean(axis=1), frac, rtol=0, atol=1e-12)
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
    """compute -> save on a tiny grid: compute streams the grid into metrics.zarr (and writes
    data.npz), save adds nothing but the summary, whose threshold is 2/lambda_max of
    H = (2/m) Xt Xt^T computed here with numpy."""
    cfg = build_cfg(TINY)
    run = Run(tmp_path, "lr_sweep")
    res = lr_sweep.compute(cfg, run)
    assert sorted(p.name for p in run.dir.iterdir() if not p.name.startswith(".")) == [
        "config.yaml", "data.npz", "env.json", "figures", "metrics.zarr"]
    assert res.curves.shape == (3, 4) and res.frac.shape == res.med.shape == (3,)
    assert res.runs_per_lr == 2 and [x.shape for x in res.three["loss"]] == [(2, 4)] * 3
    # the one figure of the coarse grid alone is drawn by compute, before the refinement (by
    # the figure helper when one runs; here, with none, in this process); save draws nothing
    figs = sorted(p.name for p in (run.dir / "figures").iterdir())
    assert figs == ["too_small_good_too_large.png"]
    s = lr_sweep.save(cfg, run, res)
    assert sorted(p.name for p in (run.dir / "figures").iterdir()) == figs
    assert not (run.dir / "report.md").exists()

    X = data.load("diabetes", dtype=np.float64).X   # theory is float64: (10, 442)
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
    assert s["threshold_bracket"] == [0.1, 1.0] and s["grid_step_ratio"] == pytest.approx(10.0)
    assert s["runs"] == 6
    import bpexp
    mz = bpexp.load(run.dir)
    assert mz["loss"].dims == ("lr", "seed", "step") and mz["loss"].shape == (3, 2, 4)
    assert mz["diverged"].shape == (3, 2) and mz["diverged"].values[2].all()
    assert not mz["diverged"].values[:2].any()
    assert "config" in mz.attrs and "summary" in mz.attrs


@pytest.mark.parametrize("key,value", [("lanczos_iters", 1), ("lanczos_iters", 2**31),
                                       ("growth_factor", 1.0), ("growth_window", 0.0),
                                       ("track_every", 7),
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


def _run(tree, tmp_path):
    cfg = build_cfg(tree)
    run = Run(tmp_path, "lr_sweep")
    return lr_sweep.save(cfg, run, lr_sweep.compute(cfg, run)), run


@pytest.mark.slow
def test_nonlinear_estimate_is_the_top_algebraic_eigenvalue_in_float64(tmp_path):
    """init_scale 10 saturates a sigmoid_ce mlp: the magnitude-largest Hessian eigenvalue is
    negative; the estimate is the largest one, from the dense float64 Hessian (numpy), and it
    is the same under precision=float32 (theory is always float64)."""
    model = {"name": "mlp", "hidden": 32, "depth": 2, "output": "sigmoid_ce", "init_scale": 10.0}
    tree = {"experiment": {"name": "lr_sweep"}, "model": model, "data": {"name": "breast_cancer"},
            "train": {"steps": 20, "record_every": 5},
            "sweep": {"lr": [0.01, 0.1], "seeds": 1, "progress": False}}
    s32, run = _run({**tree, "precision": "float32"}, tmp_path / "a")
    s64, _ = _run({**tree, "precision": "float64"}, tmp_path / "b")
    from bpexp import make, models
    cfg = build_cfg({**tree, "precision": "float64"})
    ds = data.load("breast_cancer", dtype=np.float64)
    m = models.get("mlp", output="sigmoid_ce")
    with jax.enable_x64(True):
        p = make.init_params(cfg, m, ds, 0, dtype_=np.float64)
        flat, unravel = jax.flatten_util.ravel_pytree(p)
        H = np.asarray(jax.hessian(lambda x: m.loss(unravel(x), ds.X, ds.Y))(flat))
    ev = np.linalg.eigvalsh(H)
    assert abs(ev[0]) > ev[-1] > 0          # -0.525 vs 0.437: power iteration reports ev[0]
    assert s64["theory_kind"] == "estimate"
    assert s64["lambda_max"] == pytest.approx(ev[-1], rel=1e-8)
    assert s32["lambda_max"] == pytest.approx(s64["lambda_max"], rel=1e-10)


def test_short_runs_bracket_the_exact_threshold(tmp_path):
    """50 steps on diabetes: final > initial alone puts the whole bracket above 2/lambda_max
    (the stable modes' decay hides the growth); the growth rule brackets it."""
    tree = {**TINY, "train": {"steps": 50, "record_every": 1},
            "sweep": {"lr": {"start": 0.2, "stop": 0.3, "num": 21, "log": False}, "seeds": 1,
                      "progress": False}}
    s, _ = _run(tree, tmp_path)
    lo, hi = s["threshold_bracket"]
    assert lo < s["threshold_theory"] < hi
    assert s["grid_step_ratio"] == pytest.approx(hi / lo) and hi / lo < 1.03  # linear grid
    assert s["divergence_rule"]["quadratic_resolution"] == pytest.approx(np.log(2) / (4 * 12.5))


def test_growth_rule_flags_a_run_still_growing_below_its_initial_loss():
    """A run whose stable modes fell 1000x and whose unstable mode has started to grow (x4 over
    the last quarter) ends below its initial loss: the final-vs-initial rule misses it, the
    growth rule does not; a converged run and a plateau are not flagged."""
    from bpexp.experiments._common import diverged_mask
    t = np.arange(40)
    growing = np.where(t < 30, 10.0 * 0.8 ** t, 10.0 * 0.8 ** 30 * 1.15 ** (t - 29))
    converged = 10.0 * 0.8 ** t
    plateau = np.full(40, 3.0)
    loss = np.stack([growing, converged, plateau])[None]            # [lr=1, run=3, record]
    final = loss[..., -1] * np.array([[1.15, 0.8, 1.0]])
    first_bad = np.full((1, 3), -1)
    old = diverged_mask(loss, final, first_bad, 1.0)
    new = diverged_mask(loss, final, first_bad, 1.0, growth=2.0, window=0.25)
    assert old.tolist() == [[False, False, False]] and final[0, 0] < loss[0, 0, 0]
    assert new.tolist() == [[True, False, False]]


@pytest.mark.parametrize("optimizer,data_cfg", [
    ("gd", {"name": "diabetes"}), ("momentum", {"name": "diabetes"}),
    ("gd", {"name": "synthetic", "n": 6, "m": 150, "seed": 4})])
def test_refined_threshold_within_its_resolution(tmp_path, optimizer, data_cfg):
    """After the coarse grid, vectorized bisection rounds (each trained long enough to resolve
    its lr spacing; one compile per training length) bring the linear model's threshold within
    0.3% of 2/lambda_max (numpy, float64) or the momentum bound, and the reported interval
    [lo / (1 + resolution), hi] holds it."""
    from bpexp import sweep
    lr = ({"start": 0.01, "stop": 2.0, "num": 16} if optimizer == "gd"
          else {"start": 0.2, "stop": 40.0, "num": 16})
    tree = {"experiment": {"name": "lr_sweep"}, "model": {"name": "multivariate"},
            "data": data_cfg, "optimizer": {"name": optimizer},
            "train": {"steps": 300, "record_every": 5},
            "sweep": {"lr": lr, "seeds": 2, "progress": False}}
    cfg = build_cfg(tree)
    run = Run(tmp_path, "lr_sweep")
    before = sweep.COMPILES["count"]
    res = lr_sweep.compute(cfg, run)
    lengths = {st for *_, st in res.rounds} - {cfg.train.steps}   # longer refinement trainings
    assert sweep.COMPILES["count"] - before <= 1 + len(lengths)   # the coarse grid's, + those
    from bpexp import make
    ds, (grid, fixed) = make.dataset(cfg), make.grid(cfg)
    n = sweep.COMPILES["count"]
    again = lr_run.refine(cfg, make.spec(cfg, ds), ds, grid, fixed, res.bracket,
                            res.stats["chunk_size"], cfg.experiment)
    assert again == res.rounds and sweep.COMPILES["count"] == n   # deterministic, compiled
    s = lr_sweep.save(cfg, run, res)
    X = data.load(data_cfg["name"], **{k: v for k, v in data_cfg.items() if k != "name"},
                  dtype=np.float64).X
    lam = independent_lambda_max(X)
    theory = 2 / lam if optimizer == "gd" else 2 * (1 + 0.9) / ((1 - 0.9) * lam)
    assert s["refine_rounds"] >= 1
    assert abs(s["threshold_refined"] / theory - 1) < 0.003, (s["threshold_refined"], theory)
    lo, hi = s["refined_bracket"]
    assert lo <= theory * 1.003 and hi >= theory / 1.003 and hi / lo < 1.01
    a, b = s["threshold_interval"]                        # sound: the theory lies inside
    assert a <= theory <= b * (1 + 1e-12), (a, theory, b)
    assert a == lo / (1 + s["refined_resolution"])
    steps = s["refine_steps"][-1]
    assert s["refined_resolution"] == pytest.approx(math.log(2) / (4 * 0.25 * steps))
