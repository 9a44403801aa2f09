"""The finance experiment's computation: the portfolio part and the strategy part."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import data, gradcheck, grads
from bpexp.experiments.finance.strategy import (
    _strategy_fd,
    lookahead_check,
    make_strategy_runs,
    positions,
    standardize,
    walk_forward,
)
from bpexp.experiments.finance.theory import (
    DAYS,
    MONTHS,
    TOL_SHARPE,
    moments,
    pf_gd,
    pf_loss,
    tangency,
)


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
    theta0: np.ndarray        # [K, S, f] the starts, shared by every lr and train cost
    pos_in: np.ndarray        # [K, S, train] positions at lr, every seed, train cost = cost
    pos_out: np.ndarray       # [K, S, test]
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
    """Long because it computes the portfolio part's measurements one after another from the
    same moments."""
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
    # one start per (window, seed), the same for every lr: step 0 is the same rule at every lr
    keys = jax.random.split(jax.random.PRNGKey(cfg.seed), K * S)
    th0 = P.init_scale * jax.vmap(lambda k: jax.random.normal(k, (nf,), jnp.float64))(keys)
    th0 = th0.reshape(K, S, nf).at[..., -1].add(np.arctanh(P.init_position))
    theta0 = jnp.broadcast_to(th0[:, None], (K, L, S, nf))
    f, rec = make_strategy_runs(P.steps, P.record_every, P.eps, P.cost)
    thT, ins, outs = jax.device_get(f(theta0, jnp.asarray(lrs), jnp.asarray(costs), Ztr,
                                      jnp.asarray(rtr), Zte, jnp.asarray(rte)))
    # evaluation of the final rules out of sample: turnover and gross Sharpe
    pos_te = np.tanh(np.einsum("klscf,kft->klsct", thT, np.asarray(Zte)))  # [K,L,S,C,test]
    last_in = np.tanh(np.einsum("klscf,kf->klsc", thT, np.asarray(Ztr)[..., -1]))
    turnover = np.mean(np.abs(np.diff(pos_te, axis=-1, prepend=last_in[..., None])), axis=-1)
    gross = np.asarray(grads.sharpe(jnp.asarray(pos_te * rte[:, None, None, None]), DAYS))
    li = int(np.argmin(np.abs(lrs - P.lr)))
    th_main = thT[:, li, 0, 1]                                           # [K, f] seed 0
    pos = jax.vmap(jax.vmap(positions, (0, None)))                       # [K, S, f] -> [K, S, t]
    pos_in = np.asarray(pos(jnp.asarray(thT[:, li, :, 1]), Ztr))
    pos_out = np.asarray(pos(jnp.asarray(thT[:, li, :, 1]), Zte))
    d = np.diff(pos_in, axis=-1, prepend=0.0)
    smooth_gap = float(np.max(np.abs(P.cost * (np.sqrt(d * d + P.eps) - np.sqrt(P.eps))
                                     - P.cost * np.abs(d))))
    return dict(features=ds.info["names"] + ["bias"], days=ds.info["dates"], windows=wins,
                lrs=lrs, train_costs=costs, record=rec, ins=ins, outs=outs, theta=thT,
                bh_in=np.asarray(grads.sharpe(jnp.asarray(rtr), DAYS)),
                bh_out=np.asarray(grads.sharpe(jnp.asarray(rte), DAYS)),
                theta0=np.asarray(th0), turnover=turnover, out_gross=gross, r_in=rtr, r_out=rte,
                pos_in=pos_in,
                pos_out=pos_out, lookahead=lookahead_check(th_main[-1], P.days),
                smooth_gap=smooth_gap,
                strat_fd=_strategy_fd(th_main[0], Ztr[0], rtr[0], P.cost, P.eps),
                _X=F, _Y=ds.Y)


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
