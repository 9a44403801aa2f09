"""Finance: gradient descent on the negative Sharpe ratio, with real market data.

Question: the lecture's analogy made real (weights = strategy parameters, loss = negative
Sharpe ratio, learning rate = how aggressively the strategy changes): does GD find the best
portfolio of the Fama-French factors, and what does GD on a trading rule for the S&P 500 learn
in sample and keep out of sample, net of transaction costs and without look-ahead?
Theory: S(w) = sqrt(12) w^T mu / sqrt(w^T Sigma w) is maximized by the tangency portfolio
w* ∝ Sigma^{-1} mu with S* = sqrt(12 mu^T Sigma^{-1} mu). S(c w) = S(w) for c > 0, so
w . grad S = 0 (Euler), the Hessian has w in its null space and scales as 1/|w|^2: GD steps are
orthogonal to w, every step grows |w|^2 by lr^2 |g|^2, and the effective step is lr / |w|^2.
A rule position_t = tanh(theta . x_{t-1}) fitted on one window and tested on the next
(walk-forward) maximizes in-sample Sharpe; with non-stationary, limited data nothing promises
the out-of-sample Sharpe follows. |Δposition| is not differentiable: train on the smooth
c (sqrt(Δ^2 + eps) - sqrt(eps)), evaluate with the exact c |Δ|.
Expected: hand dS/dw == jax.grad to ~1e-16; GD from every random start reaches S* to 1e-6 with
cosine 1 to w*, for learning rates up to 8 x 2/lambda_max (the growing |w| shrinks the step);
the strategy's in-sample Sharpe rises with training and with lr, its out-of-sample Sharpe does
not; a transaction cost in training lowers turnover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from bpexp import data, gradcheck, grads, plots, report, train
from bpexp.errors import UserError
from bpexp.experiments._common import command, question
from bpexp.plots import plt

PRECISION = "float64"
USES = ()  # loads its two data sets itself: ff_factors (portfolio) and sp500 (strategy)
MONTHS, DAYS = 12.0, 252.0  # periods per year: Sharpe ratios are annualized by sqrt of these
TOL_AD, TOL_FD, TOL_SHARPE, TOL_COS = 1e-10, 1e-6, 1e-6, 1e-6


@dataclass
class Params:
    name: str = "finance"
    # portfolio part (ff_factors: Mkt-RF, SMB, HML monthly)
    starts: int = 8              # random unit-norm starts w0
    pf_steps: int = 1500         # GD steps on -Sharpe(w)
    pf_lr: list = field(default_factory=lambda: [0.5, 1.0, 2.0, 8.0])  # x 2/lambda_max(H)
    pair: list = field(default_factory=lambda: [0, 2])  # the two factors of the contour figure
    # strategy part (sp500 daily)
    days: int = 0                # most recent trading days used (0 = all 4831)
    train_days: int = 756        # walk-forward: fit on 3 years ...
    test_days: int = 252         # ... test on the next year, roll forward by test_days
    lrs: list = field(default_factory=lambda: [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1])
    lr: float = 0.01             # the lr shown per window and in the equity curves
    seeds: int = 3               # random theta0 per (window, lr)
    steps: int = 200             # GD steps on -Sharpe of net returns
    record_every: int = 10
    init_scale: float = 0.1      # theta0 ~ init_scale N(0, I) ...
    init_position: float = 0.5   # ... plus a bias atanh(0.5): start near half buy-and-hold
    cost: float = 0.0005         # transaction cost per unit |Δposition| (5 bp)
    eps: float = 1.0e-6          # smoothing of |Δ| in training


def validate(cfg):
    P = cfg.experiment
    ints = {"starts": (1, 256), "pf_steps": (1, 100_000), "seeds": (1, 64),
            "steps": (1, 100_000), "record_every": (1, 100_000), "train_days": (20, 10_000),
            "test_days": (5, 10_000), "days": (0, 100_000)}
    for k, (lo, hi) in ints.items():
        v = getattr(P, k)
        if not lo <= v <= hi:
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: an int in [{lo}, {hi}]")
    for k in ("pf_lr", "lrs"):
        v = getattr(P, k)
        if not (v and all(isinstance(x, (int, float)) and 0 < x < math.inf for x in v)):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: a non-empty list of "
                            "positive numbers")
    if not any(math.isclose(P.lr, x, rel_tol=1e-12) for x in P.lrs):
        raise UserError(f"experiment.lr={P.lr!r} is not allowed; allowed: one of experiment.lrs "
                        f"{P.lrs}")
    if not (len(P.pair) == 2 and P.pair[0] != P.pair[1] and all(0 <= i < 3 for i in P.pair)):
        raise UserError(f"experiment.pair={P.pair!r} is not allowed; allowed: two different "
                        "factor indices in 0..2")
    for k in ("init_scale", "eps"):
        if not 0 < getattr(P, k) < math.inf:
            raise UserError(f"experiment.{k}={getattr(P, k)!r} is not allowed; allowed: > 0")
    if not -1 < P.init_position < 1:
        raise UserError(f"experiment.init_position={P.init_position!r} is not allowed; allowed: "
                        "in (-1, 1)")
    if not 0 <= P.cost < 1:
        raise UserError(f"experiment.cost={P.cost!r} is not allowed; allowed: in [0, 1)")
    days = P.days or 4831
    if P.train_days + P.test_days > days:
        raise UserError(f"experiment.train_days={P.train_days} + test_days={P.test_days} is more "
                        f"than the {days} days used; allowed: a sum <= experiment.days")


# ---------------------------------------------------------------- portfolio (pure)
def moments(R):
    """mu: (n,), Sigma: (n, n) of returns R: (n, T), population covariance (ddof 0)."""
    mu = R.mean(axis=1)
    D = R - mu[:, None]
    return mu, D @ D.T / R.shape[1]


def tangency(R, periods=MONTHS):
    """Closed form: w* = Sigma^{-1} mu (any positive multiple), S* = sqrt(A mu^T Sigma^{-1} mu)."""
    mu, Sigma = moments(np.asarray(R, np.float64))
    w = np.linalg.solve(Sigma, mu)
    return w, float(np.sqrt(periods * mu @ w))


def pf_loss(w, R):
    return grads.neg_sharpe({"w": w}, R, None, MONTHS)


def pf_gd(R, W0, lr, steps):
    """GD on -S(w) with the hand gradient from every start. W0: (k, n) -> final w (k, n), and per
    step (k, steps + 1): Sharpe, |w|, |g|^2 (at the step's w), and the path (k, steps + 1, n)."""

    def one(w0):
        def update(w, _):
            g = grads.neg_sharpe_grad({"w": w}, R, None, MONTHS)["w"]
            return w - lr * g, (w, -pf_loss(w, R), g @ g)

        wT, _, _, (path, S, gg) = train.loop(update, w0, steps, each_step=lambda info: info)
        gT = grads.neg_sharpe_grad({"w": wT}, R, None, MONTHS)["w"]
        return (jnp.concatenate([path, wT[None]]), jnp.append(S, -pf_loss(wT, R)),
                jnp.append(gg, gT @ gT))

    return jax.vmap(one)(W0)


# ---------------------------------------------------------------- strategy (pure)
def standardize(F_train, F):
    """Features F: (n, T) z-scored with the TRAINING window's mean and std, plus a bias row:
    (n + 1, T). Statistics of the test window are never used."""
    mu, sd = F_train.mean(axis=-1, keepdims=True), F_train.std(axis=-1, keepdims=True)
    Z = (F - mu) / sd
    return jnp.concatenate([Z, jnp.ones_like(Z[..., :1, :])], axis=-2)


def positions(theta, Z):
    """position_t = tanh(theta . z_t): (T,), z_t built from returns before day t only."""
    return jnp.tanh(theta @ Z)


def net_returns(pos, r, cost, eps=None, prev=0.0):
    """pos_t r_t minus the cost of changing the position (from ``prev`` before day 0): smooth
    c (sqrt(Δ^2 + eps) - sqrt(eps)) when eps is given (training), else exact c |Δ|."""
    d = jnp.diff(pos, prepend=prev)
    tc = cost * (jnp.sqrt(d * d + eps) - jnp.sqrt(eps)) if eps is not None else cost * jnp.abs(d)
    return pos * r - tc


def strategy_loss(theta, Z, r, cost, eps):
    """-Sharpe (annualized, sqrt(252)) of the net daily returns."""
    return -grads.sharpe(net_returns(positions(theta, Z), r, cost, eps), DAYS)


def walk_forward(m, train_days, test_days):
    """Window starts s_k = k test_days: train [s_k, s_k + train), test the next test_days."""
    K = (m - train_days) // test_days
    return [(k * test_days, k * test_days + train_days, k * test_days + train_days + test_days)
            for k in range(K)]


def make_strategy_runs(steps, record_every, eps, eval_cost):
    """jit: windows x lrs x seeds x train_costs runs of GD on strategy_loss. Returns final theta
    and, every ``record_every`` steps, in-sample and out-of-sample Sharpe of the net returns
    (exact cost ``eval_cost``)."""
    rec = np.arange(0, steps + 1, record_every)
    grad = jax.grad(strategy_loss)

    def sharpe_net(theta, Z, r, prev=0.0):
        return grads.sharpe(net_returns(positions(theta, Z), r, eval_cost, prev=prev), DAYS)

    def one(theta0, lr, c, Ztr, rtr, Zte, rte):
        def update(th, _):
            return th - lr * grad(th, Ztr, rtr, c, eps), th

        thT, _, _, path = train.loop(update, theta0, steps, each_step=lambda th: th)
        path = jnp.concatenate([path, thT[None]])[rec]
        ins = jax.vmap(lambda th: sharpe_net(th, Ztr, rtr))(path)
        # out of sample the rule continues from its last in-sample position
        out = jax.vmap(lambda th: sharpe_net(th, Zte, rte, positions(th, Ztr)[-1]))(path)
        return thT, ins, out

    # axes: theta0 [K, L, S, n], lr [L], cost [C], data [K, ...]
    f = jax.vmap(one, (None, None, 0, None, None, None, None))        # train cost
    f = jax.vmap(f, (0, None, None, None, None, None, None))          # seed
    f = jax.vmap(f, (0, 0, None, None, None, None, None))             # lr
    f = jax.vmap(f, (0, None, None, 0, 0, 0, 0))                      # window
    return jax.jit(f), rec


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    # portfolio: n = 3 factors, k starts, s = pf_steps + 1 recorded points
    assets: list              # [n] factor names
    months: list              # [T] 'YYYY-MM'
    w_star: np.ndarray        # [n] tangency weights, unit norm
    s_star: float             # closed-form S*
    s_of_w_star: float        # S(w*) by grads.sharpe (independent path to S*)
    pf_lr: np.ndarray         # [p] absolute lrs
    pf_lr_frac: np.ndarray    # [p] in units of 2 / lambda_max(H at unit w*)
    w0: np.ndarray            # [k, n]
    pf_sharpe: np.ndarray     # [p, k, s]
    pf_norm: np.ndarray       # [p, k, s]
    pf_gg: np.ndarray         # [p, k, s] |g|^2
    pf_wT: np.ndarray         # [p, k, n]
    hess_eig: np.ndarray      # [n] eigenvalues of the -S Hessian at unit w*
    hess_null_cos: float      # |cos(null eigenvector, w*)|
    hess_scale: float         # lambda_max(H(2 w*)) * 4 / lambda_max(H(w*)), theory 1
    euler: float              # max |w . grad S| / (|w| |grad S|) over starts
    grad_check: dict          # rel errors of the hand gradient
    pair: list                # [2] indices
    pair_w_star: np.ndarray   # [2] unit tangency of the 2-factor problem
    pair_s_star: float
    pair_lr: float
    pair_path: np.ndarray     # [k, s, 2]
    pair_grid: np.ndarray     # [g] grid coordinate
    pair_surface: np.ndarray  # [g, g] Sharpe on the grid (rows: 2nd weight)
    # strategy: K windows, L lrs, S seeds, C train costs, r records, f = features + bias
    features: list
    days: list                # [m] dates
    windows: list             # [(train_start, test_start, test_end)] day indices
    lrs: np.ndarray
    train_costs: np.ndarray   # [C] = [0, cost]
    record: np.ndarray        # [r] steps
    ins: np.ndarray           # [K, L, S, C, r] in-sample net Sharpe
    outs: np.ndarray          # [K, L, S, C, r] out-of-sample net Sharpe
    theta: np.ndarray         # [K, L, S, C, f]
    bh_in: np.ndarray         # [K] buy-and-hold Sharpe
    bh_out: np.ndarray        # [K]
    turnover: np.ndarray      # [K, L, S, C] mean |Δposition| per day out of sample
    out_gross: np.ndarray     # [K, L, S, C] out-of-sample Sharpe before costs
    r_in: np.ndarray          # [K, train] returns (for equity curves)
    r_out: np.ndarray         # [K, test]
    pos_in: np.ndarray        # [K, train] positions at lr, seed 0, train cost = cost
    pos_out: np.ndarray       # [K, test]
    lookahead: float          # max |Δ past positions| after changing future prices
    smooth_gap: float         # max |smooth - exact| cost per day on the trained positions
    strat_fd: float           # rel err jax.grad vs finite differences of strategy_loss


def compute(cfg, run) -> Result:
    with run.timed("portfolio"):
        pf = _portfolio(cfg)
    with run.timed("strategy"):
        st = _strategy(cfg)
    run.save_data(st.pop("_X"), st.pop("_Y"))
    return Result(**pf, **st)


def _portfolio(cfg) -> dict:
    P = cfg.experiment
    ds = data.load("ff_factors", dtype=np.float64)
    R = jnp.asarray(ds.X)
    w_star, s_star = tangency(ds.X)
    u = w_star / np.linalg.norm(w_star)
    hess = jax.jit(jax.hessian(pf_loss))
    H1 = np.asarray(hess(jnp.asarray(u), R))
    ev, vec = np.linalg.eigh(H1)
    H2 = np.asarray(hess(jnp.asarray(2 * u), R))
    lam = float(ev.max())
    rng = np.random.default_rng(cfg.seed)
    W0 = rng.standard_normal((P.starts, ds.n))
    W0 /= np.linalg.norm(W0, axis=1, keepdims=True)
    fracs = np.asarray(P.pf_lr, np.float64)
    lrs = fracs * 2 / lam
    gd = jax.jit(pf_gd, static_argnums=3)
    outs = [jax.device_get(gd(R, jnp.asarray(W0), float(lr), P.pf_steps)) for lr in lrs]
    paths = np.stack([o[0] for o in outs])
    # gradient checks at every random start: autodiff, the moment form (one compiled call),
    # finite differences (bpexp.gradcheck at the first start)
    mu, Sigma = moments(ds.X)

    @jax.jit
    def three(W):
        def one(w):
            p = {"w": w}
            return (grads.neg_sharpe_grad(p, R, None, MONTHS)["w"],
                    jax.grad(grads.neg_sharpe)(p, R, None, MONTHS)["w"],
                    -grads.sharpe_grad_moments(w, mu, Sigma, MONTHS))
        return jax.vmap(one)(W)

    g0, g_ad, g_mom = map(np.asarray, three(jnp.asarray(W0)))
    r = gradcheck.check(_SharpeModel, {"w": jnp.asarray(W0[0])}, R, None, seed=cfg.seed,
                        n_dirs=8, eps=1e-6)
    ad = max(gradcheck.rel_err(a, b) for a, b in zip(g0, g_ad))
    mom = max(gradcheck.rel_err(a, b) for a, b in zip(g0, g_mom))
    fd = r["rel_err_fd"]
    euler = float(np.max(np.abs(np.sum(W0 * g0, 1)) / np.linalg.norm(g0, axis=1)))
    # the two-factor problem of the contour figure
    i, j = P.pair
    R2 = R[jnp.array([i, j])]
    w2, s2 = tangency(ds.X[[i, j]])
    lam2 = float(np.linalg.eigvalsh(np.asarray(hess(jnp.asarray(w2 / np.linalg.norm(w2)),
                                                    R2))).max())
    W0p = W0[:, :2] / np.linalg.norm(W0[:, :2], axis=1, keepdims=True)
    pair_path = np.asarray(gd(R2, jnp.asarray(W0p), 2 / lam2, P.pf_steps)[0])
    lim = 1.1 * max(3.0, float(np.abs(pair_path).max()))
    grid = np.linspace(-lim, lim, 161)
    G1, G2 = np.meshgrid(grid, grid)
    Wg = jnp.asarray(np.stack([G1.ravel(), G2.ravel()], 1))
    surf = np.asarray(jax.jit(jax.vmap(lambda w: -pf_loss(w, R2)))(Wg)).reshape(G1.shape)
    return dict(assets=ds.info["names"], months=ds.info["dates"], w_star=u, s_star=s_star,
                s_of_w_star=float(-pf_loss(jnp.asarray(w_star), R)), pf_lr=lrs, pf_lr_frac=fracs,
                w0=W0, pf_sharpe=np.stack([o[1] for o in outs]),
                pf_norm=np.linalg.norm(paths, axis=-1), pf_gg=np.stack([o[2] for o in outs]),
                pf_wT=paths[:, :, -1], hess_eig=ev,
                hess_null_cos=float(abs(vec[:, np.argmin(np.abs(ev))] @ u)),
                hess_scale=float(np.linalg.eigvalsh(H2).max() * 4 / lam), euler=euler,
                grad_check={"rel_err_autodiff": ad, "rel_err_fd": fd, "rel_err_moment_form": mom},
                pair=[i, j], pair_w_star=w2 / np.linalg.norm(w2), pair_s_star=s2,
                pair_lr=2 / lam2, pair_path=pair_path, pair_grid=grid, pair_surface=surf)


class _SharpeModel:
    """The portfolio loss in the (loss, grad) shape that bpexp.gradcheck.check expects."""
    loss = staticmethod(lambda p, X, Y: grads.neg_sharpe(p, X, Y, MONTHS))
    grad = staticmethod(lambda p, X, Y: grads.neg_sharpe_grad(p, X, Y, MONTHS))


def _strategy(cfg) -> dict:
    P = cfg.experiment
    ds = data.load("sp500", m=P.days, dtype=np.float64)
    F, r = ds.X, ds.Y[0]
    wins = walk_forward(ds.m, P.train_days, P.test_days)
    Ftr = np.stack([F[:, a:b] for a, b, _ in wins])
    Fte = np.stack([F[:, b:c] for _, b, c in wins])
    rtr = np.stack([r[a:b] for a, b, _ in wins])
    rte = np.stack([r[b:c] for _, b, c in wins])
    Ztr, Zte = standardize(Ftr, Ftr), standardize(Ftr, Fte)
    K, L, S, nf = len(wins), len(P.lrs), P.seeds, ds.n + 1
    lrs = np.asarray(P.lrs, np.float64)
    costs = np.array([0.0, P.cost])
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), K * L * S)
    theta0 = P.init_scale * jax.vmap(lambda k: jax.random.normal(k, (nf,), jnp.float64))(keys)
    theta0 = theta0.reshape(K, L, S, nf).at[..., -1].add(np.arctanh(P.init_position))
    f, rec = make_strategy_runs(P.steps, P.record_every, P.eps, P.cost)
    thT, ins, outs = jax.device_get(f(theta0, jnp.asarray(lrs), jnp.asarray(costs), Ztr,
                                      jnp.asarray(rtr), Zte, jnp.asarray(rte)))
    # evaluation of the final rules out of sample: turnover and gross Sharpe
    pos_te = np.tanh(np.einsum("klscf,kft->klsct", thT, np.asarray(Zte)))  # [K,L,S,C,test]
    last_in = np.tanh(np.einsum("klscf,kf->klsc", thT, np.asarray(Ztr)[..., -1]))
    turnover = np.mean(np.abs(np.diff(pos_te, axis=-1, prepend=last_in[..., None])), axis=-1)
    gross = np.asarray(grads.sharpe(jnp.asarray(pos_te * rte[:, None, None, None]), DAYS))
    li = int(np.argmin(np.abs(lrs - P.lr)))
    th_main = thT[:, li, 0, 1]                                           # [K, f]
    pos_in = np.asarray(jax.vmap(positions)(jnp.asarray(th_main), Ztr))
    pos_out = np.asarray(jax.vmap(positions)(jnp.asarray(th_main), Zte))
    d = np.diff(pos_in, axis=-1, prepend=0.0)
    smooth_gap = float(np.max(np.abs(P.cost * (np.sqrt(d * d + P.eps) - np.sqrt(P.eps))
                                     - P.cost * np.abs(d))))
    return dict(features=ds.info["names"] + ["bias"], days=ds.info["dates"], windows=wins,
                lrs=lrs, train_costs=costs, record=rec, ins=ins, outs=outs, theta=thT,
                bh_in=np.asarray(grads.sharpe(jnp.asarray(rtr), DAYS)),
                bh_out=np.asarray(grads.sharpe(jnp.asarray(rte), DAYS)),
                turnover=turnover, out_gross=gross, r_in=rtr, r_out=rte, pos_in=pos_in,
                pos_out=pos_out, lookahead=lookahead_check(th_main[-1], P.days),
                smooth_gap=smooth_gap,
                strat_fd=_strategy_fd(th_main[0], Ztr[0], rtr[0], P.cost, P.eps),
                _X=F, _Y=ds.Y)


