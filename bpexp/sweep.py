"""The grid engine: a whole grid of training runs in one compiled, vmapped, sharded call.

Numeric axes (``lr``, ``seed``, ``init_scale`` and any optimizer hyperparameter) are flattened
into one run axis and vmapped together; every numeric knob enters as a traced array, so new
values never recompile. Structural choices (model, widths, activation, init scheme, optimizer
kind, batch size, steps) live in :class:`bpexp.train.TrainSpec`: one compile each.

The grid is processed in chunks that are rectangles of it (bpexp.store.Layout; padded to one
compiled size) so memory stays bounded, and each chunk is sharded over the given devices.
Results come back as numpy arrays with named axes, e.g. ``loss[lr, seed, step]``, or stream
chunk by chunk into a Zarr store (bpexp.store.GridStore) that a later process can resume or
share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bpexp import optim, train
from bpexp.errors import UserError
from bpexp.store import GridStore, Layout

MEMORY_BUDGET = 128 << 20      # bytes of live per-chunk state the auto chunk size aims for;
                               # larger chunks fall out of cache
                               # (100k small runs: 1.8x slower at 1 GiB)
COMPILES = {"count": 0}        # compilations done by this module (tests read it)
_CACHE: dict = {}


@dataclass
class Grid:
    """Ordered numeric axes; runs are their Cartesian product (row-major)."""

    axes: dict

    @property
    def shape(self) -> tuple:
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def flat(self) -> dict:
        mesh = np.meshgrid(*self.axes.values(), indexing="ij")
        return {k: v.ravel() for k, v in zip(self.axes, mesh)}


# ---------------------------------------------------------------- results
@dataclass
class SweepResult:
    """Metrics as numpy arrays indexed by the grid axes, e.g. ``loss[lr, seed, step]``."""

    axes: dict                       # axis name -> coordinates, in grid order
    metrics: dict                    # name -> array, leading dims = grid shape
    dims: dict                       # name -> tuple of axis names
    coords: dict = field(default_factory=dict)   # extra coordinates: step, param
    stats: dict = field(default_factory=dict)    # runs, chunks, compile_s, run_s, devices
    store: GridStore | None = None               # where the metrics are, when streamed

    def dataset(self, prefix: str = ""):
        """The metrics as an ``xarray.Dataset``: each array with its named dims, the grid axes
        and ``step``/``param`` as coordinates (``run.save_metrics(r.dataset())``)."""
        import xarray as xr

        coords = {k: np.asarray(v) for k, v in {**self.axes, **self.coords}.items()}
        return xr.Dataset({prefix + k: (self.dims[k], v) for k, v in self.metrics.items()},
                          coords=coords)

    def diverged(self) -> np.ndarray:
        """Boolean grid: the run hit a non-finite loss."""
        return self.metrics["first_nonfinite"] >= 0


def record_coords(spec: train.TrainSpec) -> dict:
    """Coordinates of the metrics' non-run axes: ``step`` and ``param``."""
    return {"step": np.arange(spec.n_records) * spec.record_every,
            "param": np.array(train.leaf_names(spec))}


def _bytes_per_run(spec: train.TrainSpec) -> int:
    """Device memory one run of a compiled chunk needs: its params, optimizer state and
    activations, and its recorded metrics."""
    shapes = train.param_shapes(spec)
    n_params = sum(int(np.prod(s.shape)) for s in shapes.values())
    hidden = sum(s.shape[0] for k, s in shapes.items() if k.startswith("W"))
    item = jnp.dtype(spec.dtype).itemsize
    live = 6 * n_params + 4 * (hidden + spec.n) * spec.batch
    return int(live * item) + record_bytes(spec)


def record_bytes(spec: train.TrainSpec) -> int:
    """Bytes of one run's recorded metrics (what the store keeps per run, uncompressed)."""
    size = {"step": spec.n_records, "param": len(train.param_shapes(spec))}
    item = jnp.dtype(spec.dtype).itemsize
    return item * sum(int(np.prod([size[d] for d in m.dims])) for m in train.METRICS.values()) \
        + 64


