"""Tests for bpexp.sweep (and the one-run scan of bpexp.train it vmaps).

Every numeric claim is checked against an independent computation: a numpy re-implementation
of the multivariate model and its gradient, stepped by a Python loop of optax updates, with
parameters initialised from the same key derivation as ``train.make_run``.

Compilation dominates the run time (measured ~2 s CPU per multivariate compile and ~4.5 s per
two_layer_sigmoid compile on a 2-core CPU), and the compile cache in ``sweep`` is keyed by
(spec, chunk size, devices, shapes): the tests below share a handful of specs and chunk sizes
on purpose (multivariate gd at chunk 3 and 6 serves tests 1, 3, 4, 5, 8, 9, 11), see ``mv_spec``
/ ``tl_spec``. ``-m slow`` adds the two_layer_sigmoid optimizer twins and 100,000 runs.

Tolerances (float64 throughout; conftest enables x64):
- sweep vs independent numpy/optax loop: rtol 1e-12 (different summation order only);
- manual vs autodiff gradients: rtol 1e-12;
- manual optimizers vs their optax twins: rtol 1e-10 (algebraically rearranged updates);
- different chunk sizes / device counts: rtol 1e-12 (XLA picks vector code by shape);
- same compiled chunk shape: bitwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bpexp import config, make, models, optim, sweep, train

REPO = Path(__file__).resolve().parent.parent
N, M, STEPS = 3, 16, 30
RTOL = 1e-12
METRIC_NAMES = ("loss", "grad_norm", "param_norm", "update_norm", "first_nonfinite", "final_loss")


# ------------------------------------------------------------------ data and specs
def _mv_data():
    rng = np.random.default_rng(1234)
    X = rng.normal(size=(N, M))
    Y = rng.normal(size=(1, N)) @ X + 0.5 + 0.1 * rng.normal(size=(1, M))
    return X, Y


def _tl_data():
    rng = np.random.default_rng(99)
    X = rng.normal(size=(N, M))
    Y = np.vstack([np.sin(X[0] + X[1]), np.tanh(X[2] - X[0])])  # (2, M)
    return X, Y


X_MV, Y_MV = _mv_data()
X_TL, Y_TL = _tl_data()


def mv_spec(**kw) -> train.TrainSpec:
    """Multivariate linear regression, float64, 30 steps: the shared workhorse spec."""
    base = dict(model="multivariate", n=N, d_out=1, m=M, steps=STEPS, optimizer="gd",
                dtype="float64")
    base.update(kw)
    base.setdefault("opt_hparams", tuple(optim.HYPERPARAMS[base["optimizer"]]))
    return train.TrainSpec(**base)


def tl_spec(**kw) -> train.TrainSpec:
    """two_layer_sigmoid, hidden 4, d_out 2, float64, 30 steps."""
    base = dict(model="two_layer_sigmoid", n=N, d_out=2, m=M, steps=STEPS, optimizer="gd",
                dtype="float64", model_hparams=(("hidden", 4),))
    base.update(kw)
    base.setdefault("opt_hparams", tuple(optim.HYPERPARAMS[base["optimizer"]]))
    return train.TrainSpec(**base)


def grid(lr, seed, **extra) -> sweep.Grid:
    return sweep.Grid({"lr": np.asarray(lr, np.float64), "seed": np.asarray(seed, np.int64),
                       **extra})


def run(spec, X, Y, g, fixed=None, **kw):
    kw.setdefault("progress", False)
    return sweep.run_grid(spec, X, Y, g, fixed, **kw)


def assert_metrics_close(a: sweep.SweepResult, b: sweep.SweepResult, rtol, names=METRIC_NAMES):
    for k in names:
        if k == "first_nonfinite":
            np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
        else:
            np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=rtol, atol=1e-300,
                                       err_msg=k)


def assert_metrics_equal(a: sweep.SweepResult, b: sweep.SweepResult, index=(), names=METRIC_NAMES):
    for k in names:
        np.testing.assert_array_equal(a.metrics[k][index], b.metrics[k], err_msg=k)


# ------------------------------------------------------------------ independent reference
def mv_init(seed: int, init_scale: float):
    """Same key derivation as train.make_run: PRNGKey(seed) -> (k_init, k_batch)."""
    key = jax.random.PRNGKey(seed)
    k_init, k_batch = jax.random.split(key)
    p = models.get("multivariate").init(k_init, N, 1, init_scale=init_scale, dtype=jnp.float64)
    return {k: np.asarray(v, np.float64) for k, v in p.items()}, k_batch


def mv_loss_grad(p, X, Y):
    """Numpy MSE (1/m) sum (w X + b - y)^2 and its gradient, derived by hand here."""
    m = X.shape[1]
    r = p["w"] @ X + p["b"] - Y                      # (1, m)
    return np.sum(r ** 2) / m, {"w": (2.0 / m) * r @ X.T, "b": np.asarray((2.0 / m) * np.sum(r))}


def mv_reference(opt: optax.GradientTransformation, seed, init_scale, X, Y, steps, batch_of=None):
    """A Python loop of optax steps on numpy params; returns per-step records like train."""
    p, _ = mv_init(seed, init_scale)
    state = opt.init(p)
    rec = {"loss": [], "grad_norm": [], "param_norm": [], "update_norm": []}
    with np.errstate(all="ignore"):
        for t in range(steps):
            Xb, Yb = batch_of(t) if batch_of else (X, Y)
            loss, g = mv_loss_grad(p, Xb, Yb)
            upd, state = opt.update(g, state, p)
            upd = {k: np.asarray(v, np.float64) for k, v in upd.items()}
            rec["loss"].append(loss)
            rec["grad_norm"].append({k: np.sqrt(np.sum(v ** 2)) for k, v in g.items()})
            rec["param_norm"].append(np.sqrt(sum(np.sum(v ** 2) for v in p.values())))
            rec["update_norm"].append(np.sqrt(sum(np.sum(v ** 2) for v in upd.values())))
            p = {k: p[k] + upd[k] for k in p}
        rec["final_loss"] = mv_loss_grad(p, X, Y)[0]
    rec["loss"] = np.array(rec["loss"])
    return rec


def optax_twin(name, lr, beta=0.9):
    return optax.sgd(lr) if name == "gd" else optax.sgd(lr * (1 - beta), momentum=beta)


# ------------------------------------------------------------------ 1. sweep == independent loop
@pytest.mark.parametrize("opt_name", ["gd", "momentum"])
def test_grid_runs_equal_independent_loop(opt_name):
    lrs, seeds, init_scale = [0.02, 0.1], [0, 3, 7], 0.7
    fixed = {"init_scale": init_scale, **({"beta": 0.8} if opt_name == "momentum" else {})}
    res = run(mv_spec(optimizer=opt_name), X_MV, Y_MV, grid(lrs, seeds), fixed, chunk_size=6)
    assert res.dims["loss"] == ("lr", "seed", "step")
    assert res.metrics["loss"].shape == (2, 3, STEPS)
    params = list(res.coords["param"])
    assert sorted(params) == ["b", "w"]
    assert res.metrics["grad_norm"].shape == (2, 3, STEPS, 2)
    for i, lr in enumerate(lrs):
        for j, seed in enumerate(seeds):
            ref = mv_reference(optax_twin(opt_name, lr, 0.8), seed, init_scale, X_MV, Y_MV, STEPS)
            np.testing.assert_allclose(res.metrics["loss"][i, j], ref["loss"], rtol=RTOL)
            np.testing.assert_allclose(res.metrics["final_loss"][i, j], ref["final_loss"],
                                       rtol=RTOL)
            np.testing.assert_allclose(res.metrics["param_norm"][i, j], ref["param_norm"],
                                       rtol=RTOL)
            np.testing.assert_allclose(res.metrics["update_norm"][i, j], ref["update_norm"],
                                       rtol=RTOL)
            # grad_norm[..., q] belongs to leaf coords["param"][q]
            for q, name in enumerate(params):
                np.testing.assert_allclose(res.metrics["grad_norm"][i, j, :, q],
                                           [g[name] for g in ref["grad_norm"]], rtol=RTOL,
                                           err_msg=f"grad_norm of leaf {name!r} (index {q})")
            assert res.metrics["first_nonfinite"][i, j] == -1
    # the runs really differ by lr and seed (no broadcasting of one run)
    assert not np.allclose(res.metrics["loss"][0, 0], res.metrics["loss"][1, 0])
    assert not np.allclose(res.metrics["loss"][0, 0], res.metrics["loss"][0, 1])


# ------------------------------------------------------------------ 2. manual == autodiff grads
def test_manual_grad_equals_autodiff():
    g = grid([0.1, 0.5], [0, 1])
    man = run(tl_spec(grad="manual"), X_TL, Y_TL, g, chunk_size=4)
    auto = run(tl_spec(grad="autodiff"), X_TL, Y_TL, g, chunk_size=4)
    assert list(man.coords["param"]) == list(auto.coords["param"])
    assert_metrics_close(man, auto, rtol=RTOL)
    assert np.all(man.metrics["loss"][..., -1] < man.metrics["loss"][..., 0])  # it trains


# ------------------------------------------------------------------ 3. manual == optax impl
# Each (optimizer, impl) is its own compile: the fast tier runs the twins on the (cheaper to
# compile) multivariate model, whose 0-d bias leaf is an edge case of its own; the
# two_layer_sigmoid variant (4 leaves, nonconvex) runs with -m slow.
OPT_LRS = {"gd": [0.02, 0.1], "momentum": [0.02, 0.1], "rmsprop": [0.001, 0.01],
           "adam": [0.001, 0.01]}
TL_LRS = {**OPT_LRS, "gd": [0.1, 0.5], "momentum": [0.1, 0.5]}
MODEL_CASES = {"multivariate": (mv_spec, X_MV, Y_MV, OPT_LRS, [0, 3, 7], 6),
               "two_layer_sigmoid": (tl_spec, X_TL, Y_TL, TL_LRS, [0, 1], 4)}


@pytest.mark.parametrize("model", ["multivariate",
                                   pytest.param("two_layer_sigmoid", marks=pytest.mark.slow)])
@pytest.mark.parametrize("opt_name", list(OPT_LRS))
def test_manual_optimizer_equals_optax_twin(opt_name, model):
    make_spec, X, Y, lrs, seeds, chunk = MODEL_CASES[model]
    g = grid(lrs[opt_name], seeds)
    man = run(make_spec(optimizer=opt_name, impl="manual"), X, Y, g, chunk_size=chunk)
    tx = run(make_spec(optimizer=opt_name, impl="optax"), X, Y, g, chunk_size=chunk)
    assert_metrics_close(man, tx, rtol=1e-10,
                         names=("loss", "final_loss", "param_norm", "update_norm",
                                "first_nonfinite"))
    assert np.all(np.isfinite(man.metrics["loss"]))
    assert np.all(man.metrics["loss"][..., -1] < man.metrics["loss"][..., 0])  # it trains
    assert not np.allclose(man.metrics["loss"][0], man.metrics["loss"][1])    # lr reaches the run


# ------------------------------------------------------------------ 4. divergence stays in its run
def test_divergent_run_is_isolated_and_located():
    huge = 1e6  # diverges at step 23 (seed 0) and 24 (seed 1) of 30
    seeds = [0, 1]
    # lr axis [small, huge, small] in one chunk of 6: the diverging runs share a compiled call
    # with healthy ones, which must equal the same chunk with a healthy lr in the middle
    res = run(mv_spec(), X_MV, Y_MV, grid([0.02, huge, 0.1], seeds), chunk_size=6)
    alone = run(mv_spec(), X_MV, Y_MV, grid([0.02, 0.05, 0.1], seeds), chunk_size=6)
    assert res.stats["chunk_size"] == alone.stats["chunk_size"] == 6
    assert res.stats["chunks"] == 1
    for k in METRIC_NAMES:  # bitwise
        np.testing.assert_array_equal(res.metrics[k][[0, 2]], alone.metrics[k][[0, 2]], k)
    for k in METRIC_NAMES:
        assert np.all(np.isfinite(res.metrics[k][[0, 2]])), k
    np.testing.assert_array_equal(res.metrics["first_nonfinite"][[0, 2]], -1)

    for j, seed in enumerate(seeds):
        ref = mv_reference(optax.sgd(huge), seed, 1.0, X_MV, Y_MV, STEPS)
        bad = np.flatnonzero(~np.isfinite(ref["loss"]))
        assert bad.size, "reference run did not diverge within the steps; raise the lr"
        first = int(bad[0])
        assert res.metrics["first_nonfinite"][1, j] == first
        loss = res.metrics["loss"][1, j]
        assert np.all(np.isfinite(loss[:first]))
        assert not np.isfinite(loss[first])
        # the blow-up itself is reproduced (relative error grows ~linearly in steps)
        np.testing.assert_allclose(loss[:first], ref["loss"][:first], rtol=1e-9)
    np.testing.assert_array_equal(res.diverged(), [[False, False], [True, True], [False, False]])


# ------------------------------------------------------------------ 5. chunking
def test_chunked_equals_unchunked_and_is_deterministic():
    g = grid([0.02, 0.1], [0, 3, 7])
    whole = run(mv_spec(), X_MV, Y_MV, g, {"init_scale": 0.7}, chunk_size=6)
    parts = run(mv_spec(), X_MV, Y_MV, g, {"init_scale": 0.7}, chunk_size=3)
    again = run(mv_spec(), X_MV, Y_MV, g, {"init_scale": 0.7}, chunk_size=3)
    assert (whole.stats["chunks"], parts.stats["chunks"]) == (1, 2)
    assert_metrics_close(whole, parts, rtol=RTOL)
    assert_metrics_equal(parts, again)


# ------------------------------------------------------------------ 6. sharding over devices
SHARD_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from bpexp import sweep, train
    assert jax.config.jax_enable_x64, "JAX_ENABLE_X64 not honoured"
    devs = jax.devices()
    assert len(devs) == 4, devs
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 16))
    Y = rng.normal(size=(1, 3)) @ X + 0.1 * rng.normal(size=(1, 16))
    spec = train.TrainSpec(model="multivariate", n=3, d_out=1, m=16, steps=30, optimizer="momentum",
                           dtype="float64", opt_hparams=("lr", "beta"))
    g = sweep.Grid({"lr": np.array([0.01, 0.05, 0.1]), "seed": np.arange(3)})  # 9 runs: padding
    runs = {"d4c8": dict(devices=devs, chunk_size=8), "d1c8": dict(devices=devs[:1], chunk_size=8),
            "d1c2": dict(devices=devs[:1], chunk_size=2), "d4c6": dict(devices=devs, chunk_size=6)}
    out = {}
    for name, kw in runs.items():
        r = sweep.run_grid(spec, X, Y, g, progress=False, **kw)
        out.update({f"{name}__{k}": v for k, v in r.metrics.items()})
        out[f"{name}__devices"] = np.array(r.stats["devices"])
        out[f"{name}__chunk_size"] = np.array(r.stats["chunk_size"])
        out[f"{name}__chunks"] = np.array(r.stats["chunks"])
    np.savez(sys.argv[1], **out)
""")


