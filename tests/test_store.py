"""bpexp.store: chunk layouts, the streamed grid store (read back with xarray alone), and the
sweep engine streaming into it bitwise equal to the in-memory engine."""

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from bpexp import store, sweep, train
from bpexp.store import GridStore, Layout


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), chunk=st.integers(1, 60))
def test_layout_chunks_tile_the_grid_exactly_once(shape, chunk):
    axes = {f"a{i}": np.arange(s) for i, s in enumerate(shape)}
    lay = Layout.for_chunk(axes, chunk)
    assert 1 <= lay.runs_per_chunk <= max(chunk, 1)
    seen = np.zeros(int(np.prod(shape)), int)
    for i in range(lay.n_chunks):
        runs = lay.runs(i)
        assert 1 <= runs.size <= lay.runs_per_chunk
        region = lay.region(i)
        # the chunk is one Zarr chunk: its region starts on the chunk grid
        for s, c in zip(region, lay.chunk_shape()):
            assert s.start % c == 0 and s.stop - s.start <= c
        # and its runs are that rectangle, row-major
        expect = np.ravel_multi_index(np.meshgrid(*[np.arange(s.start, s.stop) for s in region],
                                                  indexing="ij"), shape).ravel()
        np.testing.assert_array_equal(runs, expect)
        seen[runs] += 1
    assert np.all(seen == 1)


def test_layout_examples():
    lay = Layout.for_chunk({"lr": np.arange(64), "seed": np.arange(8)}, 100)
    assert (lay.split, lay.block, lay.runs_per_chunk, lay.n_chunks) == (0, 11, 88, 6)
    lay = Layout.for_chunk({"lr": np.arange(3), "seed": np.arange(1000)}, 300)
    assert (lay.split, lay.block, lay.runs_per_chunk, lay.n_chunks) == (1, 250, 250, 12)
    assert Layout.for_chunk({"lr": np.arange(5)}, 100).n_chunks == 1


def _spec(**kw):
    return train.TrainSpec(model="multivariate", n=3, d_out=1, m=20, steps=12, record_every=3,
                           opt_hparams=("lr",), **kw)


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 20)).astype(np.float32)
    Y = (np.array([[1.0, -2.0, 0.5]]) @ X + 0.1 * rng.normal(size=(1, 20))).astype(np.float32)
    return X, Y


GRID = sweep.Grid({"lr": np.array([0.01, 0.05, 0.2, 0.6, 3.0]), "seed": np.arange(3),
                   "init_scale": np.array([0.5, 1.0])})


def _open(path, lay, spec, **hooks):
    return GridStore.open(path, lay, sweep.metric_shapes(spec), sweep.record_coords(spec),
                          {"note": "test"}, **hooks)


def test_streamed_store_equals_in_memory_and_reads_with_xarray(tmp_path):
    spec, (X, Y) = _spec(), _data()
    lay = sweep.layout(spec, GRID, chunk_size=4)
    assert lay.n_chunks > 1
    mem = sweep.run_grid(spec, X, Y, GRID, chunk_size=4, progress=False)
    st_ = _open(tmp_path / "m.zarr", lay, spec)
    res = sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_)
    assert res.metrics == {} and res.store is st_          # nothing kept in memory
    assert res.stats["chunks_computed"] == lay.n_chunks
    ds = xr.open_zarr(tmp_path / "m.zarr")                   # no bpexp needed
    assert ds["loss"].dims == ("lr", "seed", "init_scale", "step")
    assert ds["grad_norm"].dims == ("lr", "seed", "init_scale", "step", "param")
    assert ds["final_loss"].dims == ("lr", "seed", "init_scale")
    np.testing.assert_array_equal(ds["lr"].values, GRID.axes["lr"])
    np.testing.assert_array_equal(ds["init_scale"].values, GRID.axes["init_scale"])
    np.testing.assert_array_equal(ds["step"].values, [0, 3, 6, 9])
    assert ds["param"].values.tolist() == ["b", "w"]
    assert ds["first_nonfinite"].dtype == np.int32 and ds.attrs["note"] == "test"
    for k, v in mem.metrics.items():
        np.testing.assert_array_equal(ds[k].values, v, err_msg=k)   # bitwise, NaN == NaN
    assert ds["chunk_done"].values.tolist() == [1] * lay.n_chunks
    # reading back in aligned blocks of learning rates covers the grid once
    blocks = st_.blocks("lr", 2)
    assert [b.start for b in blocks][0] == 0 and blocks[-1].stop == 5
    got = np.concatenate([st_.read("final_loss", lr=b) for b in blocks])
    np.testing.assert_array_equal(got, mem.metrics["final_loss"])


