"""The adaptive edge-of-stability experiment: the preconditioner equals the one the optimizer
(hand-written and optax) divides its step by, the thresholds against a simulated frozen-P
recursion, the Lanczos values against dense numpy eigenvalues of P^-1 H and H (along a real
Adam run replayed with optax), a small CLI run whose Adam and RMSprop runs hover at their
thresholds, the takeaways against the summary, bad input, and (slow) the default run."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bpexp
from bpexp import data, docs, models, optim, theory
from bpexp.errors import UserError
from bpexp.experiments import adaptive_eos as E
from bpexp.experiments.adaptive_eos import figures
from bpexp.experiments.adaptive_eos import run as R
from bpexp.experiments.adaptive_eos import theory as T
from helpers import build_cfg, run_experiment


# ---------------------------------------------------------------- the preconditioner
def _grads(rng, shapes, k):
    return [{n: jnp.asarray(rng.normal(size=s)) for n, s in shapes.items()} for _ in range(k)]


SHAPES = {"W": (3, 2), "b": (3, 1)}


def test_adam_preconditioner_is_optax_adams_and_divides_the_update():
    """Five steps on the same gradients: P read from bpexp's Adam state equals P computed in
    numpy from optax.adam's state (count, mu, nu), and both updates are exactly -lr P^-1 m."""
    hp = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    mine = optim.get("adam", **hp)
    ref = optax.adam(hp["lr"], b1=hp["beta1"], b2=hp["beta2"], eps=hp["eps"])
    params = {n: jnp.zeros(s) for n, s in SHAPES.items()}
    s_mine, s_ref = mine.init(params), ref.init(params)
    for g in _grads(np.random.default_rng(0), SHAPES, 5):
        u_mine, s_mine = mine.update(g, s_mine, params)
        u_ref, s_ref = ref.update(g, s_ref, params)
        P = T.preconditioner("adam", s_mine, hp)
        st = s_ref[0]                                          # ScaleByAdamState
        t = int(st.count)
        for n in SHAPES:
            nu, mu = np.asarray(st.nu[n]), np.asarray(st.mu[n])
            P_ref = (1 - 0.9 ** t) * (np.sqrt(nu / (1 - 0.999 ** t)) + 1e-8)
            np.testing.assert_allclose(np.asarray(P[n]), P_ref, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(u_ref[n]), -0.01 * mu / P_ref, rtol=1e-10)
            np.testing.assert_allclose(np.asarray(u_mine[n]), -0.01 * np.asarray(
                T.first_moment("adam", s_mine, g)[n]) / np.asarray(P[n]), rtol=1e-12)


