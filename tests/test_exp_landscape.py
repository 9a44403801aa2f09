"""experiments/landscape.py: a tiny CLI run checked against independent references, and the
pure helpers (critical points, toy GD, filter normalization, projection) against numpy/jax."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import bpexp
from bpexp.errors import UserError
from bpexp.experiments.landscape import run as LR
from bpexp.experiments.landscape import theory as LT
from helpers import build_cfg, run_experiment

TINY = ["experiment.grid=11", "experiment.starts=9", "train.steps=40", "train.record_every=5",
        "model.hidden=4", "data.m=120"]


# ------------------------------------------------------------------ independent references
def jnp_double_well(w, c=0.5, t=(0.3, -0.2)):
    return (w[0] ** 2 - 1) ** 2 + (w[1] ** 2 - 1) ** 2 + c * w[0] * w[1] + t[0] * w[0] + t[1] * w[1]


def np_two_layer_sigmoid_loss(theta, shapes, X, Y):
    """MSE (1/m) sum (W2 sigma(W1 X + b1) + b2 - Y)^2 from a flat vector in sorted-key order."""
    p, o = {}, 0
    for k in sorted(shapes):
        size = int(np.prod(shapes[k]))
        p[k] = theta[o:o + size].reshape(shapes[k])
        o += size
    A = 0.5 * (1 + np.tanh(0.5 * (p["W1"] @ X + p["b1"])))
    return float(np.sum((p["W2"] @ A + p["b2"] - Y) ** 2) / Y.shape[1])


# ------------------------------------------------------------------ the CLI run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("landscape")
    run_dir = run_experiment("landscape", tmp, *TINY)
    summary = json.loads((run_dir / "summary.json").read_text())
    return run_dir, summary, bpexp.load(run_dir)


def test_cli_outputs_and_schema(tiny_run):
    run_dir, s, _ = tiny_run
    for f in ("surfaces_3d.png", "critical_points.png", "toy_gd.png", "slice_trajectory.png"):
        assert (run_dir / "figures" / f).stat().st_size > 10_000
    assert (run_dir / "report.md").exists() and (run_dir / "data.npz").exists()
    assert set(s) == {"convex", "nonconvex", "toy_gd", "slice"}
    assert set(s["nonconvex"]) >= {"minima", "saddles", "maxima"}
    assert set(s["toy_gd"]["lr"]) == {"0.15", "0.4", "0.49", "0.52"}
    for v in s["toy_gd"]["lr"].values():
        assert set(v) >= {"final", "diverged", "theory_diverges", "factors"}
    assert s["slice"]["grid"] == 11
    assert set(s["slice"]) >= {"center_loss", "min_loss", "trained_loss", "final_projection"}


def test_cli_metrics_dims_and_coordinates(tiny_run):
    """metrics.zarr: each part's axes are dims of their own, with the configured values."""
    _, s, M = tiny_run
    assert M["w"].values.tolist() == ["w1", "w2"]
    assert M["direction"].values.tolist() == ["d1", "d2"]
    # (a) critical points, sorted by f as in the summary
    nc = [p for kind in ("minima", "saddles", "maxima", "degenerate")
          for p in s["nonconvex"][kind]]
    nc.sort(key=lambda p: p["value"])
    assert M["nonconvex_points"].dims == ("nonconvex_point", "w")
    assert M["nonconvex_kinds"].dims == M["nonconvex_values"].dims == ("nonconvex_point",)
    assert M["nonconvex_points"].values.tolist() == [p["w"] for p in nc]
    assert M["nonconvex_kinds"].values.tolist() == [p["kind"] for p in nc]
    assert M["nonconvex_values"].values.tolist() == [p["value"] for p in nc]
    assert M["convex_points"].dims == ("convex_point", "w")
    assert M["convex_points"].values.tolist() == [p["w"] for p in s["convex"]["minima"]]
    assert M["convex_kinds"].values.tolist() == ["minimum"]
    # (b) toy GD
    for k in ("toy_paths", "toy_closed_form"):
        assert M[k].dims == ("toy_lr", "toy_step", "w")
    assert M["toy_loss"].dims == ("toy_lr", "toy_step")
    assert M["toy_lr"].values.tolist() == [0.15, 0.4, 0.49, 0.52]
    assert M["toy_step"].values.tolist() == list(range(21))
    # (c) the trained model: 40 steps recorded every 5, 4 x 64 + 4 + 4 + 1 parameters
    assert M["train_loss"].dims == ("step",) and M["step"].values.tolist() == list(range(40))
    assert M["trajectory"].dims == ("trajectory_step", "theta")
    assert M["trajectory_step"].values.tolist() == list(range(0, 41, 5))
    n = M["trajectory"].shape[1]
    assert M["theta"].values.tolist() == list(range(n))
    sizes = {"W1": n - 9, "W2": 4, "b1": 4, "b2": 1}
    assert M["theta_leaf"].dims == ("theta",)
    assert M["theta_leaf"].values.tolist() == [k for k in sorted(sizes) for _ in range(sizes[k])]
    for name in ("slice", "pca"):
        assert M[f"{name}_loss"].dims == (f"{name}_a", f"{name}_b")
        assert M[f"{name}_dirs"].dims == ("direction", "theta")
        assert M[f"{name}_traj_coeffs"].dims == ("trajectory_step", "direction")
        assert M[f"{name}_traj_loss"].dims == ("trajectory_step",)
    np.testing.assert_allclose(M["slice_a"].values, np.linspace(-1, 1, 11), rtol=1e-15)
    np.testing.assert_array_equal(M["slice_b"].values, M["slice_a"].values)
    assert [M["pca_a"].values[-1], M["pca_b"].values[-1]] == s["slice"]["pca"]["span"]
    assert M["pca_explained_variance"].values.tolist() == s["slice"]["pca"]["explained_variance"]
    # the random directions carry no bias component (bias_dirs=zero)
    assert not np.any(M["slice_dirs"].where(M["theta_leaf"].isin(["b1", "b2"]), 0).values)
    mid = M["slice_loss"].sel(slice_a=0.0, slice_b=0.0, method="nearest")
    assert float(mid) == s["slice"]["center_loss"]


