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

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from bpexp.layout import Layout

STORE = "metrics.zarr"
ZARR_FORMAT = 2   # read by zarr-python 2 and 3 and by every xarray


def data_hash(*arrays) -> int:
    """A 64-bit checksum (blake2b) of arrays' values: their dtype, shape and bytes in C order,
    every NaN written the same way (a NaN's sign and payload are not data)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "fc":
            a = np.where(np.isnan(a), np.array(np.nan, a.dtype), a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return int.from_bytes(h.digest(), "little")


def write_dataset(path, ds) -> None:
    """``ds`` (an xarray.Dataset) to the Zarr folder ``path``, all or nothing: written beside it
    under a temporary name, then renamed over any previous one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    ds = ds.copy()
    ds.attrs["bpexp_hashes"] = {k: str(data_hash(ds[k].values)) for k in ds.data_vars}
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
    a dict) and ``attrs["summary"]`` (summary.json, once the run has finished) attached.
    (``bpexp.load`` also checks the values against their checksums: bpexp.verify.)"""
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


def _parses(path: Path) -> bool:
    """Whether a metadata file is readable JSON."""
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


DONE = "chunk_done"   # int8 [chunk]: 1 once every metric of the chunk is written
HASH = "chunk_hash"   # uint64 [chunk]: data_hash of the chunk's blocks, written before DONE
HASHED = "bpexp_chunk_arrays"   # attrs: the arrays a chunk's hash covers, in order


class GridStore:
    """``metrics.zarr`` of one grid, written one chunk at a time.

    Each metric is a Zarr array over the grid axes and its own (``step``, ``param``); the grid
    axes, ``step`` and ``param`` are coordinate arrays; ``chunk_done[i]`` is set after every
    metric of chunk ``i`` is written (Zarr writes each chunk file atomically), so a chunk is
    complete or absent whatever kills the process. Missing chunks read as NaN (float metrics).
    """

    def __init__(self, path, layout: Layout, on_progress=None, claim=None, owner=None,
                 alive=None):
        self.path, self.layout = Path(path), layout
        self.on_progress, self.claim_hook = on_progress, claim
        self.owner, self.alive = owner, alive   # this process's name; is a name's owner alive?
        self._arrays: dict = {}

    # -- taking chunks: processes of one run share the work
    def take(self, i: int) -> bool:
        """Claim chunk ``i`` for this process: False if it is complete, or claimed by a
        process that is still alive (a claim of one that is gone is taken over). Without an
        owner (one process, no run folder) every chunk is this process's."""
        if self.owner is None:
            return True
        claims = self.path.with_name(f".{self.path.name}.claims")
        claims.mkdir(exist_ok=True)
        mark = claims / str(int(i))
        for _ in range(2):
            if self.done()[i]:
                return False
            # the claim appears with its owner written (a hard link of a written file), so
            # another process never reads an empty claim and takes it for one whose owner left
            tmp = claims / f".{int(i)}.{secrets.token_hex(6)}"
            tmp.write_text(self.owner)
            try:
                os.link(tmp, mark)
            except FileExistsError:
                try:
                    holder = mark.read_text().strip()
                except OSError:
                    continue
                if holder == self.owner or (self.alive is not None and self.alive(holder)):
                    return holder == self.owner
                with contextlib.suppress(FileNotFoundError):
                    os.remove(mark)           # its owner is gone: take it over
                continue
            finally:
                os.remove(tmp)
            return not self.done()[i]
        return False

    # -- creation / opening
    @classmethod
    def open(cls, path, layout: Layout, metrics: dict, coords: dict, attrs: dict | None = None,
             derived: tuple = (), **hooks) -> GridStore:
        """Create the store (atomically: built under a temporary name and renamed) or open an
        existing one after checking it holds this grid with this chunking. ``metrics``: name ->
        (dims after the grid axes, shape after the grid axes, dtype); ``coords``: the extra
        coordinates (``step``, ``param``); ``derived``: metrics written once at the end, not per
        chunk (outside the chunks' checksums). An existing store's damaged metadata is rebuilt
        (it is fixed by the config), and chunks whose data no longer match their checksum lose
        their marker, so the sweep computes them again (the same bits)."""
        path = Path(path)
        self = cls(path, layout, **hooks)
        attrs = {**(attrs or {}), HASHED: sorted(set(metrics) - set(derived))}
        if not path.exists():
            tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
            self._create(tmp, metrics, coords, attrs)
            try:
                os.rename(tmp, path)
            except OSError:               # another process created it first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            repaired = self._repair_metadata(metrics, coords, attrs)
            if repaired:
                print(f"{path}: rebuilt damaged metadata ({', '.join(repaired[:4])}"
                      f"{' ...' if len(repaired) > 4 else ''})")
        self._check(metrics)
        bad = self.verify()
        if bad:
            self.forget(bad)
            print(f"{path}: {len(bad)} chunk{'s' * (len(bad) > 1)} marked complete did not "
                  f"match their checksum ({', '.join(map(str, bad[:8]))}"
                  f"{' ...' if len(bad) > 8 else ''}): computing them again")
        return self

    def _repair_metadata(self, metrics: dict, coords: dict, attrs: dict) -> list[str]:
        """Rebuild the metadata files (and coordinate chunks) that are missing or no longer
        parse, from a store created afresh for the same grid; returns the repaired files.
        Readable files are never rewritten (a different grid is then caught by the layout
        check), and data chunks are left alone (their checksums judge them)."""
        tmp = self.path.with_name(f".{self.path.name}.template-{secrets.token_hex(4)}")
        try:
            self._create(tmp, metrics, coords, attrs)
            fixed = []
            for f in sorted(tmp.rglob("*")):
                rel = f.relative_to(tmp)
                have = self.path / rel
                if f.is_dir() or (have.is_file() and (not f.name.startswith(".")
                                                      or _parses(have))):
                    continue
                have.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, have)
                fixed.append(str(rel))
            return fixed
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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
        g.create_array(HASH, shape=(lay.n_chunks,), chunks=(1,), dtype="uint64",
                       fill_value=None, compressors=None,
                       attributes={"_ARRAY_DIMENSIONS": ["chunk"],
                                   "description": f"checksum of the chunk's {HASHED}"})
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

    def _hashed(self) -> list[str]:
        """The arrays a chunk's checksum covers ([] for a store written before checksums)."""
        if not hasattr(self, "_hashed_names"):
            import zarr

            self._hashed_names = list(zarr.open_group(self.path, mode="r").attrs.get(HASHED)
                                      or [])
        return self._hashed_names

    def verify(self) -> list[int]:
        """The chunks marked complete whose data are missing, undecodable or not what was
        written (checksum); reads every complete chunk once."""
        names = self._hashed()
        done = np.flatnonzero(self.done())
        if not names or not done.size:
            return []
        bad = []
        for i in done.tolist():
            region = self.layout.region(i)
            try:
                want = int(self._read_array(HASH)[i])
                got = data_hash(*(self._read_array(k)[region] for k in names))
            except Exception:     # a truncated or corrupt chunk file
                got, want = None, 0
            if got != want:
                bad.append(i)
        return bad

    def forget(self, chunks) -> None:
        """Unmark ``chunks`` (their markers removed), so that a sweep computes them again."""
        for i in chunks:
            for arr in (DONE, HASH):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path / arr / str(int(i)))

    def _array(self, name):
        import zarr

        if name not in self._arrays:
            self._arrays[name] = zarr.open_array(self.path / name, mode="r+")
        return self._arrays[name]

    def write(self, i: int, values: dict) -> None:
        """Chunk ``i``: ``values[name]`` has the chunk's runs (``layout.runs(i)`` order,
        padding dropped) on its leading axis. The marker goes last."""
        blocks = {}
        for name, v in values.items():
            region, block = self.layout.place(i, v)
            self._array(name)[region] = block
            blocks[name] = block
        names = self._hashed()
        if names:
            self._array(HASH)[i] = data_hash(*(blocks[k] for k in names))
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
