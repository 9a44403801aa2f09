"""The command line around ``python -m bpexp``: checks of argv before Hydra composes (one
line instead of Hydra's multi-line errors), the validation phase after it, JAX's process
settings, signals and exit codes. bpexp/__main__.py is the thin entry point that uses them.

Phases: (1) the command line's group options and keys, before Hydra; (2) validation
(config.build: every value, and every object the experiment will build) before any folder
exists; only then (3) the run folder (bpexp.runfolder.execute).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
import signal
import sys

from bpexp import config, experiments
from bpexp.errors import UserError, die

GROUPS = ("model", "data", "optimizer", "sweep", "experiment")
_GROUP_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<group>%s)=(?P<value>.*)$" % "|".join(GROUPS))
_KEY_ARG = re.compile(r"^(?:\+{1,2}|~)?(?P<key>[A-Za-z_][\w.]*)=")


def check_root(argv: list[str]) -> None:
    """``outputs.root`` must be a folder bpexp can write (Hydra creates it before anything else
    runs): one line otherwise."""
    roots = [a.split("=", 1)[1] for a in argv if re.match(r"^\+{0,2}outputs\.root=", a)]
    root = roots[-1] if roots else "outputs"
    if "${" in root or "," in root:      # an interpolation or a multirun list: Hydra's part
        return
    try:
        os.makedirs(root, exist_ok=True)
        probe = os.path.join(root, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        die(f"outputs.root={root!r} is not a folder bpexp can write ({e.strerror or e}); "
            "allowed: a writable folder (created if missing)")


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
                die(f"{group}={value} matches no {group}; choose among {', '.join(options)}")
            continue
        for v in value.split(","):
            if v.strip() not in options:
                die(f"{group}={v.strip()!r} is not a {group}; choose one of {', '.join(options)}")


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
            die(f"{m['key']} is not a key of this experiment; "
                 f"allowed: {', '.join('experiment.' + f for f in fields)}")
        return
    top = [f.name for f in dataclasses.fields(config.Cfg) if f.name != "experiment"]
    if parts[0] not in top:
        die(f"{m['key']} is not a known key; allowed: {', '.join(top)}, hydra.*, experiment.*")
    if len(parts) > 1 and parts[0] in config.SECTIONS:
        fields = [f.name for f in dataclasses.fields(config.SECTIONS[parts[0]])]
        if parts[1] not in fields:
            die(f"{m['key']} is not a known key; "
                 f"allowed: {', '.join(parts[0] + '.' + f for f in fields)}")


def setup_jax(tree: dict, module) -> None:
    """Precision and device, before any array is made (the validation phase makes some)."""
    import jax

    x64 = tree.get("precision") == "float64" or getattr(module, "PRECISION", None) == "float64"
    jax.config.update("jax_enable_x64", bool(x64) or bool(jax.config.read("jax_enable_x64")))
    if tree.get("device") == "gpu":
        try:
            jax.devices("gpu")
        except RuntimeError:
            die(f"device='gpu' but no GPU is visible; available backend: "
                 f"{jax.default_backend()} (use device=auto or cpu)")
    if jax.default_backend() == "gpu" and x64:
        jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in checks
    cache = (tree.get("outputs") or {}).get("compile_cache")
    if isinstance(cache, str) and cache:
        from bpexp.xla import use_compile_cache

        use_compile_cache(cache)


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's time limit, ``kill``): handled like Ctrl-C, the run stays resumable."""


def _on_sigterm(signum, frame):
    raise Terminated("SIGTERM")



def configure(dcfg):
    """Validation phase: the composed Hydra config -> (experiment module, validated Cfg, the
    config as YAML). Bad input: one line on stderr, exit 2, nothing written."""
    from omegaconf import OmegaConf

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
        return module, cfg, config.dump(cfg)   # config.yaml: every key, defaults included
    except UserError as e:
        die(str(e))


def overrides() -> list[str]:
    """This job's command-line overrides (Hydra's, one job of a multirun; else argv)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return sys.argv[1:]


def _launched_in_own_process() -> bool:
    """True under a process launcher (submitit, joblib); False for Hydra's basic launcher."""
    from hydra.core.hydra_config import HydraConfig

    try:
        target = str(HydraConfig.get().launcher.get("_target_", ""))
    except ValueError:
        return False
    return "BasicLauncher" not in target



# sweep keys that take several forms (a count or a list, a list or {start, stop, num}): an
# override in another form than the YAML's replaces the value instead of merging into it
_REPLACEABLE = re.compile(r"^(?P<key>sweep\.(?:lr|seeds|init_scale|hparams))=(?P<value>[\[{].*)$")


def replace_forms(argv: list[str]) -> list[str]:
    """``sweep.lr=[0.1,0.2]`` -> ``~sweep.lr``, ``+sweep.lr=[0.1,0.2]`` where the chosen
    experiment's YAML sets ``sweep.lr`` (Hydra cannot merge a list into a dict, and cannot
    delete a null); other arguments are kept."""
    import yaml

    exps = [m["value"] for m in map(_GROUP_ARG.match, argv) if m and m["group"] == "experiment"]
    path = experiments.yaml_path(exps[0]) if len(exps) == 1 else None
    preset = (
        (yaml.safe_load(path.read_text()) or {}).get("sweep") or {}
        if path and path.is_file() else {}
    )
    exp_node = ((yaml.safe_load(path.read_text()) or {}).get("experiment") or {}
                if path and path.is_file() else {})
    out = []
    for arg in argv:
        m = _REPLACEABLE.match(arg)
        # sweep.hparams is {} in the schema: a mapping given whole replaces it too
        replace = m and (preset.get(m["key"].split(".")[1]) is not None
                         or m["key"] == "sweep.hparams")
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


def skip_mode_probe(argv: list[str]) -> None:
    """Hydra composes the whole config once only to read ``hydra.mode``, then again for the
    run (~0.15 s). bpexp's conf/ never sets hydra.mode, so unless the command line does, the
    probe's answer is known: none, and ``-m`` decides, as Hydra does with no mode set."""
    if any(re.match(r"^[+~]*hydra\.mode=", a) for a in argv):
        return
    from hydra._internal.hydra import Hydra

    if hasattr(Hydra, "get_mode"):
        Hydra.get_mode = lambda self, config_name, overrides: None


def run(main) -> None:
    """``python -m bpexp``: argv checks, then Hydra's ``main``; exit 143 on SIGTERM, 130 on
    Ctrl-C (also a second Ctrl-C while the first is handled)."""
    config.register_schemas()
    check_argv(sys.argv[1:])
    check_root(sys.argv[1:])
    sys.argv[1:] = replace_forms(sys.argv[1:])
    skip_mode_probe(sys.argv[1:])
    try:
        main()
    except KeyboardInterrupt as e:
        # everything is recorded and written; leave without the interpreter's teardown, which
        # a signal arriving meanwhile (or JAX's threads) can turn into a traceback or a crash
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143 if isinstance(e, Terminated) else 130)


def leave() -> None:
    """The end of ``python -m bpexp`` after a run: every file is written and closed, so leave
    without the interpreter's teardown (freeing JAX's backend and every module takes ~0.6 s);
    the figure helper sees its stdin close and exits too. Under a profiler or tracer
    (cProfile, coverage) the normal exit stays, so they can write their results."""
    import logging

    from bpexp import render

    render.close(wait=False)
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
