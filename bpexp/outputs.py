"""Run folders a stranger can read without bpexp.

``<root>/<experiment>/<YYYY-MM-DD_HH-MM-SS>_<6 hex>/`` holds ``config.yaml``, ``env.json``,
``data.npz``, ``metrics.npz``, ``summary.json``, ``figures/*.png`` and ``report.md``;
``<root>/index.jsonl`` gets one line per finished, failed or interrupted run and
``<root>/<experiment>/latest`` points at the newest. Every file is written to a temporary name
in the same folder and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import io
import json
import math
import os
import platform
import secrets
import subprocess
import sys
import time
import traceback
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
            "devices": [str(d) for d in jax.devices()],
            "x64": bool(jax.config.jax_enable_x64),
            "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "argv": list(sys.argv), "cwd": os.getcwd(),
            "env": {k: os.environ.get(k) for k in ENV_VARS}}


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Run:
    """One run folder. Created by :func:`open_run`; experiments write through it."""

    def __init__(self, root: Path, experiment: str, config_yaml: str = ""):
        self.root, self.experiment = Path(root), experiment
        parent = self.root / experiment
        parent.mkdir(parents=True, exist_ok=True)
        while True:  # unique under parallel starts: mkdir is atomic, retry on collision
            stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            self.id = f"{stamp}_{secrets.token_hex(3)}"
            self.dir = parent / self.id
            try:
                self.dir.mkdir()
                break
            except FileExistsError:
                continue
        (self.dir / "figures").mkdir()
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.env = {**environment(), "schema_version": SCHEMA_VERSION, "experiment": experiment,
                    "run_id": self.id, "start": _now(), "end": None, "status": "running"}
        write_text(self.dir / "config.yaml", config_yaml)
        write_json(self.dir / "env.json", self.env)

    # -- writing
    def path(self, name: str) -> Path:
        return self.dir / name

    def figure(self, name: str) -> Path:
        """Where figure ``name`` (e.g. "loss.png") goes; plots.save writes it atomically."""
        return self.dir / "figures" / name

    def save_data(self, X, Y) -> bool:
        """The exact arrays trained on, when under 50 MB; returns whether they were saved."""
        if np.asarray(X).nbytes + np.asarray(Y).nbytes >= 50e6:
            return False
        write_npz(self.dir / "data.npz", X=X, Y=Y)
        return True

    def save_metrics(self, ds) -> None:
        """``ds``: an ``xarray.Dataset`` with named dims and coordinates -> ``metrics.zarr``
        (written whole, atomically; sweeps stream into it instead, see bpexp.store)."""
        from bpexp import store

        store.write_dataset(self.dir / store.STORE, ds)

    def save_summary(self, summary: dict) -> None:
        write_json(self.dir / "summary.json", summary)

    def save_report(self, markdown: str) -> None:
        write_text(self.dir / "report.md", markdown)

    @contextlib.contextmanager
    def timed(self, name: str):
        """Record the wall seconds of a block into env.json's ``timings``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t, 4)

    # -- closing
    def finish(self, status: str, summary: dict | None = None, error: str | None = None) -> None:
        assert status in STATUSES
        if self.env["status"] != "running":  # already closed (e.g. failed, then SystemExit)
            return
        self.env.update(status=status, end=_now(), seconds=round(time.time() - self.t0, 3),
                        timings=self.timings)
        if error:
            self.env["error"] = error
        write_json(self.dir / "env.json", self.env)
        line = {"id": self.id, "experiment": self.experiment, "dir": str(self.dir),
                "status": status, "start": self.env["start"], "end": self.env["end"],
                "seconds": self.env["seconds"],
                "summary": {k: v for k, v in (summary or {}).items()
                            if isinstance(v, (int, float, str, bool)) or v is None}}
        if error:
            line["error"] = error
        append_index(self.root, line)
        if status == "finished":
            point_latest(self.root / self.experiment, self.id)


def append_index(root: Path, line: dict) -> None:
    """One JSON line, appended under an exclusive lock (parallel runs share the file)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "index.jsonl", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(_clean(line), allow_nan=False) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def point_latest(parent: Path, run_id: str) -> None:
    """``parent/latest`` -> run_id, swapped in atomically."""
    tmp = parent / f".latest.tmp-{secrets.token_hex(4)}"
    os.symlink(run_id, tmp)
    os.replace(tmp, parent / "latest")


def read_index(root: Path, experiment: str | None = None) -> list[dict]:
    path = Path(root) / "index.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return [r for r in rows if experiment in (None, r.get("experiment"))]


@contextlib.contextmanager
def open_run(root, experiment: str, config_yaml: str = ""):
    """Create a run folder; record it failed (with the error) or interrupted if the block raises.

    The block should call ``run.finish("finished", summary)`` itself on success."""
    run = Run(Path(root), experiment, config_yaml)
    try:
        yield run
    except KeyboardInterrupt:
        run.finish("interrupted", error="KeyboardInterrupt")
        raise
    except BaseException as e:
        tb = traceback.format_exc(limit=-3)
        run.finish("failed", error=f"{type(e).__name__}: {e}")
        write_text(run.dir / "error.txt", tb)
        raise
    if run.env["status"] == "running":
        run.finish("finished")
