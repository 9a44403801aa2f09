"""Figures drawn, and the run's page prepared, in a second process while the run goes on.

After its science, a run's own seconds go to single-threaded Python: matplotlib laying out and
rendering PNGs, then the page. With two or more cores, ``python -m bpexp`` starts one helper
process as it starts (:func:`prestart`): the helper imports matplotlib while this process
imports JAX, and, when the experiment's module imports without JAX (lr_sweep's does), that
module and the page's stack (xarray, plotly's template, markdown), then waits. :func:`draw` (a
figure function by name, called in the helper with numpy arguments) and :func:`offload` (a
built matplotlib figure, pickled; plots.save uses it) hand figures over and return at once;
:func:`ask` hands over a function whose value comes back (the run page's slow part,
bpexp.pages.prepare_run, asked of the helper when :func:`warm` says it holds the page's stack).
The helper (bpexp.helper) forks one child per job, at most as many at once as there are cores,
so a slide's PNGs and the page are drawn at the same time, each from the helper's warm imports.
:func:`drain` waits for every job and raises the first error a figure met (an ``AspectError``
stays one), so a run is never marked finished with a figure missing.

The PNGs are the same bytes as drawn inline (tested): the helper runs the same functions with
the same rcParams (bpexp.plots). One core, ``outputs.figure_worker=false``, no figures, or a
figure that cannot be pickled: everything is drawn inline, as before.

Protocol (private): frames on the helper's stdin (8-byte little-endian length, then a pickled
``(kind, job, payload)``); pickled ``(job, error, pngs, value)`` answers on a duplicate of its
stdout (its own prints, and its children's, go to stderr). The helper ignores SIGINT/SIGTERM
(the run handles them) and leaves when its stdin closes, after its running children, so a run
killed by any signal leaves no helper behind.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

_POOL: Pool | None = None
MODES = ("auto", "true", "false")


class FigureError(RuntimeError):
    """A figure failed in the helper with an error that cannot travel back as itself."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def wanted(argv: list[str]) -> bool:
    """Whether a plain run of this command line draws figures that a helper could take:
    not a multirun, help or config printout, nor ``outputs.figures=false`` /
    ``outputs.figure_worker=false``; two or more cores (``auto``) or ``figure_worker=true``."""
    flags = {"-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info",
             "--shell-completion", "-sc", "-p", "--package", "--run"}
    if any(a in flags or a.startswith(("--cfg=", "--info=", "-sc=")) for a in argv):
        return False
    opts = {}
    for a in argv:
        key, _, value = a.lstrip("+").partition("=")
        if key in ("outputs.figures", "outputs.figure_worker"):
            opts[key] = value.strip().lower()
    if opts.get("outputs.figures") in ("false", "0", "no", "off"):
        return False
    mode = opts.get("outputs.figure_worker", "auto")
    return mode == "true" or (mode == "auto" and usable_cores() >= 2)


def prestart(argv: list[str]) -> None:
    """Start the helper now when this command line will want one (see :func:`wanted`), for
    the experiment it names; the run confirms or closes it with :func:`configure` once its
    config is known."""
    global _POOL
    if _POOL is None and wanted(argv):
        names = [v for k, _, v in (a.lstrip("+").partition("=") for a in argv)
                 if k == "experiment" and v]
        try:
            _POOL = Pool(names[-1] if names else None)
        except OSError:   # cannot start a process: draw inline
            _POOL = None


def configure(figures: bool, mode: str = "auto", experiment: str | None = None) -> None:
    """The run's decision from its composed config: keep the helper (started now, for
    ``experiment``, if it was not prestarted) or close it. ``mode``: auto (a helper with 2+
    cores), true, false."""
    global _POOL
    keep = figures and (mode == "true" or (mode == "auto" and usable_cores() >= 2))
    if keep and _POOL is None:
        prestart(["outputs.figure_worker=true"] + ([f"+experiment={experiment}"]
                                                   if experiment else []))
    elif not keep:
        close()


def warm(experiment: str) -> bool:
    """Whether the helper holds ``experiment``'s module and the page's stack imported
    (bpexp.helper.warm), so that the run's page is best prepared there; waits for its
    answer, given as it starts."""
    return active() and _POOL.experiment == experiment and _POOL.warmed()


def active() -> bool:
    return _POOL is not None and _POOL.alive()


def draw(fn: str, *args, **kwargs) -> None:
    """Call the figure function ``fn`` (``"package.module:function"``, which writes its PNGs)
    in the helper when one runs, else here. Its files exist after :func:`drain`; its return
    value is not kept. The arguments must be picklable (numpy arrays, numbers, strings).
    With ``outputs.figures=false`` nothing is drawn (not even built)."""
    out = sys.modules.get("bpexp.outputs")
    if out is not None and not out.FIGURES:
        return
    if active():
        payload = _pickled((fn, args, kwargs))
        if payload is not None:
            _POOL.submit("call", payload, fn.rpartition(":")[2])
            return
    _resolve(fn)(*args, **kwargs)


def offload(fig, path) -> bool:
    """Hand a built matplotlib figure to the helper (True), or say it must be rendered here
    (False: no helper, or the figure does not pickle)."""
    if not active():
        return False
    payload = _pickled((fig, str(path)))
    if payload is None:
        return False
    _POOL.submit("fig", payload, Path(path).name)
    return True


class Ticket:
    """The value of a function handed to the helper by :func:`ask`."""

    def __init__(self, pool: Pool, job: int):
        self.pool, self.job = pool, job
        self.value = self.error = None
        self.done = False

    def get(self):
        """Its value, waiting for it the first time; None when it failed or the helper
        stopped (the caller then computes it itself). ``error`` says why."""
        if not self.done:
            self.value, self.error = self.pool.value(self.job)
            self.done = True
        return self.value


