"""bpexp: gradient descent and backpropagation, observable and checkable."""

__version__ = "0.1.0"


def load(run_dir):
    """A run folder's metrics as an ``xarray.Dataset`` (``metrics.zarr``), with the resolved
    config and the summary in ``attrs["config"]`` and ``attrs["summary"]``."""
    from bpexp import store

    return store.load(run_dir)
