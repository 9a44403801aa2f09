"""bpexp: gradient descent and backpropagation, observable and checkable."""

import time as _time

__version__ = "0.1.0"
STARTED = _time.time()   # this process's start, as near as the package sees it (run timings)


def conf_dir():
    """conf/ as installed (a wheel: bpexp/conf) or in the checkout (editable: ../conf); here,
    not in bpexp.config, so that finding experiments (bpexp.experiments) imports no JAX."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    for d in (here / "conf", here.parent / "conf"):
        if (d / "config.yaml").is_file():
            return d
    raise FileNotFoundError(f"no conf/config.yaml beside {here}: bpexp is installed incompletely")


def load(run_dir, verify: bool = True):
    """A run folder's metrics as an ``xarray.Dataset`` of ``metrics.zarr``, with the resolved
    config and the summary in ``attrs["config"]`` and ``attrs["summary"]``. ``verify``: check
    the values against their checksums; damage is listed in ``attrs["damaged"]`` and warned
    about in one line (``python -m bpexp.verify RUN_DIR`` lists it)."""
    import warnings

    from bpexp import store
    from bpexp import verify as check

    ds = store.load(run_dir)
    if verify:
        ds.attrs["damaged"] = check.damage(f"{run_dir}/{store.STORE}", ds)
        if ds.attrs["damaged"]:
            warnings.warn(f"{run_dir}: damaged {', '.join(ds.attrs['damaged'][:6])}; python -m "
                          f"bpexp.verify {run_dir} lists them", stacklevel=2)
    return ds
