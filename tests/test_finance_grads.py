"""The Sharpe-ratio gradient of grads.py and the finance experiment's pure pieces, each against
an independent numpy reference: jax.grad, finite differences and the moment form on random
returns (hypothesis); the tangency portfolio against a closed form computed separately; no
look-ahead in the trading rule; walk-forward windows; the smooth transaction cost."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpexp import data, grads
from bpexp.experiments.finance import strategy as FS
from bpexp.experiments.finance import theory as FT

# periods is traced: one compile per shape, and hypothesis draws few shapes
jit_grad = jax.jit(grads.neg_sharpe_grad)
jit_ad = jax.jit(jax.grad(grads.neg_sharpe))
jit_loss = jax.jit(grads.neg_sharpe)


def np_sharpe(r, periods=1.0):
    """Independent reference: population std (ddof 0)."""
    return np.sqrt(periods) * np.mean(r) / np.std(r)


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([2, 4]), T=st.sampled_from([4, 30]), seed=st.integers(0, 2**31 - 1),
       periods=st.sampled_from([1.0, 12.0, 252.0]))
def test_sharpe_gradient_vs_jax_grad_and_finite_differences(n, T, seed, periods):
    rng = np.random.default_rng(seed)
    R = rng.normal(0.01, 0.05, (n, T))
    w = rng.standard_normal(n)
    p = {"w": jnp.asarray(w)}
    g = np.asarray(jit_grad(p, R, None, periods)["w"])
    np.testing.assert_allclose(-np_sharpe(w @ R, periods), float(jit_loss(p, R, None, periods)),
                               rtol=1e-12, atol=1e-14)
    mu, Sigma = R.mean(1), np.cov(R, bias=True)
    sp = np.sqrt(w @ Sigma @ w)
    scale = np.sqrt(periods) * np.linalg.norm(mu) / sp   # size of the terms of dS/dw
    ad = np.asarray(jit_ad(p, R, None, periods)["w"])
    assert np.linalg.norm(g - ad) <= 1e-10 * scale
    # central differences of the numpy reference, coordinate by coordinate
    h = 1e-6
    fd = np.array([(-np_sharpe((w + h * e) @ R, periods) + np_sharpe((w - h * e) @ R, periods))
                   / (2 * h) for e in np.eye(n)])
    assert np.linalg.norm(g - fd) <= 1e-6 * scale
    # the moment form of REFERENCE.md: mu / sigma_p - (w' mu) Sigma w / sigma_p^3
    ref = -np.sqrt(periods) * (mu / sp - (w @ mu) * (Sigma @ w) / sp ** 3)
    np.testing.assert_allclose(g, ref, rtol=0, atol=1e-10 * scale)
    # Euler: w . dS/dw = 0 (scale invariance)
    assert abs(w @ g) <= 1e-10 * np.linalg.norm(w) * scale


def test_sharpe_grad_returns_vs_jax_grad():
    r = np.random.default_rng(1).normal(0.001, 0.01, 50)
    hand = jax.jit(grads.sharpe_grad_returns)(jnp.asarray(r), 252.0)
    np.testing.assert_allclose(hand, jax.jit(jax.grad(grads.sharpe))(jnp.asarray(r), 252.0),
                               rtol=1e-10)


def test_tangency_matches_closed_form_and_beats_every_direction():
    R = data.load("ff_factors", dtype=np.float64).X
    w, s = FT.tangency(R)
    mu = R.mean(1)
    Sigma = np.cov(R, bias=True)                       # independent of FT.moments
    s_ref = np.sqrt(12 * mu @ np.linalg.inv(Sigma) @ mu)
    assert s == pytest.approx(s_ref, rel=1e-12)
    assert np_sharpe(w @ R, 12) == pytest.approx(s_ref, rel=1e-12)
    U = np.random.default_rng(0).standard_normal((20000, 3))
    S = np.sqrt(12) * (U @ mu) / np.sqrt(np.einsum("ki,ij,kj->k", U, Sigma, U))
    assert S.max() <= s_ref + 1e-12 and S.max() > s_ref - 1e-3


def test_gd_reaches_the_tangency_sharpe_and_direction():
    R = data.load("ff_factors", dtype=np.float64).X
    w_star, s_star = FT.tangency(R)
    W0 = np.random.default_rng(3).standard_normal((4, 3))
    W0 /= np.linalg.norm(W0, axis=1, keepdims=True)
    H = np.asarray(jax.jit(jax.hessian(FT.pf_loss))(jnp.asarray(w_star / np.linalg.norm(w_star)),
                                                    R))
    ev = np.linalg.eigvalsh(H)
    assert abs(ev[0]) < 1e-12 * ev[-1]                 # singular along w
    path, S, gg = map(np.asarray, jax.jit(FT.pf_gd, static_argnums=3)(R, W0, 1.0 / ev[-1], 200))
    assert np.all(np.abs(S[:, -1] - s_star) < 1e-6)
    wT = path[:, -1]
    cos = wT @ w_star / np.linalg.norm(wT, axis=1) / np.linalg.norm(w_star)
    assert np.all(cos > 1 - 1e-9)
    # |w_T|^2 - |w_0|^2 = lr^2 sum |g_t|^2: every step is orthogonal to w
    lhs = np.sum(wT ** 2, 1) - 1
    np.testing.assert_allclose(lhs, (1.0 / ev[-1]) ** 2 * gg[:, :-1].sum(1), rtol=1e-10)


def test_positions_have_no_look_ahead():
    """Changing the return of day s (and every later price) leaves every position up to day s
    unchanged: position_t uses prices up to t - 1."""
    _, P = data.sp500_prices()
    X, Y, _, t0 = data.sp500_features(P)
    X, Y = X[:, :600], Y[:, :600]
    theta = jnp.asarray(np.random.default_rng(0).standard_normal(X.shape[0] + 1))
    Xtr = X[:, :300]                                   # fixed standardization statistics
    pos = np.asarray(FS.positions(theta, FS.standardize(Xtr, jnp.asarray(X))))
    for s in (0, 37, 299, 598):
        Q = P.copy()
        Q[t0 + s:] *= 1.3                              # day t0+s's return changes, and later
        X2, Y2, _, _ = data.sp500_features(Q)
        assert Y2[0, s] != Y[0, s]
        pos2 = np.asarray(FS.positions(theta, FS.standardize(Xtr, jnp.asarray(X2[:, :600]))))
        np.testing.assert_array_equal(pos2[:s + 1], pos[:s + 1])
        assert not np.array_equal(pos2[s + 1:], pos[s + 1:])
    assert FS.lookahead_check(np.asarray(theta), 600) == 0.0


def test_walk_forward_windows_tile_the_data():
    w = FS.walk_forward(1000, 300, 100)
    assert w[0] == (0, 300, 400) and len(w) == 7 and w[-1][2] <= 1000
    for (a, b, c), (a2, b2, c2) in zip(w, w[1:]):
        assert b - a == 300 and c - b == 100 and a2 - a == 100 and b2 == c


def test_standardize_uses_the_training_window_only():
    rng = np.random.default_rng(0)
    Ftr, Fte = rng.normal(3, 2, (4, 50)), rng.normal(-5, 9, (4, 20))
    Z = np.asarray(FS.standardize(jnp.asarray(Ftr), jnp.asarray(Fte)))
    ref = (Fte - Ftr.mean(1, keepdims=True)) / Ftr.std(1, keepdims=True)
    np.testing.assert_allclose(Z[:4], ref, rtol=1e-12)
    np.testing.assert_array_equal(Z[4], 1.0)


def test_smooth_cost_tends_to_the_exact_cost():
    rng = np.random.default_rng(0)
    pos, r = np.tanh(rng.standard_normal(30)), rng.normal(0, 0.01, 30)
    exact = pos * r - 0.001 * np.abs(np.diff(pos, prepend=0.0))
    for eps in (1e-4, 1e-8, 1e-12):
        smooth = np.asarray(FS.net_returns(jnp.asarray(pos), jnp.asarray(r), 0.001, eps))
        assert np.max(np.abs(smooth - exact)) <= 0.001 * np.sqrt(eps) + 1e-15
    np.testing.assert_allclose(FS.net_returns(jnp.asarray(pos), jnp.asarray(r), 0.001), exact,
                               rtol=1e-13)
