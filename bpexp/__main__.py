"""``python -m bpexp +experiment=NAME [overrides]``: config -> schema -> experiment -> run folder.

Thin on purpose: everything testable lives in the library and in ``bpexp.experiments``. This is
the only module that discovers the experiments; the library never imports them.

Phases: (1) the command line's group options and keys, before Hydra; (2) validation
(config.build: every value, and every object the experiment will build); only then (3) the run
folder and the experiment's compute / save / present (see bpexp/experiments/__init__.py).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import shlex
import signal
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from bpexp import config, experiments, outputs
from bpexp.errors import UserError

GROUPS = ("model", "data", "optimizer", "sweep", "experiment")
_GROUP_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<group>%s)=(?P<value>.*)$" % "|".join(GROUPS))
_KEY_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<key>[A-Za-z_][\w.]*)=")


def check_argv(argv: list[str]) -> None:
    """Unknown group options (``model=nope``) fail here with one line, before Hydra's
    multi-line error. Handles comma lists and glob(...) of multirun."""
    exps = [m["value"] for m in map(_GROUP_ARG.match, argv) if m and m["group"] == "experiment"]
    params = None
    if len(exps) == 1 and exps[0] in experiments.names():
        params = experiments.get(exps[0]).Params
    for arg in argv:
        _check_key(arg, params)
        m = _GROUP_ARG.match(arg)
        if not m:
            continue
        group, value = m["group"], m["value"]
        options = config.group_options(group)
        if group == "experiment":
            options = [o for o in options if o in experiments.names()]
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
    m = _KEY_ARG.match(arg)
    if not m or arg.startswith("-"):
        return
    parts = m["key"].split(".")
    if parts[0] == "hydra" or (len(parts) == 1 and parts[0] in GROUPS):
        return
    if parts[0] == "experiment":
        fields = [f.name for f in dataclasses.fields(params)] if params else None
        if fields and len(parts) > 1 and parts[1] not in fields:
            _die(f"{m['key']} is not a key of this experiment; "
                 f"allowed: {', '.join('experiment.' + f for f in fields)}")
        return
    top = [f.name for f in dataclasses.fields(config.Cfg) if f.name != "experiment"]
    if parts[0] not in top:
        _die(f"{m['key']} is not a known key; allowed: {', '.join(top)}, hydra.*, experiment.*")
    if len(parts) > 1 and parts[0] in config.SECTIONS:
        fields = [f.name for f in dataclasses.fields(config.SECTIONS[parts[0]])]
        if parts[1] not in fields:
            _die(f"{m['key']} is not a known key; "
                 f"allowed: {', '.join(parts[0] + '.' + f for f in fields)}")


def _die(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def setup_jax(tree: dict, module) -> None:
    """Precision and device, before any array is made (the validation phase makes some)."""
    import jax

    x64 = tree.get("precision") == "float64" or getattr(module, "PRECISION", None) == "float64"
    jax.config.update("jax_enable_x64", bool(x64) or bool(jax.config.read("jax_enable_x64")))
    if tree.get("device") == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            _die(f"device='gpu' but no GPU is visible; available backend: "
                 f"{jax.default_backend()} (use device=auto or cpu)")
    if jax.default_backend() == "gpu" and x64:
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in checks
    cache = (tree.get("outputs") or {}).get("compile_cache")
    if isinstance(cache, str) and cache:
        # a rerun, a resumed run or another shard loads the executable instead of compiling
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def execute(module, cfg: config.Cfg, run: outputs.Run) -> dict:
    """The experiment contract: compute the numbers, save them (-> summary), present them."""
    with run.timed("compute"):
        res = module.compute(cfg, run)
    with run.timed("save"):
        summary = module.save(cfg, run, res)
    with run.timed("present"):
        module.present(cfg, run, res, summary)
    return summary


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's time limit, ``kill``): handled like Ctrl-C, the run stays resumable."""


def _on_sigterm(signum, frame):
    raise Terminated("SIGTERM")


def resume_command(run_id: str) -> str:
    """The exact command that continues this run: this job's overrides and its run_id."""
    from hydra.core.hydra_config import HydraConfig

    try:
        task = list(HydraConfig.get().overrides.task)
    except ValueError:
        task = sys.argv[1:]
    task = [o for o in task if not re.match(r"^\+{0,2}run_id=", o)]
    return "python -m bpexp " + " ".join(shlex.quote(o) for o in task + [f"run_id={run_id}"])