def lookahead_check(theta, days, cut_fraction=0.5, seed=0):
    """Change every price after a cut day (x random factors), rebuild the features, standardize
    with fixed statistics, recompute positions: max |Δ position| on days up to the cut (must
    be exactly 0: position_t depends on prices up to t-1 only)."""
    _, P = data.sp500_prices()
    X, _, _, t0 = data.sp500_features(P)
    start = X.shape[1] - days if days else 0
    cut = start + int(cut_fraction * (X.shape[1] - start))  # column index
    Q = P.copy()
    Q[t0 + cut:] *= np.random.default_rng(seed).uniform(0.5, 1.5, Q[t0 + cut:].shape)
    X2 = data.sp500_features(Q)[0]
    Xs = X[:, start:]
    pos1 = np.asarray(positions(jnp.asarray(theta), standardize(Xs, jnp.asarray(Xs))))
    pos2 = np.asarray(positions(jnp.asarray(theta), standardize(Xs, jnp.asarray(X2[:, start:]))))
    n_past = cut - start + 1  # positions on days up to and including the cut day
    assert not np.array_equal(pos1[n_past:], pos2[n_past:])  # the change does reach the future
    return float(np.max(np.abs(pos1[:n_past] - pos2[:n_past])))


def _strategy_fd(theta, Z, r, cost, eps, h=1e-6):
    g = np.asarray(jax.jit(jax.grad(strategy_loss))(jnp.asarray(theta), Z, jnp.asarray(r),
                                                     cost, eps))
    E = h * np.eye(theta.size)
    loss = jax.jit(jax.vmap(strategy_loss, (0, None, None, None, None)))
    fd = (np.asarray(loss(theta + E, Z, r, cost, eps))
          - np.asarray(loss(theta - E, Z, r, cost, eps))) / (2 * h)
    return gradcheck.rel_err(g, fd)