def ask(fn: str, *args, **kwargs) -> Ticket | None:
    """Call ``fn`` (``"package.module:function"``) in the helper; its value comes back through
    the returned :class:`Ticket`. None when no helper runs or the arguments do not pickle: the
    caller computes it itself. Its failure is the ticket's, never :func:`drain`'s."""
    if not active():
        return None
    payload = _pickled((fn, args, kwargs))
    if payload is None:
        return None
    return Ticket(_POOL, _POOL.submit("ask", payload, fn.rpartition(":")[2]))


def drain() -> dict:
    """Wait for every job handed over; returns {png name: render seconds in the helper} and
    adds them to ``outputs.FIGURE_S``; raises the first figure's error."""
    if _POOL is None:
        return {}
    from bpexp import outputs

    done = _POOL.wait()
    outputs.FIGURE_S.update(done)
    return done


def close(wait: bool = True) -> None:
    """Stop the helper (``wait``: until it has exited; the end of the process does not wait,
    since every PNG was drained first)."""
    global _POOL
    if _POOL is not None:
        _POOL.close(wait)
        _POOL = None
    out = sys.modules.get("bpexp.outputs")
    if out is not None:
        out.OFFLOAD = None


def _pickled(obj) -> bytes | None:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:   # something unpicklable: the caller does it here
        return None


def _resolve(ref: str):
    import importlib

    mod, _, name = ref.partition(":")
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(8, "little") + data


# ---------------------------------------------------------------- this process's side
class Pool:
    """The helper process and its jobs: figures (their PNG seconds and errors, kept for
    :meth:`wait`) and asked values (kept per job for :meth:`value`)."""

    def __init__(self, experiment: str | None = None):
        self.experiment = experiment
        self.proc = subprocess.Popen([sys.executable, "-m", "bpexp.helper",
                                      *([experiment] if experiment else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     close_fds=True)
        self.warm: bool | None = None         # the helper's warm-up, once it has answered
        self.lock = threading.Condition()
        self.sent = self.answered = 0
        self.names: dict[int, str] = {}
        self.asked: set[int] = set()
        self.values: dict[int, tuple] = {}    # asked job -> (value, error)
        self.results: dict[str, float] = {}   # PNG name -> seconds plots.save took
        self.errors: list[BaseException] = []
        self.dead: str | None = None
        threading.Thread(target=self._read, daemon=True, name="figure-helper").start()
        from bpexp import outputs

        outputs.OFFLOAD = offload   # plots.save hands built figures over from now on

    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def submit(self, kind: str, payload: bytes, name: str) -> int:
        with self.lock:
            job = self.sent
            self.sent += 1
            self.names[job] = name
            if kind == "ask":
                self.asked.add(job)
        try:
            self.proc.stdin.write(_frame((kind, job, payload)))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            with self.lock:
                self.dead = f"the figure helper stopped ({e})"
                self.lock.notify_all()
        return job

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            try:
                job, error, pngs, value = pickle.load(out)
            except Exception as e:   # EOF or a broken stream: the helper is gone
                with self.lock:
                    if self.dead is None and self.answered < self.sent:
                        self.dead = f"the figure helper stopped ({type(e).__name__})"
                    self.lock.notify_all()
                return
            with self.lock:
                if job == -1:   # the warm-up's answer, not a job
                    self.warm = bool(value)
                    self.lock.notify_all()
                    continue
                name = self.names.pop(job, f"job {job}")
                if job in self.asked:
                    self.values[job] = (value, None if error is None else
                                        f"{error[0]}: {error[1]}")
                elif error is not None:
                    self.errors.append(_rebuild(error, name))
                else:
                    self.results.update(pngs)
                self.answered += 1
                self.lock.notify_all()

    def _wait_for(self, done) -> None:
        """Until ``done()`` or the helper is gone (its last answers read first)."""
        while not done() and self.dead is None:
            self.lock.wait(0.5)
            if self.proc.poll() is not None and not done():
                self.lock.wait(0.2)   # the reader sees the last answers, then EOF
                if not done():
                    self.dead = self.dead or (f"the figure helper exited with code "
                                              f"{self.proc.returncode}")

    def warmed(self) -> bool:
        with self.lock:
            self._wait_for(lambda: self.warm is not None)
            return bool(self.warm)

    def value(self, job: int) -> tuple:
        """(value, error) of the asked ``job``, waiting for it."""
        with self.lock:
            self._wait_for(lambda: job in self.values)
            self.asked.discard(job)
            return self.values.pop(job, (None, self.dead))

    def wait(self) -> dict:
        with self.lock:
            self._wait_for(lambda: self.answered >= self.sent)
            results, errors = dict(self.results), list(self.errors)
            missing = [n for j, n in self.names.items() if j not in self.asked]
            self.results.clear()
            self.errors.clear()
        if errors:
            raise errors[0]
        if missing:
            raise FigureError(f"{len(missing)} figure(s) not drawn ({', '.join(missing[:3])}): "
                              f"{self.dead}")
        return results

    def close(self, wait: bool = True) -> None:
        """Close the helper's stdin (it leaves); ``wait``: until it has."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if wait:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _rebuild(error: tuple, name: str) -> BaseException:
    """The helper's (type name, message, traceback) as an exception here: the same type for
    the figure errors the product raises (plots.AspectError, ValueError ...), else FigureError."""
    tname, message, tb = error
    if tname == "AspectError":
        from bpexp.plots import AspectError

        return AspectError(message)
    import builtins

    cls = getattr(builtins, tname, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            e = cls(message)
            e.add_note(f"in the figure helper, drawing {name}:\n{tb}")
            return e
        except Exception:
            pass
    return FigureError(f"{name}: {tname}: {message}\n{tb}")
