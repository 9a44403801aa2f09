"""Before a named run folder is continued: is it this experiment with this config (config
files lost or damaged are rebuilt from the store's own record), and are its processes alive?
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from bpexp.errors import UserError
from bpexp.outputs import (SCHEMA_VERSION, _now, environment, run_dir, write_json,
                           write_text)

# keys that do not change results: a rerun may change them and still continue the run
RESUME_FREE = ("run_id", "sweep.shard", "sweep.num_shards", "sweep.progress", "outputs.root",
               "outputs.compile_cache")




def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_diff(old_yaml: str, new_yaml: str) -> list[tuple]:
    """(dotted key, old value, new value) of every key whose value differs between two
    resolved configs, sorted (RESUME_FREE ignored; a missing key reads as None)."""
    import yaml

    a, b = _flatten(yaml.safe_load(old_yaml) or {}), _flatten(yaml.safe_load(new_yaml) or {})
    keys = sorted(k for k in set(a) | set(b) if a.get(k, ...) != b.get(k, ...))
    return [(k, a.get(k), b.get(k)) for k in keys
            if not any(k == f or k.startswith(f + ".") for f in RESUME_FREE)]


def config_key(config_yaml: str) -> str:
    """The config without the keys a rerun may change (RESUME_FREE), as YAML: what every
    process of one run shares, kept in its store's attributes so that the store can tell
    which config wrote it even if config.yaml is lost."""
    import yaml

    tree = yaml.safe_load(config_yaml) or {}
    for key in RESUME_FREE:
        *path, last = key.split(".")
        node = tree
        for k in path:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return yaml.safe_dump(tree, sort_keys=True)


def existing_run(root, experiment: str, run_id: str, config_yaml: str) -> dict | None:
    """Before anything is written: None if ``<root>/<experiment>/<run_id>`` does not exist;
    else its env.json, after checking that it is a run of this experiment with the same
    config (any difference, a foreign or corrupted folder: a one-line UserError, nothing
    touched)."""
    d = run_dir(root, experiment, run_id)
    if not d.exists():
        return None
    where = f"run_id={run_id}: {d}"
    try:
        env = json.loads((d / "env.json").read_text())
        old = (d / "config.yaml").read_text()
        if not isinstance(env, dict):
            raise ValueError("env.json is not a mapping")
    except (OSError, ValueError):
        env, old = _recover(d, experiment, run_id, config_yaml)
    if env.get("experiment") != experiment or env.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{where} holds a run of {env.get('experiment')!r} (schema "
                        f"{env.get('schema_version')}), not {experiment} (schema "
                        f"{SCHEMA_VERSION}); choose another run_id")
    diff = config_diff(old, config_yaml)
    if diff:
        shown = ", ".join(f"{k} ({x!r} there, {y!r} now)" for k, x, y in diff[:4])
        more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
        raise UserError(f"{where} was run with another config: {shown}{more}; rerun with the "
                        "same values or choose another run_id")
    return env


ALIVE = ".alive"   # one lock file per process of the run, held while it lives


def _alive(folder: Path, proc: dict) -> bool:
    """Whether the process of env.json entry ``proc`` still runs: its alive lock is held.
    (A lock that can be taken belongs to a process that is gone.)"""
    name = proc.get("alive")
    if not name:
        return False
    try:
        fd = os.open(Path(folder) / ALIVE / name, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def status(folder) -> str | None:
    """A run folder's status as env.json says, except that a ``running`` run none of whose
    processes is alive any more (killed, power lost) reads ``interrupted``."""
    try:
        env = json.loads((Path(folder) / "env.json").read_text())
    except (OSError, ValueError):
        return None
    st = env.get("status")
    if st == "running" and not any(isinstance(p, dict) and _alive(folder, p)
                                   for p in env.get("processes") or []):
        return "interrupted"
    return st


def _recover(d: Path, experiment: str, run_id: str, config_yaml: str) -> tuple[dict, str]:
    """A run folder whose env.json or config.yaml is lost or damaged: rebuilt from its store's
    own record of the config that wrote it (``bpexp_config`` in metrics.zarr's attributes)
    when that is this config; otherwise a one-line UserError, nothing touched."""
    where = f"run_id={run_id}: {d}"
    try:
        attrs = json.loads((d / "metrics.zarr" / ".zattrs").read_text())
    except (OSError, ValueError):
        attrs = {}
    if attrs.get("bpexp_config") != config_key(config_yaml):
        raise UserError(f"{where} is not a readable bpexp run folder (env.json, config.yaml) "
                        "and its store does not record this config; choose another run_id")
    env = {**environment(), "schema_version": SCHEMA_VERSION, "experiment": experiment,
           "run_id": run_id, "start": None, "end": None, "status": "interrupted",
           "processes": [], "recovered": _now()}
    write_text(d / "config.yaml", config_yaml)
    write_json(d / "env.json", env)
    print(f"{where}: env.json / config.yaml were unreadable; rebuilt from metrics.zarr, whose "
          "recorded config is this one")
    return env, config_yaml


def reopen(d: Path) -> None:
    """A finished run whose store turned out damaged is running again (to recompute it)."""
    env = json.loads((Path(d) / "env.json").read_text())
    env.update(status="running", end=None)
    write_json(Path(d) / "env.json", env)


def unclosed(root) -> list[dict]:
    """Index rows for the run folders under ``root`` whose env.json still says ``running``
    (index.jsonl only gets a line when a process ends, and a killed one never writes it):
    ``interrupted`` when none of their processes is alive any more, else ``running``."""
    rows = []
    for env_path in sorted(Path(root).glob("*/*/env.json")):
        try:
            env = json.loads(env_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(env, dict) or env.get("status") != "running":
            continue
        st = status(env_path.parent)
        rows.append({"id": env.get("run_id") or env_path.parent.name,
                     "experiment": env.get("experiment"), "dir": str(env_path.parent),
                     "status": st, "start": env.get("start"), "end": None, "summary": {},
                     **({"note": "its processes are gone"} if st == "interrupted" else {})})
    return rows
