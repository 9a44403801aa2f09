"""Residual and batch-normalized mlp layers: the hand-derived backward pass (bpexp.stacked with
residual=True / norm="batch") against jax.grad (rel 1e-10, float64), against central finite
differences of an independent numpy forward pass, the degenerate batch sizes m = 1 and m = 2,
and the sweep engine training them vmapped over lr, seed and init_scale."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_all_close, build_cfg
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from bpexp import make, models, primitives, stacked, sweep, train, xla
from bpexp.errors import UserError

TOL_AUTODIFF, TOL_FD, TOL_NUMPY = 1e-10, 1e-6, 1e-12
EPS = primitives.BN_EPS


# ---------------------------------------------------------------- independent numpy reference
def np_act(name, z):
    return {"sigmoid": lambda v: 0.5 * (1 + np.tanh(0.5 * v)), "tanh": np.tanh,
            "relu": lambda v: np.maximum(v, 0.0)}[name](z)


def np_loss(p, X, Y, act, out, residual, norm):
    """The mlp loss in numpy float64, written from the README's equations."""
    L = sum(k.startswith("W") for k in p)
    a = X
    for l in range(1, L):
        z = p[f"W{l}"] @ a + p[f"b{l}"]
        if norm == "batch":
            mu = z.mean(axis=1, keepdims=True)
            var = ((z - mu) ** 2).mean(axis=1, keepdims=True)
            z = p[f"gamma{l}"] * (z - mu) / np.sqrt(var + EPS) + p[f"beta{l}"]
        f = np_act(act, z)
        a = a + f if residual and a.shape[0] == f.shape[0] else f
    z = p[f"W{L}"] @ a + p[f"b{L}"]
    m = Y.shape[1]
    if out == "identity_mse":
        return np.sum((z - Y) ** 2) / m
    if out == "sigmoid_mse":
        return np.sum((np_act("sigmoid", z) - Y) ** 2) / m
    if out == "sigmoid_ce":
        return np.sum(np.logaddexp(0, z) - Y * z) / m
    zs = z - z.max(axis=0, keepdims=True)
    return -np.sum(Y * (zs - np.log(np.exp(zs).sum(axis=0, keepdims=True)))) / m


def problem(rng, out, n, m, d, hidden, depth, model):
    d = 1 if out.startswith("sigmoid") else max(d, 2)
    X = rng.standard_normal((n, m))
    if out == "identity_mse":
        Y = rng.standard_normal((d, m))
    elif out == "softmax_ce":
        Y = np.eye(d)[:, rng.integers(0, d, m)]
    else:
        Y = (rng.uniform(size=(d, m)) > 0.5).astype(np.float64)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), n, d, hidden=hidden,
                                               depth=depth, dtype=jnp.float64))
    p = {k: rng.standard_normal(v.shape) for k, v in shapes.items()}  # gamma, beta random too
    return p, X, Y


