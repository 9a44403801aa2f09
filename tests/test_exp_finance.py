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
FIGS = ("portfolio_contours.png", "portfolio_gd.png", "equity_curves.png", "equity_windows.png",
        "sharpe_vs_lr.png", "sharpe_vs_step.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = run_experiment("finance", tmp_path_factory.mktemp("finance"), *TINY)
    return run_dir, json.loads((run_dir / "summary.json").read_text()), bpexp.load(run_dir)


def np_sharpe(r, periods):
    return np.sqrt(periods) * r.mean(-1) / r.std(-1)


def test_schema_and_files(tiny_run):
    run_dir, s, ds = tiny_run
    for f in FIGS:
        png = (run_dir / "figures" / f).read_bytes()
        assert len(png) > 10_000, f
        w, h = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert w <= 2.2 * h and w >= 1000, (f, w, h)           # a slide, not a strip
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
    # the positions of the equity curves are those of (lr, every seed, trained with cost), and
    # the Sharpe ratios they give, averaged over the seeds, are the table's
    a, b, c = wins[0]
    Xtr = X[:, a:b]
    mu, sd = Xtr.mean(1, keepdims=True), Xtr.std(1, keepdims=True)
    Ztr0 = np.vstack([(Xtr - mu) / sd, np.ones((1, b - a))])
    Zte = np.vstack([(X[:, b:c] - mu) / sd, np.ones((1, c - b))])
    for sd_ in range(2):
        np.testing.assert_allclose(ds["position_out"].values[0, sd_],
                                   np.tanh(theta[0, li, sd_, 1] @ Zte), rtol=1e-10)
    pin, pout = ds["position_in"].values, ds["position_out"].values          # [K, S, day]
    for k, (a, b, c) in enumerate(wins):
        out = [np_sharpe(pout[k, j] * r[b:c] - 0.0005 * np.abs(np.diff(pout[k, j],
                                                                       prepend=pin[k, j, -1])), 252)
               for j in range(2)]
        assert abs(np.mean(out) - st["per_window"][k]["out_sharpe"]) < 1e-9
    # step 0 is the start theta0, the same at every lr and train cost: its in-sample Sharpe
    th0 = ds["theta0"].values                                                # [K, S, f]
    ins0 = ds["in_sharpe"].values[..., 0]                                    # [K, L, S, C]
    assert np.all(ins0 == ins0[:, :1, :, :1])
    p0 = np.tanh(th0[0, 0] @ Ztr0)
    a, b, _ = wins[0]
    ref = np_sharpe(p0 * r[a:b] - 0.0005 * np.abs(np.diff(p0, prepend=0.0)), 252)
    assert abs(ins0[0, 0, 0, 0] - ref) < 1e-9
    assert st["lookahead_max_change_of_past_positions"] == 0.0
    assert st["grad_vs_finite_differences_rel_err"] < 1e-6
    assert st["smooth_cost_max_gap_per_day"] <= 0.0005 * np.sqrt(1e-6) + 1e-15
    # in-sample Sharpe rises over training (mean over windows and seeds)
    ins = ds["in_sharpe"].values[:, :, :, 1]                     # [K, L, S, record]
    assert np.all(ins[..., -1].mean((0, 2)) > ins[..., 0].mean((0, 2)))


def test_pair_label_math_and_takeaways(tiny_run):
    """+Σ⁻¹μ maximizes S (the loss -S is lowest there), -Σ⁻¹μ gives -S* (the loss's maximum);
    the two-factor S* of the contour figure is below the three-factor one (a subset of the
    assets); every figure title states what the summary says."""
    run_dir, s, ds = tiny_run
    pf, st = s["portfolio"], s["strategy"]
    R = data.load("ff_factors", dtype=np.float64).X[[0, 2]]
    mu, Sigma = R.mean(1), np.cov(R, bias=True)
    w = np.linalg.solve(Sigma, mu)
    s_plus, s_minus = np_sharpe(w @ R, 12), np_sharpe(-w @ R, 12)
    assert abs(s_plus - pf["pair"]["tangency_sharpe"]) < 1e-12 and abs(s_minus + s_plus) < 1e-12
    rng = np.random.default_rng(0)
    others = np_sharpe(rng.normal(size=(1000, 2)) @ R, 12)
    assert others.max() <= s_plus + 1e-12 and others.min() >= s_minus - 1e-12
    assert pf["pair"]["tangency_sharpe"] < pf["tangency_sharpe_closed_form"]
    ends = ds["pair_path"].values[:, -1]
    cos = ends @ w / np.linalg.norm(ends, axis=-1) / np.linalg.norm(w)
    assert abs(pf["pair"]["final_cosine_min"] - cos.min()) < 1e-12 and cos.min() > 1 - 1e-6
    t = F.takeaways(s)
    assert ("every GD path ends on the ray of Σ⁻¹μ, the Sharpe maximum S* = "
            f"{pf['pair']['tangency_sharpe']:.3f}") in t["portfolio_contours"]
    assert f"with SMB too S* = {pf['tangency_sharpe_closed_form']:.3f}" in t["portfolio_contours"]
    gd = pf["gd"]
    assert t["portfolio_gd"].startswith("GD reaches S* from every start at every lr up to 2 x")
    assert (f"median {gd['steps_to_1e-6_median'][0]:g} steps at 0.5x, "
            f"{gd['steps_to_1e-6_median'][-1]:g} at 2x") in t["portfolio_gd"]
    b = st["by_lr"]
    i_in, i_out = np.argmax(b["in_sharpe_mean"]), np.argmax(b["out_sharpe_mean"])
    assert f"highest at lr {st['lrs'][i_in]:g} ({max(b['in_sharpe_mean']):.2f})" in \
        t["sharpe_vs_lr"]
    assert f"out of sample at lr {st['lrs'][i_out]:g}" in t["sharpe_vs_lr"]
    beat = sum(o > st["buy_hold_out_mean"] for o in b["out_sharpe_mean"])
    assert f"{beat} of 2 lrs beat buy and hold" in t["sharpe_vs_lr"]
    gi = b["in_sharpe_gain_mean"]
    assert f"by {min(gi):+.2f}..{max(gi):+.2f}" in t["sharpe_vs_step"]
    wins = sum(w["out_sharpe"] > w["buy_hold_out"] for w in st["per_window"])
    assert f"in {wins} of 4 test years" in t["equity_curves"]
    wins_in = sum(w["in_sharpe"] > w["buy_hold_in"] for w in st["per_window"])
    assert f"in {wins_in} of 4 fits, out of sample in {wins} of 4" in t["equity_windows"]
    shows = (run_dir / "report.md").read_text().split("## What this run shows\n\n")[1]
    shows = shows.split("\n")[0]
    assert f"(S* = {pf['tangency_sharpe_closed_form']:.4f})" in shows
    assert f"from {b['in_sharpe_mean'][0]:.2f} to {b['in_sharpe_mean'][-1]:.2f}" in shows
    assert 4 <= len(F.shows(s)) <= 5


def test_headline_windows_pick_worst_median_best_latest():
    pw = [{"out_sharpe": o, "buy_hold_out": 0.0} for o in (0.5, -1.0, 2.0, 0.1, 0.3, 0.2)]
    assert F.headline_windows(pw) == {1: "worst vs B&H", 2: "best vs B&H",
                                      4: "median vs B&H", 5: "latest"}
    assert F.headline_windows(pw[:1]) == {0: "worst vs B&H, median vs B&H, best vs B&H, latest"}


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