def test_rmsprop_and_momentum_preconditioners():
    """RMSprop: P = sqrt(nu) + eps from optax.rmsprop(eps_in_sqrt=False)'s state, the update
    -lr g / P; momentum: P = 1 and the update -lr v."""
    rng = np.random.default_rng(1)
    params = {n: jnp.zeros(s) for n, s in SHAPES.items()}
    hp = {"lr": 0.003, "beta2": 0.99, "eps": 1e-8}
    mine = optim.get("rmsprop", **hp)
    ref = optax.rmsprop(0.003, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    s_mine, s_ref = mine.init(params), ref.init(params)
    mom = optim.get("momentum", lr=0.5, beta=0.9)
    s_mom = mom.init(params)
    for g in _grads(rng, SHAPES, 4):
        u_mine, s_mine = mine.update(g, s_mine, params)
        _, s_ref = ref.update(g, s_ref, params)
        u_mom, s_mom = mom.update(g, s_mom, params)
        P, Pm = T.preconditioner("rmsprop", s_mine, hp), T.preconditioner("momentum", s_mom, {})
        for n in SHAPES:
            P_ref = np.sqrt(np.asarray(s_ref[0].nu[n])) + 1e-8
            np.testing.assert_allclose(np.asarray(P[n]), P_ref, rtol=1e-12)
            np.testing.assert_allclose(np.asarray(u_mine[n]), -0.003 * np.asarray(g[n]) / P_ref,
                                       rtol=1e-12)
            assert np.all(np.asarray(Pm[n]) == 1.0)
            np.testing.assert_allclose(np.asarray(u_mom[n]), -0.5 * np.asarray(
                T.first_moment("momentum", s_mom, g)[n]), rtol=1e-14)


# ---------------------------------------------------------------- the thresholds
def _frozen(lam, lr, beta, steps=4000):
    """|w| after ``steps`` of w -= lr m, m = beta m + (1 - beta) lam w (P frozen, one mode of
    P^-1 H with eigenvalue lam), from w = 1."""
    w, m = 1.0, 0.0
    for _ in range(steps):
        m = beta * m + (1 - beta) * lam * w
        w -= lr * m
    return abs(w)


@pytest.mark.parametrize("name,beta", [("adam", 0.9), ("adam", 0.5), ("rmsprop", 0.0),
                                       ("momentum", 0.9)])
def test_threshold_is_where_the_frozen_recursion_turns_unstable(name, beta):
    lr = 0.01
    thr = T.threshold(name, lr, beta)
    assert _frozen(0.99 * thr, lr, beta) < 1e-3 and _frozen(1.01 * thr, lr, beta) > 1e3
    if name == "adam" and beta == 0.9:
        assert thr == pytest.approx(38 / lr, rel=1e-14)
    if name == "momentum":      # bpexp.theory's lr bound solved for the curvature
        assert theory.momentum_threshold(thr, beta) == pytest.approx(lr, rel=1e-14)


# ---------------------------------------------------------------- Lanczos vs dense
def _small_net(m=40, n=8):
    ds = data.load("digits", m=m, dtype=np.float64)
    X, Y = jnp.asarray(ds.X[:n]), jnp.asarray(ds.Y)
    model = models.get("mlp", activation="tanh", output="identity_mse")

    def init_fn(key):
        return model.init(key, n, 10, hidden=4, depth=1, dtype=jnp.float64)

    return model, init_fn, X, Y


def _dense(hessian, flat, P):
    """(largest eigenvalue of P^-1 H, of H) in numpy float64, H = ``hessian(flat)``."""
    H = np.asarray(hessian(flat))
    return float(np.max(np.linalg.eigvals(H / P[:, None]).real)), float(np.linalg.eigvalsh(H)[-1])


@pytest.mark.slow
def test_sharpness_pair_matches_dense_eigenvalues_of_P_inv_H():
    """A random diagonal P spread over 4 decades: lambda_max(P^-1/2 H P^-1/2) by Lanczos equals
    the largest eigenvalue of the non-symmetric P^-1 H (numpy, float64), row 1 that of H.
    (slow: its own compile; the replay test below checks the same routine on Adam's P)"""
    model, init_fn, X, Y = _small_net()
    flat, unravel = jax.flatten_util.ravel_pytree(init_fn(jax.random.PRNGKey(2)))
    P = jnp.asarray(10.0 ** np.random.default_rng(3).uniform(-4, 0, flat.shape))
    g = jax.grad(lambda x: model.loss(unravel(x), X, Y))
    V = jax.random.normal(jax.random.PRNGKey(4), (2,) + flat.shape, jnp.float64)
    lam, _, res = jax.jit(lambda P, V: T.sharpness_pair(
        lambda u: jax.jvp(g, (flat,), (u,))[1], P, V, 60))(P, V)
    dense_p, dense_h = _dense(jax.jit(jax.hessian(lambda x: model.loss(unravel(x), X, Y))), flat,
                              np.asarray(P))
    assert float(lam[0]) == pytest.approx(dense_p, rel=1e-8)
    assert float(lam[1]) == pytest.approx(dense_h, rel=1e-8)
    assert float(res[0]) < 1e-6 * dense_p


def test_scan_measures_the_step_own_P_along_an_optax_adam_replay():
    """The experiment's scan (bpexp Adam, warm Lanczos every 5 steps) vs a replay with optax.adam:
    at steps 0, 5, 10 the preconditioned sharpness equals the dense top eigenvalue of P_t^-1 H_t,
    P_t from optax's state after the update at step t (the step from those parameters), the raw
    one that of H_t, and the losses agree."""
    model, init_fn, X, Y = _small_net()
    hp = {"lr": 0.02, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    one = R.with_sharpness("adam", model.loss, model.grad, init_fn, steps=10, every=5, iters=40)
    key = jax.random.PRNGKey(7)
    out = jax.jit(one)(hp, key, X, Y)
    flat, unravel = jax.flatten_util.ravel_pytree(init_fn(jax.random.split(key)[0]))
    opt = optax.adam(0.02, b1=0.9, b2=0.999, eps=1e-8)
    state = opt.init(flat)
    loss = jax.jit(lambda x: model.loss(unravel(x), X, Y))
    step = jax.jit(lambda x, s: opt.update(jax.grad(loss)(x), s, x))
    hessian = jax.jit(jax.hessian(loss))
    for t in range(11):
        upd, state = step(flat, state)
        assert float(out["loss"][t]) == pytest.approx(float(loss(flat)), rel=1e-9)
        if t % 5 == 0:
            st = state[0]
            c = int(st.count)
            P = (1 - 0.9 ** c) * (np.sqrt(np.asarray(st.nu) / (1 - 0.999 ** c)) + 1e-8)
            dense_p, dense_h = _dense(hessian, flat, P)
            assert float(out["precond"][t // 5]) == pytest.approx(dense_p, rel=1e-6), t
            assert float(out["raw"][t // 5]) == pytest.approx(dense_h, rel=1e-6), t
        flat = optax.apply_updates(flat, upd)


# ---------------------------------------------------------------- the numbers
def test_late_mean_first_step_and_regime():
    steps = np.arange(9) * 10                                  # last quarter: steps >= 60
    assert R.late_mean([0, 0, 0, 0, 0, 0, 1.0, 2.0, 3.0], steps, 0.25) == pytest.approx(2.0)
    assert math.isnan(R.late_mean([1.0] * 8 + [np.nan], steps, 0.25))
    ratio = [5.0, 0.2, 0.5, 0.95, 1.0, 0.8, 1.0, 1.0, 1.0]     # start-up transient, then rise
    assert R.first_step(steps, ratio) == 30
    assert R.first_step(steps, [1.0] * 9) == 0 and R.first_step(steps, [0.5] * 9) is None
    assert R.regime(1.05, 30, 60, True, 0.1) == "at the edge"
    assert R.regime(1.2, 30, 60, True, 0.1) == "above the edge"
    assert R.regime(float("nan"), None, 60, False, 0.1) == "diverged"
    assert "never reached" in R.regime(0.7, None, 60, True, 0.1)
    assert "too short" in R.regime(0.8, 70, 60, True, 0.1)
    assert "fell back" in R.regime(0.8, 30, 60, True, 0.1)


def _check_takeaways(s):
    """Every title and "What this run shows" number recomputed from the summary."""
    for name in ("adam", "rmsprop", "momentum"):
        runs = [s["runs"][k] for k in s["labels"] if s["runs"][k]["optimizer"] == name]
        if not runs:
            continue
        late = [x for r in runs for x in r["late_ratio"] if x is not None]
        regimes = [g for r in runs for g in r["regime"]]
        at = regimes.count("at the edge")
        text = figures.takeaway(s, name)
        assert f"late mean {min(late):.2f}-{max(late):.2f} x threshold" in text
        assert ("all runs hover" in text) == (at == len(regimes))
        assert (f"({regimes.count('diverged')} diverged)" in text) == ("diverged" in regimes)
        if name != "momentum":
            raw = max(x for r in runs for x in r["late_raw_over_2_over_lr"])
            assert f"raw sharpness only {raw:.2g} x 2/lr" in text
    regimes = [g for k in s["labels"] for g in s["runs"][k]["regime"]]
    head = figures.headline(s)
    assert head.startswith(f"{regimes.count('at the edge')} of {len(regimes)} runs hover")
    if s["adaptive_raw_ratio_max"] is not None:
        raw = max(x for k in s["labels"] if s["runs"][k]["optimizer"] != "momentum"
                  for x in s["runs"][k]["late_raw_over_2_over_lr"])
        assert f"raw sharpness <= {raw:.2g} x 2/lr" in head
    shows = " ".join(E.shows(s))
    for k in s["labels"]:
        mean = s["runs"][k]["late_ratio_mean"]
        assert (f"{mean:.3f}" if mean is not None else "nan") in shows
        for r, g in zip(s["runs"][k]["late_ratio"], s["runs"][k]["regime"]):
            assert (r is not None and abs(r - 1) <= s["edge_tol"]) == (g == "at the edge")
            assert (r is None) == (g == "diverged")


def test_cli_small_run_hovers_at_the_adaptive_edge(tmp_path):
    """m = 200, 240 steps, Adam (beta1 0.9) at lr 0.01, one seed: the late mean of the
    preconditioned sharpness is within 10% of 38/lr (the done criterion at small size; RMSprop's
    is in the slow default run), after it rose from below 0.5 x 38/lr (progressive
    sharpening); the raw sharpness stays far below 2/lr."""
    run_dir = run_experiment("adaptive_eos", tmp_path, "train.steps=240", "experiment.seeds=1",
                             "experiment.adam_lrs=[0.01]", "experiment.adam_beta1s=[0.9]",
                             "experiment.rmsprop_lrs=[]", "experiment.momentum_lrs=[]")
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["labels"] == ["adam b1=0.9 lr=0.01"]
    adam = s["runs"][s["labels"][0]]
    assert adam["threshold"] == pytest.approx(3800)
    assert abs(adam["late_ratio"][0] - 1) <= 0.1, adam["late_ratio"]
    assert adam["regime"] == ["at the edge"] and adam["late_raw_over_2_over_lr"][0] < 0.2
    pre = np.asarray(adam["precond_sharpness"][0], float) / 3800
    assert pre[1:5].min() < 0.5 and adam["first_step_ratio_ge_0.9"][0] > 0
    # stored arrays equal the summary's; late means recomputed from them
    ds = bpexp.load(run_dir)
    assert ds["precond_sharpness"].dims == ("run", "seed", "measurement_step")
    assert ds["run"].values.tolist() == s["labels"]
    np.testing.assert_array_equal(ds["precond_sharpness"].values[0], adam["precond_sharpness"])
    np.testing.assert_array_equal(ds["raw_sharpness"].values[0], adam["raw_sharpness"])
    late = ds["measurement_step"].values >= 180
    ratio = ds["precond_sharpness"].values[0, 0, late].mean() / float(ds["threshold"][0])
    assert ratio == pytest.approx(adam["late_ratio"][0], rel=1e-6)
    assert s["max_rel_residual"]["precond"] < 0.05
    _check_takeaways(s)
    report = (run_dir / "report.md").read_text()
    assert "## What this run shows" in report and E.shows(s)[0] in report
    assert "aeos-ratio" in (run_dir / "report.html").read_text()      # the page's own figures
    for f in ("late_ratios.png", "adam.png"):
        assert (run_dir / "figures" / f).stat().st_size > 10_000
    block = E.readme(docs.record(run_dir))
    assert f"{adam['late_ratio'][0]:.3f}" in block and "adam b1=0.9 lr=0.01" in block


@pytest.mark.parametrize("key,value", [
    ("adam_lrs", [0.0]), ("adam_lrs", [0.01, 0.01]), ("rmsprop_lrs", [float("nan")]),
    ("adam_beta1s", [1.0]), ("adam_beta1s", []), ("momentum_beta", -0.1), ("beta2", 1.0),
    ("eps", -1.0), ("every", 7), ("seeds", 0), ("lanczos_iters", 1), ("late_fraction", 0.0),
    ("edge_tol", 1.5)])
def test_bad_values_are_one_line_user_errors(key, value):
    """train.steps = 200 (the schema default): every = 7 does not divide it."""
    with pytest.raises(UserError) as e:
        build_cfg({"experiment": {"name": "adaptive_eos", key: value}, "model": {"name": "mlp"}})
    msg = str(e.value)
    assert f"experiment.{key}={value!r}" in msg and "allowed" in msg and "\n" not in msg


@pytest.mark.parametrize("tree,key", [({"optimizer": {"name": "adam"}}, "optimizer.name="),
                                      ({"train": {"batch_size": 32}}, "train.batch_size=32")])
def test_other_sections_are_checked(tree, key):
    with pytest.raises(UserError) as e:
        build_cfg({"experiment": {"name": "adaptive_eos"}, "model": {"name": "mlp"}, **tree})
    assert key in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_a_nonzero_exit(tmp_path):
    """(slow: a process of its own; the in-process checks above are the fast ones)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=adaptive_eos",
                        f"outputs.root={tmp_path}", "experiment.adam_beta1s=[1.0]"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "experiment.adam_beta1s=[1.0]" in lines[0], p.stderr
    assert not list(tmp_path.rglob("env.json")), "no run folder for bad input"


@pytest.mark.slow
def test_default_run_reaches_the_adaptive_edge(tmp_path):
    """The README's command: every Adam (beta1 0.9 and 0.5) and RMSprop run has its late mean
    preconditioned sharpness within 10% of its threshold (the done criterion); momentum at lr 3
    hovers at (2 + 2 beta)/((1 - beta) lr), at lr 2 it is still sharpening and says so."""
    run_dir = run_experiment("adaptive_eos", tmp_path)
    s = json.loads((run_dir / "summary.json").read_text())
    for k in s["labels"]:
        r = s["runs"][k]
        if r["optimizer"] in ("adam", "rmsprop"):
            assert all(abs(x - 1) <= 0.1 for x in r["late_ratio"]), (k, r["late_ratio"])
            assert all(x < 0.2 for x in r["late_raw_over_2_over_lr"]), k
    mom2, mom3 = s["runs"]["momentum b=0.9 lr=2"], s["runs"]["momentum b=0.9 lr=3"]
    assert all(abs(x - 1) <= 0.1 for x in mom3["late_ratio"]), mom3["late_ratio"]
    assert all(g.startswith("below: never reached") for g in mom2["regime"]), mom2["regime"]
    assert all(x > 1 for x in mom3["late_raw_over_2_over_lr"])   # far above GD's 2/lr
    _check_takeaways(s)


@pytest.mark.slow
def test_a_diverging_run_is_reported_as_diverged(tmp_path):
    """Momentum at lr 8 (threshold 4.75, below the sharpness at init) diverges: its regime says
    so, its late ratio is null, the title counts it, and the README block still renders."""
    run_dir = run_experiment("adaptive_eos", tmp_path, "train.steps=100", "experiment.seeds=1",
                             "experiment.adam_lrs=[]", "experiment.rmsprop_lrs=[]",
                             "experiment.momentum_lrs=[3.0,8.0]")
    s = json.loads((run_dir / "summary.json").read_text())
    r = s["runs"]["momentum b=0.9 lr=8"]
    assert r["regime"] == ["diverged"] and r["late_ratio"] == [None]
    assert s["momentum_late_ratio_range"] == [s["runs"]["momentum b=0.9 lr=3"]["late_ratio"][0]] * 2
    assert "(1 diverged)" in figures.takeaway(s, "momentum")
    _check_takeaways(s)
    assert "| momentum b=0.9 lr=8 |" in E.readme(docs.record(run_dir))