def rel(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    nb = float(jnp.linalg.norm(b))
    return float(jnp.linalg.norm(a - b)) / (nb if nb > 0 else 1.0)


def fd_check(p, X, Y, g, args, rng, n_dirs=6, h=1e-5):
    """Central differences of the numpy loss along random unit directions vs g . u."""
    flat, unravel = ravel_pytree(p)
    gflat = np.asarray(ravel_pytree(g)[0])
    errs = []
    for _ in range(n_dirs):
        u = rng.standard_normal(flat.shape)
        u /= np.linalg.norm(u)
        def at(t):
            return np_loss({k: np.asarray(v) for k, v in unravel(flat + t * u).items()}, X, Y,
                           *args)
        fd = (at(h) - at(-h)) / (2 * h)
        # relative to |g|, but never below an absolute 1e-4: the rounding of the O(1) logits
        # behind a tiny loss (a saturated softmax) puts ~1e-11 into fd whatever |g| is
        errs.append(abs(fd - gflat @ u) / max(np.linalg.norm(gflat), 1e-4))
    return max(errs)


# ---------------------------------------------------------------- gradients
@settings(max_examples=12, deadline=None)
@given(act=st.sampled_from(list(models.ACTIVATIONS)), out=st.sampled_from(list(models.OUTPUTS)),
       residual=st.booleans(), norm=st.sampled_from(list(models.NORMS)),
       depth=st.integers(1, 4), n=st.integers(1, 4), m=st.integers(1, 6), d=st.integers(1, 3),
       data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_grad_matches_autodiff_numpy_and_fd(act, out, residual, norm, depth, n, m, d, data,
                                            seed):
    """Every activation x output x residual x norm x depth, random widths (equal or not, so
    some layers are residual and some plain), m = 1.. 6: manual == jax.grad to rel 1e-10, the
    loss equals the numpy reference, finite differences agree to 1e-6."""
    hidden = data.draw(st.one_of(st.integers(1, 4),
                                 st.lists(st.integers(1, 4), min_size=depth,
                                          max_size=depth).map(tuple)))
    rng = np.random.default_rng(seed)
    model = models.get("mlp", activation=act, output=out, residual=residual, norm=norm)
    p, X, Y = problem(rng, out, n, m, d, hidden, depth, model)
    g, ga, loss, zs = jax.jit(  # one compile per example (eager ops would each compile)
        lambda p: (model.grad(p, X, Y), jax.grad(model.loss)(p, X, Y), model.loss(p, X, Y),
                   preacts(p, X, act, residual, norm)), compiler_options=xla.FAST_COMPILE)(p)
    assert rel(g, ga) < TOL_AUTODIFF
    scale = float(jnp.linalg.norm(ravel_pytree(ga)[0]))
    assert_trees_all_close(g, ga, rtol=1e-8, atol=1e-12 * max(scale, 1.0))
    args = (act, out, residual, norm)
    ref = np_loss(p, X, Y, *args)
    np.testing.assert_allclose(float(loss), ref, rtol=TOL_NUMPY, atol=1e-13)
    # finite differences only away from the relu kinks
    if act == "relu" and min([float(jnp.min(jnp.abs(z))) for z in zs], default=1) < 1e-3:
        return
    assert fd_check(p, X, Y, g, args, rng) < TOL_FD


def preacts(p, X, act, residual, norm):
    """The input of every hidden activation (after batch norm when on)."""
    return [c.y for c in stacked.forward(p, X, act, residual, norm).caches]


def test_batch_norm_m1_only_the_last_beta_and_the_output_layer_learn():
    """m = 1: z - mu = 0 exactly, zhat = 0, y = beta: a batch-normalized layer outputs f(beta)
    whatever its input, so the gradients of every W_l, b_l, gamma_l are exactly 0 (by hand and
    by jax.grad), and so are those of beta_l below the last normalized layer; only beta_D and
    the output layer learn. With residual layers the identity path lets the lower betas
    through again."""
    rng = np.random.default_rng(0)
    for residual in (False, True):
        model = models.get("mlp", activation="tanh", output="softmax_ce", norm="batch",
                           residual=residual)
        p, X, Y = problem(rng, "softmax_ce", 3, 1, 3, 4, 3, model)
        g, ga = model.grad(p, X, Y), jax.grad(model.loss)(p, X, Y)
        for l in (1, 2, 3):
            for k in (f"W{l}", f"b{l}", f"gamma{l}") + ((f"beta{l}",) if l < 3 and not residual
                                                         else ()):
                assert np.all(np.asarray(g[k]) == 0) and np.all(np.asarray(ga[k]) == 0), k
        for k in ("beta3", "W4", "b4") + (("beta1", "beta2") if residual else ()):
            assert np.linalg.norm(g[k]) > 1e-3, k
        assert rel(g, ga) < TOL_AUTODIFF
    # the loss is the same whatever W1 is
    q = dict(p, W1=p["W1"] + rng.standard_normal(p["W1"].shape))
    assert float(model.loss(q, X, Y)) == float(model.loss(p, X, Y))


def _bn_m1_prediction(p, act, out, residual, D, Y):
    """The m = 1 closed form (README, Models): every normalized layer outputs y_l = beta_l, so
    a_D = f(beta_D) (plain) or f(beta_1) + ... + f(beta_D) (residual layers 2..D; the first one
    changes the width and stays plain), z_L = W_L a_D + b_L, g = W_L^T delta_L and
        dW_l = db_l = dgamma_l = 0 (l <= D): z_l - mu = 0 whatever W_l, b_l; zhat = 0;
        dbeta_l = f'(beta_l) * g for l = D (plain) or every l (residual), else 0: a_l with
                  l < D reaches the loss only through z_{l+1}, which the next norm discards;
        dW_L = delta_L a_D^T, db_L = delta_L.
    Upper bound only: f(0) = 0 (tanh, relu) makes a_D = 0 and dW_L = 0 at beta = 0, relu'(0) = 0
    makes dbeta = 0 as well (relu, beta <= 0)."""
    f = {"sigmoid": lambda v: np_act("sigmoid", v),
         "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0)}[act]
    fp = {"sigmoid": lambda v: f(v) * (1 - f(v)), "tanh": lambda v: 1 - np.tanh(v) ** 2,
          "relu": lambda v: (v > 0).astype(float)}[act]
    betas = [np.asarray(p[f"beta{l}"]) for l in range(1, D + 1)]
    aD = sum(f(b) for b in betas) if residual else f(betas[-1])
    L = D + 1
    zL = np.asarray(p[f"W{L}"]) @ aD + np.asarray(p[f"b{L}"])
    dL = np.asarray(primitives.output(out).delta(jnp.asarray(zL), jnp.asarray(Y)))
    g = np.asarray(p[f"W{L}"]).T @ dL
    exp = {k: np.zeros(np.shape(v)) for k, v in p.items()}
    for l in range(1, D + 1):
        if residual or l == D:
            exp[f"beta{l}"] = fp(betas[l - 1]) * g
    exp[f"W{L}"], exp[f"b{L}"] = dL @ aD.T, dL
    return exp


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("beta", ["init", "random"])
def test_batch_norm_m1_closed_form_per_activation(act, residual, beta):
    """m = 1, every activation, plain and residual, at the init (beta = 0) and at random betas:
    the hand gradient and jax.grad (float64) both equal the closed form of _bn_m1_prediction,
    the zeros exactly (== 0), the rest to 1e-12; the loss does not depend on X or any W_l of a
    normalized layer. At beta = 0: sigmoid (f(0) = 1/2, f'(0) = 1/4) has dW_L != 0 and
    dbeta_D != 0; tanh (f(0) = 0, f'(0) = 1) has dW_L = 0 exactly but dbeta_D != 0; relu
    (f(0) = 0, f'(0) = 0) has only db_L != 0."""
    rng = np.random.default_rng(3)
    D, out = 3, "softmax_ce"
    model = models.get("mlp", activation=act, output=out, norm="batch", residual=residual)
    p, X, Y = problem(rng, out, 3, 1, 3, 4, D, model)      # n = 3 != h = 4: layer 1 plain
    if beta == "init":
        p.update({f"beta{l}": np.zeros_like(p[f"beta{l}"]) for l in range(1, D + 1)})
    exp = _bn_m1_prediction(p, act, out, residual, D, Y)
    g, ga = model.grad(p, X, Y), jax.grad(model.loss)(p, X, Y)
    for k, e in exp.items():
        for got in (g[k], ga[k]):
            got = np.asarray(got)
            if np.all(e == 0):
                assert np.all(got == 0), k
            else:
                np.testing.assert_allclose(got, e, rtol=1e-12, atol=1e-15, err_msg=k)
    L = D + 1
    nonzero = {k for k, v in exp.items() if np.any(v != 0)}
    if beta == "init":
        want = {"sigmoid": {f"W{L}", f"b{L}", f"beta{D}"}, "tanh": {f"b{L}", f"beta{D}"},
                "relu": {f"b{L}"}}[act]
        if residual and act != "relu":
            want |= {f"beta{l}" for l in range(1, D)}
        assert nonzero == want, (act, residual, sorted(nonzero))
    q = dict(p, W1=p["W1"] + 1.0, W2=2 * p["W2"])
    loss = float(model.loss(p, X, Y))
    assert float(model.loss(q, X + 1.0, Y)) == loss


def test_batch_norm_m1_relu_from_init_only_the_output_bias_moves():
    """relu + batch norm, m = 1, from the library's init (gamma = 1, beta = 0): a_D = relu(0)
    = 0 and relu'(0) = 0, so every gradient but db_L is exactly 0 and stays 0: after 5 GD steps
    every parameter except b_L is bitwise unchanged, and the loss falls only through b_L."""
    model = models.get("mlp", activation="relu", output="softmax_ce", norm="batch")
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((3, 1)), np.eye(3)[:, [1]]
    p0 = model.init(jax.random.PRNGKey(0), 3, 3, hidden=4, depth=3, dtype=jnp.float64)
    p = p0
    for _ in range(5):
        g = model.grad(p, X, Y)
        p = jax.tree.map(lambda w, d: w - 0.5 * d, p, g)
    moved = {k for k in p if np.any(np.asarray(p[k]) != np.asarray(p0[k]))}
    assert moved == {"b4"}
    assert float(model.loss(p, X, Y)) < float(model.loss(p0, X, Y))


def test_batch_norm_m2_zhat_is_a_sign_and_w_gradients_shrink_by_eps():
    """m = 2: zhat = +-d / sqrt(d^2 + eps) with d = (z_1 - z_2)/2, i.e. +-1 up to eps/(2 d^2):
    the layer outputs almost only the sign of z_1 - z_2, so dL/dW of a batch-normalized layer
    is suppressed by about eps / d^2 (d zhat / d d = eps / (d^2 + eps)^(3/2)); manual still
    equals jax.grad to 1e-10 of the whole gradient."""
    rng = np.random.default_rng(1)
    model = models.get("mlp", activation="sigmoid", output="identity_mse", norm="batch")
    p, X, Y = problem(rng, "identity_mse", 3, 2, 2, 4, 1, model)
    z = p["W1"] @ X + p["b1"]
    dd = (z[:, 0] - z[:, 1]) / 2
    _, zhat, _ = primitives.batch_norm(jnp.asarray(z), jnp.ones((4, 1)), jnp.zeros((4, 1)))
    np.testing.assert_allclose(zhat[:, 0], dd / np.sqrt(dd ** 2 + EPS), rtol=1e-12)
    np.testing.assert_allclose(zhat[:, 1], -zhat[:, 0], rtol=1e-12)
    g, ga = model.grad(p, X, Y), jax.grad(model.loss)(p, X, Y)
    assert rel(g, ga) < TOL_AUTODIFF
    # closed form: dL/dW1[i] = (dzhat_i1 - dzhat_i2) s'(d_i) (x_1 - x_2)^T / 2 with
    # s(d) = d / sqrt(d^2 + eps), s'(d) = eps / (d^2 + eps)^(3/2), dzhat = gamma dL/dy
    y = p["gamma1"] * np.asarray(zhat) + p["beta1"]
    a = np_act("sigmoid", y)
    dz2 = (2 / 2) * (p["W2"] @ a + p["b2"] - Y)      # (2/m)(yhat - y), m = 2
    dzhat = p["gamma1"] * (p["W2"].T @ dz2) * a * (1 - a)
    sprime = EPS / (dd ** 2 + EPS) ** 1.5
    closed = ((dzhat[:, 0] - dzhat[:, 1]) * sprime)[:, None] * (X[:, 0] - X[:, 1])[None, :] / 2
    np.testing.assert_allclose(g["W1"], closed, rtol=1e-6, atol=1e-15)
    big = dd ** 2 > 100 * EPS      # units far from the tie: s' < 1e-2 / |d|, W1 rows suppressed
    assert big.any() and np.all(sprime[big] < 1e-2 / np.abs(dd[big]))


def test_residual_identity_path_carries_the_signal():
    """With every hidden-to-hidden W_l = 0 (so W_l^T dL/dz_l = 0) the residual net still passes
    dL/da_L unchanged down to a_1: delta_1 = dL/da_1 * f'(z_1) equals W_L^T delta_L * f'(z_1);
    the plain net's delta_1 is exactly 0."""
    rng = np.random.default_rng(2)
    model = models.get("mlp", activation="sigmoid", output="softmax_ce", residual=True)
    p, X, Y = problem(rng, "softmax_ce", 3, 5, 3, 4, 4, model)
    for l in (2, 3, 4):
        p[f"W{l}"] = np.zeros_like(p[f"W{l}"])
    _, _, fp, deltas = stacked.loss_and_grad(p, X, Y, "sigmoid", "softmax_ce", residual=True)
    zs = fp.zs()
    expect = (p["W5"].T @ deltas[5]) * np.asarray(primitives.sigmoid_prime(zs[0]))
    np.testing.assert_allclose(deltas[1], expect, rtol=1e-12)
    _, _, _, d_plain = stacked.loss_and_grad(p, X, Y, "sigmoid", "softmax_ce")
    assert np.all(np.asarray(d_plain[1]) == 0)


# ---------------------------------------------------------------- config and the engine
def test_config_passes_residual_and_norm_and_rejects_bad_values():
    cfg = build_cfg({"model": {"name": "mlp", "residual": True, "norm": "batch"},
                     "experiment": {"name": "gradcheck"}})
    m = make.model(cfg)
    assert m.options["residual"] is True and m.options["norm"] == "batch"
    p = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), 4, 3, hidden=5, depth=2))
    assert {k: v.shape for k, v in p.items()} == {
        "W1": (5, 4), "b1": (5, 1), "gamma1": (5, 1), "beta1": (5, 1),
        "W2": (5, 5), "b2": (5, 1), "gamma2": (5, 1), "beta2": (5, 1),
        "W3": (3, 5), "b3": (3, 1)}
    with pytest.raises(UserError, match="model.norm='layer'"):
        build_cfg({"model": {"name": "mlp", "norm": "layer"}, "experiment": {"name": "gradcheck"}})
    with pytest.raises(UserError, match="model.residual"):
        build_cfg({"model": {"name": "mlp", "residual": "yes"},
                   "experiment": {"name": "gradcheck"}})
    with pytest.raises(UserError, match="model.norm"):
        models.get("mlp", norm="layer")


