"""experiments/finance.py through the CLI on a tiny config: the summary schema, and every
reported number recomputed independently (numpy) from data.npz, metrics.zarr and the bundled
data."""

import json
import re

import numpy as np
import pytest

import bpexp
from bpexp import config, data
from bpexp.errors import UserError
from bpexp.experiments import finance as F
from bpexp.experiments.finance import strategy as FS
from helpers import run_experiment

TINY = ["experiment.days=1000", "experiment.train_days=300", "experiment.test_days=150",
        "experiment.lrs=[0.001,0.01]", "experiment.lr=0.01", "experiment.seeds=2",
        "experiment.steps=20", "experiment.record_every=5", "experiment.pf_steps=300",
        "experiment.starts=3", "experiment.pf_lr=[0.5,2.0]"]
FIGS = ("portfolio_contours.png", "portfolio_gd.png", "equity_curves.png", "sharpe_vs_lr.png",
        "sharpe_vs_step.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = run_experiment("finance", tmp_path_factory.mktemp("finance"), *TINY)
    return run_dir, json.loads((run_dir / "summary.json").read_text()), bpexp.load(run_dir)


def np_sharpe(r, periods):
    return np.sqrt(periods) * r.mean(-1) / r.std(-1)


def test_schema_and_files(tiny_run):
    run_dir, s, ds = tiny_run
    for f in FIGS:
        assert (run_dir / "figures" / f).stat().st_size > 10_000, f
    assert (run_dir / "report.md").exists() and not (run_dir / "metrics.npz").exists()
    assert set(s) == {"portfolio", "strategy"}
    pf, st = s["portfolio"], s["strategy"]
    assert set(pf) >= {"assets", "months", "period", "tangency_weights_unit",
                       "tangency_sharpe_closed_form", "tangency_sharpe_of_weights", "gd",
                       "scale_invariance", "gradient_check", "pair"}
    assert pf["assets"] == ["Mkt-RF", "SMB", "HML"] and pf["period"] == "1926-07..2018-11"
    assert set(st) >= {"per_window", "by_lr", "transaction_cost", "windows", "lrs",
                       "lookahead_max_change_of_past_positions", "buy_hold_out_mean"}
    assert st["windows"] == 4 and len(st["per_window"]) == 4  # (1000 - 300) // 150
    for w in st["per_window"]:
        assert set(w) == {"train", "test", "in_sharpe", "out_sharpe", "buy_hold_in",
                          "buy_hold_out", "turnover_out"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\d\.\.\d{4}-\d\d-\d\d", w["test"])
    assert set(st["transaction_cost"]) == {"trained_without_cost", "trained_with_cost"}
    # named dims and coordinates in the Zarr store
    assert ds["in_sharpe"].dims == ("window", "lr", "seed", "train_cost", "record")
    assert list(ds["asset"].values) == ["Mkt-RF", "SMB", "HML"]
    np.testing.assert_allclose(ds["lr"].values, [0.001, 0.01])
    assert ds.attrs["summary"] == s


def test_portfolio_numbers_recomputed(tiny_run):
    _, s, ds = tiny_run
    pf = s["portfolio"]
    R = data.load("ff_factors", dtype=np.float64).X
    mu, Sigma = R.mean(1), np.cov(R, bias=True)
    w = np.linalg.inv(Sigma) @ mu
    s_ref = np.sqrt(12 * mu @ w)
    assert abs(pf["tangency_sharpe_closed_form"] - s_ref) < 1e-12
    assert abs(pf["tangency_sharpe_of_weights"] - s_ref) < 1e-12
    np.testing.assert_allclose(pf["tangency_weights_unit"], w / np.linalg.norm(w), rtol=1e-10)
    # GD from every start reaches S* to 1e-6 and its direction; recomputed from the store
    wT = ds["pf_w_final"].values                                    # [lr, start, asset]
    S_T = np_sharpe(np.einsum("lka,at->lkt", wT, R), 12)
    assert np.all(np.abs(S_T - s_ref) < 1e-6)
    np.testing.assert_allclose(S_T, ds["pf_sharpe"].values[..., -1], rtol=1e-12)
    cos = wT @ w / np.linalg.norm(wT, axis=-1) / np.linalg.norm(w)
    assert np.all(cos > 1 - 1e-6) and pf["gd"]["reached"] is True
    assert np.all(np.asarray(pf["gd"]["final_sharpe_gap_max"]) < 1e-6)
    # the Hessian: one zero eigenvalue (along w), the others positive
    ev = np.asarray(pf["scale_invariance"]["hessian_eigenvalues_at_unit_tangency"])
    assert abs(ev[0]) < 1e-12 * ev[-1] and ev[1] > 0
    assert pf["scale_invariance"]["null_eigenvector_cosine_with_w_star"] > 1 - 1e-10
    assert abs(pf["scale_invariance"]["lambda_max_2w_times_4_over_lambda_max_w"] - 1) < 1e-10
    assert pf["scale_invariance"]["norm_growth_identity_rel_err"] < 1e-10
    # |w| grows with every step; the lrs are the stated multiples of 2/lambda_max
    norm = ds["pf_norm"].values
    assert np.all(np.diff(norm, axis=-1) >= -1e-12)
    np.testing.assert_allclose(np.asarray(pf["gd"]["lr"]) * ev[-1] / 2, [0.5, 2.0], rtol=1e-12)
    gc = pf["gradient_check"]
    assert gc["rel_err_autodiff"] < 1e-10 and gc["rel_err_moment_form"] < 1e-10
    assert gc["rel_err_fd"] < 1e-6


def test_strategy_numbers_recomputed(tiny_run):
    run_dir, s, ds = tiny_run
    st = s["strategy"]
    D = np.load(run_dir / "data.npz")
    X, r = D["X"], D["Y"][0]
    assert X.shape == (6, 1000)
    wins = FS.walk_forward(1000, 300, 150)
    theta = ds["theta"].values                                    # [K, L, S, C, f]
    li = 1                                                        # lr 0.01
    for k, (a, b, c) in enumerate(wins):
        Xtr, Xte = X[:, a:b], X[:, b:c]
        mu, sd = Xtr.mean(1, keepdims=True), Xtr.std(1, keepdims=True)
        Ztr = np.vstack([(Xtr - mu) / sd, np.ones((1, b - a))])
        Zte = np.vstack([(Xte - mu) / sd, np.ones((1, c - b))])
        ins, outs = [], []
        for sd_ in range(2):
            th = theta[k, li, sd_, 1]
            p_in, p_out = np.tanh(th @ Ztr), np.tanh(th @ Zte)
            net_in = p_in * r[a:b] - 0.0005 * np.abs(np.diff(p_in, prepend=0.0))
            net_out = p_out * r[b:c] - 0.0005 * np.abs(np.diff(p_out, prepend=p_in[-1]))
            ins.append(np_sharpe(net_in, 252))
            outs.append(np_sharpe(net_out, 252))
        w = st["per_window"][k]
        assert abs(w["in_sharpe"] - np.mean(ins)) < 1e-9
        assert abs(w["out_sharpe"] - np.mean(outs)) < 1e-9
        assert abs(w["buy_hold_out"] - np_sharpe(r[b:c], 252)) < 1e-9
    # the positions of the equity curves are those of (lr, seed 0, trained with cost)
    th0 = theta[:, li, 0, 1]
    a, b, c = wins[0]
    Xtr = X[:, a:b]
    Zte = np.vstack([(X[:, b:c] - Xtr.mean(1, keepdims=True)) / Xtr.std(1, keepdims=True),
                     np.ones((1, c - b))])
    np.testing.assert_allclose(ds["position_out"].values[0], np.tanh(th0[0] @ Zte), rtol=1e-10)
    assert st["lookahead_max_change_of_past_positions"] == 0.0
    assert st["grad_vs_finite_differences_rel_err"] < 1e-6
    assert st["smooth_cost_max_gap_per_day"] <= 0.0005 * np.sqrt(1e-6) + 1e-15
    # in-sample Sharpe rises over training (mean over windows and seeds)
    ins = ds["in_sharpe"].values[:, :, :, 1]                     # [K, L, S, record]
    assert np.all(ins[..., -1].mean((0, 2)) > ins[..., 0].mean((0, 2)))


def _cfg(**kw):
    return config.Cfg(experiment=F.Params(**kw))


@pytest.mark.parametrize("kw, key", [
    ({"lr": 0.5}, "experiment.lr"),
    ({"lrs": []}, "experiment.lrs"),
    ({"pf_lr": [-1.0]}, "experiment.pf_lr"),
    ({"pair": [1, 1]}, "experiment.pair"),
    ({"cost": -0.1}, "experiment.cost"),
    ({"init_position": 1.0}, "experiment.init_position"),
    ({"days": 500, "train_days": 400, "test_days": 200}, "experiment.train_days"),
    ({"seeds": 0}, "experiment.seeds"),
])
def test_validate_rejects_bad_configs(kw, key):
    with pytest.raises(UserError, match=rf"^{re.escape(key)}=\S+ [^\n]+$"):
        F.validate(_cfg(**kw))


def test_validate_accepts_defaults():
    F.validate(_cfg())
