"""The result store: ``metrics.zarr`` in each run folder, readable with xarray alone.

Every metric is a Zarr array with named dimensions and coordinates in xarray's Zarr convention
(format 2, consolidated metadata), so that with no bpexp installed::

    import xarray as xr
    ds = xr.open_zarr(run_dir + "/metrics.zarr")
    ds["loss"].dims            # ("lr", "seed", "step")
    ds["loss"].sel(lr=0.1, method="nearest")

Small experiments write their whole Dataset at once (:func:`write_dataset`, atomically: a
temporary folder renamed into place). Sweeps stream into it chunk by chunk (:class:`GridStore`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

STORE = "metrics.zarr"
ZARR_FORMAT = 2   # read by zarr-python 2 and 3 and by every xarray


def write_dataset(path, ds) -> None:
    """``ds`` (an xarray.Dataset) to the Zarr folder ``path``, all or nothing: written beside it
    under a temporary name, then renamed over any previous one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    ds.to_zarr(tmp, mode="w", zarr_format=ZARR_FORMAT, consolidated=True)
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{secrets.token_hex(4)}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def load(run_dir):
    """A run's metrics as an ``xarray.Dataset`` with ``attrs["config"]`` (the resolved config,
    a dict) and ``attrs["summary"]`` (summary.json, once the run has finished) attached."""
    import xarray as xr
    import yaml

    run_dir = Path(run_dir)
    if not (run_dir / STORE).is_dir():
        raise FileNotFoundError(f"{run_dir} has no {STORE}")
    ds = xr.open_zarr(run_dir / STORE)
    cfg = run_dir / "config.yaml"
    ds.attrs["config"] = yaml.safe_load(cfg.read_text()) if cfg.exists() else None
    summ = run_dir / "summary.json"
    ds.attrs["summary"] = json.loads(summ.read_text()) if summ.exists() else None
    return ds


def as_numpy(ds) -> dict:
    """Every data variable of ``ds`` as a numpy array (small stores only)."""
    return {k: np.asarray(v.values) for k, v in ds.data_vars.items()}
