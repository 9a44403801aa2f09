"""From a validated config (``config.Cfg``) to the objects a run needs, in one place.

Every experiment gets its dtype, dataset, model, training spec and grid of runs from here, and
:func:`check` builds all of them (without computing anything) in the validation phase, before a
run folder exists, so that any bad combination is a one-line :class:`UserError` first.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from bpexp import data, models, optim, sweep, train
from bpexp.errors import UserError


SECTIONS = ("model", "data", "optimizer", "train", "sweep")  # what an experiment may use


def dtype(cfg) -> np.dtype:
    """The run's floating dtype from ``precision``."""
    return np.dtype(cfg.precision)


def dataset(cfg, *, dtype_=None, **override) -> data.Dataset:
    """The config's dataset in the run's dtype (or ``dtype_``: theory reloads it in float64);
    ``override`` replaces DataCfg fields, ``name`` too."""
    kw = {k: getattr(cfg.data, k) for k in ("name", "m", "n", "noise", "seed", "features")}
    kw.update(override)
    return data.load(kw.pop("name"), dtype=dtype_ or dtype(cfg), **kw)


def model(cfg) -> models.Model:
    """The config's model with the structural options its row reads (models.MODELS)."""
    mc = cfg.model
    return models.get(mc.name, **{k: getattr(mc, k) for k in models.MODELS[mc.name].options})


def model_hparams(cfg, m: models.Model | None = None) -> dict:
    """Keyword arguments of ``model.init`` besides key, shapes, scale and dtype: the init scheme
    and the model's structural hyperparameters (Model.hparams), hashable."""
    mc, m = cfg.model, m or model(cfg)
    hp = {"init": mc.init}
    for k in m.hparams:
        v = getattr(mc, k)
        hp[k] = tuple(v) if isinstance(v, list) else v
    return hp


def init_params(cfg, m: models.Model, ds: data.Dataset, seed, *, dtype_=None, scale=None):
    """Initial parameters of run ``seed`` exactly as the sweep engine draws them."""
    k_init, _ = train.run_keys(seed)
    return m.init(k_init, ds.n, ds.d_out,
                  init_scale=cfg.model.init_scale if scale is None else scale,
                  dtype=dtype_ or dtype(cfg), **model_hparams(cfg, m))


def spec(cfg, ds: data.Dataset, **override) -> train.TrainSpec:
    """A TrainSpec from the config's structural keys (``override`` replaces any field)."""
    m = model(cfg)
    o, t = cfg.optimizer, cfg.train
    kw = dict(model=m.name, n=ds.n, d_out=ds.d_out, m=ds.m, steps=t.steps,
              model_options=tuple(sorted(m.options.items())),
              model_hparams=tuple(sorted(model_hparams(cfg, m).items())), optimizer=o.name,
              impl=o.impl, batch_size=t.batch_size, record_every=t.record_every, grad=t.grad,
              dtype=cfg.precision)
    kw.update(override)
    kw.setdefault("opt_hparams", tuple(optim.HYPERPARAMS[kw["optimizer"]]))
    s = train.TrainSpec(**kw)
    train.validate_spec(s)
    return s


# ---------------------------------------------------------------- the grid of runs
MAX_RUNS = 10**9   # a grid's runs: beyond, even its hyperparameter arrays outgrow a machine


def representable(key: str, vals, dtype, positive: bool = True) -> None:
    """UserError unless every value is finite (and > 0 if ``positive``) in ``dtype``: 1e300
    is inf and 1e-300 is 0 in float32."""
    vals = np.asarray(vals, np.float64)
    info = np.finfo(dtype)
    for v in vals.tolist():
        with np.errstate(over="ignore"):       # overflow to inf is what this checks
            cast = np.asarray(v).astype(dtype)
        if not np.isfinite(v) or not np.isfinite(cast):
            raise UserError(f"{key}={v!r} is not a finite {np.dtype(dtype).name} number; allowed: "
                            f"finite values of magnitude below {float(info.max):.3g}")
        if positive and not v > 0:
            raise UserError(f"{key}={v!r} must be > 0")
        if positive and not cast > 0:
            raise UserError(f"{key}={v!r} is 0 in {np.dtype(dtype).name}; allowed: values > "
                            f"{float(info.smallest_subnormal):.3g}")


def _distinct(key: str, vals) -> None:
    uniq, counts = np.unique(np.asarray(vals), return_counts=True)
    if (counts > 1).any():
        raise UserError(f"{key} lists {uniq[counts > 1][0].item()!r} twice; allowed: distinct "
                        "values")