# ---------------------------------------------------------------- save
def _stats(res: Result):
    """Per-run first-step-to-1e-6 and gaps of the portfolio GD."""
    gap = np.abs(res.pf_sharpe - res.s_star)                     # [p, k, s]
    hit = gap < TOL_SHARPE
    first = np.where(hit.any(-1), np.argmax(hit, -1), -1)        # [p, k]
    cos = np.sum(res.pf_wT * res.w_star, -1) / np.linalg.norm(res.pf_wT, axis=-1)
    # |w_T|^2 - |w_0|^2 = lr^2 sum_t |g_t|^2 (the steps are orthogonal to w)
    lhs = res.pf_norm[..., -1] ** 2 - res.pf_norm[..., 0] ** 2
    rhs = res.pf_lr[:, None] ** 2 * res.pf_gg[..., :-1].sum(-1)
    return gap, first, cos, float(np.max(np.abs(lhs - rhs) / rhs))


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    gap, first, cos, norm_err = _stats(res)
    K = len(res.windows)
    win_names = [f"{res.days[b]}..{res.days[c - 1]}" for _, b, c in res.windows]
    run.save_metrics(xr.Dataset(
        {"pf_sharpe": (("pf_lr", "start", "pf_step"), res.pf_sharpe),
         "pf_norm": (("pf_lr", "start", "pf_step"), res.pf_norm),
         "pf_grad_sq": (("pf_lr", "start", "pf_step"), res.pf_gg),
         "pf_w_final": (("pf_lr", "start", "asset"), res.pf_wT),
         "pf_w0": (("start", "asset"), res.w0),
         "w_star": (("asset",), res.w_star),
         "hessian_eigenvalues": (("eig",), res.hess_eig),
         "pair_path": (("start", "pf_step", "pair_asset"), res.pair_path),
         "pair_surface": (("pair_y", "pair_x"), res.pair_surface),
         "in_sharpe": (("window", "lr", "seed", "train_cost", "record"), res.ins),
         "out_sharpe": (("window", "lr", "seed", "train_cost", "record"), res.outs),
         "theta": (("window", "lr", "seed", "train_cost", "feature"), res.theta),
         "turnover_out": (("window", "lr", "seed", "train_cost"), res.turnover),
         "out_sharpe_gross": (("window", "lr", "seed", "train_cost"), res.out_gross),
         "buy_hold_in": (("window",), res.bh_in), "buy_hold_out": (("window",), res.bh_out),
         "position_in": (("window", "day_in"), res.pos_in),
         "position_out": (("window", "day_out"), res.pos_out),
         "return_in": (("window", "day_in"), res.r_in),
         "return_out": (("window", "day_out"), res.r_out)},
        coords={"pf_lr": res.pf_lr, "pf_lr_frac": ("pf_lr", res.pf_lr_frac),
                "start": np.arange(len(res.w0)), "pf_step": np.arange(res.pf_sharpe.shape[-1]),
                "asset": res.assets, "pair_asset": [res.assets[i] for i in res.pair],
                "pair_x": res.pair_grid, "pair_y": res.pair_grid,
                "window": np.arange(K), "test_period": ("window", win_names),
                "lr": res.lrs, "seed": np.arange(P.seeds), "train_cost": res.train_costs,
                "record": res.record, "feature": res.features,
                "day_in": np.arange(P.train_days), "day_out": np.arange(P.test_days)}))
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    fin_in, fin_out = res.ins[..., -1], res.outs[..., -1]                # [K, L, S, C]
    per_window = [{"train": f"{res.days[a]}..{res.days[b - 1]}",
                   "test": f"{res.days[b]}..{res.days[c - 1]}",
                   "in_sharpe": float(fin_in[k, li, :, 1].mean()),
                   "out_sharpe": float(fin_out[k, li, :, 1].mean()),
                   "buy_hold_in": float(res.bh_in[k]), "buy_hold_out": float(res.bh_out[k]),
                   "turnover_out": float(res.turnover[k, li, :, 1].mean())}
                  for k, (a, b, c) in enumerate(res.windows)]
    cost_effect = {name: {"turnover_out": float(res.turnover[:, li, :, c].mean()),
                          "out_sharpe_gross": float(res.out_gross[:, li, :, c].mean()),
                          "out_sharpe_net": float(fin_out[:, li, :, c].mean()),
                          "in_sharpe_net": float(fin_in[:, li, :, c].mean())}
                   for c, name in enumerate(["trained_without_cost", "trained_with_cost"])}
    i_, j_ = res.pair
    return {
        "portfolio": {
            "data": "ff_factors", "assets": res.assets, "months": len(res.months),
            "period": f"{res.months[0]}..{res.months[-1]}",
            "sharpe": "sqrt(12) mean / std (population std), monthly excess returns",
            "tangency_weights_unit": res.w_star,
            "tangency_weights_sum1": res.w_star / res.w_star.sum(),
            "tangency_sharpe_closed_form": res.s_star,
            "tangency_sharpe_of_weights": res.s_of_w_star,
            "gd": {"starts": len(res.w0), "steps": res.pf_sharpe.shape[-1] - 1,
                   "lr": res.pf_lr, "lr_times_lambda_max_over_2": res.pf_lr_frac,
                   "final_sharpe_gap_max": gap[..., -1].max(-1),
                   "final_cosine_min": cos.min(-1),
                   "steps_to_1e-6_median": [float(np.median(f)) if (f >= 0).all() else None
                                            for f in first],
                   "steps_to_1e-6_max": [int(f.max()) if (f >= 0).all() else None
                                         for f in first],
                   "final_norm_max": res.pf_norm[..., -1].max(-1),
                   "reached": bool((gap[..., -1] < TOL_SHARPE).all()
                                   and (cos > 1 - TOL_COS).all())},
            "scale_invariance": {
                "hessian_eigenvalues_at_unit_tangency": res.hess_eig,
                "null_eigenvector_cosine_with_w_star": res.hess_null_cos,
                "lambda_max_2w_times_4_over_lambda_max_w": res.hess_scale,
                "euler_w_dot_grad_rel_max": res.euler,
                "norm_growth_identity_rel_err": norm_err},
            "gradient_check": res.grad_check,
            "pair": {"assets": [res.assets[i_], res.assets[j_]],
                     "tangency_weights_unit": res.pair_w_star,
                     "tangency_sharpe": res.pair_s_star, "lr": res.pair_lr}},
        "strategy": {
            "data": "sp500", "days": len(res.days), "period": f"{res.days[0]}..{res.days[-1]}",
            "features": res.features, "position": "tanh(theta . z_t), z_t from days < t",
            "sharpe": "sqrt(252) mean / std of net daily returns",
            "cost": P.cost, "eps": P.eps, "train_days": P.train_days,
            "test_days": P.test_days, "windows": K, "lrs": res.lrs, "seeds": P.seeds,
            "steps": P.steps, "lr": float(res.lrs[li]), "per_window": per_window,
            "by_lr": {"in_sharpe_mean": fin_in[..., 1].mean((0, 2)),
                      "out_sharpe_mean": fin_out[..., 1].mean((0, 2)),
                      "in_sharpe_gain_mean": (fin_in - res.ins[..., 0])[..., 1].mean((0, 2)),
                      "out_sharpe_gain_mean": (fin_out - res.outs[..., 0])[..., 1].mean((0, 2))},
            "buy_hold_out_mean": float(res.bh_out.mean()),
            "transaction_cost": cost_effect,
            "smooth_cost_max_gap_per_day": res.smooth_gap,
            "lookahead_max_change_of_past_positions": res.lookahead,
            "grad_vs_finite_differences_rel_err": res.strat_fd}}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    pf, st = summary["portfolio"], summary["strategy"]
    gd, si = pf["gd"], pf["scale_invariance"]
    figs = ["portfolio_contours.png", "portfolio_gd.png", "equity_curves.png",
            "sharpe_vs_lr.png", "sharpe_vs_step.png"]
    fig_contours(res, run.figure(figs[0]))
    fig_pf_gd(res, run.figure(figs[1]))
    fig_equity(res, P, run.figure(figs[2]))
    fig_sharpe_vs_lr(res, summary, run.figure(figs[3]))
    fig_sharpe_vs_step(res, run.figure(figs[4]))

    hdr = ["quantity", "measured", "theory / reference"]
    rows_pf = [
        ["tangency Sharpe S(w*) (grads.sharpe)", f"{pf['tangency_sharpe_of_weights']:.12f}",
         f"closed form sqrt(12 mu'Σ^-1 mu) = {pf['tangency_sharpe_closed_form']:.12f}"],
        *[[f"GD lr = {f:g} x 2/λmax: steps to |S - S*| < 1e-6 (median / max)",
           f"{md:g} / {mx}", "more as lr grows past the edge (|w| grows)"]
          for f, md, mx in zip(gd["lr_times_lambda_max_over_2"], gd["steps_to_1e-6_median"],
                               gd["steps_to_1e-6_max"])],
        *[[f"GD lr = {f:g} x 2/λmax: max |S_T - S*|", g, f"< {TOL_SHARPE:g}"]
          for f, g in zip(gd["lr_times_lambda_max_over_2"], gd["final_sharpe_gap_max"])],
        *[[f"GD lr = {f:g} x 2/λmax: min cos(w_T, w*)", c, "1"]
          for f, c in zip(gd["lr_times_lambda_max_over_2"], gd["final_cosine_min"])],
        *[[f"GD lr = {f:g} x 2/λmax: max |w_T| (|w_0| = 1)", n, "grows; lr/|w|^2 shrinks"]
          for f, n in zip(gd["lr_times_lambda_max_over_2"], gd["final_norm_max"])],
        ["Hessian of -S at unit w*: eigenvalues", " ".join(f"{e:.3g}" for e in
                                                           si["hessian_eigenvalues_at_unit_tangency"]),
         "one 0 (along w), the rest > 0"],
        ["|cos(null eigenvector, w*)|", si["null_eigenvector_cosine_with_w_star"], "1"],
        ["λmax(H(2w)) x 4 / λmax(H(w))", si["lambda_max_2w_times_4_over_lambda_max_w"],
         "1 (H scales as 1/|w|^2)"],
        ["max |w·∇S| / (|w||∇S|) at the starts", si["euler_w_dot_grad_rel_max"], "0 (Euler)"],
        ["|w_T|^2 - |w_0|^2 vs lr^2 Σ|g_t|^2, rel err", si["norm_growth_identity_rel_err"], "0"],
        ["hand dS/dw vs jax.grad, rel err", pf["gradient_check"]["rel_err_autodiff"],
         f"< {TOL_AD:g}"],
        ["hand dS/dw vs finite differences", pf["gradient_check"]["rel_err_fd"], f"< {TOL_FD:g}"],
        ["hand dS/dw vs moment form μ/σ - (w'μ)Σw/σ^3", pf["gradient_check"]["rel_err_moment_form"],
         f"< {TOL_AD:g}"]]
    report.print_table(f"finance, portfolio: Fama-French {', '.join(res.assets)} monthly "
                       f"{pf['period']}", hdr, rows_pf)
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    hdr_w = ["test year", "in-sample Sharpe", "out-of-sample Sharpe", "buy & hold out",
             "turnover/day out"]
    rows_w = [[w["test"], w["in_sharpe"], w["out_sharpe"], w["buy_hold_out"], w["turnover_out"]]
              for w in st["per_window"]]
    report.print_table(f"finance, strategy: S&P 500 walk-forward, lr = {res.lrs[li]:g}, cost "
                       f"{P.cost:g}/unit, mean of {P.seeds} seeds (net Sharpe)", hdr_w, rows_w)
    hdr_l = ["lr", "in-sample Sharpe", "out-of-sample Sharpe", "in gain over training",
             "out gain over training"]
    b = st["by_lr"]
    rows_l = [[float(lr), a, o, ga, go] for lr, a, o, ga, go in
              zip(res.lrs, b["in_sharpe_mean"], b["out_sharpe_mean"], b["in_sharpe_gain_mean"],
                  b["out_sharpe_gain_mean"])]
    report.print_table("finance, strategy: mean over windows and seeds, trained with cost",
                       hdr_l, rows_l)
    tc = st["transaction_cost"]
    rows_c = [[k.replace("_", " "), v["turnover_out"], v["out_sharpe_gross"], v["out_sharpe_net"]]
              for k, v in tc.items()]
    hdr_c = ["rule", "turnover/day out", "out Sharpe gross", "out Sharpe net"]
    report.print_table(f"finance, strategy: effect of the transaction cost (lr {res.lrs[li]:g})",
                       hdr_c, rows_c)
    checks = [["max |Δ past position| after changing future prices",
               st["lookahead_max_change_of_past_positions"], "0 exactly (no look-ahead)"],
              ["max |smooth - exact| cost per day", st["smooth_cost_max_gap_per_day"],
               f"<= cost sqrt(eps) = {P.cost * math.sqrt(P.eps):.2g}"],
              ["strategy jax.grad vs finite differences", st["grad_vs_finite_differences_rel_err"],
               "< 1e-6"]]
    report.print_table("finance, strategy: checks", hdr, checks)
    bl = st["by_lr"]
    run.save_report(report.report(
        "Finance: gradient descent on the negative Sharpe ratio", question(__doc__),
        command(cfg),
        [("Portfolio (Fama-French factors)",
          f"{pf['months']} months {pf['period']} of {', '.join(res.assets)} excess returns "
          f"(arch.data.frenchdata). Loss -S(w) with S = sqrt(12) mean/std (population std). "
          f"The tangency portfolio (unit norm) is {_vec(res.w_star)}, sum-to-one "
          f"{_vec(pf['tangency_weights_sum1'])}, S* = {res.s_star:.6f}. GD from {len(res.w0)} "
          f"random unit-norm starts, {gd['steps']} steps, learning rates "
          f"{_vec(res.pf_lr_frac)} x 2/λmax of the Hessian at the unit tangency.\n\n"
          "**Why the Hessian is singular.** S(cw) = S(w) for every c > 0, so along the ray of "
          "w the loss is flat: w is an eigenvector of the Hessian with eigenvalue 0, and by "
          "Euler's theorem w · ∇S = 0. Two consequences for the step size: (1) every GD step "
          "is orthogonal to w, so |w_{t+1}|^2 = |w_t|^2 + lr^2 |g_t|^2 and the norm only grows; "
          "(2) the curvature across the ray scales as 1/|w|^2, so the step that matters is "
          "lr/|w|^2. A too-large lr first throws w outward, which shrinks its own effective "
          "step: GD on a scale-free loss does not diverge, it slows down (compare the "
          "steps-to-1e-6 across learning rates). Newton's method is undefined (H is singular); "
          "the scale of w is arbitrary and must be fixed by a normalization (here |w| = 1 or "
          "sum w = 1) when weights are reported.\n\n" + report.markdown_table(hdr, rows_pf)),
         ("Strategy (S&P 500, walk-forward)",
          f"{st['days']} trading days {st['period']} (arch.data.sp500). position_t = "
          f"tanh(theta · z_t), z_t = the features {', '.join(res.features[:-1])} of days < t, "
          f"z-scored with the training window's statistics, plus a bias. Net return = "
          f"position_t r_t - {P.cost:g} |Δposition_t| (training: the smooth "
          f"c(sqrt(Δ^2+{P.eps:g}) - sqrt({P.eps:g}))). Fit {P.train_days} days, test the next "
          f"{P.test_days}, roll forward: {st['windows']} windows; GD {P.steps} steps from "
          f"{P.seeds} seeds of theta0 ~ {P.init_scale:g} N(0, I) + bias atanh("
          f"{P.init_position:g}) (a start near holding {P.init_position:g} of the index) at "
          "each lr of "
          f"{_vec(res.lrs)}, all in one vmapped call.\n\nPer window at lr {res.lrs[li]:g}:\n\n"
          + report.markdown_table(hdr_w, rows_w)
          + "\nBy learning rate (mean over windows and seeds):\n\n"
          + report.markdown_table(hdr_l, rows_l)
          + "\nIn-sample Sharpe rises with training and with lr (from "
          f"{bl['in_sharpe_mean'][0]:.3f} to {max(bl['in_sharpe_mean']):.3f}); out of sample it "
          f"ranges {min(bl['out_sharpe_mean']):.3f}..{max(bl['out_sharpe_mean']):.3f}, against "
          f"buy and hold {st['buy_hold_out_mean']:.3f} on average.\n\nTransaction cost:\n\n"
          + report.markdown_table(hdr_c, rows_c) + "\nChecks:\n\n"
          + report.markdown_table(hdr, checks))],
        figs))