def test_cli_critical_points(tiny_run):
    _, s, _ = tiny_run
    # the bowl: exactly one critical point, a minimum at 0 with Hessian eigenvalues (2, 2)
    assert s["convex"]["minima"] and len(s["convex"]["minima"]) == 1
    mn = s["convex"]["minima"][0]
    np.testing.assert_allclose(mn["w"], [0, 0], atol=1e-12)
    np.testing.assert_allclose(mn["hessian_eigs"], [2, 2], rtol=1e-12)
    # the double well: 4 / 4 / 1, checked with jax.grad / jax.hessian (independent of the
    # experiment's hand-written derivatives)
    nc = s["nonconvex"]
    assert (len(nc["minima"]), len(nc["saddles"]), len(nc["maxima"])) == (4, 4, 1)
    g, h = jax.grad(jnp_double_well), jax.hessian(jnp_double_well)
    signs = {"minima": (1, 1), "saddles": (-1, 1), "maxima": (-1, -1)}
    for kind, sig in signs.items():
        for p in nc[kind]:
            w = jnp.asarray(p["w"], jnp.float64)
            assert float(jnp.linalg.norm(g(w))) < 1e-8
            eig = np.linalg.eigvalsh(np.asarray(h(w)))
            assert tuple(np.sign(eig)) == sig and np.min(np.abs(eig)) > 1e-3
            np.testing.assert_allclose(eig, p["hessian_eigs"], rtol=1e-10)
            assert abs(float(jnp_double_well(w)) - p["value"]) < 1e-12


