"""``python -m bpexp +experiment=NAME [overrides]``: config -> schema -> experiment -> run folder.

Thin on purpose: everything testable lives in the library and in ``experiments/``.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from bpexp import config, outputs

GROUPS = ("model", "data", "optimizer", "sweep", "experiment")
_GROUP_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<group>%s)=(?P<value>.*)$" % "|".join(GROUPS))
_KEY_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<key>[A-Za-z_][\w.]*)=")
SECTIONS = {"model": config.ModelCfg, "data": config.DataCfg, "optimizer": config.OptimizerCfg,
            "train": config.TrainCfg, "sweep": config.SweepCfg, "outputs": config.OutputsCfg}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config.CONF_DIR / group).glob("*.yaml"))


def check_argv(argv: list[str]) -> None:
    """Unknown group options (``model=nope``) fail here with one line, before Hydra's
    multi-line error. Handles comma lists and glob(...) of multirun."""
    exps = [m["value"] for m in map(_GROUP_ARG.match, argv) if m and m["group"] == "experiment"]
    params = None
    if len(exps) == 1 and exps[0] in config.experiment_names():
        params = config.experiment_module(exps[0]).Params
    for arg in argv:
        _check_key(arg, params)
        m = _GROUP_ARG.match(arg)
        if not m:
            continue
        group, value = m["group"], m["value"]
        options = group_options(group)
        if group == "experiment":
            options = [o for o in options if o in config.experiment_names()]
        g = re.fullmatch(r"glob\(\s*(\[[^\]]*\]|[^,]*)(.*)\)", value)  # glob(include, exclude)
        if g:
            pats = [p.strip() for p in g[1].strip("[]").split(",")]
            if not any(fnmatch.fnmatch(o, p) for o in options for p in pats):
                _die(f"{group}={value} matches no {group}; choose among {', '.join(options)}")
            continue
        for v in value.split(","):
            if v.strip() not in options:
                _die(f"{group}={v.strip()!r} is not a {group}; choose one of {', '.join(options)}")


def _check_key(arg: str, params=None) -> None:
    """``model.foo=1``, ``foo=1`` or ``experiment.foo=1`` (against the chosen experiment's
    ``Params``): an unknown key fails here with one line instead of Hydra's traceback-style
    message. Keys below a dict-valued field (``sweep.lr.start``) are left to Hydra."""
    import dataclasses

    m = _KEY_ARG.match(arg)
    if not m or arg.startswith("-"):
        return
    parts = m["key"].split(".")
    if parts[0] == "hydra" or (len(parts) == 1 and parts[0] in GROUPS):
        return
    if parts[0] == "experiment":
        fields = [f.name for f in dataclasses.fields(params)] if params else None
        if fields and len(parts) > 1 and parts[1] not in fields:
            _die(f"{m['key']} is not a key of this experiment; allowed: {', '.join('experiment.' + f for f in fields)}")
        return
    top = [f.name for f in dataclasses.fields(config.Cfg) if f.name != "experiment"]
    if parts[0] not in top:
        _die(f"{m['key']} is not a known key; allowed: {', '.join(top)}, hydra.*, experiment.*")
    if len(parts) > 1 and parts[0] in SECTIONS:
        fields = [f.name for f in dataclasses.fields(SECTIONS[parts[0]])]
        if parts[1] not in fields:
            _die(f"{m['key']} is not a known key; allowed: {', '.join(parts[0] + '.' + f for f in fields)}")


def _die(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def setup_jax(cfg: config.Cfg, module) -> None:
    """Precision and device, before any array is made."""
    import jax

    x64 = cfg.precision == "float64" or getattr(module, "PRECISION", None) == "float64"
    jax.config.update("jax_enable_x64", bool(x64) or bool(jax.config.read("jax_enable_x64")))
    if cfg.device == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            _die(f"device='gpu' but no GPU is visible; available backend: {jax.default_backend()} (use device=auto or cpu)")
    if jax.default_backend() == "gpu" and x64:
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in checks


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(dcfg: DictConfig) -> None:
    tree = OmegaConf.to_container(dcfg, resolve=True)
    try:
        cfg = config.build(tree)
    except config.ConfigError as e:
        _die(str(e))
    module = config.experiment_module(cfg.experiment.name)
    if _launched_in_own_process():
        # several JAX processes may share one GPU: allocate on demand (before backend start)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    setup_jax(cfg, module)
    name = cfg.experiment.name
    bad_value, run = None, None
    try:
        with outputs.open_run(cfg.outputs.root, name, OmegaConf.to_yaml(dcfg, resolve=True)) as run:
            with run.timed("experiment"):  # the module adds finer timings of its own
                summary = module.run(cfg, run)
            run.save_summary(summary)
            run.finish("finished", summary)
    except ValueError as e:
        # a bad combination found while running (open_run recorded it failed): one line
        bad_value = e
    except KeyboardInterrupt:
        if run is not None:
            print(f"\ninterrupted\nrun dir: {run.dir}")
        raise
    except BaseException:
        if run is not None:
            print(f"failed, see {run.dir / 'error.txt'}\nrun dir: {run.dir}", file=sys.stderr)
        raise
    if bad_value is not None:
        if run is None:
            _die(str(bad_value))
        print(f"error: {bad_value}", file=sys.stderr)
        print(f"run dir: {run.dir}")
        sys.exit(1)
    _note_in_sweep(run)
    print(f"run dir: {run.dir}")


def _launched_in_own_process() -> bool:
    """True under a process launcher (submitit, joblib); False for Hydra's basic launcher."""
    from hydra.core.hydra_config import HydraConfig

    try:
        target = str(HydraConfig.get().launcher.get("_target_", ""))
    except ValueError:
        return False
    return "BasicLauncher" not in target


def _note_in_sweep(run) -> None:
    """In a multirun, leave the run folder's path in the job's sweep subfolder."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        outputs.write_json(os.path.join(hc.runtime.output_dir, "job.json"),
                           {"run_dir": str(run.dir), "overrides": list(hc.overrides.task)})


def cli() -> None:
    check_argv(sys.argv[1:])
    config.register_schemas()
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
