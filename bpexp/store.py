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


# ---------------------------------------------------------------- the streamed grid store
class Layout:
    """How a grid's run axis is cut into chunks that are rectangles of the grid.

    The grid is the row-major product of ``axes`` (e.g. lr x seed). A chunk holds every value
    of the axes after ``split``, a block of ``block`` values of axis ``split`` and one value
    of each axis before it, so that every chunk is one Zarr chunk of every metric: a process
    writes whole Zarr chunks only, and shards never write the same file."""

    def __init__(self, axes: dict, split: int, block: int):
        self.axes = {k: np.asarray(v) for k, v in axes.items()}
        self.names = tuple(self.axes)
        self.shape = tuple(len(v) for v in self.axes.values())
        self.split, self.block = int(split), int(block)
        self.inner = int(np.prod(self.shape[self.split + 1:], dtype=np.int64))
        self.per_axis = -(-self.shape[self.split] // self.block)   # blocks along the split axis
        self.n_chunks = int(np.prod(self.shape[:self.split], dtype=np.int64)) * self.per_axis
        self.runs_per_chunk = self.block * self.inner

    @classmethod
    def for_chunk(cls, axes: dict, chunk: int) -> Layout:
        """The layout whose chunks hold at most ``chunk`` runs (at least one value of the last
        axis), balanced so that the blocks along the split axis are as equal as possible."""
        shape = [len(v) for v in axes.values()]
        inner, split = 1, 0
        for j in range(len(shape) - 1, -1, -1):
            if inner * shape[j] > chunk:
                split = j
                break
            inner *= shape[j]
        else:
            return cls(axes, 0, shape[0])                     # the whole grid is one chunk
        block = max(1, chunk // inner)
        n_blocks = -(-shape[split] // block)
        return cls(axes, split, -(-shape[split] // n_blocks))

    def chunk_shape(self) -> tuple:
        """Zarr chunk shape over the grid axes."""
        return tuple(1 if j < self.split else self.block if j == self.split else s
                     for j, s in enumerate(self.shape))

    def region(self, i: int) -> tuple:
        """Chunk ``i`` as a tuple of slices over the grid axes."""
        outer, q = divmod(int(i), self.per_axis)
        lead = np.unravel_index(outer, self.shape[:self.split]) if self.split else ()
        lo = q * self.block
        return (tuple(slice(int(k), int(k) + 1) for k in lead)
                + (slice(lo, min(lo + self.block, self.shape[self.split])),)
                + tuple(slice(0, s) for s in self.shape[self.split + 1:]))

    def place(self, i: int, v) -> tuple[tuple, np.ndarray]:
        """(region, values): chunk ``i``'s runs on the leading axis of ``v`` (padding
        dropped) reshaped onto the grid axes of its region."""
        region = self.region(i)
        shape = tuple(s.stop - s.start for s in region)
        v = np.asarray(v)[:int(np.prod(shape))]
        return region, v.reshape(shape + v.shape[1:])

    def size(self, i: int) -> int:
        """Runs in chunk ``i`` (fewer than runs_per_chunk in a last, partial block)."""
        return int(np.prod([s.stop - s.start for s in self.region(i)]))

    def runs(self, i: int) -> np.ndarray:
        """Flat (row-major) indices of the runs of chunk ``i``, in the chunk's own order."""
        idx = np.meshgrid(*[np.arange(s.start, s.stop) for s in self.region(i)], indexing="ij")
        return np.ravel_multi_index([a.ravel() for a in idx], self.shape)

    def describe(self) -> dict:
        return {"axes": list(self.names), "shape": list(self.shape), "split": self.names[
            self.split], "block": self.block, "runs_per_chunk": self.runs_per_chunk,
            "n_chunks": self.n_chunks}


class StoreMismatch(ValueError):
    """An existing store does not match the sweep asked of it (one line)."""


def layout_mismatch(have: dict, want: dict) -> str | None:
    """The first key where a recorded layout differs from the wanted one, as ``key=have``
    against ``want``; None when they agree."""
    key = next((k for k in want if have.get(k) != want[k]), None)
    return None if key is None else f"{key}={have.get(key)!r}, this config gives {want[key]!r}"


def read_layout(path) -> dict | None:
    """The chunk layout recorded in a grid store (None if there is no store yet)."""
    import zarr

    path = Path(path)
    if not path.exists():
        return None
    try:
        layout = dict(zarr.open_group(path, mode="r").attrs).get("bpexp_layout")
    except Exception as e:
        raise StoreMismatch(f"{path} is not a readable Zarr store ({type(e).__name__})") from None
    if not isinstance(layout, dict):
        raise StoreMismatch(f"{path} is not a bpexp grid store (no bpexp_layout)")
    return layout


DONE = "chunk_done"   # int8 [chunk]: 1 once every metric of the chunk is written


class GridStore:
    """``metrics.zarr`` of one grid, written one chunk at a time.

    Each metric is a Zarr array over the grid axes and its own (``step``, ``param``); the grid
    axes, ``step`` and ``param`` are coordinate arrays; ``chunk_done[i]`` is set after every
    metric of chunk ``i`` is written (Zarr writes each chunk file atomically), so a chunk is
    complete or absent whatever kills the process. Missing chunks read as NaN (float metrics).
    """

    def __init__(self, path, layout: Layout, on_progress=None, claim=None):
        self.path, self.layout = Path(path), layout
        self.on_progress, self.claim_hook = on_progress, claim
        self._arrays: dict = {}

    # -- creation / opening
    @classmethod
    def open(cls, path, layout: Layout, metrics: dict, coords: dict, attrs: dict | None = None,
             **hooks) -> GridStore:
        """Create the store (atomically: built under a temporary name and renamed) or open an
        existing one after checking it holds this grid with this chunking. ``metrics``: name ->
        (dims after the grid axes, shape after the grid axes, dtype); ``coords``: the extra
        coordinates (``step``, ``param``)."""
        path = Path(path)
        self = cls(path, layout, **hooks)
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
            self._create(tmp, metrics, coords, attrs or {})
            try:
                os.rename(tmp, path)
            except OSError:               # another process created it first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        self._check(metrics)
        return self

    def _create(self, root: Path, metrics: dict, coords: dict, attrs: dict) -> None:
        import zarr

        lay = self.layout
        g = zarr.open_group(root, mode="w", zarr_format=ZARR_FORMAT)
        g.attrs.update({"bpexp_layout": lay.describe(), **attrs})
        for name, vals in {**lay.axes, **coords}.items():
            vals = np.asarray(vals)
            a = g.create_array(name, shape=vals.shape, chunks=vals.shape or (1,),
                               dtype=vals.dtype, fill_value=None,
                               attributes={"_ARRAY_DIMENSIONS": [name]})
            a[...] = vals
        for name, (dims, shape, dtype) in metrics.items():
            dtype = np.dtype(dtype)
            fill = np.nan if dtype.kind == "f" else None
            g.create_array(name, shape=lay.shape + tuple(shape),
                           chunks=lay.chunk_shape() + tuple(shape), dtype=dtype,
                           fill_value=fill,
                           attributes={"_ARRAY_DIMENSIONS": list(lay.names) + list(dims)})
        g.create_array(DONE, shape=(lay.n_chunks,), chunks=(1,), dtype="int8", fill_value=None,
                       compressors=None,
                       attributes={"_ARRAY_DIMENSIONS": ["chunk"],
                                   "description": "1 when every metric of the chunk is written"})
        zarr.consolidate_metadata(root)

    def _check(self, metrics: dict) -> None:
        import zarr

        differs = layout_mismatch(read_layout(self.path), self.layout.describe())
        if differs:
            raise StoreMismatch(f"{self.path} was written with {differs}")
        missing = sorted((set(metrics) | {DONE}) - set(zarr.open_group(self.path,
                                                                         mode="r").array_keys()))
        if missing:
            raise StoreMismatch(f"{self.path} lacks the arrays {', '.join(missing)}")

    # -- chunks
    def done(self) -> np.ndarray:
        """bool [chunk]: which chunks are complete (from the marker files, no decoding)."""
        out = np.zeros(self.layout.n_chunks, bool)
        try:
            names = os.listdir(self.path / DONE)
        except FileNotFoundError:
            return out
        idx = [int(n) for n in names if n.isdigit()]
        out[[i for i in idx if i < out.size]] = True
        return out

    def _array(self, name):
        import zarr

        if name not in self._arrays:
            self._arrays[name] = zarr.open_array(self.path / name, mode="r+")
        return self._arrays[name]

    def write(self, i: int, values: dict) -> None:
        """Chunk ``i``: ``values[name]`` has the chunk's runs (``layout.runs(i)`` order,
        padding dropped) on its leading axis. The marker goes last."""
        for name, v in values.items():
            region, block = self.layout.place(i, v)
            self._array(name)[region] = block
        self._array(DONE)[i] = 1
        if self.on_progress is not None:
            self.on_progress(self)

    def write_region(self, name: str, values, **index) -> None:
        """``values`` into ``name`` at ``index`` (axis name -> slice); for derived variables
        written by the one process that finalizes the run."""
        a = self._array(name)
        a[tuple(index.get(d, slice(None)) for d in a.attrs["_ARRAY_DIMENSIONS"])] = values

    def claim(self) -> None:
        """After a process's chunks: hand over to the owner's hook (finalize or stop)."""
        if self.claim_hook is not None:
            self.claim_hook(self)

    # -- reading
    def dataset(self):
        import xarray as xr

        return xr.open_zarr(self.path)

    def read(self, name: str, **index) -> np.ndarray:
        """``name`` as numpy, restricted by ``index`` (axis name -> int, slice or array)."""
        a = self._read_array(name)
        dims = a.attrs["_ARRAY_DIMENSIONS"]
        sel = tuple(index.get(d, slice(None)) for d in dims)
        if any(isinstance(s, (list, np.ndarray)) for s in sel):
            return a.get_orthogonal_selection(sel)
        return a[sel]

    def _read_array(self, name):
        import zarr

        return zarr.open_array(self.path / name, mode="r")

    def blocks(self, axis: str, size: int):
        """Slices of ``axis`` of at most ``size`` values, aligned to the store's chunks: for
        reading a grid in bounded memory."""
        j = self.layout.names.index(axis)
        n = self.layout.shape[j]
        step = size
        if j == self.layout.split:
            step = max(self.layout.block, size // self.layout.block * self.layout.block)
        return [slice(a, min(a + step, n)) for a in range(0, n, step)]
