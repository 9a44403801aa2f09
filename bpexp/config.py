"""Typed config schema (dataclasses) and its validation.

Hydra composes ``conf/``; :func:`build` turns the composed tree into these dataclasses and
rejects anything wrong with one line naming the key, the value and what is allowed. The
validation is ours rather than OmegaConf's so that every error stays one line.
Experiment-specific keys live under ``experiment`` and are checked against the ``Params``
dataclass of the experiment module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bpexp import conf_dir, data, make, models, optim, render
from bpexp.errors import UserError

CONF_DIR = conf_dir()


class ConfigError(UserError):
    """A bad config value; the message is one line: key, value, what is allowed."""


def _model_cfg():
    """ModelCfg: name, init, init_scale and every key a row of models.MODELS reads, with its
    default (the table is the one source; ``model=NAME`` sets that model's YAML values)."""
    keys = {}
    for row in models.MODELS.values():
        for k, v in row.schema().items():
            keys.setdefault(k, v)
    fields = [("name", str, field(default="two_layer_sigmoid"))]
    fields += [(k, Any if k in models.ANY_KEYS else type(v), field(default=v))
               for k, v in keys.items()]
    fields += [("init", str, field(default="standard")), ("init_scale", float, field(default=1.0))]
    return dataclasses.make_dataclass("ModelCfg", fields)


ModelCfg = _model_cfg()


@dataclass
class DataCfg:
    name: str = "digits"
    m: int = 0                    # examples to keep (0 = all); size for synthetic / moons
    n: int = 10                   # synthetic: number of features
    noise: float = 0.1            # synthetic / moons noise
    seed: int = 0
    features: Any = None          # optional list of feature (row) indices to keep


def _optimizer_cfg():
    """OptimizerCfg: name, impl, lr and every hyperparameter of optim.OPTIMIZERS with its
    default (the table is the one source; ``optimizer=NAME`` sets that row's values)."""
    hp = {}
    for row in optim.OPTIMIZERS.values():
        for k, v in row.hparams.items():
            hp.setdefault(k, v)
    default = optim.NAMES[0]
    fields = [("name", str, field(default=default)), ("impl", str, field(default=optim.IMPLS[0])),
              ("lr", float, field(default=optim.OPTIMIZERS[default].lr))]
    return dataclasses.make_dataclass(
        "OptimizerCfg", fields + [(k, float, field(default=v)) for k, v in hp.items()])


OptimizerCfg = _optimizer_cfg()


@dataclass
class TrainCfg:
    steps: int = 200
    batch_size: int = 0           # 0 = full batch
    record_every: int = 1
    grad: str = "manual"          # manual (grads.py) | autodiff (jax.grad)


@dataclass
class SweepCfg:
    lr: Any = None                # list, or {start, stop, num, log}; None = optimizer.lr
    seeds: Any = 1                # a count (seeds 0..k-1 offset by cfg.seed) or a list
    init_scale: Any = None        # list; None = model.init_scale
    # optimizer hyperparameter axes, e.g. {beta: [0, 0.9]}
    hparams: Any = field(default_factory=dict)
    chunk_size: int = 0           # runs per compiled call; 0 = chosen from memory estimate
    progress: bool = True
    num_shards: int = 1           # split the grid's chunks over this many processes
    shard: Any = None             # this process's share (0 <= shard < num_shards); needs run_id


@dataclass
class OutputsCfg:
    root: str = "outputs"
    compile_cache: Any = None     # JAX's persistent compilation cache folder; null = off
    figures: bool = True          # false: no PNGs, no report.html (big grids; numbers as always)
    figure_worker: Any = "auto"   # auto | true | false: PNGs drawn by a second process (2+ cores)


@dataclass
class Cfg:
    experiment: Any               # the experiment module's Params instance
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optimizer: OptimizerCfg = field(default_factory=OptimizerCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    sweep: SweepCfg = field(default_factory=SweepCfg)
    outputs: OutputsCfg = field(default_factory=OutputsCfg)
    seed: int = 0
    precision: str = "float32"    # float32 | float64
    device: str = "auto"          # auto | cpu | gpu
    run_id: Any = None            # names the run folder; an existing one is continued


SECTIONS = {"model": ModelCfg, "data": DataCfg, "optimizer": OptimizerCfg, "train": TrainCfg,
            "sweep": SweepCfg, "outputs": OutputsCfg}
CHOICES = {
    "model.name": models.NAMES, **{f"model.{k}": v for k, v in models.CHOICES.items()},
    "data.name": data.NAMES, "optimizer.name": optim.NAMES, "optimizer.impl": optim.IMPLS,
    "train.grad": ("manual", "autodiff"), "precision": ("float32", "float64"),
    "device": ("auto", "cpu", "gpu"),
}
MAX_SEED = 2**31 - 1  # seeds travel as int32 through the vmapped runs
POSITIVE = {"train.steps", "train.record_every", "model.depth", "model.init_scale", "data.n"}
NONNEGATIVE = {"data.m", "train.batch_size", "sweep.chunk_size", "data.noise"}


def register_schemas() -> None:
    """Every schema key becomes overridable: each group YAML starts from ``schema``, the
    dataclass defaults stored (untyped, so that :func:`build` gives the one-line errors) in
    Hydra's ConfigStore. The optimizer options come from optim.OPTIMIZERS, one per row."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group in ("model", "data", "optimizer", "sweep"):
        cs.store(group=group, name="schema", node=dataclasses.asdict(SECTIONS[group]()))
    for name, row in optim.OPTIMIZERS.items():
        node = {**dataclasses.asdict(OptimizerCfg()), "name": name, "lr": row.lr, **row.hparams}
        cs.store(group="optimizer", name=name, node=node)
    import yaml

    from bpexp import experiments

    for name, folder in experiments.external().items():   # YAMLs that live with their module
        if not (CONF_DIR / "experiment" / f"{name}.yaml").is_file():
            node = yaml.safe_load((folder / f"{name}.yaml").read_text()) or {}
            cs.store(group="experiment", name=name, node=node, package="_global_")


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAMLs in conf/ and its entries in Hydra's ConfigStore
    (the optimizer table's rows, external experiments' YAMLs; register_schemas stores them)."""
    from hydra.core.config_store import ConfigStore

    names = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
    try:
        stored = ConfigStore.instance().list(group)
    except OSError:    # nothing stored in that group
        stored = []
    names |= {n.removesuffix(".yaml") for n in stored} - {"schema"}
    if group == "optimizer":
        names |= set(optim.NAMES)
    if group == "experiment":
        from bpexp import experiments

        names |= set(experiments.external())
    return sorted(names)


def _coerce(key: str, value, tp, default=dataclasses.MISSING):
    """Check ``value`` against the annotation ``tp`` (a string under __future__ annotations);
    an untyped (Any) field is checked against the kind of its default: a list must stay a list
    (of numbers, or of strings, as the default's), a dict a dict."""
    tp = ({"int": int, "float": float, "str": str, "bool": bool}.get(tp, tp)
          if isinstance(tp, str) else tp)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, bool, str):
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {tp.__name__}")
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} must be a list, like {default!r}")
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool)

        for kind, test in (("numbers", number), ("strings", lambda x: isinstance(x, str))):
            if default and all(map(test, default)) and not all(map(test, value)):
                raise ConfigError(f"{key}={value!r} must be a list of {kind}, like {default!r}")
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"{key}={value!r} must be a mapping, like {default!r}")
    return value


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def to_dataclass(cls, values: dict, prefix: str):
    """Build ``cls`` from a plain dict; unknown keys and wrong types are ConfigErrors."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a known key; allowed: {', '.join(fields)}")
    kw = {name: _coerce(f"{prefix}{name}", values[name], f.type, _default(f))
          for name, f in fields.items() if name in values}
    try:
        return cls(**kw)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{prefix[:-1] or 'config'}: {e}") from None


def _get(cfg: Cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Cfg) -> Cfg:
    """Choices and ranges of the shared sections (one line per error)."""
    for key, allowed in CHOICES.items():
        v = _get(cfg, key)
        if v not in allowed:
            raise ConfigError(f"{key}={v!r} is not allowed; choose one of {', '.join(allowed)}")
    for key in sorted(POSITIVE):
        if not _get(cfg, key) > 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be > 0")
    for key in sorted(NONNEGATIVE):
        if not _get(cfg, key) >= 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be >= 0")
    _check_run(cfg)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed={cfg.seed} must be in [0, {MAX_SEED}]")
    for name in optim.RANGES:
        optim.check_range(f"optimizer.{name}", name, getattr(cfg.optimizer, name))
    h = cfg.model.hidden
    if isinstance(h, bool) or not (
            isinstance(h, int) and h > 0
            or isinstance(h, list) and h
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in h)):
        raise ConfigError(f"model.hidden={h!r} must be a positive int or a list of positive ints")
    if cfg.data.features is not None and not (
            isinstance(cfg.data.features, list) and cfg.data.features
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                    for i in cfg.data.features)):
        raise ConfigError(f"data.features={cfg.data.features!r} must be null or a non-empty list "
                          "of feature indices")
    if cfg.data.features is not None and len(set(cfg.data.features)) < len(cfg.data.features):
        raise ConfigError(f"data.features={cfg.data.features!r} lists a feature twice; allowed: "
                          "distinct indices")
    return cfg


def _check_run(cfg: Cfg) -> None:
    """run_id, shards and the compile cache."""
    from bpexp import outputs

    rid, sw = cfg.run_id, cfg.sweep
    if rid is not None and (not isinstance(rid, str) or not outputs.RUN_ID.match(rid)
                            or rid in outputs.RESERVED):
        raise ConfigError(f"run_id={rid!r} is not a safe folder name; allowed: 1-100 of "
                          "A-Z a-z 0-9 . _ - starting with a letter or digit, not "
                          + " or ".join(outputs.RESERVED))
    if not sw.num_shards >= 1:
        raise ConfigError(f"sweep.num_shards={sw.num_shards} must be an int >= 1")
    if sw.shard is not None:
        if isinstance(sw.shard, bool) or not isinstance(sw.shard, int) or not (
                0 <= sw.shard < sw.num_shards):
            raise ConfigError(f"sweep.shard={sw.shard!r} is not allowed; allowed: an int in "
                              f"[0, sweep.num_shards={sw.num_shards})")
        if rid is None:
            raise ConfigError(f"sweep.shard={sw.shard} needs run_id=NAME: the shards of one "
                              "grid write into one named run folder")
    cc = cfg.outputs.compile_cache
    if cc is not None and not (isinstance(cc, str) and cc):
        raise ConfigError(f"outputs.compile_cache={cc!r} must be a folder path or null (off)")
    fw = cfg.outputs.figure_worker
    if str(fw).lower() not in render.MODES:
        raise ConfigError(f"outputs.figure_worker={fw!r} is not allowed; allowed: "
                          f"{', '.join(render.MODES)}")


def dump(cfg: Cfg) -> str:
    """The validated config as YAML (config.yaml of a run folder): every key with its value,
    the experiment's defaults included, so the folder says exactly what ran."""
    import yaml

    class Dumper(yaml.SafeDumper):   # mappings as blocks, lists on one line: [0.01, 3.0]
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence(
        "tag:yaml.org,2002:seq", v, flow_style=True))
    Dumper.add_representer(tuple, Dumper.yaml_representers[list])
    return yaml.dump(dataclasses.asdict(cfg), Dumper=Dumper, sort_keys=False, width=100)


