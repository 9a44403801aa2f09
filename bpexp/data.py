"""Datasets as ``(X: (n, m), Y: (d_out, m))`` float arrays; examples are COLUMNS.

Only data that ships inside a package (scikit-learn's bundled sets and generators, arch's
market data) or is generated from a seed: nothing is downloaded. Features are z-scored;
regression targets are z-scored; binary targets are 0/1 rows, multi-class targets one-hot
columns.

The raw arrays of the bundled sets are kept in a small cache (``raw-<name>-<source
version>.npz`` under ``$BPEXP_DATA_HOME``, default ``$XDG_CACHE_HOME/bpexp`` or
``~/.cache/bpexp``), so a run reads one small file instead of importing scikit-learn or arch
(~1.5 s each). The cache holds the source's arrays untouched, every transform runs on them
each time, and a cache that cannot be read or written is skipped: the numbers are those of the
source package either way.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bpexp.errors import UserError

NAMES = ("synthetic", "diabetes", "digits", "breast_cancer", "iris", "wine", "moons",
         "lecture5", "ff_factors", "sp500")
TASKS = {"synthetic": "regression", "diabetes": "regression", "digits": "multiclass",
         "breast_cancer": "binary", "iris": "multiclass", "wine": "multiclass",
         "moons": "binary", "lecture5": "binary", "ff_factors": "returns",
         "sp500": "returns"}
FINANCE = ("ff_factors", "sp500")  # time series (arch's bundled data): raw, in time order


@dataclass
class Dataset:
    """X: (n, m) features, Y: (d_out, m) targets; ``info`` says where they came from."""

    name: str
    X: np.ndarray
    Y: np.ndarray
    task: str
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def m(self) -> int:
        return self.X.shape[1]

    @property
    def d_out(self) -> int:
        return self.Y.shape[0]


def _zscore_rows(A: np.ndarray) -> np.ndarray:
    """Standardize each row (feature) over the examples; constant rows become 0."""
    mu = A.mean(axis=1, keepdims=True)
    sd = A.std(axis=1, keepdims=True)
    return (A - mu) / np.where(sd > 0, sd, 1.0)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    classes = np.unique(labels)
    return (labels[None, :] == classes[:, None]).astype(np.float64)  # (C, m)


def _subsample(X, Y, m, seed, name):
    """Keep ``m`` columns chosen by ``seed`` (m = 0 or m = all keeps everything, in order)."""
    if m is not None and m > X.shape[1]:
        raise UserError(f"data.m={m} is more than the {X.shape[1]} examples of {name}; "
                        f"allowed: 0 (all) or 1..{X.shape[1]}")
    if m is None or m <= 0 or m == X.shape[1]:
        return X, Y
    idx = np.sort(np.random.default_rng(seed).choice(X.shape[1], size=m, replace=False))
    return X[:, idx], Y[:, idx]


# ---------------------------------------------------------------- the raw-data cache
def data_home() -> Path:
    """Folder of the raw-data cache (``BPEXP_DATA_HOME``, else the XDG cache folder)."""
    env = os.environ.get("BPEXP_DATA_HOME")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bpexp"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def cached(name: str, dist: str, fetch) -> dict:
    """``fetch()``'s dict of arrays for ``name``, read from the cache file of this version of
    the distribution ``dist`` when present, else fetched and written (atomically) there."""
    path = data_home() / f"raw-{name}-{dist}-{_version(dist)}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):   # absent or damaged
        pass
    arrays = {k: np.asarray(v) for k, v in fetch().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except OSError:   # a read-only home: run without the cache
        pass
    return arrays


def _sklearn_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X: (m, n), y: (m,)) of a bundled scikit-learn set, as ``load_<name>`` returns them."""
    def fetch():
        from sklearn import datasets as skd

        Xr, y = getattr(skd, f"load_{name}")(return_X_y=True)
        return {"X": Xr, "y": y}

    raw = cached(name, "scikit-learn", fetch)
    return raw["X"], raw["y"]