def _vec(v):
    return "[" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + "]"


def fig_contours(res: Result, path):
    """Sharpe of the two-factor portfolio on the (w_i, w_j) plane: the contours are rays (S is
    scale-free); GD paths from the random starts and the tangency direction."""
    a, b = (res.assets[i] for i in res.pair)
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    g = res.pair_grid
    cs = ax.contourf(g, g, res.pair_surface, levels=21, cmap="RdBu_r")
    ax.contour(g, g, res.pair_surface, levels=21, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="annualized Sharpe ratio S(w)")
    lim = g[-1]
    u = res.pair_w_star
    ax.plot([0, lim * 1.5 * u[0]], [0, lim * 1.5 * u[1]], color="gold", lw=3,
            label=f"tangency direction Σ⁻¹μ (S* = {res.pair_s_star:.3f})")
    ax.plot([0, -lim * 1.5 * u[0]], [0, -lim * 1.5 * u[1]], color="gold", lw=1.5, ls=":",
            label="-Σ⁻¹μ (the minimum)")
    for k, p in enumerate(res.pair_path):
        ax.plot(p[:, 0], p[:, 1], ".-", color="k", ms=2.5, lw=0.9,
                label="GD paths from unit-norm starts" if k == 0 else None)
        ax.plot(*p[0], "o", color="w", mec="k", ms=6, zorder=5)
        ax.plot(*p[-1], "*", color="k", ms=9, zorder=5)
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="0.3", lw=0.8, ls="--", label="|w| = 1 (starts)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(f"weight on {a}")
    ax.set_ylabel(f"weight on {b}")
    ax.set_title(f"GD on -Sharpe of {a} + {b} (monthly, {res.months[0]}..{res.months[-1]}):\n"
                 f"contours are rays, each step is orthogonal to w, |w| grows (lr = 2/λmax)",
                 fontsize=10)
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.9)
    return plots.save(fig, path)


