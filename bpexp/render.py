"""Figures drawn in a second process while the run goes on.

After its science, a run's own seconds go to single-threaded Python: matplotlib laying out and
rendering PNGs, then the page. With two or more cores, ``python -m bpexp`` starts one helper
process as it starts (:func:`prestart`): the helper imports matplotlib while this process
imports JAX, then waits. :func:`draw` (a figure function by name, called in the helper with
numpy arguments) and :func:`offload` (a built matplotlib figure, pickled; plots.save uses it)
hand figures over and return at once; this process meanwhile writes its report and prepares the
page. :func:`drain` waits for the PNGs and raises the first error a figure met (an
``AspectError`` stays one), so a run is never marked finished with a figure missing.

The PNGs are the same bytes as drawn inline (tested): the helper runs the same functions with
the same rcParams (bpexp.plots). One core, ``outputs.figure_worker=false``, no figures, or a
figure that cannot be pickled: everything is drawn inline, as before.

Protocol (private): pickled ``(kind, job, payload)`` messages on the helper's stdin, pickled
``(job, error, result)`` answers on a duplicate of its stdout (its own prints go to stderr).
The helper ignores SIGINT/SIGTERM (the run handles them) and leaves when its stdin closes, so a
run killed by any signal leaves no helper behind.
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
HELPERS = 1    # helper processes (2 measured slower on 2 cores: the page and the helpers contend)


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
    """Start the helper now when this command line will want one (see :func:`wanted`); the
    run confirms or closes it with :func:`configure` once its config is known."""
    global _POOL
    if _POOL is None and wanted(argv):
        try:
            _POOL = Pool()
        except OSError:   # cannot start a process: draw inline
            _POOL = None


def configure(figures: bool, mode: str = "auto") -> None:
    """The run's decision from its composed config: keep the helper (started now if it was not
    prestarted) or close it. ``mode``: auto (a helper with 2+ cores), true, false."""
    global _POOL
    keep = figures and (mode == "true" or (mode == "auto" and usable_cores() >= 2))
    if keep and _POOL is None:
        prestart(["outputs.figure_worker=true"])
    elif not keep:
        close()
    if _POOL is not None:   # the second helper starts now: its imports overlap the compute,
        _POOL.grow(HELPERS)  # not this process's own imports


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
        try:
            payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:   # something unpicklable: draw it here
            payload = None
        if payload is not None:
            _POOL.submit("call", payload, fn.rpartition(":")[2])
            return
    _resolve(fn)(*args, **kwargs)


def offload(fig, path) -> bool:
    """Hand a built matplotlib figure to the helper (True), or say it must be rendered here
    (False: no helper, or the figure does not pickle)."""
    if not active():
        return False
    try:
        payload = pickle.dumps((fig, str(path)), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    _POOL.submit("fig", payload, Path(path).name)
    return True


def drain() -> dict:
    """Wait for every figure handed over; returns {png name: render seconds in the helper} and
    adds them to ``outputs.FIGURE_S``; raises the first figure's error."""
    if _POOL is None:
        return {}
    from bpexp import outputs

    done = _POOL.wait()
    outputs.FIGURE_S.update(done)
    return done


def close(wait: bool = True) -> None:
    """Stop the helpers (``wait``: until they have exited; the end of the process does not
    wait, since every PNG was drained first)."""
    global _POOL
    if _POOL is not None:
        _POOL.close(wait)
        _POOL = None
    out = sys.modules.get("bpexp.outputs")
    if out is not None:
        out.OFFLOAD = None


