"""A run folder and its lifecycle (the layout is bpexp.outputs').

:class:`Run` creates or continues ``<root>/<experiment>/<run id>/`` (config.yaml, env.json;
experiments write the rest through it), keeps env.json under the folder's lock so that the
processes of one run (shards, resumes) share it, and records how each process ended in
env.json and the index. :func:`existing_run` checks, before anything is written, that a named
run folder holds this experiment with this config.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import secrets
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from bpexp import outputs
from bpexp.errors import UserError
from bpexp.outputs import (
    SCHEMA_VERSION,
    STATUSES,
    _now,
    append_index,
    environment,
    experiment_dir,
    point_latest,
    write_json,
    write_npz,
    write_text,
)
from bpexp.resume import ALIVE, _alive, config_key


SHARE_DONE = "share done"   # an index line's status: a process that computed its share and left


class Stopped(Exception):
    """Not an error: this process's share of a run is done and others must complete it, or
    another process already finished it. The message says which."""


class Run:
    """One run folder. Created by :func:`open_run`; experiments write through it.

    Without ``run_id`` the folder is new (``<YYYY-MM-DD_HH-MM-SS>_<6 hex>``); with it the
    folder ``<root>/<experiment>/<run_id>`` is created or continued (several processes may
    share it: shards). ``env.json`` is only rewritten under the folder's lock (``.lock``),
    read-modify-write, so processes never lose each other's updates."""

    def __init__(self, root: Path, experiment: str, config_yaml: str = "",
                 run_id: str | None = None, shard: tuple[int, int] | None = None):
        self.root, self.experiment = Path(root), experiment
        parent = experiment_dir(self.root, experiment)
        parent.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.overrides: list[str] = []   # the job's command-line overrides (entry point)
        self.config_yaml = config_yaml
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self._lock_fd = None
        self._last_progress = 0.0
        self.proc = {"pid": os.getpid(), "host": platform.node(),
                     "shard": list(shard) if shard else None, "start": _now(), "end": None,
                     "status": "running", "argv": list(sys.argv)}
        if run_id:
            self.id, self.dir = run_id, parent / run_id
            if not self.dir.exists():
                self._create(config_yaml)
        else:
            while True:  # unique under parallel starts: the rename is atomic, retry on collision
                stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
                self.id = f"{stamp}_{secrets.token_hex(3)}"
                self.dir = parent / self.id
                if not self.dir.exists() and self._create(config_yaml):
                    break
        with self.locked():
            procs = self._read_env().get("processes") or []
            self.resumed = bool(procs)
            self._proc_index = len(procs)           # this process's entry, appended
            self._hold_alive()
            for other in procs:                     # owners gone without a word (kill -9)
                if isinstance(other, dict) and other.get("status") == "running" and \
                        not _alive(self.dir, other):
                    other.update(status="killed", end=other.get("end") or _now())
            self._write_env(status="running", end=None, processes_seen=procs)

    def _hold_alive(self) -> None:
        """This process's alive lock: a file it keeps locked until it exits (the kernel drops
        the lock when the process dies, however it dies), so others can tell it is gone."""
        name = f"{self.proc['host']}-{self.proc['pid']}-{self._proc_index}"
        (self.dir / ALIVE).mkdir(exist_ok=True)
        self._alive_fd = os.open(self.dir / ALIVE / name, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._alive_fd, fcntl.LOCK_EX)
        self.proc["alive"] = name

    def _create(self, config_yaml: str) -> bool:
        """The folder with config.yaml and env.json, built under a temporary name and renamed
        into place, so another process never sees it half made. False if one beat us to it."""
        tmp = self.dir.with_name(f".{self.dir.name}.tmp-{secrets.token_hex(4)}")
        (tmp / "figures").mkdir(parents=True)
        env = {**environment(), "schema_version": SCHEMA_VERSION,
               "experiment": self.experiment, "run_id": self.id, "start": _now(), "end": None,
               "status": "running"}
        write_text(tmp / "config.yaml", config_yaml)
        write_json(tmp / "env.json", env)
        try:
            os.rename(tmp, self.dir)
            return True
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return False

    # -- the folder's lock and env.json
    @contextlib.contextmanager
    def locked(self):
        """The run folder's exclusive lock (re-entrant within this Run)."""
        if self._lock_fd is not None:
            yield
            return
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def _acquire(self):
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def _release(self):
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _read_env(self) -> dict:
        return json.loads((self.dir / "env.json").read_text())

    def _write_env(self, drop: tuple = (), **updates) -> None:
        """Under the lock: the current file with this process's entry and ``updates`` (only
        the keys this process sets now: other processes' updates are kept)."""
        current = self._read_env()
        procs = updates.pop("processes_seen", None) or current.get("processes") or []
        while len(procs) <= self._proc_index:
            procs.append(None)
        procs[self._proc_index] = self.proc
        merged = {**{k: v for k, v in current.items() if k not in drop}, **updates,
                  "processes": procs}
        if current.get("status") == "finished":      # finished is final
            merged.update(status="finished", end=current.get("end"))
        self.env = merged
        write_json(self.dir / "env.json", merged)

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
        if not (self.dir / "data.npz").exists() or not self.resumed:
            write_npz(self.dir / "data.npz", X=X, Y=Y)
        return True

    def save_metrics(self, ds) -> None:
        """``ds``: an ``xarray.Dataset`` with named dims and coordinates -> ``metrics.zarr``
        (written whole, atomically; sweeps stream into it instead, see :meth:`grid_store`)."""
        from bpexp import store

        store.write_dataset(self.dir / store.STORE, ds)

    def grid_store(self, layout, metrics: dict, coords: dict, attrs: dict | None = None,
                   derived: tuple = ()):
        """The run's streamed ``metrics.zarr`` for a grid cut by ``layout`` (created, or
        opened and checked when continuing). Its chunks report progress to env.json, and
        its ``claim`` (called by the sweep engine after this process's chunks) either keeps
        the run's lock for this process to finalize, or raises :class:`Stopped`."""
        from bpexp import store

        try:
            attrs = {**(attrs or {}), "bpexp_config": config_key(self.config_yaml)}
            return store.GridStore.open(self.dir / store.STORE, layout, metrics, coords, attrs,
                                        derived, on_progress=self._progress, claim=self._claim,
                                        owner=self.proc.get("alive"),
                                        alive=lambda name: _alive(self.dir, {"alive": name}))
        except store.StoreMismatch as e:
            raise UserError(f"run_id={self.id}: {e}; rerun with the config that wrote it or "
                            "choose another run_id") from None

    def _progress(self, st) -> None:
        self.proc["chunks_computed"] = self.proc.get("chunks_computed", 0) + 1
        if time.time() - self._last_progress < 2.0:
            return
        self._last_progress = time.time()
        with self.locked():
            done = st.done()
            self._write_env(chunks_done=int(done.sum()), chunks_total=int(done.size))

    def _claim(self, st) -> None:
        """After this process's chunks: if every chunk is complete, keep the lock (this process
        finalizes the run, exactly once); otherwise record the counts and stop."""
        self._acquire()
        done = st.done()
        counts = {"chunks_done": int(done.sum()), "chunks_total": int(done.size)}
        if self._read_env().get("status") == "finished":
            self.proc.update(status="finished elsewhere", end=_now())
            self._write_env(**counts)
            self._release()
            raise Stopped(f"run {self.id} was finished by another process; nothing to do")
        if not done.all():
            self.proc.update(status="share done", end=_now())
            self._write_env(**counts)
            self._release()
            who = f"shard {self.shard[0]} of {self.shard[1]}" if self.shard else "this process"
            left = np.flatnonzero(~done)
            show = ", ".join(map(str, left[:8])) + (" ..." if left.size > 8 else "")
            raise Stopped(f"{who} computed {self.proc.get('chunks_computed', 0)} chunks; "
                          f"{left.size} of {done.size} chunks are still missing ({show}): the "
                          "process that completes the last one finalizes the run, or run "
                          f"{self.command_all()} to compute them here")
        self._write_env(**counts)   # the lock stays held until finish()

    # -- the commands that repeat this job (bpexp.outputs.command)
    def reproduce(self) -> str:
        """The command that reruns this job in a new folder (for report.md)."""
        return outputs.command(self.overrides, drop=("outputs.root=",))

    def resume_command(self) -> str:
        """The command that continues this run folder."""
        return outputs.command(self.overrides, run_id=self.id)

    def command_all(self) -> str:
        """The resume command without the shard: computes every missing chunk."""
        return outputs.command(self.overrides, run_id=self.id,
                               drop=("sweep.shard=", "sweep.num_shards="))

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
        if self.proc["status"] not in ("running",):  # already closed (failed, then SystemExit)
            return
        seconds = round(time.time() - self.t0, 3)
        self.timings.update({f"figure {k}": v for k, v in outputs.FIGURE_S.items()})
        self.proc.update(status=status, end=_now(), seconds=seconds, timings=self.timings)
        if error:
            self.proc["error"] = error
        with self.locked():
            if self._read_env().get("status") == "finished" and status != "finished":
                self._write_env()  # a late failure of another process leaves a finished run
                return
            self._write_env(drop=("error",) if status == "finished" else (), status=status,
                            end=_now(), seconds=seconds, timings=self.timings,
                            **({"error": error} if error else {}))
            line = {"id": self.id, "experiment": self.experiment, "dir": str(self.dir),
                    "status": status, "start": self.env["start"], "end": self.env["end"],
                    "seconds": seconds, "chunks_done": self.env.get("chunks_done"),
                    "chunks_total": self.env.get("chunks_total"),
                    "summary": {k: v for k, v in (summary or {}).items()
                                if isinstance(v, (int, float, str, bool)) or v is None}}
            if error:
                line["error"] = error
            append_index(self.root, line)
            if status == "finished":
                point_latest(experiment_dir(self.root, self.experiment), self.id)
        self._let_go()

    def stopped(self) -> None:
        """This process stops without closing the run (its share is done, or another process
        finished it): lock released, one index line saying so (the run's own status stays)."""
        self._release()
        self._let_go()
        append_index(self.root, {"id": self.id, "experiment": self.experiment,
                                 "dir": str(self.dir), "status": SHARE_DONE,
                                 "start": self.proc["start"], "end": _now(),
                                 "seconds": round(time.time() - self.t0, 3),
                                 "shard": self.proc.get("shard"),
                                 "chunks_computed": self.proc.get("chunks_computed", 0),
                                 "summary": {}})

    def _let_go(self) -> None:
        """Drop the alive lock: this process no longer works on the run."""
        fd, self._alive_fd = getattr(self, "_alive_fd", None), None
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def open_run(root, experiment: str, config_yaml: str = "", **kw):
    """Create (or continue, with ``run_id``) a run folder; record it failed (with the error)
    or interrupted if the block raises. ``Stopped`` leaves the run as it is (another process
    completes it). The block should call ``run.finish("finished", summary)`` itself."""
    run = Run(Path(root), experiment, config_yaml, **kw)
    try:
        yield run
    except Stopped:
        run.stopped()
        raise
    except (KeyboardInterrupt, SystemExit) as e:   # told to stop (a signal, a job requeued)
        run.finish("interrupted", error=type(e).__name__)
        raise
    except BaseException as e:
        tb = traceback.format_exc(limit=-3)
        run.finish("failed", error=f"{type(e).__name__}: {e}")
        write_text(run.dir / "error.txt", tb)
        raise
    finally:
        run._release()
    if run.proc["status"] == "running":
        run.finish("finished")