def fig_pf_gd(res: Result, path):
    """|S_t - S*|, |w_t| and the effective step (lr/|w_t|^2 in units of 2/lambda_max at |w| = 1)
    per learning rate and start, steps on a log axis (step + 1)."""
    gap = np.abs(res.pf_sharpe - res.s_star)
    x = np.arange(1, gap.shape[-1] + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(res.pf_lr)))
    for c, f, gp, nrm in zip(colors, res.pf_lr_frac, gap, res.pf_norm):
        for k in range(gp.shape[0]):
            lbl = f"lr = {f:g} x 2/λmax" if k == 0 else None
            done = np.flatnonzero(gp[k] < 1e-14)
            end = done[0] + 1 if done.size else gp.shape[-1]   # cut at rounding level
            axes[0].loglog(x[:end], gp[k, :end], color=c, lw=1, alpha=0.85, label=lbl)
            axes[1].semilogx(x, nrm[k], color=c, lw=1, alpha=0.85, label=lbl)
            axes[2].loglog(x, f / nrm[k] ** 2, color=c, lw=1, alpha=0.85, label=lbl)
    axes[0].axhline(TOL_SHARPE, color="tab:red", ls="--", lw=1, label="1e-6 target")
    axes[0].set_ylabel("|S(w_t) - S*|  (S* closed form)")
    axes[0].set_title(f"every start reaches S* = {res.s_star:.4f} (curves cut at 1e-14)",
                      fontsize=10)
    axes[1].set_ylabel("|w_t|  (|w_0| = 1)")
    axes[1].set_title("|w| only grows: each step is orthogonal to w", fontsize=10)
    axes[2].axhline(1.0, color="tab:red", ls="--", lw=1, label="stability edge at |w| = 1")
    axes[2].set_ylabel("effective step (lr/|w_t|²) / (2/λmax)")
    axes[2].set_title("the growing |w| shrinks the effective step below the edge", fontsize=10)
    for ax in axes:
        ax.set_xlabel("GD step + 1")
        ax.legend(fontsize=7.5)
    fig.suptitle(f"GD on -Sharpe of {', '.join(res.assets)} (3 weights, {len(res.w0)} random "
                 "unit-norm starts per lr): a scale-free loss slows itself down", fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)


