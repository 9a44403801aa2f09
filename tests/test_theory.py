import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import np_gd_path

from bpexp import primitives
from bpexp import theory as th


def _data(seed=0, n=3, m=200):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, m)) + 0.5
    w = rng.normal(size=(1, n))
    y = w @ X + 0.3 + 0.5 * rng.normal(size=(1, m))
    return X, y


def _mse_flat(theta, X, y):
    n = X.shape[0]
    w, b = theta[:n].reshape(1, n), theta[n]
    return jnp.sum((w @ X + b - y) ** 2) / X.shape[1]


# ---------------------------------------------------------------- quadratic
def test_quadratic_hessian_matches_autodiff():
    X, y = _data()
    theta = jnp.asarray(np.random.default_rng(1).normal(size=X.shape[0] + 1))
    H_ad = np.asarray(jax.jit(jax.hessian(_mse_flat))(theta, jnp.asarray(X), jnp.asarray(y)))
    H = th.quadratic_hessian(X)
    assert H.shape == (4, 4)
    np.testing.assert_allclose(H, H_ad, atol=1e-10, rtol=0)
    assert th.lambda_max_quadratic(X) == pytest.approx(np.linalg.eigvalsh(H_ad)[-1], rel=1e-12)
    H2 = th.quadratic_hessian(X, d_out=2)
    np.testing.assert_array_equal(H2, np.kron(np.eye(2), H))


def _run(X, y, lr, beta, steps=2000):
    """CS230 momentum (beta=0 is plain GD) on the linear MSE; loss history."""
    Xt = np.vstack([X, np.ones((1, X.shape[1]))])
    m = X.shape[1]
    theta = np.zeros(Xt.shape[0])
    v = np.zeros_like(theta)
    losses = []
    for _ in range(steps):
        r = theta @ Xt - y[0]
        losses.append(r @ r / m)
        if losses[-1] > 1e6:
            break
        g = (2.0 / m) * Xt @ r
        v = beta * v + (1 - beta) * g
        theta = theta - lr * v
    return np.array(losses)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_gd_and_momentum_thresholds(beta):
    X, y = _data()
    lam = th.lambda_max_quadratic(X)
    thr = th.gd_threshold(lam) if beta == 0 else th.momentum_threshold(lam, beta)
    if beta == 0:
        assert thr == pytest.approx(th.momentum_threshold(lam, 0.0))
    Xt = np.vstack([X, np.ones((1, X.shape[1]))])
    theta_star = np.linalg.lstsq(Xt.T, y[0], rcond=None)[0]
    r = theta_star @ Xt - y[0]
    opt = r @ r / X.shape[1]

    good = _run(X, y, 0.95 * thr, beta)
    assert len(good) == 2000
    assert good[-1] == pytest.approx(opt, rel=1e-9)
    assert good[-1] < good[0]

    bad = _run(X, y, 1.05 * thr, beta)
    assert bad[-1] > 1e6


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_momentum_spectral_radius_crosses_one_at_threshold(beta):
    lam = 3.7
    thr = th.momentum_threshold(lam, beta)
    lrs = thr * np.linspace(0.01, 2.0, 1991)
    rho = th.momentum_spectral_radius(lrs, lam, beta)
    assert rho.shape == lrs.shape
    below, above = lrs < thr * (1 - 1e-9), lrs > thr * (1 + 1e-9)
    assert np.all(rho[below] < 1) and np.all(rho[above] > 1)
    assert th.momentum_spectral_radius(thr, lam, beta) == pytest.approx(1.0)
    # beta = 0: radius is |1 - lr lam|
    np.testing.assert_allclose(
        th.momentum_spectral_radius(lrs, lam, 0.0), np.abs(th.gd_quadratic_factor(lrs, lam)),
        atol=1e-12
    )
    # against numpy roots at a few points
    for lr in lrs[::199]:
        a = lr * (1 - beta) * lam
        roots = np.roots([1.0, -(1 + beta - a), beta])
        rho = th.momentum_spectral_radius(lr, lam, beta)
        assert rho == pytest.approx(np.max(np.abs(roots)), rel=1e-7)


