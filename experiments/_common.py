"""Pieces every experiment shares: data from the config, sweep metrics to disk."""

from __future__ import annotations

import numpy as np

from bpexp import data, make


def load_data(cfg, run=None, **override) -> data.Dataset:
    """The config's dataset (make.dataset; ``override`` replaces DataCfg fields), saved to
    data.npz when ``run`` is given."""
    ds = make.dataset(cfg, **override)
    if run is not None:
        run.save_data(ds.X, ds.Y)
    return ds


def finite_median(a, axis):
    """Median over ``axis`` that treats non-finite values as +inf (a diverged run is worst)."""
    a = np.where(np.isfinite(a), a, np.inf)
    return np.median(a, axis=axis)


def question(doc: str) -> str:
    """The module docstring's question as one line, for report.md."""
    q = " ".join(doc.split("Question:")[1].split("Theory:")[0].split())
    return q[:1].upper() + q[1:]


def diverged_mask(loss, final, first_nonfinite, factor=1.0, growth=None, window=0.25):
    """[lr, run] bool: a non-finite loss somewhere, or the final loss above factor x initial,
    or (with ``growth``) the loss still growing: final > growth x the loss recorded at the
    start of the last ``window`` of training. ``loss``: [lr, run, record]."""
    out = (first_nonfinite >= 0) | ~np.isfinite(final) | (final > factor * loss[..., 0])
    if growth is not None:
        start = loss[..., min(int((1 - window) * loss.shape[-1]), loss.shape[-1] - 1)]
        out |= final > growth * start
    return out


def best_lr_index(final, diverged) -> int | None:
    """Index of the lr with the lowest median final loss among lrs where no run diverged."""
    med = np.where(diverged.any(axis=1), np.inf, finite_median(final, axis=1))
    return int(np.argmin(med)) if np.isfinite(med).any() else None