def _np_net(pos, r, cost, prev):
    return pos * r - cost * np.abs(np.diff(pos, prepend=prev))


def _np_sharpe(r):
    return float(np.sqrt(DAYS) * r.mean() / r.std())


def fig_equity(res: Result, P, path):
    K = len(res.windows)
    cols = min(4, K)
    rows = math.ceil(K / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.5 * rows + 0.6), squeeze=False)
    cost = P.cost
    for k, ax in enumerate(axes.ravel()):
        if k >= K:
            ax.axis("off")
            continue
        net_in = _np_net(res.pos_in[k], res.r_in[k], cost, 0.0)
        net_out = _np_net(res.pos_out[k], res.r_out[k], cost, res.pos_in[k][-1])
        eq_in = np.cumsum(np.log1p(net_in))
        eq_out = eq_in[-1] + np.cumsum(np.log1p(net_out))
        bh = np.cumsum(np.log1p(np.concatenate([res.r_in[k], res.r_out[k]])))
        n_in = len(net_in)
        x = np.arange(n_in + len(net_out))
        ax.plot(x, 100 * bh, color="0.6", lw=0.8, label="buy & hold")
        ax.plot(x[:n_in], 100 * eq_in, color="tab:blue", lw=1, label="strategy in sample")
        ax.plot(x[n_in:], 100 * eq_out, color="tab:red", lw=1.2, label="out of sample")
        ax.axvline(n_in, color="k", lw=0.6, ls=":")
        s_in, s_out = _np_sharpe(net_in), _np_sharpe(net_out)
        _, b, c = res.windows[k]
        ax.set_title(f"test {res.days[b][:7]}..{res.days[c - 1][:7]}\nS in {s_in:.2f}, "
                     f"out {s_out:.2f}", fontsize=8)
        ax.tick_params(labelsize=7)
        if k % cols == 0:
            ax.set_ylabel("cum. log return (%)", fontsize=8)
        if k >= K - cols:
            ax.set_xlabel("trading day of the window", fontsize=8)
        if k == 0:
            ax.legend(fontsize=6.5, loc="upper left")
    li = int(np.argmin(np.abs(res.lrs - P.lr)))
    fig.suptitle(f"S&P 500 walk-forward: equity of position = tanh(θ·z) net of {cost:g}/unit "
                 f"turnover (lr {res.lrs[li]:g}, seed 0); blue fitted, red the next "
                 f"{P.test_days} days", fontsize=10)
    fig.tight_layout()
    return plots.save(fig, path)