# ---------------------------------------------------------------- sharpness
def test_top_eigenvalues_of_a_random_quadratic_loss():
    """loss = 0.5 x^T A x over a params pytree: the Hessian is A; top two by Lanczos, the top
    algebraic one even when a negative eigenvalue is larger in magnitude."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    params = {"a": jnp.ones((4, 2)), "b": jnp.zeros(4)}

    def loss(p, A):
        x, _ = jax.flatten_util.ravel_pytree(p)
        return 0.5 * x @ A @ x

    for evals in (np.concatenate([[5.0, 3.0], rng.uniform(-2.9, 2.9, size=10)]),
                  np.concatenate([[-6.0, 2.0, 1.5], rng.uniform(-1.0, 1.0, size=9)])):
        A = jnp.asarray(Q @ np.diag(evals) @ Q.T)
        top = np.sort(evals)[::-1]
        lam1, lam2, r1, _ = th.top_eigenvalues(loss, params, A, key=jax.random.PRNGKey(0), iters=12)
        assert lam1 == pytest.approx(top[0], rel=1e-10) and lam2 == pytest.approx(top[1], rel=1e-10)
        assert r1 < 1e-8


def test_lanczos_resolves_nearly_equal_top_eigenvalues_and_ignores_a_larger_negative():
    """Spectrum 8.32, 8.10, 8.02, -20 and 196 values in [-3, 3]: power iteration follows -20
    (largest magnitude) and cannot separate 8.32 from 8.10 quickly; 60 Lanczos steps give the
    top two to 1e-10 with residuals that bound the error."""
    rng = np.random.default_rng(3)
    p = 200
    Q, _ = np.linalg.qr(rng.normal(size=(p, p)))
    evals = np.concatenate([[8.32, 8.10, 8.02, -20.0], rng.uniform(-3, 3, size=p - 4)])
    A = jnp.asarray(Q @ np.diag(evals) @ Q.T)
    v0 = jnp.asarray(rng.normal(size=p))
    lam1, lam2, y, r1, r2 = jax.jit(th.lanczos, static_argnums=(0, 2))(lambda v: A @ v, v0, 60)
    assert abs(float(lam1) - 8.32) < 1e-10 and abs(float(lam2) - 8.10) < 1e-10
    assert float(r1) < 1e-8 and abs(float(y @ jnp.asarray(Q[:, 0]))) == pytest.approx(1.0, abs=1e-8)
    v = np.asarray(v0)
    for _ in range(200):                                 # power iteration, for contrast
        v = np.asarray(A) @ v
        v /= np.linalg.norm(v)
    assert v @ np.asarray(A) @ v == pytest.approx(-20.0, rel=1e-6)   # what it reports


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_top_eigenvalues_of_a_real_net_match_the_full_hessian(act):
    """A 4-6-3 mlp (57 parameters) on 40 random examples: the top two eigenvalues of the
    dense Hessian (jax.hessian, numpy eigvalsh in float64) vs Lanczos on Hessian-vector
    products."""
    from bpexp import models
    m = models.get("mlp", activation=act, output="identity_mse")
    k = jax.random.split(jax.random.PRNGKey(7), 3)
    X, Y = jax.random.normal(k[0], (4, 40)), jax.random.normal(k[1], (3, 40))
    p = m.init(k[2], 4, 3, hidden=6, depth=1, init="normal", dtype=jnp.float64)
    flat, unravel = jax.flatten_util.ravel_pytree(p)
    H = np.asarray(jax.hessian(lambda x: m.loss(unravel(x), X, Y))(flat), np.float64)
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    lam1, lam2, r1, r2 = th.top_eigenvalues(m.loss, p, X, Y, key=jax.random.PRNGKey(0), iters=57)
    assert lam1 == pytest.approx(ev[-1], rel=1e-9) and lam2 == pytest.approx(ev[-2], rel=1e-9)
    assert r1 < 1e-8 * abs(ev[-1])


# ---------------------------------------------------------------- glorot
@pytest.mark.parametrize("scheme", ["standard", "xavier", "he", "normal"])
def test_init_variance_empirical(scheme):
    """Var(W) of the weights the models really draw (primitives.init_weights), init_scale
    included for every scheme (it multiplies the weights, so the variance by scale^2)."""
    n_in, n_out = 300, 3000    # W: (n_out, n_in), so xavier sees both fans
    for scale in (1.0, 0.7, 2.0):
        W = primitives.init_weights(jax.random.PRNGKey(42), [(n_out, n_in)], scheme, scale,
                                    jnp.float64)[0]
        var = th.init_variance(scheme, n_in, n_out, scale)
        expect = {"standard": 1 / (3 * n_in), "xavier": 2 / (n_in + n_out), "he": 2 / n_in,
                  "normal": 1.0}[scheme] * scale**2
        assert var == pytest.approx(expect, rel=1e-12), (scheme, scale)
        assert float(jnp.var(W)) == pytest.approx(var, rel=0.02), (scheme, scale)


def test_glorot_factors():
    assert 200 * th.init_variance("standard", 200, 50) == pytest.approx(1 / 3)
    assert 128 * th.init_variance("xavier", 128, 128) == pytest.approx(1.0)
    assert th.glorot_factor(128, th.init_variance("he", 128, 1), 0.5) == pytest.approx(1.0)
    assert th.glorot_ratio(10, 0.4, 1.0) == pytest.approx(2.0)
    assert th.sigmoid_prime_max() == 0.25
    assert th.sigmoid_bound(3) == pytest.approx(0.25**3)
    z = np.linspace(-10, 10, 20001)
    sig = 1 / (1 + np.exp(-z))
    assert np.max(sig * (1 - sig)) == pytest.approx(th.sigmoid_prime_max())
    with pytest.raises(ValueError, match="xavier"):
        th.init_variance("kaiming", 3, 3)


# ---------------------------------------------------------------- toy
def test_toy_quadratic_gd_path():
    w0, lr = np.array([2.5, 2.0]), 0.15
    path = np_gd_path(th.toy_quadratic_grad, w0, lr, 20)
    assert path.shape == (21, 2)
    t = np.arange(21)[:, None]
    h = np.diag(th.TOY_HESSIAN)[None, :]
    np.testing.assert_allclose(path, (1 - lr * h) ** t * w0, rtol=1e-12, atol=1e-15)
    assert th.toy_quadratic(w0) == pytest.approx(0.5 * 2.5**2 + 2 * 2.0**2)
    assert th.gd_threshold(4.0) == 0.5

    div = np_gd_path(th.toy_quadratic_grad, w0, 0.51, 200)
    assert abs(div[-1, 1]) > 100 * abs(w0[1])  # |1 - 0.51*4| = 1.04 > 1
    assert abs(div[-1, 0]) < 1e-10  # w1 still contracts (factor 0.49)


def test_ill_conditioned_quadratic():
    f, grad, H = th.ill_conditioned_quadratic(10.0)
    ev = np.linalg.eigvalsh(H)
    np.testing.assert_allclose(ev, [1.0, 10.0], rtol=1e-12)
    w = np.array([0.3, -1.2])
    np.testing.assert_allclose(grad(w), H @ w)
    eps = 1e-6
    fd = [(f(w + eps * e) - f(w - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(fd, grad(w), rtol=1e-8)
    assert abs(H[0, 1]) > 0.1  # rotated: not axis-aligned
    assert np.linalg.norm(np_gd_path(grad, w, 0.19, 300)[-1]) < 1e-10
    assert np.linalg.norm(np_gd_path(grad, w, 0.21, 300)[-1]) > 1e3