def lr_values(spec, default: float) -> np.ndarray:
    """``sweep.lr``: None -> [default]; a list; or {start, stop, num, log}. Returned in
    ascending order (every summary reads the lr axis as ascending); repeats are refused."""
    if spec is None:
        return np.array([default], np.float64)
    if isinstance(spec, dict):
        unknown = set(spec) - {"start", "stop", "num", "log"}
        if unknown or not {"start", "stop", "num"} <= set(spec):
            raise UserError(f"sweep.lr={spec!r} must be a list or {{start, stop, num, log}}")
        try:
            num, start, stop = int(spec["num"]), float(spec["start"]), float(spec["stop"])
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"sweep.lr={spec!r} needs numbers for start, stop and num") from None
        log = spec.get("log", True)
        if num < 1 or not (start > 0 and stop > 0) or not np.isfinite([start, stop]).all():
            raise UserError(f"sweep.lr={spec!r} needs num >= 1 and finite start, stop > 0")
        if num > MAX_RUNS:
            raise UserError(f"sweep.lr.num={num} is more than {MAX_RUNS} learning rates")
        if num > 1 and start == stop:
            raise UserError(f"sweep.lr={spec!r} repeats {start!r} {num} times; allowed: "
                            "start != stop, or num: 1")
        vals = (np.geomspace if log else np.linspace)(start, stop, num)
        return np.sort(vals)
    try:
        vals = np.atleast_1d(np.asarray(spec, np.float64))
    except (TypeError, ValueError, OverflowError):
        vals = None
    if vals is None or vals.ndim != 1 or vals.size == 0 or not np.all(vals > 0):
        raise UserError(f"sweep.lr={spec!r} must be a non-empty list of positive learning rates "
                        "or {start, stop, num, log}")
    _distinct("sweep.lr", vals)
    return np.sort(vals)


def seed_values(spec, base: int = 0) -> np.ndarray:
    """``sweep.seeds``: a count k -> base, ..., base + k - 1; or a list of distinct ints."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1 or base + spec > 2**31:
            raise UserError(f"sweep.seeds={spec} must be a count >= 1 "
                            f"(seeds {base}.. stay below 2^31) or a list of ints")
        if spec > MAX_RUNS:
            raise UserError(f"sweep.seeds={spec} is more than {MAX_RUNS} seeds")
        return base + np.arange(spec)
    ok = isinstance(spec, list) and spec and all(isinstance(s, int) and not isinstance(s, bool)
                                                 and 0 <= s < 2**31 for s in spec)
    if not ok:
        raise UserError(f"sweep.seeds={spec!r} must be a count >= 1 or a non-empty list of ints "
                        "in [0, 2^31)")
    _distinct("sweep.seeds", spec)
    return np.asarray(spec, np.int64)


def _axis(key, v) -> np.ndarray:
    try:
        vals = np.atleast_1d(np.asarray(v, np.float64))
    except (TypeError, ValueError, OverflowError):
        vals = None
    if vals is None or vals.ndim != 1 or vals.size == 0:
        raise UserError(f"{key}={v!r} must be a number or a non-empty list of numbers")
    _distinct(key, vals)
    return vals


def grid_size(cfg) -> int:
    """Runs of the config's grid, counted before any axis is built."""
    s = cfg.sweep
    n = (1 if s.lr is None else int(s.lr["num"]) if isinstance(s.lr, dict) and "num" in s.lr
         else len(s.lr) if isinstance(s.lr, list) else 1)
    n *= s.seeds if isinstance(s.seeds, int) and not isinstance(s.seeds, bool) else (
        len(s.seeds) if isinstance(s.seeds, list) else 1)
    for v in [s.init_scale, *(s.hparams or {}).values()] if isinstance(s.hparams or {}, dict) \
            else [s.init_scale]:
        n *= len(v) if isinstance(v, list) else 1
    return n