def load(name: str, *, m: int = 0, n: int = 10, noise: float = 0.1, seed: int = 0,
         features=None, dtype=np.float32) -> Dataset:
    """Load dataset ``name``; ``m`` > 0 subsamples examples (seeded), ``n``/``noise`` are for
    ``synthetic`` and ``moons``, ``features`` keeps those rows of X.
    Unknown name -> ValueError listing the known ones."""
    ds = _load(name, m=m, n=n, noise=noise, seed=seed, dtype=dtype)
    if features is not None:
        bad = [i for i in features if not 0 <= i < ds.n]
        if bad:
            raise UserError(f"data.features={list(features)} has index {bad[0]} "
                            f"outside 0..{ds.n - 1} of {name}")
        ds.X = ds.X[list(features)]
        ds.info["features"] = list(features)
        if "names" in ds.info:  # the market sets name their columns
            ds.info["names"] = [ds.info["names"][i] for i in features]
    return ds


def _load(name, *, m, n, noise, seed, dtype) -> Dataset:
    if name not in NAMES:
        raise UserError(f"data.name={name!r} is not a dataset; choose one of {', '.join(NAMES)}")
    info: dict = {}
    if name == "synthetic":
        # y = w_true . x + b_true + noise * eps, with x ~ N(0, I); targets then z-scored.
        rng = np.random.default_rng(seed)
        m_ = m if m and m > 0 else 200
        X = rng.standard_normal((n, m_))
        w_true = rng.standard_normal((1, n))
        b_true = float(rng.standard_normal())
        Y = w_true @ X + b_true + noise * rng.standard_normal((1, m_))
        info = {"w_true": w_true.ravel().tolist(), "b_true": b_true, "noise": noise}
        X, Y = _zscore_rows(X), _zscore_rows(Y)
        info["note"] = "w_true, b_true are before z-scoring X and Y"
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], info)
    if name == "lecture5":
        # Lecture 5 section 8: one example x = [1, 2], target 1; raw, not standardized.
        X = np.array([[1.0], [2.0]])
        Y = np.array([[1.0]])
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], {"source": "Lecture 5"})
    if name in FINANCE:
        X, Y, info = (ff_factors if name == "ff_factors" else sp500)()
        if m and m > 0:  # time series: keep the most recent m periods, in order
            if m > X.shape[1]:
                raise UserError(f"data.m={m} is more than the {X.shape[1]} periods of {name}; "
                                f"allowed: 0 (all) or 1..{X.shape[1]}")
            X, Y, info["dates"] = X[:, -m:], Y[:, -m:], info["dates"][-m:]
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], info)
    if name == "moons":
        from sklearn.datasets import make_moons
        Xr, y = make_moons(n_samples=m if m and m > 0 else 200, noise=noise, random_state=seed)
        X, Y = _zscore_rows(Xr.T), y[None, :].astype(np.float64)
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], {"noise": noise})

    Xr, y = _sklearn_raw(name)
    X = _zscore_rows(np.asarray(Xr, dtype=np.float64).T)
    task = TASKS[name]
    if task == "regression":
        Y = _zscore_rows(np.asarray(y, dtype=np.float64)[None, :])
    elif task == "binary":
        Y = np.asarray(y, dtype=np.float64)[None, :]
    else:
        Y = _one_hot(np.asarray(y))
    X, Y = _subsample(X, Y, m, seed, name)
    info = {"source": f"sklearn.datasets.load_{name}", "m_total": int(len(y))}
    return Dataset(name, X.astype(dtype), Y.astype(dtype), task, info)


# ---------------------------------------------------------------- market data (arch, bundled)
# Returns are decimals (0.01 = 1 %), NOT standardized: a Sharpe ratio needs the raw mean.
SP500_LOOKBACKS = (1, 5, 20, 60)  # days of past returns averaged into each momentum feature
SP500_TREND = 200                 # days of the moving average in the trend feature
SP500_VOL = 20                    # days of the trailing volatility feature


