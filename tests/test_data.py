"""bpexp.data: shapes (examples are columns), dtypes, standardization, target encodings,
seeded subsampling, feature selection and errors. Numpy only: no JAX compiles here."""

import functools

import numpy as np
import pytest

from bpexp import config, data
from bpexp.errors import UserError

TASKS = {"synthetic": "regression", "diabetes": "regression", "digits": "multiclass",
         "breast_cancer": "binary", "iris": "multiclass", "wine": "multiclass",
         "moons": "binary", "lecture5": "binary", "ff_factors": "returns",
         "sp500": "returns"}
# (n features, m examples, d_out) with default arguments
SHAPES = {"synthetic": (10, 200, 1), "diabetes": (10, 442, 1), "digits": (64, 1797, 10),
          "breast_cancer": (30, 569, 1), "iris": (4, 150, 3), "wine": (13, 178, 3),
          "moons": (2, 200, 1), "lecture5": (2, 1, 1), "ff_factors": (3, 1109, 1),
          "sp500": (6, 4831, 1)}


@functools.lru_cache(maxsize=None)
def _load(name, **kw):
    return data.load(name, **kw)


def load(name, **kw):
    ds = _load(name, **kw)
    return data.Dataset(ds.name, ds.X.copy(), ds.Y.copy(), ds.task, dict(ds.info))


def test_names_cover_every_dataset_and_config():
    assert set(data.NAMES) == set(TASKS)
    yamls = {p.stem for p in (config.CONF_DIR / "data").glob("*.yaml")}
    assert yamls == set(data.NAMES)


@pytest.mark.parametrize("name", data.NAMES)
def test_shapes_dtype_and_task(name):
    ds = load(name)
    n, m, d = SHAPES[name]
    assert ds.X.shape == (n, m) and ds.Y.shape == (d, m), (ds.X.shape, ds.Y.shape)
    assert (ds.n, ds.m, ds.d_out) == (n, m, d)
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.float32
    assert ds.task == TASKS[name] and ds.name == name
    assert np.all(np.isfinite(ds.X)) and np.all(np.isfinite(ds.Y))


@pytest.mark.parametrize("name", [n for n in data.NAMES
                                  if n not in ("lecture5", *data.FINANCE)])
def test_features_are_z_scored(name):
    X = load(name).X.astype(np.float64)
    mean, std = X.mean(axis=1), X.std(axis=1)
    np.testing.assert_allclose(mean, 0.0, atol=1e-5)
    const = np.all(X == X[:, :1], axis=1)  # constant features (digits' border pixels) become 0
    assert np.all(X[const] == 0)
    np.testing.assert_allclose(std[~const], 1.0, atol=1e-5)
    assert const.sum() < X.shape[0] // 2


def test_worked_example_is_raw_lecture_data():
    ds = load("lecture5")
    np.testing.assert_array_equal(ds.X, [[1.0], [2.0]])
    np.testing.assert_array_equal(ds.Y, [[1.0]])