def test_resume_skips_complete_chunks_and_shards_split_the_rest(tmp_path):
    spec, (X, Y) = _spec(), _data()
    lay = sweep.layout(spec, GRID, chunk_size=6)
    claims = []
    st_ = _open(tmp_path / "m.zarr", lay, spec, claim=lambda s: claims.append(s.done().copy()))
    r0 = sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_, shard=(0, 3))
    assert r0.stats["chunks_computed"] == len(range(0, lay.n_chunks, 3))
    np.testing.assert_array_equal(claims[-1], np.arange(lay.n_chunks) % 3 == 0)
    r1 = sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_)   # the rest, no shard
    assert r1.stats["chunks_computed"] == lay.n_chunks - r0.stats["chunks_computed"]
    assert claims[-1].all()
    r2 = sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_)
    assert r2.stats["chunks_computed"] == 0
    mem = sweep.run_grid(spec, X, Y, GRID, chunk_size=6, progress=False)
    ds = st_.dataset()
    for k, v in mem.metrics.items():
        np.testing.assert_array_equal(ds[k].values, v, err_msg=k)


def test_a_chunk_without_its_marker_counts_as_missing(tmp_path):
    """Data written, marker absent (a kill between the two): the chunk is recomputed."""
    spec, (X, Y) = _spec(), _data()
    lay = sweep.layout(spec, GRID, chunk_size=6)
    st_ = _open(tmp_path / "m.zarr", lay, spec)
    sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_)
    (tmp_path / "m.zarr" / store.DONE / "1").unlink()
    assert st_.done().tolist() == [i != 1 for i in range(lay.n_chunks)]
    r = sweep.run_grid(spec, X, Y, GRID, progress=False, store=st_)
    assert r.stats["chunks_computed"] == 1 and st_.done().all()


def test_mismatched_or_broken_store_is_one_line(tmp_path):
    spec = _spec()
    lay = sweep.layout(spec, GRID, chunk_size=6)
    _open(tmp_path / "m.zarr", lay, spec)
    other = sweep.layout(spec, GRID, chunk_size=3)
    with pytest.raises(store.StoreMismatch) as e:
        _open(tmp_path / "m.zarr", other, spec)
    assert "was written with" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(store.StoreMismatch,
                       match=r"written with shape=\[5, 3, 2\], this config gives \[2, 3, 2\]"):
        _open(tmp_path / "m.zarr", sweep.layout(spec, sweep.Grid({**GRID.axes, "lr": np.ones(2)}),
                                                chunk_size=6), spec)
    (tmp_path / "x.zarr").mkdir()
    (tmp_path / "x.zarr" / ".zgroup").write_text("garbage")
    with pytest.raises(store.StoreMismatch, match="not a readable Zarr store"):
        store.read_layout(tmp_path / "x.zarr")
    assert store.read_layout(tmp_path / "none.zarr") is None
    assert store.read_layout(tmp_path / "m.zarr") == lay.describe()


def test_concurrent_creation_keeps_one_store(tmp_path):
    """Several openers racing: each builds under a temporary name, one rename wins."""
    import concurrent.futures as cf

    spec = _spec()
    lay = sweep.layout(spec, GRID, chunk_size=6)
    with cf.ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda _: _open(tmp_path / "m.zarr", lay, spec), range(4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]
    assert store.read_layout(tmp_path / "m.zarr") == lay.describe()


def test_write_dataset_replaces_atomically(tmp_path):
    a = xr.Dataset({"x": (("i",), np.arange(3))})
    b = xr.Dataset({"y": (("j",), np.ones(2))})
    store.write_dataset(tmp_path / "m.zarr", a)
    store.write_dataset(tmp_path / "m.zarr", b)
    ds = xr.open_zarr(tmp_path / "m.zarr")
    assert list(ds.data_vars) == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.zarr"]   # no temporary or old copy