def check_continuation(module, cfg: config.Cfg, config_yaml: str) -> dict | None:
    """With run_id: the existing run folder's env.json (None if new), after checking that it
    is this experiment with this config and, for a streamed grid, this chunking. Reads only."""
    if cfg.run_id is None:
        return None
    env = outputs.existing_run(cfg.outputs.root, cfg.experiment.name, cfg.run_id, config_yaml)
    if env is None or not getattr(module, "STREAMS", False):
        return env
    from bpexp import make, store

    path = os.path.join(cfg.outputs.root, cfg.experiment.name, cfg.run_id, store.STORE)
    try:
        have = store.read_layout(path)
    except store.StoreMismatch as e:
        raise UserError(f"run_id={cfg.run_id}: {e}; remove it or choose another run_id") from None
    differs = have and store.layout_mismatch(have, make.layout(cfg).describe())
    if differs:
        raise UserError(f"sweep.chunk_size={cfg.sweep.chunk_size}: the store {path} was written "
                        f"with {differs} (runs per chunk {have.get('runs_per_chunk')}); rerun "
                        f"with sweep.chunk_size={have.get('runs_per_chunk')}")
    return env


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(dcfg: DictConfig) -> None:
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        pass
    tree = OmegaConf.to_container(dcfg, resolve=True)
    exp = (tree.get("experiment") or {}).get("name")
    try:
        if exp is None:
            raise config.ConfigError("experiment is not set; run with +experiment=NAME, one of "
                                     + ", ".join(experiments.names()))
        module = experiments.get(exp)
        if _launched_in_own_process():
            # several JAX processes may share one GPU: allocate on demand (before backend start)
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        setup_jax(tree, module)
        cfg = config.build(tree, module)
        config_yaml = config.dump(cfg)   # every key, the experiment's defaults too
        previous = check_continuation(module, cfg, config_yaml)
    except UserError as e:
        _die(str(e))
    name = cfg.experiment.name
    if previous is not None and previous.get("status") == "finished":
        where = os.path.join(cfg.outputs.root, name, cfg.run_id)
        print(f"run {cfg.run_id} is already finished (see its summary.json); nothing to do")
        print(f"run dir: {where}")
        return
    shard = ((cfg.sweep.shard, cfg.sweep.num_shards) if cfg.sweep.shard is not None else None)
    bad_value, run = None, None
    try:
        with outputs.open_run(cfg.outputs.root, name, config_yaml, run_id=cfg.run_id,
                              shard=shard) as run:
            run.command = resume_command(run.id)
            if run.resumed:
                print(f"continuing run {run.id} in {run.dir}")
            elif getattr(module, "STREAMS", False):   # kill -9 prints nothing: say it now
                print(f"run {run.id}: if it stops, resume with: {run.command}", flush=True)
            with run.timed("experiment"):  # compute / save / present add finer timings
                summary = execute(module, cfg, run)
            run.save_summary(summary)
            run.finish("finished", summary)
    except outputs.Stopped as e:
        print(str(e))
        print(f"run dir: {run.dir}")
        return
    except UserError as e:
        # bad input that only showed while running (open_run recorded it failed): one line
        bad_value = e
    except KeyboardInterrupt as e:
        if run is not None:
            _write_pages(run, page=False)   # the index shows it interrupted
            what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            print(f"\n{what}; resume with:\n  {run.command}\nrun dir: {run.dir}")
        raise
    except BaseException as e:
        if run is not None:
            _write_pages(run, page=False)
            print(f"error: a bug in bpexp ({type(e).__name__}: {_first_line(e)}); traceback in "
                  f"{run.dir / 'error.txt'}", file=sys.stderr)
            print(f"resume with:\n  {run.command}")
            print(f"run dir: {run.dir}")
            sys.exit(1)
        raise
    if bad_value is not None:
        _write_pages(run, page=False)
        print(f"error: {bad_value}", file=sys.stderr)
        print(f"run dir: {run.dir}")
        sys.exit(1)
    _note_in_sweep(run)
    page = _write_pages(run)
    if page is not None:
        print(f"report: {page}")
    print(f"run dir: {run.dir}")


def _write_pages(run, page: bool = True):
    """The run's report.html (when ``page``) and the outputs root's index.html; returns the
    page's path. Building pages never fails a run: one warning line instead."""
    try:
        from bpexp import pages

        path = pages.write_run(run.dir) if page else None
        pages.write_index(run.root)
        return path
    except Exception as e:
        print(f"warning: pages not built ({type(e).__name__}: {_first_line(e)})",
              file=sys.stderr)
        return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


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


# sweep keys that take several forms (a count or a list, a list or {start, stop, num}): an
# override in another form than the YAML's replaces the value instead of merging into it
_REPLACEABLE = re.compile(r"^(?P<key>sweep\.(?:lr|seeds|init_scale))=(?P<value>[\[{].*)$")


def replace_forms(argv: list[str]) -> list[str]:
    """``sweep.lr=[0.1,0.2]`` -> ``~sweep.lr``, ``+sweep.lr=[0.1,0.2]`` where the chosen
    experiment's YAML sets ``sweep.lr`` (Hydra cannot merge a list into a dict, and cannot
    delete a null); other arguments are kept."""
    import yaml

    exps = [m["value"] for m in map(_GROUP_ARG.match, argv) if m and m["group"] == "experiment"]
    path = config.CONF_DIR / "experiment" / f"{exps[0]}.yaml" if len(exps) == 1 else None
    preset = (
        (yaml.safe_load(path.read_text()) or {}).get("sweep") or {}
        if path and path.is_file() else {}
    )
    exp_node = ((yaml.safe_load(path.read_text()) or {}).get("experiment") or {}
                if path and path.is_file() else {})
    out = []
    for arg in argv:
        m = _REPLACEABLE.match(arg)
        replace = m and preset.get(m["key"].split(".")[1]) is not None
        out += [f"~{m['key']}", f"+{m['key']}={m['value']}"] if replace else [_add_absent(arg,
                                                                                      exp_node)]
    return out


def _add_absent(arg: str, exp_node: dict) -> str:
    """``experiment.K[.sub]=V`` where the YAML does not spell K (or K.sub) out: it keeps the
    Params default, so the override adds the key (``+``); config.build merges a dict over its
    default."""
    m = re.match(r"^(?P<key>experiment(?:\.[A-Za-z_]\w*)+)=", arg)
    if not m:
        return arg
    node = exp_node
    for part in m["key"].split(".")[1:]:
        if not isinstance(node, dict) or part not in node:
            return "+" + arg
        node = node[part]
    return arg


def cli() -> None:
    check_argv(sys.argv[1:])
    sys.argv[1:] = replace_forms(sys.argv[1:])
    config.register_schemas()
    try:
        main()
    except Terminated:
        sys.exit(143)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    cli()