def test_cli_toy_gd_matches_closed_form_and_theory(tiny_run):
    _, s, M = tiny_run
    lrs, paths = M["toy_lr"].values, M["toy_paths"].values
    np.testing.assert_allclose(M["toy_closed_form"].values, paths, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(M["toy_loss"].values,
                               0.5 * paths[..., 0] ** 2 + 2 * paths[..., 1] ** 2, rtol=1e-12)
    t = np.arange(paths.shape[1])
    for lr, path in zip(lrs, paths):
        # (1 - lr h)^t w0
        closed = np.stack([(1 - lr * 1.0) ** t * 2.5, (1 - lr * 4.0) ** t * 2.0], -1)
        np.testing.assert_allclose(path, closed, rtol=1e-12, atol=1e-12)
        rec = s["toy_gd"]["lr"][f"{lr:g}"]
        assert rec["theory_diverges"] == (lr > 0.5)
        assert rec["diverged"] == rec["theory_diverges"]
        np.testing.assert_allclose(rec["final"], closed[-1], rtol=1e-12)


def test_cli_slice_center_projection_and_grid(tiny_run):
    run_dir, s, M = tiny_run
    sl = s["slice"]
    assert abs(sl["center_loss"] - sl["trained_loss"]) <= 1e-12 * sl["trained_loss"]
    assert sl["min_loss"] <= sl["center_loss"] + 1e-15
    np.testing.assert_allclose(sl["final_projection"], [0, 0], atol=1e-10)
    np.testing.assert_allclose(M["slice_traj_coeffs"].values[-1], [0, 0], atol=1e-10)
    G = 11
    assert M["slice_loss"].shape == (G, G)
    assert M["trajectory"].shape == (40 // 5 + 1, M["trajectory"].shape[1])
    M = {k: v.values for k, v in M.variables.items()}
    # one corner of the grid recomputed in numpy from the saved weights, directions and data
    D = np.load(run_dir / "data.npz")
    X, Y = D["X"].astype(np.float64), D["Y"].astype(np.float64)
    shapes = {"W1": (4, X.shape[0]), "b1": (4, 1), "W2": (1, 4), "b2": (1, 1)}
    theta = M["trajectory"][-1]
    for i, j in ((0, 0), (G - 1, 3), (G // 2, G // 2)):
        pt = theta + M["slice_a"][i] * M["slice_dirs"][0] + M["slice_b"][j] * M["slice_dirs"][1]
        assert abs(np_two_layer_sigmoid_loss(pt, shapes, X, Y) - M["slice_loss"][i, j]) < 1e-12
    # the recorded trajectory's first loss is the initial training loss
    loss0 = np_two_layer_sigmoid_loss(M["trajectory"][0], shapes, X, Y)
    assert abs(loss0 - M["train_loss"][0]) < 1e-12


def _png_size(path):
    data = path.read_bytes()[:24]
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_cli_figures_fit_a_slide(tiny_run):
    """plots.STRICT's rule, checked on the saved PNGs: none wider than 2.2:1, none a strip."""
    from bpexp import plots
    run_dir, _, _ = tiny_run
    for f in ("surfaces_3d.png", "critical_points.png", "toy_gd.png", "slice_trajectory.png"):
        w, h = _png_size(run_dir / "figures" / f)
        assert w <= plots.MAX_ASPECT * h and h >= 500, (f, w, h)


def test_titles_state_the_summary(tiny_run):
    """Each figure's takeaway against the summary: counts, the bound's side, the outcome."""
    from bpexp.experiments.landscape import text
    _, s, M = tiny_run
    nc = s["nonconvex"]
    counts = (len(nc["minima"]), len(nc["saddles"]), len(nc["maxima"]))
    assert counts == (4, 4, 1)
    for t in (text.surfaces_title(s), text.critical_title(s)):
        assert "4 minima, 4 saddles, 1 maximum" in t
    assert "Convex bowl: 1 minimum" in text.surfaces_title(s)
    L = M["slice_loss"].values
    c = L[L.shape[0] // 2, L.shape[1] // 2]
    assert text.surfaces_title(s).endswith(f"theta* within {(c - L.min()) / c:.2%} of its "
                                           "slice's lowest loss")
    assert f"global min f = {min(p['value'] for p in nc['minima']):.3f}" in text.critical_title(s)
    # lr < 0.5 converges, lr > 0.5 diverges: computed here from the paths' closed form
    toy = text.toy_title(s)
    conv = [k for k in ("0.15", "0.4", "0.49") if 2.0 * abs(1 - 4 * float(k)) ** 20 < 2.0]
    assert conv == ["0.15", "0.4", "0.49"] and abs(1 - 4 * 0.52) > 1
    assert toy.endswith("lr 0.15, 0.4, 0.49 < 2/4 converge; lr 0.52 > 2/4 diverges")
    sl = s["slice"]
    st = text.slice_title(s)
    assert f"random plane (keeps {sl['captured_fraction']:.0%} of it)" in st
    assert f"PCA plane (keeps {sl['pca']['captured_fraction']:.0%})" in st


def test_report_shows_sentences_match_an_independent_recomputation(tiny_run):
    """'What this run shows': each claim recomputed from the stored arrays in numpy."""
    from bpexp.experiments.landscape import text
    run_dir, s, M = tiny_run
    md = (run_dir / "report.md").read_text()
    shows = md.split("## What this run shows\n\n")[1].split("\n")[0]
    assert shows == " ".join(text.shows(s))
    assert 3 <= len(text.shows(s)) <= 5
    kinds = M["nonconvex_kinds"].values.tolist()
    n = [kinds.count(k) for k in ("minimum", "saddle", "maximum")]
    assert f"finds {n[0]} minima, {n[1]} saddles, {n[2]} maximum" in shows
    assert ("that is the 4 / 4 / 1 the theory gives" in shows) == (n == [4, 4, 1])
    # toy GD: diverged iff the final loss exceeds the first, from the stored losses
    loss = M["toy_loss"].values
    div = {f"{lr:g}": bool(f[-1] > f[0]) for lr, f in zip(M["toy_lr"].values, loss)}
    assert div == {"0.15": False, "0.4": False, "0.49": False, "0.52": True}
    assert "lr 0.15, 0.4, 0.49 < 2/4 converge; lr 0.52 > 2/4 diverges, exactly as the bound" \
        in shows
    slow = int(np.argmax([max(abs(1 - lr), abs(1 - 4 * lr)) for lr in (0.15, 0.4, 0.49)]))
    assert f"slowest converging run (lr 0.49, max |1 - lr h| = {abs(1 - 4 * 0.49):.2f})" in shows
    assert f"to {loss[slow, -1]:.3g}." in shows
    # the slice: centre vs trained loss and the drop to the grid minimum, from the stored grid
    G = M["slice_loss"].shape[0]
    L, P = M["slice_loss"].values, M["pca_loss"].values
    c, pc = L[G // 2, G // 2], P[G // 2, G // 2]
    assert abs(c - s["slice"]["trained_loss"]) <= 1e-12 * c
    assert f"centre has loss {c:.6g}, the trained loss {s['slice']['trained_loss']:.6g}" in shows
    assert f"{(c - L.min()) / c:.2%} below it in the random plane" in shows
    assert f"{(pc - P.min()) / pc:.2%} below it in the PCA plane" in shows
    # captured fractions: |lstsq projection of theta_0 - theta*| / |theta_0 - theta*|
    T = M["trajectory"].values
    v = T[0] - T[-1]
    frac = {}
    for name in ("slice", "pca"):
        D = M[f"{name}_dirs"].values
        coef = np.linalg.lstsq(D.T, v, rcond=None)[0]
        frac[name] = np.linalg.norm(D.T @ coef) / np.linalg.norm(v)
    assert f"random plane keeps {frac['slice']:.1%} of" in shows
    assert f"the PCA plane {frac['pca']:.1%} (explained" in shows
    assert ("as Li et al. (2018, s.7) report" in shows) == (frac["slice"] < 0.5 <= frac["pca"])


# ------------------------------------------------------------------ pure helpers
def test_separable_double_well_matches_cubic_roots():
    # c = 0: critical points are the 3 x 3 products of the roots of 4 w^3 - 4 w + t = 0
    t = (0.3, -0.2)
    pts = LT.critical_points(LT.double_well(0.0, t), box=2.0, starts=15, iters=60)
    roots = [np.sort(np.roots([4, 0, -4, ti]).real) for ti in t]
    expect = np.array([[r1, r2] for r1 in roots[0] for r2 in roots[1]])
    got = np.array([p["w"] for p in pts])
    assert len(got) == 9
    for e in expect:
        assert np.min(np.linalg.norm(got - e, axis=1)) < 1e-10
    # middle root of each coordinate is a local max of that coordinate's quartic
    kinds = {tuple(int(np.argmin(np.abs(roots[i] - p["w"][i]))) for i in (0, 1)): p["kind"]
             for p in pts}
    for (i, j), k in kinds.items():
        neg = (i == 1) + (j == 1)
        assert k == {0: "minimum", 1: "saddle", 2: "maximum"}[neg]


def test_bowl_has_one_minimum_and_classify():
    pts = LT.critical_points(LT.bowl(), starts=7)
    assert len(pts) == 1 and pts[0]["kind"] == "minimum" and pts[0]["w"] == [0.0, 0.0]
    assert LT.classify(np.array([1.0, 2.0])) == "minimum"
    assert LT.classify(np.array([-1.0, 2.0])) == "saddle"
    assert LT.classify(np.array([-1.0, -2.0])) == "maximum"
    assert LT.classify(np.array([0.0, 2.0])) == "degenerate"


def test_toy_gd_closed_form():
    paths, closed = LT.toy_gd([2.5, 2.0], [0.15, 0.52], 20)
    np.testing.assert_allclose(paths, closed, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(paths[0, 20], [0.85 ** 20 * 2.5, 0.4 ** 20 * 2.0], rtol=1e-12)


def test_filter_normalize_rows_and_biases():
    rng = np.random.default_rng(0)
    p = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=(4, 1)),
         "W2": rng.normal(size=(1, 4)), "b2": rng.normal(size=(1, 1))}
    d = {k: rng.normal(size=v.shape) for k, v in p.items()}
    z = LR.filter_normalize(d, p, "zero")
    for k in ("W1", "W2"):
        np.testing.assert_allclose(np.linalg.norm(z[k], axis=1), np.linalg.norm(p[k], axis=1),
                                   rtol=1e-12)
        # same direction within each row
        cos = np.sum(z[k] * d[k], 1) / np.linalg.norm(z[k], axis=1) / np.linalg.norm(d[k], axis=1)
        np.testing.assert_allclose(cos, 1.0, rtol=1e-12)
    assert not np.any(z["b1"]) and not np.any(z["b2"])
    f = LR.filter_normalize(d, p, "filter")
    np.testing.assert_allclose(np.abs(f["b1"]), np.abs(p["b1"]), rtol=1e-12)
    np.testing.assert_array_equal(np.sign(f["b1"]), np.sign(d["b1"]))


def test_ravel_matches_jax_and_projection():
    rng = np.random.default_rng(1)
    p = {"W2": rng.normal(size=(1, 4)), "b1": rng.normal(size=(4, 1)),
         "W1": rng.normal(size=(4, 3))}
    flat = LR.ravel(p)
    np.testing.assert_array_equal(flat, np.asarray(ravel_pytree(p)[0]))
    back = LR.unravel(flat, {k: v.shape for k, v in p.items()})
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    D = rng.normal(size=(2, flat.size))
    c = np.array([[0.3, -1.2], [0.0, 0.0], [2.0, 0.5]])
    pts = flat + c @ D
    np.testing.assert_allclose(LR.project(pts, flat, D), c, atol=1e-12)
    V, var = LR.pca_plane(pts, flat)
    np.testing.assert_allclose(V @ V.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(var.sum(), 1.0, atol=1e-12)  # points lie in a 2-D plane


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("key, value", [
    ("coupling", float("nan")), ("coupling", 1e7),
    ("tilt", [1]), ("tilt", [0.3, float("inf")]),
    ("box", 0.0), ("box", 1e300),
    ("starts", 0), ("starts", 10 ** 6), ("newton_iters", 0),
    ("toy_w0", [2.5]), ("toy_w0", [0, 0]), ("toy_w0", [float("nan"), 1.0]),
    ("toy_lrs", []), ("toy_lrs", [-1]), ("toy_lrs", [0.1, 0.1]), ("toy_lrs", [0.1] * 9),
    ("toy_lrs", [float("inf")]),
    ("toy_lrs", [1e6]),  # |1 - 4 lr|^20 overflows
    ("toy_steps", 0), ("toy_steps", 5000),
    ("grid", 4), ("grid", 1), ("grid", 1001), ("span", 0.0), ("span", float("inf")),
    ("bias_dirs", "nope"), ("direction_seed", -1), ("direction_seed", 2 ** 62),
])
def test_validate_rejects_bad_values_in_one_line(key, value):
    base = {"experiment": {"name": "landscape"}, "train": {"steps": 40, "record_every": 5}}
    build_cfg(base)
    with pytest.raises(UserError) as e:
        build_cfg({**base, "experiment": {"name": "landscape", key: value}})
    msg = str(e.value)
    assert f"experiment.{key}=" in msg and "\n" not in msg
    assert "must" in msg or "allowed" in msg


def test_validate_rejects_record_every_not_dividing_steps():
    with pytest.raises(UserError, match=r"^train.record_every=3 must divide train.steps=40$"):
        build_cfg({"experiment": {"name": "landscape"}, "train": {"steps": 40, "record_every": 3}})


def test_cli_diverged_training_is_one_line_error(tmp_path):
    # only shows while running: the trainer's weights overflow; a user error, not a traceback
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=landscape",
                        f"outputs.root={tmp_path}", *TINY, "model=two_layer_linear",
                        "optimizer.lr=100"], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=600)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [
        "error: optimizer.lr=100: training diverged (non-finite weights or loss), and a slice "
        "needs a finite trained point; lower it"]


def _toy_summary(diverged):
    """A summary with only what text.py reads; ``diverged`` maps lr text -> measured outcome."""
    pt = {"w": [0.0, 0.0], "value": 0.0, "grad_norm": 1e-12, "hessian_eigs": [2.0, 2.0],
          "kind": "minimum"}
    lr = {k: {"diverged": d, "theory_diverges": float(k) > 0.5, "factors": [1 - float(k),
              1 - 4 * float(k)], "loss_initial": 11.0, "loss_final": 20.0 if d else 1.0}
          for k, d in diverged.items()}
    pca = {"center_loss": 0.5, "min_loss": 0.5, "captured_fraction": 0.3,
           "explained_variance": [0.6, 0.3]}
    return {"convex": {"minima": [pt]},
            "nonconvex": {"minima": [pt] * 2, "saddles": [pt], "maxima": [], "degenerate": []},
            "toy_gd": {"w0": [2.5, 2.0], "steps": 20, "divergence_bound": 0.5, "lr": lr},
            "slice": {"center_loss": 0.5, "trained_loss": 0.5, "min_loss": 0.4,
                      "captured_fraction": 0.6, "pca": pca}}


def test_text_says_when_the_measurement_contradicts_the_theory():
    from bpexp.experiments.landscape import text
    s = _toy_summary({"0.1": False, "0.6": False, "0.7": True})
    assert text.toy_title(s).endswith(
        "lr 0.1 < 2/4 converges; lr 0.6 > 2/4 converges; lr 0.7 > 2/4 diverges")
    shows = " ".join(text.shows(s))
    assert "contradicts the bound lr < 0.5" in shows and "exactly as" not in shows
    assert "2 minima, 1 saddle, 0 maxima" in shows and "outside that regime" in shows
    assert "20.00% below it in the random plane and 0.00% below it in the PCA plane." in shows
    assert "unlike the small random share" in shows
    assert text.critical_title(s) == ("Double well: 2 minima, 1 saddle, 0 maxima "
                                      "(|grad f| <= 1e-12); global min f = 0.000")


def test_nice_colour_bar_ticks():
    from bpexp.experiments.landscape.figures import nice_ticks
    np.testing.assert_allclose(nice_ticks(0.47, 1.1), [0.5, 0.7, 1.0])
    t = nice_ticks(1e-3, 1e3)
    assert len(t) <= 6 and t[0] >= 1e-3 and t[-1] <= 1e3
    np.testing.assert_allclose(nice_ticks(0.471, 0.479), [0.471, 0.479])  # none inside: the ends