def auto_chunk(spec: train.TrainSpec, n_runs: int, n_dev: int) -> int:
    """Runs per compiled call: within MEMORY_BUDGET, balanced so the last chunk is barely
    padded, a multiple of the device count."""
    cap = max(1, MEMORY_BUDGET // _bytes_per_run(spec))
    n_chunks = -(-n_runs // cap)
    chunk = -(-n_runs // n_chunks)
    return -(-chunk // n_dev) * n_dev


def layout(spec: train.TrainSpec, grid: Grid, chunk_size: int = 0, n_dev: int = 1) -> Layout:
    """How ``grid`` is cut into chunks: rectangles of the grid of at most ``chunk_size`` runs
    (0: :func:`auto_chunk`), each one compiled call and one Zarr chunk of every metric."""
    chunk = chunk_size if chunk_size > 0 else auto_chunk(spec, grid.size, n_dev)
    return Layout.for_chunk(grid.axes, chunk)


def metric_shapes(spec: train.TrainSpec) -> dict:
    """name -> (dims after the run axes, their sizes, dtype) of every recorded metric."""
    size = {"step": spec.n_records, "param": len(train.leaf_names(spec))}
    dtypes = {"first_nonfinite": np.dtype(np.int32)}
    return {k: (m.dims, tuple(size[d] for d in m.dims),
                dtypes.get(k, np.dtype(spec.dtype))) for k, m in train.METRICS.items()}


def _compiled(spec, chunk, devices, X, Y, hp_dtypes):
    """jit(vmap(run)) over a chunk, sharded over ``devices``; AOT-compiled once per key (and
    loaded from JAX's persistent compilation cache when another process compiled it)."""
    key = (spec, chunk, tuple(devices), X.shape, str(X.dtype), Y.shape,
           tuple(sorted(hp_dtypes.items())))
    if key in _CACHE:
        return _CACHE[key], 0.0
    mesh = Mesh(np.array(devices), ("runs",))
    runs = NamedSharding(mesh, PartitionSpec("runs"))
    repl = NamedSharding(mesh, PartitionSpec())
    f = jax.jit(jax.vmap(train.make_run(spec), in_axes=(0, None, None)),
                in_shardings=(runs, repl, repl), out_shardings=runs)
    hp_abs = {k: jax.ShapeDtypeStruct((chunk,), d) for k, d in hp_dtypes.items()}
    t = time.perf_counter()
    compiled = f.lower(hp_abs, jax.ShapeDtypeStruct(X.shape, X.dtype),
                       jax.ShapeDtypeStruct(Y.shape, Y.dtype)).compile()
    COMPILES["count"] += 1
    _CACHE[key] = (compiled, runs, repl)
    return _CACHE[key], time.perf_counter() - t


def run_grid(spec: train.TrainSpec, X, Y, grid: Grid, fixed: dict | None = None, *,
             devices=None, chunk_size: int = 0, progress: bool = True,
             label: str = "sweep", store: GridStore | None = None,
             shard: tuple[int, int] = (0, 1)) -> SweepResult:
    """Train every run of ``grid`` (numeric axes) with structure ``spec`` on ``X: (n, m)``,
    ``Y: (d_out, m)``. ``fixed`` supplies numeric hyperparameters that are not swept.

    The grid is cut into rectangular chunks (:func:`layout`), one compiled call each. Without
    ``store`` the metrics are gathered in memory and returned. With ``store`` (a
    :class:`bpexp.store.GridStore` opened with ``layout``) each chunk goes to it as soon as
    it is computed and nothing is kept: chunks already complete there are skipped, and with
    ``shard=(k, n)`` only the missing chunks ``i`` with ``i % n == k`` are computed; then
    ``store.claim()`` decides whether this process goes on (every chunk is there) or stops.
    The result's ``metrics`` is then empty: read the store."""
    devices = list(devices or jax.devices())
    n_dev = len(devices)
    dtype = jnp.dtype(spec.dtype)
    n_runs = grid.size
    hp_all, hp_dtypes = _hyperparameters(spec, grid, fixed)
    lay = store.layout if store is not None else layout(spec, grid, chunk_size, n_dev)
    chunk = -(-lay.runs_per_chunk // n_dev) * n_dev   # every device gets the same share

    X = jnp.asarray(X, dtype)
    Y = jnp.asarray(Y, dtype)
    (compiled, runs_sh, repl_sh), compile_s = _compiled(spec, chunk, devices, X, Y, hp_dtypes)
    Xd, Yd = jax.device_put(X, repl_sh), jax.device_put(Y, repl_sh)

    def chunk_hp(i):
        idx = lay.runs(i)
        idx = np.concatenate([idx, np.full(chunk - idx.size, idx[-1])])  # pad with the last run
        return {k: jax.device_put(np.asarray(v[idx], hp_dtypes[k]), runs_sh)
                for k, v in hp_all.items()}

    todo = _todo(lay, store, shard, label)
    out = None if store is not None else {
        name: np.empty(lay.shape + shp, dt) for name, (_, shp, dt) in metric_shapes(spec).items()}

    t0 = time.perf_counter()
    bar = _Progress(label, len(todo), lay.runs_per_chunk, enabled=progress)
    # with a store, a chunk is taken (claimed) before it is computed: processes of one run
    # share the missing chunks instead of each computing all of them
    chunks = (i for i in todo if store is None or store.take(i))
    done_here = []
    i = next(chunks, None)
    pending = compiled(chunk_hp(i), Xd, Yd) if i is not None else None
    while i is not None:
        j = next(chunks, None)
        nxt = compiled(chunk_hp(j), Xd, Yd) if j is not None else None  # dispatched ahead
        vals = {name: np.asarray(v) for name, v in pending.items()}
        if store is not None:
            store.write(i, vals)
        else:
            for name, v in vals.items():
                region, block = lay.place(i, v)
                out[name][region] = block
        done_here.append(i)
        bar.advance(time.perf_counter() - t0)
        i, pending = j, nxt
    bar.close()
    todo = done_here
    run_s = time.perf_counter() - t0
    computed = sum(lay.size(i) for i in todo)
    stats = {"runs": n_runs, "chunks": lay.n_chunks, "chunk_size": chunk,
             "chunks_computed": len(todo), "runs_computed": computed,
             "layout": lay.describe(), "devices": [str(d) for d in devices],
             "compile_s": compile_s, "run_s": run_s, "runs_per_s": computed / max(run_s, 1e-9)}
    if store is not None:
        store.claim()
    dims = train.metric_dims(tuple(grid.axes))
    return SweepResult(dict(grid.axes), out or {}, dims, record_coords(spec), stats, store)


def _hyperparameters(spec, grid: Grid, fixed: dict | None) -> tuple[dict, dict]:
    """Every run's numeric hyperparameters ([runs] per name: the grid's axes flattened, the
    fixed values broadcast) and their dtypes (seeds int32, the rest the run's float)."""
    defaults = {k: v for k, v in optim.HYPERPARAMS[spec.optimizer].items()
                if v is not optim.REQUIRED}
    fixed = {"init_scale": 1.0, **defaults, **(fixed or {})}
    flat = grid.flat()
    needed = {"lr", "seed", "init_scale", *spec.opt_hparams}
    missing = needed - set(flat) - set(fixed)
    if missing:
        raise ValueError(f"{', '.join(sorted(missing))} must be a grid axis or a fixed value")
    hp_all = {k: np.broadcast_to(np.asarray(fixed[k] if k not in flat else flat[k]),
                                 (grid.size,)) for k in needed}
    dt = np.dtype(jnp.dtype(spec.dtype))
    return hp_all, {k: (np.dtype(np.int32) if k == "seed" else dt) for k in needed}


def _todo(lay: Layout, store, shard: tuple[int, int], label: str) -> list[int]:
    """The chunks this process computes: every one without a store; with one, the missing
    chunks of its shard (chunk i belongs to shard i % n)."""
    if store is None:
        return list(range(lay.n_chunks))
    k, n_shards = shard
    have = store.done()
    todo = [i for i in range(lay.n_chunks) if not have[i] and i % n_shards == k]
    if have.any():
        print(f"{label}: {int(have.sum())} of {lay.n_chunks} chunks already in the store; "
              f"computing {len(todo)}" + (f" (shard {k} of {n_shards})" if n_shards > 1 else ""))
    return todo


def run_fused(specs: dict, lrs: dict, seeds, fixed: dict, X, Y) -> dict:
    """Every ``specs[(name, variant)]`` trained at the learning rates ``lrs[name]`` (L,) x
    ``seeds`` (S,) on ``X: (n, m)``, ``Y: (d_out, m)``, with ONE compile: the
    ``train.make_run`` of each spec, vmapped over lr, side by side in one jitted function,
    called once per seed. Keys are e.g. (optimizer, impl) or (optimizer, batch size). Same runs
    and numbers as ``run_grid(spec, X, Y, Grid({"lr": lrs[name], "seed": seeds}), fixed)`` per
    spec, but one compile instead of one per spec (a dozen small specs compile far longer than
    they run). The seed and init scale are unbatched scalars shared by every spec, so the
    initialization (threefry, slow to compile when batched) is compiled once, unbatched.
    ``fixed`` holds init_scale (default 1) and the hyperparameters other than lr (default
    optim.HYPERPARAMS of the spec's optimizer); every spec runs in the first one's dtype.
    Returns ``{key: SweepResult}`` with axes (lr, seed), e.g. ``loss[L, S, step]``."""
    dtype = np.dtype(next(iter(specs.values())).dtype)
    hps, runs = {}, {}
    for (o, impl), spec in specs.items():
        key = f"{o}/{impl}"
        hps[key] = {k: np.asarray(lrs[o] if k == "lr" else
                                  fixed.get(k, optim.HYPERPARAMS[spec.optimizer][k]), dtype)
                    for k in spec.opt_hparams}
        axes = {k: 0 if k == "lr" else None for k in ("seed", "init_scale", *spec.opt_hparams)}
        runs[key] = jax.vmap(train.make_run(spec), in_axes=(axes, None, None))

    @jax.jit
    def all_runs(common, hps, X, Y):
        return {k: f({**hps[k], **common}, X, Y) for k, f in runs.items()}

    X, Y = jnp.asarray(X, dtype), jnp.asarray(Y, dtype)
    scale = np.asarray(fixed.get("init_scale", 1.0), dtype)
    common = [{"seed": np.int32(s), "init_scale": scale} for s in seeds]
    t0 = time.perf_counter()
    compiled = all_runs.lower(common[0], hps, X, Y).compile()
    COMPILES["count"] += 1
    t1 = time.perf_counter()
    outs = [jax.tree_util.tree_map(np.asarray, compiled(c, hps, X, Y)) for c in common]
    stats = {"compile_s": t1 - t0, "run_s": time.perf_counter() - t1}
    results = {}
    for (o, impl), spec in specs.items():
        key = f"{o}/{impl}"
        g = Grid({"lr": np.asarray(lrs[o]), "seed": np.asarray(seeds)})
        metrics = {k: np.stack([out[key][k] for out in outs], axis=1) for k in outs[0][key]}
        results[(o, impl)] = SweepResult(dict(g.axes), metrics, train.metric_dims(tuple(g.axes)),
                                         record_coords(spec), {"runs": g.size, **stats})
    return results


class _Progress:
    """A rich progress bar (chunks, runs/s, ETA) that appears only when the sweep is long
    enough to matter: more than one chunk and a projected total above ~2 s."""

    def __init__(self, label, n_chunks, chunk, enabled=True):
        self.label, self.n, self.chunk, self.enabled = label, n_chunks, chunk, enabled
        self.done, self.bar, self.task = 0, None, None

    def advance(self, elapsed: float):
        self.done += 1
        if not self.enabled or self.n < 2:
            return
        if self.bar is None and elapsed / self.done * self.n > 2.0 and self.done < self.n:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            self.bar = Progress(TextColumn(f"{self.label} chunks"), BarColumn(),
                                MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} runs/s"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("", total=self.n, completed=self.done - 1, rate="-")
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done,
                            rate=f"{self.done * self.chunk / elapsed:,.0f}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def devices_for(kind: str) -> list:
    """``device: auto | cpu | gpu`` -> the local devices to shard runs over."""
    if kind == "auto":
        return jax.devices()
    try:
        return jax.devices(kind)
    except RuntimeError:
        raise UserError(f"device={kind!r} is not available here; "
                        f"backend is {jax.default_backend()}") from None
