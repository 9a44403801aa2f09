"""Typed config schema (dataclasses) and its validation.

Hydra composes ``conf/``; :func:`build` turns the composed tree into these dataclasses and
rejects anything wrong with one line naming the key, the value and what is allowed. The
validation is ours rather than OmegaConf's so that every error stays one line.
Experiment-specific keys live under ``experiment`` and are checked against the ``Params``
dataclass of the experiment module.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpexp import data, models

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A bad config value; the message is one line: key, value, what is allowed."""


@dataclass
class ModelCfg:
    name: str = "two_layer_sigmoid"
    hidden: Any = 16              # hidden width k (mlp: an int or one int per hidden layer)
    depth: int = 2                # mlp: number of hidden layers
    activation: str = "sigmoid"   # mlp hidden activation: sigmoid | tanh | relu
    output: str = "identity_mse"  # mlp output+loss: identity_mse | sigmoid_mse | sigmoid_ce | softmax_ce
    init: str = "standard"        # standard | xavier | he | normal
    init_scale: float = 1.0       # multiplies every init scheme


@dataclass
class DataCfg:
    name: str = "digits"
    m: int = 0                    # examples to keep (0 = all); size for synthetic / moons
    n: int = 10                   # synthetic: number of features
    noise: float = 0.1            # synthetic / moons noise
    seed: int = 0
    features: Any = None          # optional list of feature (row) indices to keep


@dataclass
class OptimizerCfg:
    name: str = "gd"              # gd | momentum | rmsprop | adam
    impl: str = "manual"          # manual (bpexp.optim) | optax (the optax twin)
    lr: float = 0.1
    beta: float = 0.9             # momentum
    beta1: float = 0.9            # adam
    beta2: float = 0.999          # rmsprop, adam
    eps: float = 1e-8             # rmsprop, adam


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
    hparams: Any = field(default_factory=dict)  # optimizer hyperparameter axes, e.g. {beta: [0, 0.9]}
    chunk_size: int = 0           # runs per compiled call; 0 = chosen from memory estimate
    progress: bool = True


@dataclass
class OutputsCfg:
    root: str = "outputs"


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


CHOICES = {
    "model.name": models.NAMES, "model.activation": models.ACTIVATIONS,
    "model.output": models.OUTPUTS, "model.init": models.INITS,
    "data.name": data.NAMES, "optimizer.name": ("gd", "momentum", "rmsprop", "adam"),
    "optimizer.impl": ("manual", "optax"), "train.grad": ("manual", "autodiff"),
    "precision": ("float32", "float64"), "device": ("auto", "cpu", "gpu"),
}
POSITIVE = {"train.steps", "train.record_every", "model.depth", "optimizer.lr"}
NONNEGATIVE = {"data.m", "train.batch_size", "sweep.chunk_size", "optimizer.eps", "data.noise"}
UNIT_INTERVAL = {"optimizer.beta", "optimizer.beta1", "optimizer.beta2"}  # [0, 1)


def register_schemas() -> None:
    """Every schema key becomes overridable: each group YAML starts from ``schema``, the
    dataclass defaults stored (untyped, so that :func:`build` gives the one-line errors) in
    Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group, cls in (("model", ModelCfg), ("data", DataCfg), ("optimizer", OptimizerCfg), ("sweep", SweepCfg)):
        cs.store(group=group, name="schema", node=dataclasses.asdict(cls()))


def experiment_names() -> tuple[str, ...]:
    """Experiments that have both a module in ``experiments/`` and a YAML in conf/experiment."""
    import experiments

    mods = {m.name for m in pkgutil.iter_modules(experiments.__path__) if not m.name.startswith("_")}
    ymls = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    return tuple(sorted(mods & ymls)) if ymls else tuple(sorted(mods))


def experiment_module(name: str) -> types.ModuleType:
    names = experiment_names()
    if name not in names:
        raise ConfigError(f"experiment={name!r} is not an experiment; choose one of {', '.join(names)}")
    return importlib.import_module(f"experiments.{name}")


def _coerce(key: str, value, tp):
    """Check ``value`` against the annotation ``tp`` (a string under __future__ annotations)."""
    tp = {"int": int, "float": float, "str": str, "bool": bool}.get(tp, tp) if isinstance(tp, str) else tp
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
    return value


def to_dataclass(cls, values: dict, prefix: str):
    """Build ``cls`` from a plain dict; unknown keys and wrong types are ConfigErrors."""
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]} is not a known key; allowed: {', '.join(fields)}")
    kw = {name: _coerce(f"{prefix}{name}", values[name], f.type)
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
    for key, allowed in CHOICES.items():
        v = _get(cfg, key)
        if v not in allowed:
            raise ConfigError(f"{key}={v!r} is not allowed; choose one of {', '.join(allowed)}")
    for key in POSITIVE:
        if not _get(cfg, key) > 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be > 0")
    for key in NONNEGATIVE:
        if not _get(cfg, key) >= 0:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be >= 0")
    for key in UNIT_INTERVAL:
        if not 0 <= _get(cfg, key) < 1:
            raise ConfigError(f"{key}={_get(cfg, key)!r} must be in [0, 1)")
    h = cfg.model.hidden
    if isinstance(h, bool) or not (isinstance(h, int) and h > 0
                                   or isinstance(h, list) and h and all(isinstance(x, int) and x > 0 for x in h)):
        raise ConfigError(f"model.hidden={h!r} must be a positive int or a list of positive ints")
    if cfg.data.features is not None and not (
            isinstance(cfg.data.features, list) and all(isinstance(i, int) and i >= 0 for i in cfg.data.features)):
        raise ConfigError(f"data.features={cfg.data.features!r} must be null or a list of feature indices")
    return cfg


def build(tree: dict) -> Cfg:
    """Plain dict (``OmegaConf.to_container(cfg, resolve=True)``) -> validated :class:`Cfg`."""
    tree = dict(tree)
    exp = dict(tree.pop("experiment", None) or {})
    if "name" not in exp:
        raise ConfigError(f"experiment is not set; run with +experiment=NAME, one of {', '.join(experiment_names())}")
    module = experiment_module(exp["name"])
    params = to_dataclass(module.Params, exp, "experiment.")
    sections = {"model": ModelCfg, "data": DataCfg, "optimizer": OptimizerCfg, "train": TrainCfg,
                "sweep": SweepCfg, "outputs": OutputsCfg}
    kw = {k: to_dataclass(cls, tree.pop(k, {}), f"{k}.") for k, cls in sections.items()}
    top = to_dataclass(Cfg, {"experiment": params, **tree}, "")
    for k, v in kw.items():
        setattr(top, k, v)
    validate(top)
    if hasattr(module, "validate"):
        try:
            module.validate(top)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return top


def asdict(cfg: Cfg) -> dict:
    return dataclasses.asdict(cfg)
