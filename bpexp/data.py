"""Datasets as ``(X: (n, m), Y: (d_out, m))`` float arrays; examples are COLUMNS.

Only data that ships inside a package (scikit-learn's bundled sets and generators) or is
generated from a seed: nothing is downloaded. Features are z-scored; regression targets are
z-scored; binary targets are 0/1 rows, multi-class targets one-hot columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpexp.errors import UserError

NAMES = ("synthetic", "diabetes", "digits", "breast_cancer", "iris", "wine", "moons",
         "worked_example")
TASKS = {"synthetic": "regression", "diabetes": "regression", "digits": "multiclass",
         "breast_cancer": "binary", "iris": "multiclass", "wine": "multiclass",
         "moons": "binary", "worked_example": "binary"}


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
    if name == "worked_example":
        # Lecture 5 section 8: one example x = [1, 2], target 1; raw, not standardized.
        X = np.array([[1.0], [2.0]])
        Y = np.array([[1.0]])
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], {"source": "Lecture 5"})
    if name == "moons":
        from sklearn.datasets import make_moons
        Xr, y = make_moons(n_samples=m if m and m > 0 else 200, noise=noise, random_state=seed)
        X, Y = _zscore_rows(Xr.T), y[None, :].astype(np.float64)
        return Dataset(name, X.astype(dtype), Y.astype(dtype), TASKS[name], {"noise": noise})

    from sklearn import datasets as skd
    loader = {"diabetes": skd.load_diabetes, "digits": skd.load_digits,
              "breast_cancer": skd.load_breast_cancer, "iris": skd.load_iris,
              "wine": skd.load_wine}[name]
    Xr, y = loader(return_X_y=True)
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