def fig_sharpe_vs_lr(res: Result, summary, path):
    fin_in, fin_out = res.ins[..., -1], res.outs[..., -1]     # [K, L, S, C]
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for c, ls, name in ((1, "-", "trained with cost"), (0, "--", "trained without cost")):
        for arr, color, where in ((fin_in, "tab:blue", "in sample"),
                                  (fin_out, "tab:red", "out of sample")):
            per = arr[..., c].mean(2)                         # [K, L] mean over seeds
            ax.plot(res.lrs, per.mean(0), ls, color=color, marker="o", ms=4,
                    label=f"{where}, {name}")
            if c == 1:
                lo, hi = np.percentile(per, [25, 75], axis=0)
                ax.fill_between(res.lrs, lo, hi, color=color, alpha=0.12)
    ax.axhline(float(res.bh_out.mean()), color="0.4", lw=1, ls=":",
               label="buy & hold, out of sample")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (how aggressively the strategy changes)")
    ax.set_ylabel("annualized Sharpe of net returns")
    ax.set_title(f"Sharpe vs learning rate after {res.record[-1]} GD steps: mean over "
                 f"{len(res.windows)} windows (band: IQR over windows)", fontsize=10)
    ax.legend(fontsize=7.5)
    return plots.save(fig, path)


def fig_sharpe_vs_step(res: Result, path):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(res.lrs)))
    for ax, arr, where in ((axes[0], res.ins, "in sample"), (axes[1], res.outs,
                                                             "out of sample")):
        for c, lr, a in zip(colors, res.lrs, np.moveaxis(arr[..., 1, :], 1, 0)):
            ax.plot(res.record, a.mean((0, 1)), color=c, lw=1.4, label=f"lr {lr:g}")
        ax.axhline(float((res.bh_in if where == "in sample" else res.bh_out).mean()),
                   color="0.4", ls=":", lw=1, label="buy & hold")
        ax.set_xlabel("GD step")
        ax.set_title(f"{where}: mean over windows and seeds", fontsize=10)
    axes[0].set_ylabel("annualized net Sharpe")
    axes[1].legend(fontsize=7.5)
    fig.suptitle("Training raises the in-sample Sharpe; out of sample it does not follow",
                 fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)