def grid(cfg) -> tuple[sweep.Grid, dict]:
    """(grid of swept numeric axes, fixed numeric hyperparameters) from the config."""
    o, s = cfg.optimizer, cfg.sweep
    if grid_size(cfg) > MAX_RUNS:
        raise UserError(f"sweep: {grid_size(cfg)} runs (sweep.lr x sweep.seeds x ...) is more than "
                        f"{MAX_RUNS}; split the grid over several run_ids or shrink an axis")
    axes = {"lr": lr_values(s.lr, o.lr), "seed": seed_values(s.seeds, cfg.seed)}
    representable("sweep.lr" if s.lr is not None else "optimizer.lr", axes["lr"], dtype(cfg))
    if s.init_scale is not None:
        axes["init_scale"] = _axis("sweep.init_scale", s.init_scale)
        representable("sweep.init_scale", axes["init_scale"], dtype(cfg))
    else:
        representable("model.init_scale", [cfg.model.init_scale], dtype(cfg))
    allowed = [k for k in optim.HYPERPARAMS[o.name] if k != "lr"]
    if not isinstance(s.hparams or {}, dict):
        raise UserError(f"sweep.hparams={s.hparams!r} must be a mapping like {{beta: [0, 0.9]}}")
    for k, v in (s.hparams or {}).items():
        if k not in allowed:
            raise UserError(f"sweep.hparams.{k} is not a hyperparameter of optimizer {o.name}; "
                            f"allowed: {', '.join(allowed) or 'none'}")
        axes[k] = _axis(f"sweep.hparams.{k}", v)
        for x in axes[k]:
            optim.check_range(f"sweep.hparams.{k}", k, float(x))
        representable(f"sweep.hparams.{k}", axes[k], dtype(cfg), positive=False)
    fixed = {"init_scale": cfg.model.init_scale, **{k: getattr(o, k) for k in allowed}}
    return sweep.Grid(axes), {k: v for k, v in fixed.items() if k not in axes}


# ---------------------------------------------------------------- the validation phase
def check(cfg, uses, streams: bool = False) -> None:
    """Build everything an experiment that reads the config sections ``uses`` will build:
    dataset, model (and the shapes of its parameters), training spec, grid. Computes nothing;
    a bad value or combination raises a one-line UserError."""
    unknown = set(uses) - set(SECTIONS)
    if unknown:  # a programming error in an experiment module, not a user error
        raise ValueError(f"USES names unknown sections {sorted(unknown)}; allowed: {SECTIONS}")
    if "sweep" in uses and grid_size(cfg) > MAX_RUNS:
        grid(cfg)                      # refuses before building any axis
    if "data" not in uses:
        if "sweep" in uses:
            grid(cfg)
        return
    ds = dataset(cfg)
    if "model" not in uses:
        return
    m = model(cfg)
    m.check(ds.n, ds.d_out)           # the model row's rule for the data's shapes
    jax.eval_shape(lambda: init_params(cfg, m, ds, 0))
    if "train" in uses:
        sp = spec(cfg, ds)
        if cfg.train.batch_size > ds.m:
            raise UserError(f"train.batch_size={cfg.train.batch_size} is more than the "
                            f"{ds.m} examples of data={cfg.data.name}; allowed: 0 (full batch) "
                            f"or 1..{ds.m}")
        if "sweep" in uses:
            check_size(cfg, sp, grid_size(cfg), streams)   # before the axes are built
    if "sweep" in uses:
        grid(cfg)


def memory_available() -> int:
    """Bytes of memory this machine can give a run now (MemAvailable; else physical)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def disk_free(path) -> int:
    """Free bytes on the filesystem that will hold ``path`` (its nearest existing parent)."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    return shutil.disk_usage(p).free


def _gib(b) -> str:
    return f"{b / 2**30:.3g} GiB"


def check_size(cfg, sp: train.TrainSpec, n_runs: int, streams: bool) -> None:
    """Refuse, with the numbers, a grid that cannot fit: one run's records beyond half the
    available memory; all runs' records beyond half of it (gathered in memory) or beyond the
    free disk under outputs.root (streamed)."""
    mem, per_run = memory_available(), sweep.record_bytes(sp)
    if sweep._bytes_per_run(sp) > mem // 2:
        raise UserError(f"train.steps={cfg.train.steps} with train.record_every="
                        f"{cfg.train.record_every}: one run needs {_gib(sweep._bytes_per_run(sp))}"
                        f" and this machine has {_gib(mem)} available; raise "
                        "train.record_every or lower train.steps")
    total = per_run * n_runs
    if streams:
        free = disk_free(cfg.outputs.root)
        if total > free:
            raise UserError(f"sweep: {n_runs} runs store up to {_gib(total)} under outputs.root="
                            f"{cfg.outputs.root}, which has {_gib(free)} free; shrink the grid, "
                            "raise train.record_every or choose another outputs.root")
    elif total > mem // 2:
        raise UserError(f"sweep: {n_runs} runs record {_gib(total)} in memory and this machine "
                        f"has {_gib(mem)} available; shrink the grid or raise "
                        "train.record_every")


def layout(cfg, ds=None):
    """The chunk layout of the config's grid (sweep.chunk_size, or the memory estimate over
    the devices of ``device``): what a streamed sweep's store is cut by. ``ds``: the config's
    dataset, when already loaded."""
    grid_, _ = grid(cfg)
    devices = sweep.devices_for(cfg.device)
    return sweep.layout(spec(cfg, ds if ds is not None else dataset(cfg)), grid_,
                        cfg.sweep.chunk_size, len(devices))