def test_sharded_equals_unsharded(tmp_path):
    path = tmp_path / "shard.npz"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, str(path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    z = np.load(path, allow_pickle=False)
    assert len(z["d4c8__devices"]) == 4 and len(set(z["d4c8__devices"])) == 4
    assert len(z["d1c8__devices"]) == 1
    # chunks are rectangles of the grid: 8 -> 2 lrs x 3 seeds (twice); 2 -> 1 lr x 2 seeds
    # and 1 lr x (1 seed + padding) per lr
    assert int(z["d4c8__chunks"]) == 2 and int(z["d1c2__chunks"]) == 6
    assert int(z["d4c6__chunk_size"]) == 8  # rounded up so every device gets the same share

    def get(name):
        return {k: z[f"{name}__{k}"] for k in METRIC_NAMES}

    d4c8, d1c8, d1c2, d4c6 = get("d4c8"), get("d1c8"), get("d1c2"), get("d4c6")
    assert d4c8["loss"].shape == (3, 3, 30)
    for other in (d1c8, d1c2):
        for k in METRIC_NAMES:
            np.testing.assert_allclose(d4c8[k], other[k], rtol=RTOL, atol=1e-300, err_msg=k)
    for k in METRIC_NAMES:
        # 4 devices x chunk 8 runs the same per-device program (2 runs) as 1 device x chunk 2,
        # and the same compiled executable as devices=4, chunk_size=6 (-> 8): bitwise.
        np.testing.assert_array_equal(d4c8[k], d1c2[k], err_msg=k)
        np.testing.assert_array_equal(d4c8[k], d4c6[k], err_msg=k)


# ------------------------------------------------------------------ 7. no recompile on new values
def test_new_values_do_not_recompile():
    spec = mv_spec(steps=17)  # used by no other test: the compile cache is module-global
    before = sweep.COMPILES["count"]
    a = run(spec, X_MV, Y_MV, grid([0.01, 0.02], [0, 1]), chunk_size=4)
    b = run(spec, X_MV, Y_MV, grid([0.3, 0.05], [5, 9]), {"init_scale": 2.0}, chunk_size=4)
    assert sweep.COMPILES["count"] - before == 1
    assert a.stats["compile_s"] > 0 and b.stats["compile_s"] == 0.0
    assert not np.allclose(a.metrics["loss"], b.metrics["loss"])  # new values were used
    ref = mv_reference(optax.sgd(0.05), 9, 2.0, X_MV, Y_MV, 17)
    np.testing.assert_allclose(b.metrics["loss"][1, 1], ref["loss"], rtol=RTOL)


# ------------------------------------------------------------------ 8. mini-batches
def test_minibatch_epochs_follow_key_derivation():
    lr, seeds, bs = 0.05, [0, 2], 4
    res = run(mv_spec(batch_size=bs), X_MV, Y_MV, grid([lr], seeds), chunk_size=3)
    per_epoch = M // bs
    for j, seed in enumerate(seeds):
        _, k_batch = mv_init(seed, 1.0)
        perms = [np.asarray(jax.random.permutation(jax.random.fold_in(k_batch, e), M))
                 for e in range(-(-STEPS // per_epoch))]
        batches = [perms[t // per_epoch][(t % per_epoch) * bs:(t % per_epoch + 1) * bs]
                   for t in range(STEPS)]
        for e in range(len(perms)):  # one epoch covers every column exactly once
            cols = np.concatenate(batches[e * per_epoch:(e + 1) * per_epoch])
            if len(cols) == M:
                np.testing.assert_array_equal(np.sort(cols), np.arange(M))
        assert not np.array_equal(perms[0], perms[1])  # a fresh permutation per epoch
        ref = mv_reference(optax.sgd(lr), seed, 1.0, X_MV, Y_MV, STEPS,
                           batch_of=lambda t: (X_MV[:, batches[t]], Y_MV[:, batches[t]]))
        np.testing.assert_allclose(res.metrics["loss"][0, j], ref["loss"], rtol=RTOL)
        np.testing.assert_allclose(res.metrics["final_loss"][0, j], ref["final_loss"], rtol=RTOL)
        full0 = mv_loss_grad(mv_init(seed, 1.0)[0], X_MV, Y_MV)[0]
        assert not np.isclose(res.metrics["loss"][0, j, 0], full0)  # step 0 really saw a batch


def test_batch_size_zero_or_at_least_m_is_full_batch():
    assert mv_spec(batch_size=0).batch == M
    assert mv_spec(batch_size=M).batch == M
    assert mv_spec(batch_size=M + 4).batch == M
    assert mv_spec(batch_size=4).batch == 4
    g = grid([0.05, 0.1], [0, 1])
    full = run(mv_spec(batch_size=0), X_MV, Y_MV, g, chunk_size=3)
    big = run(mv_spec(batch_size=M + 4), X_MV, Y_MV, g, chunk_size=3)
    assert_metrics_close(full, big, rtol=RTOL)
    with pytest.raises(ValueError, match="batch_size"):
        train.make_run(mv_spec(batch_size=-1))


# ------------------------------------------------------------------ 9. record_every
def test_record_every_subsamples_the_full_record():
    # lr 1e6 diverges between recorded steps (23, 24): first_nonfinite must still be exact
    g = grid([0.05, 1e6], [0, 1])
    full = run(mv_spec(), X_MV, Y_MV, g, chunk_size=3)
    sub = run(mv_spec(record_every=5), X_MV, Y_MV, g, chunk_size=3)
    assert sub.metrics["loss"].shape == (2, 2, STEPS // 5)
    assert sub.metrics["grad_norm"].shape == (2, 2, STEPS // 5, 2)
    np.testing.assert_array_equal(sub.coords["step"], np.arange(0, STEPS, 5))
    for k in ("loss", "grad_norm", "param_norm", "update_norm"):
        np.testing.assert_allclose(sub.metrics[k], full.metrics[k][:, :, ::5], rtol=RTOL, err_msg=k)
    np.testing.assert_allclose(sub.metrics["final_loss"], full.metrics["final_loss"], rtol=RTOL)
    np.testing.assert_array_equal(sub.metrics["first_nonfinite"], full.metrics["first_nonfinite"])
    assert np.all(full.metrics["first_nonfinite"][1] % 5 != 0), "pick an lr diverging off-record"


def test_record_every_must_divide_steps():
    with pytest.raises(ValueError, match="record_every"):
        train.make_run(mv_spec(record_every=7))
    with pytest.raises(ValueError, match="record_every"):
        run(mv_spec(record_every=7), X_MV, Y_MV, grid([0.1], [0]), chunk_size=1)


# ------------------------------------------------------------------ 10. axes from the config
def test_lr_values():
    np.testing.assert_allclose(
        make.lr_values({"start": 0.01, "stop": 10, "num": 4, "log": True}, 0.1),
        np.geomspace(0.01, 10, 4), rtol=1e-15)
    np.testing.assert_allclose(make.lr_values({"start": 0.01, "stop": 10, "num": 4}, 0.1),
                               np.geomspace(0.01, 10, 4), rtol=1e-15)  # log is the default
    np.testing.assert_allclose(
        make.lr_values({"start": 0.1, "stop": 1, "num": 4, "log": False}, 0.1),
        np.linspace(0.1, 1, 4), rtol=1e-15)
    np.testing.assert_array_equal(make.lr_values([0.1, 0.3], 0.5), [0.1, 0.3])
    np.testing.assert_array_equal(make.lr_values(0.3, 0.5), [0.3])
    np.testing.assert_array_equal(make.lr_values(None, 0.5), [0.5])
    for bad in ({"start": 0, "stop": 1, "num": 3}, {"start": 0.1, "stop": 1},
                {"start": 0.1, "stop": 1, "num": 0},
                {"start": 0.1, "stop": 1, "num": 3, "step": 2}, [], [0.1, -0.2], [0.0]):
        with pytest.raises(ValueError, match="sweep.lr"):
            make.lr_values(bad, 0.1)


def test_seed_values():
    np.testing.assert_array_equal(make.seed_values(3, base=5), [5, 6, 7])
    np.testing.assert_array_equal(make.seed_values(2), [0, 1])
    np.testing.assert_array_equal(make.seed_values([4, 1]), [4, 1])
    for bad in (0, -1, [], [1.5], True):
        with pytest.raises(ValueError, match="sweep.seeds"):
            make.seed_values(bad)


def _cfg(**sweep_kw) -> config.Cfg:
    cfg = config.Cfg(experiment=None)
    cfg.optimizer.name = "momentum"
    cfg.optimizer.lr = 0.05
    cfg.optimizer.beta = 0.7
    cfg.model.init_scale = 1.5
    cfg.seed = 10
    for k, v in sweep_kw.items():
        setattr(cfg.sweep, k, v)
    return cfg


def test_grid_from_cfg_make_grid():
    g, fixed = make.grid(_cfg(lr=[0.1, 0.2, 0.4], seeds=2, hparams={"beta": [0, 0.9]}))
    assert list(g.axes) == ["lr", "seed", "beta"]
    assert g.shape == (3, 2, 2) and g.size == 12
    np.testing.assert_array_equal(g.axes["lr"], [0.1, 0.2, 0.4])
    np.testing.assert_array_equal(g.axes["seed"], [10, 11])
    np.testing.assert_array_equal(g.axes["beta"], [0.0, 0.9])
    assert fixed == {"init_scale": 1.5}  # beta is swept, so not fixed
    flat = g.flat()
    # row-major
    assert flat["lr"][:4].tolist() == [0.1] * 4 and flat["beta"][:4].tolist() == [0, 0.9, 0, 0.9]

    g, fixed = make.grid(_cfg(init_scale=[0.5, 1.0]))
    assert list(g.axes) == ["lr", "seed", "init_scale"]
    np.testing.assert_array_equal(g.axes["lr"], [0.05])  # None -> optimizer.lr
    np.testing.assert_array_equal(g.axes["seed"], [10])
    assert fixed == {"beta": 0.7}

    with pytest.raises(ValueError, match="beta1"):
        make.grid(_cfg(hparams={"beta1": [0.5]}))
    with pytest.raises(ValueError, match="lr"):  # lr is its own axis, not an hparam
        make.grid(_cfg(hparams={"lr": [0.5]}))


# ------------------------------------------------------------------ 11. as an xarray.Dataset
def test_dataset_round_trip_through_zarr(tmp_path):
    import xarray as xr

    from bpexp import store

    lrs, seeds = [0.02, 0.1], [0, 3, 7]
    res = run(mv_spec(), X_MV, Y_MV, grid(lrs, seeds), {"init_scale": 0.7}, chunk_size=6)
    store.write_dataset(tmp_path / "metrics.zarr", res.dataset())
    z = xr.open_zarr(tmp_path / "metrics.zarr")
    assert z["loss"].dims == ("lr", "seed", "step")
    assert z["grad_norm"].dims == ("lr", "seed", "step", "param")
    assert z["final_loss"].dims == ("lr", "seed")
    np.testing.assert_array_equal(z["lr"], lrs)
    np.testing.assert_array_equal(z["seed"], seeds)
    np.testing.assert_array_equal(z["step"], np.arange(STEPS))
    assert z["param"].values.tolist() == list(res.coords["param"])
    for k in METRIC_NAMES:
        np.testing.assert_array_equal(z[k].values, res.metrics[k])
    assert all(k.startswith("gd_") for k in res.dataset(prefix="gd_").data_vars)


# ------------------------------------------------------------------ 12. memory
def test_auto_chunk_bounds_memory():
    digits = train.TrainSpec(model="two_layer_sigmoid", n=64, d_out=10, m=1797, steps=200,
                             model_hparams=(("hidden", 32),), opt_hparams=("lr",))
    c = sweep.auto_chunk(digits, 100_000, 1)
    assert 1 <= c < 100_000
    c4 = sweep.auto_chunk(digits, 100_000, 4)
    assert c4 >= 4 and c4 % 4 == 0
    assert sweep.auto_chunk(mv_spec(), 10, 1) == 10  # never more than the runs


@pytest.mark.slow
def test_hundred_thousand_runs():
    steps = 20
    spec = mv_spec(steps=steps, record_every=steps)
    A = np.vstack([X_MV, np.ones((1, M))])
    lam_max = np.linalg.eigvalsh(2.0 / M * A @ A.T).max()  # Hessian of the MSE in (w, b)
    lrs = np.linspace(0.01, 1.0, 1000) / lam_max          # < 2 / lam_max: stable, monotone
    seeds = np.arange(100)
    res = run(spec, X_MV, Y_MV, grid(lrs, seeds))
    assert res.stats["runs"] == 100_000
    assert res.metrics["loss"].shape == (1000, 100, 1)
    assert res.metrics["grad_norm"].shape == (1000, 100, 1, 2)
    assert res.metrics["final_loss"].shape == (1000, 100)
    assert not res.diverged().any()
    assert np.all(np.isfinite(res.metrics["final_loss"]))
    assert np.all(res.metrics["final_loss"] < res.metrics["loss"][..., 0])
    for i, j in [(0, 0), (499, 37), (999, 99)]:
        ref = mv_reference(optax.sgd(lrs[i]), int(seeds[j]), 1.0, X_MV, Y_MV, steps)
        np.testing.assert_allclose(res.metrics["loss"][i, j, 0], ref["loss"][0], rtol=RTOL)
        np.testing.assert_allclose(res.metrics["final_loss"][i, j], ref["final_loss"], rtol=RTOL)