@pytest.mark.parametrize("residual,norm", [(True, "batch"),
                                           pytest.param(True, "none", marks=pytest.mark.slow),
                                           pytest.param(False, "batch", marks=pytest.mark.slow)])
def test_sweep_engine_trains_them_vmapped(residual, norm):
    """run_grid over lr x seed x init_scale (one compile) gives, run by run, the loss curve of
    a plain Python loop of w -= lr * model.grad from the same initial parameters (residual and
    batch norm together by default; each alone with -m slow)."""
    rng = np.random.default_rng(3)
    n, d, m, steps = 4, 3, 10, 6
    X = rng.standard_normal((n, m))
    Y = np.eye(d)[:, rng.integers(0, d, m)]
    opts = (("activation", "sigmoid"), ("norm", norm), ("output", "softmax_ce"),
            ("residual", residual))
    spec = train.TrainSpec(model="mlp", n=n, d_out=d, m=m, steps=steps, model_options=opts,
                           model_hparams=(("depth", 3), ("hidden", 5), ("init", "standard")),
                           dtype="float64")
    grid = sweep.Grid({"lr": np.array([0.1, 0.5]), "seed": np.array([0, 7]),
                       "init_scale": np.array([0.5, 2.0])})
    before = sweep.COMPILES["count"]
    r = sweep.run_grid(spec, X, Y, grid, progress=False)
    assert sweep.COMPILES["count"] - before <= 1
    model = spec.get_model()
    assert model.options["residual"] is residual and model.options["norm"] == norm
    loss, grad = jax.jit(model.loss), jax.jit(model.grad)
    for i, lr in enumerate(grid.axes["lr"]):
        for j, seed in enumerate(grid.axes["seed"]):
            for k, s in enumerate(grid.axes["init_scale"]):
                p = model.init(train.run_keys(int(seed))[0], n, d, hidden=5, depth=3,
                               init_scale=s, dtype=jnp.float64)
                curve = []
                for _ in range(steps):
                    curve.append(float(loss(p, X, Y)))
                    p = jax.tree.map(lambda w, g: w - lr * g, p, grad(p, X, Y))
                np.testing.assert_allclose(r.metrics["loss"][i, j, k], curve, rtol=1e-10)
                np.testing.assert_allclose(r.metrics["final_loss"][i, j, k],
                                           float(loss(p, X, Y)), rtol=1e-10)
    if norm == "batch":
        assert "gamma1" in r.coords["param"] and "beta3" in r.coords["param"]


def test_gradcheck_cases_include_the_variants():
    """The gradcheck experiment checks residual, batch-norm and both: each activation once by
    default, the full product with all_combinations."""
    from bpexp.experiments import gradcheck as G
    names = [c[0] for c in G.cases([1, 2, 4])]
    for tag in ("_res", "_bn", "_res_bn"):
        got = [n for n in names if n.endswith(tag) and not n.endswith("_res" + tag)]
        assert len(got) == 3 and {n.split("_")[1] for n in got} == set(models.ACTIVATIONS), tag
    full = [c for c in G.cases([1, 2], all_combinations=True) if c[0].startswith("mlp")]
    assert len(full) == 12 * 2 * 4     # activation x output x depth x variant
    opts = {(c[1].options["residual"], c[1].options["norm"]) for c in full}
    assert opts == {(False, "none"), (True, "none"), (False, "batch"), (True, "batch")}