@pytest.mark.parametrize("name", ["synthetic", "diabetes"])
def test_regression_targets_z_scored(name):
    Y = load(name).Y.astype(np.float64)
    np.testing.assert_allclose(Y.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(Y.std(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["breast_cancer", "moons", "lecture5"])
def test_binary_targets_are_0_1_rows(name):
    Y = load(name).Y
    assert Y.shape[0] == 1
    assert set(np.unique(Y)) <= {0.0, 1.0}
    if name != "lecture5":
        assert set(np.unique(Y)) == {0.0, 1.0}


@pytest.mark.parametrize("name,classes", [("digits", 10), ("iris", 3), ("wine", 3)])
def test_multiclass_targets_one_hot(name, classes):
    Y = load(name).Y
    assert Y.shape[0] == classes
    assert set(np.unique(Y)) == {0.0, 1.0}
    np.testing.assert_array_equal(Y.sum(axis=0), 1.0)
    assert np.all(Y.sum(axis=1) > 0), "every class occurs"


@pytest.mark.parametrize("name", ["digits", "diabetes", "breast_cancer", "iris", "wine"])
def test_subsampling_is_seeded_and_deterministic(name):
    full = load(name)
    a, b = data.load(name, m=40, seed=3), data.load(name, m=40, seed=3)
    c = data.load(name, m=40, seed=4)
    assert a.X.shape == (full.n, 40) and a.Y.shape == (full.d_out, 40)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(a.X, c.X)
    # the kept columns are columns of the full set, in their original order
    idx = [int(np.flatnonzero(np.all(full.X == a.X[:, [j]], axis=0))[0]) for j in range(40)]
    assert idx == sorted(idx) and len(set(idx)) == 40
    np.testing.assert_array_equal(full.Y[:, idx], a.Y)
    # m = 0 or m = all keeps everything; more than all is a one-line user error
    np.testing.assert_array_equal(data.load(name, m=0).X, full.X)
    np.testing.assert_array_equal(data.load(name, m=full.m).X, full.X)
    with pytest.raises(UserError,
                       match=f"data.m=1000000 is more than the {full.m} examples of {name}"):
        data.load(name, m=10**6)


@pytest.mark.parametrize("name", ["synthetic", "moons"])
def test_generated_sets_deterministic_per_seed(name):
    a, b, c = (data.load(name, m=50, seed=1), data.load(name, m=50, seed=1),
               data.load(name, m=50, seed=2))
    assert a.m == 50
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(a.X, c.X)


def test_synthetic_size_and_noise_arguments():
    ds = data.load("synthetic", n=3, m=30, seed=0, noise=0.0)
    assert ds.X.shape == (3, 30) and ds.Y.shape == (1, 30)
    # noise 0: y is exactly linear in x (before and after z-scoring)
    X1 = np.vstack([ds.X.astype(np.float64), np.ones((1, 30))])
    coef, *_ = np.linalg.lstsq(X1.T, ds.Y.astype(np.float64).T, rcond=None)
    np.testing.assert_allclose(coef[:, 0] @ X1, ds.Y[0], atol=1e-5)
    assert len(ds.info["w_true"]) == 3


def test_dtype_argument():
    ds = data.load("iris", dtype=np.float64)
    assert ds.X.dtype == np.float64 and ds.Y.dtype == np.float64


def test_features_select_rows():
    full = load("diabetes")
    ds = data.load("diabetes", features=[2])
    assert ds.X.shape == (1, full.m)
    np.testing.assert_array_equal(ds.X, full.X[[2]])
    np.testing.assert_array_equal(ds.Y, full.Y)
    ds = data.load("diabetes", features=[4, 0])
    np.testing.assert_array_equal(ds.X, full.X[[4, 0]])
    assert ds.info["features"] == [4, 0]


@pytest.mark.parametrize("features", [[10], [0, 99], [-1]])
def test_features_out_of_range_raise(features):
    with pytest.raises(ValueError, match="data.features"):
        data.load("diabetes", features=features)


def test_unknown_name_lists_all():
    with pytest.raises(ValueError) as e:
        data.load("nope")
    msg = str(e.value)
    assert "nope" in msg and all(n in msg for n in data.NAMES)


def test_dataset_from_cfg():
    from bpexp import make
    cfg = config.Cfg(experiment=None,
                     data=config.DataCfg(name="wine", m=20, seed=5, features=[0, 1, 2]))
    ds = make.dataset(cfg)
    assert ds.X.shape == (3, 20) and ds.Y.shape == (3, 20) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.X, data.load("wine", m=20, seed=5).X[:3])


# ---------------------------------------------------------------- market data (arch, offline)
def test_ff_factors_are_french_monthly_decimals():
    ds = load("ff_factors")
    assert ds.info["names"] == ["Mkt-RF", "SMB", "HML"] and ds.info["periods_per_year"] == 12
    d = ds.info["dates"]
    assert len(d) == ds.m and d[0] == "1926-07" and d[-1] == "2018-11" and d == sorted(d)
    from arch.data import frenchdata
    raw = frenchdata.load()
    np.testing.assert_allclose(ds.X, raw[["Mkt-RF", "SMB", "HML"]].to_numpy().T / 100, rtol=1e-6)
    np.testing.assert_allclose(ds.Y[0], raw["RF"].to_numpy() / 100, rtol=1e-6)
    assert 0.004 < ds.X[0].mean() < 0.01  # the equity premium, ~0.66 % a month


def test_sp500_features_from_the_past_only():
    dates, P = data.sp500_prices()
    X, Y, names, t0 = data.sp500_features(P)
    ds = load("sp500")
    assert ds.info["dates"] == dates[t0:] and ds.info["names"] == names
    np.testing.assert_allclose(ds.X, X, rtol=1e-6)
    # independent loop over a few days: each feature from P[:t] alone, Y = the return of day t
    for j in (0, 1, 777, X.shape[1] - 1):
        t = t0 + j
        past = P[:t]                       # P_0..P_{t-1}
        r = past[1:] / past[:-1] - 1       # r_1..r_{t-1}
        ref = [r[-k:].mean() for k in data.SP500_LOOKBACKS]
        ref += [past[-1] / past[-data.SP500_TREND:].mean() - 1, r[-data.SP500_VOL:].std()]
        np.testing.assert_allclose(X[:, j], ref, rtol=1e-7, atol=1e-12)
        assert Y[0, j] == pytest.approx(P[t] / P[t - 1] - 1, rel=1e-12)
    # changing any later price leaves every earlier column unchanged
    Q = P.copy()
    Q[t0 + 1000:] *= 1.5
    X2, Y2, _, _ = data.sp500_features(Q)
    np.testing.assert_array_equal(X2[:, :1001], X[:, :1001])
    assert not np.array_equal(X2[:, 1001:], X[:, 1001:])


def test_finance_m_keeps_the_most_recent_periods():
    full, ds = load("ff_factors"), data.load("ff_factors", m=24)
    np.testing.assert_array_equal(ds.X, full.X[:, -24:])
    assert ds.info["dates"] == full.info["dates"][-24:]
    with pytest.raises(UserError, match="data.m=5000 is more than the 1109 periods"):
        data.load("ff_factors", m=5000)


def test_finance_features_keep_their_names():
    ds = data.load("sp500", features=[4, 0])
    assert ds.info["names"] == ["trend_200", "ret_1"] and ds.X.shape == (2, 4831)


# ---------------------------------------------------------------- the raw-data cache
@pytest.mark.parametrize("name", ["diabetes", "digits", "breast_cancer", "iris", "wine"])
def test_cache_holds_the_sklearn_arrays_bitwise(name, tmp_path, monkeypatch):
    from sklearn import datasets as skd

    monkeypatch.setenv("BPEXP_DATA_HOME", str(tmp_path))
    Xr, y = getattr(skd, f"load_{name}")(return_X_y=True)
    first = data.load(name, dtype=np.float64)              # fetched, then written
    assert len(list(tmp_path.glob(f"raw-{name}-scikit-learn-*.npz"))) == 1
    X2, y2 = data._sklearn_raw(name)                       # read back from the file
    np.testing.assert_array_equal(X2, Xr)
    np.testing.assert_array_equal(y2, y)
    assert X2.dtype == np.asarray(Xr).dtype and y2.dtype == np.asarray(y).dtype
    again = data.load(name, dtype=np.float64)
    np.testing.assert_array_equal(again.X, first.X)
    np.testing.assert_array_equal(again.Y, first.Y)


def test_cache_holds_the_market_data_bitwise(tmp_path, monkeypatch):
    from arch.data import frenchdata, sp500

    monkeypatch.setenv("BPEXP_DATA_HOME", str(tmp_path))
    for _ in range(2):   # fetched and written, then read from the file
        ff = data.load("ff_factors", dtype=np.float64)
        dates, P = data.sp500_prices()
    raw = frenchdata.load()
    np.testing.assert_array_equal(ff.X, raw[["Mkt-RF", "SMB", "HML"]].to_numpy().T / 100.0)
    assert ff.info["dates"][0] == "1926-07" and len(ff.info["dates"]) == ff.m
    df = sp500.load()
    np.testing.assert_array_equal(P, df["Adj Close"].to_numpy(np.float64))
    assert dates == [d.strftime("%Y-%m-%d") for d in df.index]


def test_a_warm_cache_imports_neither_sklearn_nor_arch(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "BPEXP_DATA_HOME": str(tmp_path)}
    code = ("import sys, numpy as np; from bpexp import data; "
            "[data.load(n) for n in ('diabetes', 'digits', 'ff_factors', 'sp500')]; "
            "print('sklearn' in sys.modules, 'arch' in sys.modules)")
    outs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert outs == [["True", "True"], ["False", "False"]]


def test_a_damaged_or_unwritable_cache_falls_back_to_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("BPEXP_DATA_HOME", str(tmp_path))
    ref = data.load("iris", dtype=np.float64)
    (path,) = tmp_path.glob("raw-iris-*.npz")
    path.write_bytes(path.read_bytes()[:100])              # a crash mid-write elsewhere
    np.testing.assert_array_equal(data.load("iris", dtype=np.float64).X, ref.X)
    assert path.stat().st_size > 100                       # rewritten whole
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("BPEXP_DATA_HOME", str(blocker / "sub"))   # cannot be created
    np.testing.assert_array_equal(data.load("iris", dtype=np.float64).X, ref.X)