def ff_factors():
    """Fama-French monthly factors 1926-07..2018-11 (``arch.data.frenchdata``, Ken French's
    library). X: (3, m) excess returns of the Mkt-RF, SMB, HML portfolios; Y: (1, m) the
    risk-free rate RF; decimals. All three are zero-cost (excess) returns, so a portfolio
    w^T X is an excess return and its Sharpe ratio needs no RF."""
    cols = ["Mkt-RF", "SMB", "HML"]

    def fetch():
        from arch.data import frenchdata

        df = frenchdata.load()
        # arch parses the YYYYMM integers as nanoseconds since 1970; the integer is the month
        return {"yyyymm": df.index.asi8, "X": df[cols].to_numpy(np.float64),
                "RF": df[["RF"]].to_numpy(np.float64)}

    raw = cached("ff_factors", "arch", fetch)
    dates = [f"{v // 100:04d}-{v % 100:02d}" for v in raw["yyyymm"].tolist()]
    X = raw["X"].T / 100.0
    Y = raw["RF"].T / 100.0
    return X, Y, {"source": "arch.data.frenchdata (Ken French data library)", "names": cols,
                  "target": "RF", "dates": dates, "frequency": "monthly",
                  "periods_per_year": 12, "units": "decimal return per month"}


def sp500_prices():
    """(dates as 'YYYY-MM-DD' strings, adjusted closes) of the S&P 500, 1999-01-04..2018-12-31
    (``arch.data.sp500``)."""
    def fetch():
        from arch.data import sp500 as sp

        df = sp.load()
        return {"dates": np.array([d.strftime("%Y-%m-%d") for d in df.index]),
                "close": df["Adj Close"].to_numpy(np.float64)}

    raw = cached("sp500", "arch", fetch)
    return raw["dates"].tolist(), raw["close"]


def sp500_features(prices: np.ndarray):
    """Strictly past features for trading on day t. prices: (N,) closes P_0..P_{N-1}.

    r_t = P_t / P_{t-1} - 1 is day t's return (t = 1..N-1). Column j of X describes day
    t = t0 + j using only r_1..r_{t-1} (equivalently P_0..P_{t-1}):
      ret_k    = mean(r_{t-k}, ..., r_{t-1})       for k in SP500_LOOKBACKS
      trend    = P_{t-1} / mean(P_{t-200}..P_{t-1}) - 1
      vol_20   = std(r_{t-20}, ..., r_{t-1})
    Y[0, j] = r_t, the return the position held on day t earns. t0 = SP500_TREND, the first
    day with a full history. Returns X: (n, m), Y: (1, m), names, t0."""
    P = np.asarray(prices, np.float64)
    r = np.concatenate([[np.nan], P[1:] / P[:-1] - 1.0])          # r[t], r[0] undefined
    t0, N = SP500_TREND, P.size
    t = np.arange(t0, N)
    csum_r = np.concatenate([[0.0], np.cumsum(np.nan_to_num(r))])   # csum_r[k] = sum r[:k]
    csum_r2 = np.concatenate([[0.0], np.cumsum(np.nan_to_num(r) ** 2)])
    csum_p = np.concatenate([[0.0], np.cumsum(P)])

    def past_mean(c, k):  # mean of x[t-k], ..., x[t-1]
        return (c[t] - c[t - k]) / k

    feats = [past_mean(csum_r, k) for k in SP500_LOOKBACKS]
    feats.append(P[t - 1] / past_mean(csum_p, SP500_TREND) - 1.0)
    k = SP500_VOL
    mean_k = past_mean(csum_r, k)
    feats.append(np.sqrt(np.maximum(past_mean(csum_r2, k) - mean_k ** 2, 0.0)))
    names = [f"ret_{k}" for k in SP500_LOOKBACKS] + [f"trend_{SP500_TREND}", f"vol_{SP500_VOL}"]
    return np.stack(feats), r[t][None, :], names, t0


def sp500():
    """S&P 500 daily, 1999-2018 (``arch.data.sp500``): X: (6, m) strictly past features of
    each trading day (sp500_features), Y: (1, m) that day's simple return; decimals."""
    dates, P = sp500_prices()
    X, Y, names, t0 = sp500_features(P)
    return X, Y, {"source": "arch.data.sp500 (adjusted close)", "names": names,
                  "target": "r_t = P_t / P_(t-1) - 1", "dates": dates[t0:],
                  "frequency": "daily", "periods_per_year": 252,
                  "units": "decimal return per day",
                  "note": "column t uses only prices up to day t-1 (no look-ahead)"}