def build(tree: dict, module) -> Cfg:
    """Plain dict (``OmegaConf.to_container(cfg, resolve=True)``) and the chosen experiment's
    module -> validated :class:`Cfg`. This is the whole validation phase: the shared sections,
    the experiment's ``Params`` and ``validate``, then every object the experiment will build
    from the sections it ``USES`` (make.check). Any bad input is a one-line UserError."""
    tree = dict(tree)
    exp = dict(tree.pop("experiment", None) or {})
    for f in dataclasses.fields(module.Params):   # a dict given in part keeps the rest
        default = _default(f)
        if isinstance(default, dict) and isinstance(exp.get(f.name), dict):
            exp[f.name] = {**default, **exp[f.name]}
    params = to_dataclass(module.Params, exp, "experiment.")
    kw = {k: to_dataclass(cls, tree.pop(k, {}), f"{k}.") for k, cls in SECTIONS.items()}
    top = to_dataclass(Cfg, {"experiment": params, **tree}, "")
    for k, v in kw.items():
        setattr(top, k, v)
    validate(top)
    module.validate(top)
    if top.sweep.shard is not None and not getattr(module, "STREAMS", False):
        from bpexp import experiments

        streams = [n for n in experiments.names() if getattr(experiments.get(n), "STREAMS", 0)]
        raise ConfigError(f"sweep.shard={top.sweep.shard} is not allowed for experiment "
                          f"{params.name}: it does not stream a grid; allowed for experiments "
                          f"that do ({', '.join(streams)})")
    make.check(top, module.USES, streams=bool(getattr(module, "STREAMS", False)))
    lr = top.sweep.lr
    if "sweep" in module.USES and (isinstance(lr, list) and lr != sorted(lr) or isinstance(
            lr, dict) and float(lr.get("start", 0)) > float(lr.get("stop", 0))):
        import sys

        print("note: sweep.lr is used in ascending order", file=sys.stderr)
    return top
