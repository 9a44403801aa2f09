"""Run folders a stranger can read without bpexp.

``<root>/<experiment>/<run id>/`` (``<YYYY-MM-DD_HH-MM-SS>_<6 hex>`` or the ``run_id`` given)
holds ``config.yaml``, ``env.json``, ``data.npz``, ``metrics.zarr``, ``summary.json``,
``figures/*.png`` and ``report.md``; ``<root>/index.jsonl`` gets one line per finished, failed
or interrupted process and ``<root>/<experiment>/latest`` points at the newest finished run.
Every file is written to a temporary name in the same folder and renamed, so a reader never
sees half a file; env.json is rewritten only under the folder's lock, so the processes of one
run (shards, resumes) can share it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import math
import os
import platform
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np


SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "failed", "interrupted")
ENV_VARS = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS", "JAX_ENABLE_X64",
            "CUDA_VISIBLE_DEVICES")  # process settings that change numbers or memory


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clean(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if (isinstance(obj, np.ndarray)
            or hasattr(obj, "__array__") and not isinstance(obj, (str, bytes))):
        return _clean(np.asarray(obj).tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json(path: Path, obj) -> None:
    _atomic_bytes(Path(path), (json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    _atomic_bytes(Path(path), text.encode())


def write_npz(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    _atomic_bytes(Path(path), buf.getvalue())


def git_info() -> dict:
    """Commit and dirty flag of the source tree bpexp runs from (None outside git)."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=src, capture_output=True, text=True,
                                    timeout=5).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment() -> dict:
    """Versions, backend and numerics settings of this process."""
    import jax
    import jaxlib
    import optax

    import bpexp

    return {"bpexp": bpexp.__version__, **{f"git_{k}": v for k, v in git_info().items()},
            "python": platform.python_version(), "platform": platform.platform(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__, "optax": optax.__version__,
            "numpy": np.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "x64": bool(jax.config.jax_enable_x64),
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "argv": list(sys.argv), "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in ENV_VARS}}


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


FIGURES = True   # outputs.figures: False skips writing PNGs (plots.save) and the run's page
FIGURE_S: dict[str, float] = {}   # seconds plots.save spent rendering + writing each PNG
OFFLOAD = None   # while a figure helper runs: bpexp.render.offload(fig, path) -> handed over?


RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")   # safe as one folder name
LATEST, INDEX = "latest", "index.jsonl"
RESERVED = (LATEST, "multirun")


# ---------------------------------------------------------------- the layout, spelled once
def experiment_dir(root, experiment: str) -> Path:
    """``<root>/<experiment>``: the experiment's run folders and its ``latest`` link."""
    return Path(root) / experiment


def run_dir(root, experiment: str, run_id: str) -> Path:
    """``<root>/<experiment>/<run id>``: one run folder."""
    return experiment_dir(root, experiment) / run_id


def root_of(run_folder) -> Path:
    """The outputs root a run folder lives in (two levels up)."""
    return Path(run_folder).resolve().parent.parent


def command(overrides: list[str], run_id: str | None = None, drop: tuple = ()) -> str:
    """The command line that repeats a job: ``python -m bpexp`` with its overrides (quoted for
    a shell), minus any whose key starts with one of ``drop`` and any old run_id, plus
    ``run_id=RUN_ID`` when given (the command that continues that run folder)."""
    keep = [o for o in overrides if not re.match(r"^\+{0,2}run_id=", o)
            and not o.lstrip("+~").startswith(tuple(drop))]
    if run_id is not None:
        keep.append(f"run_id={run_id}")
    return "python -m bpexp " + " ".join(shlex.quote(o) for o in keep)


def append_index(root: Path, line: dict) -> None:
    """One JSON line, appended under an exclusive lock (parallel runs share the file). If the
    file does not end with a newline (a writer killed mid-line), the record starts a fresh line
    so that it is never glued onto a damaged one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / INDEX, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0, os.SEEK_END)
        fresh = f.tell() == 0
        if not fresh:
            f.seek(-1, os.SEEK_END)
            fresh = f.read(1) == b"\n"
        text = json.dumps(_clean(line), allow_nan=False) + "\n"
        f.write((text if fresh else "\n" + text).encode())
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def point_latest(parent: Path, run_id: str) -> None:
    """``parent/latest`` -> run_id, swapped in atomically."""
    tmp = parent / f".latest.tmp-{secrets.token_hex(4)}"
    os.symlink(run_id, tmp)
    os.replace(tmp, parent / LATEST)


def read_index(root: Path, experiment: str | None = None, warn: bool = True) -> list[dict]:
    """The records of ``<root>/index.jsonl`` (of one experiment if given). Lines that are not
    a JSON record (a damaged or half-written line) are skipped and counted in one warning."""
    path = Path(root) / INDEX
    if not path.exists():
        return []
    rows, bad = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and "id" in row and "experiment" in row:
            rows.append(row)
        else:
            bad.append(i)
    if bad and warn:
        print(f"warning: {path}: {len(bad)} unreadable line{'s' * (len(bad) > 1)} skipped "
              f"(line {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''})",
              file=sys.stderr)
    return [r for r in rows if experiment in (None, r.get("experiment"))]