def _resolve(ref: str):
    import importlib

    mod, _, name = ref.partition(":")
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------- this process's side
class Pool:
    """Helper processes (one at prestart, ``HELPERS`` once the run is configured) and their
    figure jobs: each job goes to the helper with the fewest unanswered ones (a slide's three
    PNGs draw on two cores at once)."""

    def __init__(self, n: int = 1):
        self.procs: list[subprocess.Popen] = []
        self.lock = threading.Condition()
        self.sent = self.answered = 0
        self.names: dict[int, str] = {}
        self.pending: list[int] = []          # unanswered jobs per helper
        self.results: dict[str, float] = {}   # PNG name -> seconds plots.save took
        self.errors: list[BaseException] = []
        self.dead: str | None = None
        self.grow(n)
        from bpexp import outputs

        outputs.OFFLOAD = offload   # plots.save hands built figures over from now on

    def grow(self, n: int) -> None:
        """Start helpers until there are ``n``."""
        while len(self.procs) < n:
            p = subprocess.Popen([sys.executable, "-m", "bpexp.render"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, close_fds=True)
            with self.lock:
                self.procs.append(p)
                self.pending.append(0)
            threading.Thread(target=self._read, args=(len(self.procs) - 1,), daemon=True,
                             name=f"figure-helper-{len(self.procs)}").start()

    def alive(self) -> bool:
        return self.dead is None and all(p.poll() is None for p in self.procs)

    def submit(self, kind: str, payload: bytes, name: str) -> None:
        with self.lock:
            job = self.sent
            self.sent += 1
            self.names[job] = name
            i = min(range(len(self.procs)), key=self.pending.__getitem__)
            self.pending[i] += 1
        try:
            stdin = self.procs[i].stdin
            pickle.dump((kind, job, payload), stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (BrokenPipeError, OSError) as e:
            with self.lock:
                self.dead = f"the figure helper stopped ({e})"
                self.lock.notify_all()

    def _read(self, i: int) -> None:
        out = self.procs[i].stdout
        while True:
            try:
                job, error, result = pickle.load(out)
            except Exception as e:   # EOF or a broken stream: the helper is gone
                with self.lock:
                    if self.dead is None and self.pending[i]:
                        self.dead = f"the figure helper stopped ({type(e).__name__})"
                    self.lock.notify_all()
                return
            with self.lock:
                name = self.names.pop(job, f"job {job}")
                if error is not None:
                    self.errors.append(_rebuild(error, name))
                else:
                    self.results.update(result)
                self.answered += 1
                self.pending[i] -= 1
                self.lock.notify_all()

    def wait(self) -> dict:
        with self.lock:
            while self.answered < self.sent and self.dead is None:
                self.lock.wait(0.5)
                gone = [p for i, p in enumerate(self.procs)
                        if p.poll() is not None and self.pending[i]]
                if gone:
                    self.lock.wait(0.2)   # the readers see the last answers, then EOF
                    if self.answered < self.sent:
                        self.dead = self.dead or (f"the figure helper exited with code "
                                                  f"{gone[0].returncode}")
            results, errors = dict(self.results), list(self.errors)
            missing = self.sent - self.answered
            self.results.clear()
            self.errors.clear()
            self.sent = self.answered = 0
            self.pending = [0] * len(self.procs)
            self.names.clear()
        if errors:
            raise errors[0]
        if missing:
            raise FigureError(f"{missing} figure(s) not drawn: {self.dead}")
        return results

    def close(self, wait: bool = True) -> None:
        """Close the helpers' stdin (they leave); ``wait``: until they have."""
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs if wait else ():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


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


# ---------------------------------------------------------------- the helper's side
def serve() -> None:
    """The helper: import the drawing stack, then draw each job and answer it (a figure
    function's module is imported at its first job: keep figure modules free of JAX)."""
    import signal
    import traceback

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)   # the run handles them; stdin's EOF ends us
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                            # prints from figure code go to stderr
    from bpexp import outputs, plots         # matplotlib, Agg, the slide rcParams

    outputs.FIGURES = True
    inbox = sys.stdin.buffer
    while True:
        try:
            kind, job, payload = pickle.load(inbox)
        except EOFError:
            return
        outputs.FIGURE_S.clear()   # plots.save records each PNG's seconds here
        try:
            if kind == "fig":
                fig, path = pickle.loads(payload)
                plots.save(fig, path)
            else:
                fn, args, kwargs = pickle.loads(payload)
                _resolve(fn)(*args, **kwargs)
            answer = (job, None, dict(outputs.FIGURE_S))
        except BaseException as e:   # every failure travels back
            answer = (job, (type(e).__name__, str(e), traceback.format_exc()), None)
        pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
        answers.flush()


if __name__ == "__main__":
    serve()
