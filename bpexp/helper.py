"""The figure helper's side of bpexp.render: ``python -m bpexp.helper``, started by a run.

It imports matplotlib (bpexp.plots, the slide rcParams) and, when the run's experiment module
imports without JAX, that module and the page's stack (:func:`warm`), then reads framed jobs
from its stdin (bpexp.render's protocol) and runs each in a forked child, at most as many at
once as there are cores; a child sends its answer up a pipe and leaves, and the helper passes
the answers on in the order the jobs finish. The loop is single-threaded (a selector), so
forking is safe; without ``os.fork``, or with Python threads running, the jobs run here one
after another.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading

from bpexp.render import _resolve, usable_cores


def _job(kind: str, job: int, payload: bytes) -> tuple:
    """Run one job here; its answer ``(job, error, pngs, value)``, every failure included."""
    import traceback

    from bpexp import outputs, plots

    outputs.FIGURE_S.clear()   # plots.save records each PNG's seconds here
    value = None
    try:
        if kind == "fig":
            fig, path = pickle.loads(payload)
            plots.save(fig, path)
        else:
            fn, args, kwargs = pickle.loads(payload)
            value = _resolve(fn)(*args, **kwargs)
        return (job, None, dict(outputs.FIGURE_S), value if kind == "ask" else None)
    except BaseException as e:   # every failure travels back
        return (job, (type(e).__name__, str(e), traceback.format_exc()), None, None)


def _encode(answer: tuple) -> bytes:
    """The pickled answer; a value that does not pickle becomes the job's error."""
    try:
        return pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        return pickle.dumps((answer[0], (type(e).__name__, f"its value does not pickle: {e}",
                                         ""), None, None), protocol=pickle.HIGHEST_PROTOCOL)


class _NoJax:
    """A meta-path finder that refuses JAX: an experiment module is warmed up only when it
    imports without it (a failed import leaves nothing half-made in sys.modules)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib"):
            raise ImportError(f"the figure helper does not import {name}")
        return None


def warm(experiment: str | None):
    """Import ``experiment``'s module and the page's stack (bpexp.pages.warm: xarray, zarr,
    markdown, plotly's template) when the module imports without JAX; a generator that yields
    between the two (so the helper notices meanwhile that its run has ended) and returns True
    when both are warm here, so its figures by name and its page are made from warm imports.
    A module that needs JAX is left to the run, which has JAX already (a child importing it
    would cost the run half a second at its end)."""
    if not experiment:
        return False
    finder = _NoJax()
    sys.meta_path.insert(0, finder)
    try:
        from bpexp import experiments

        experiments.get(experiment)
    except Exception:   # needs JAX, or does not import at all: the run says what is wrong
        return False
    finally:
        sys.meta_path.remove(finder)
    yield
    try:
        from bpexp import pages

        pages.warm()
    except Exception:   # the page is then prepared by the run
        return False
    return True


class _Helper:
    """The helper's loop: frames in from stdin, one forked child per job (at most ``limit``
    at once), answers out in the order the jobs finish. Single-threaded (a selector), so
    forking is safe."""

    def __init__(self, answers, warming=None):
        import selectors

        self.answers = answers
        self.warming = warming   # warm()'s steps, taken while no job is waiting
        self.sel = selectors.DefaultSelector()
        self.sel.register(0, selectors.EVENT_READ)
        self.inbox = bytearray()
        self.queue: list[tuple] = []
        self.children: dict[int, list] = {}   # pipe fd -> [pid, job, bytes read]
        self.limit = max(1, usable_cores())
        self.eof = False

    def run(self) -> None:
        while not (self.eof and not self.children):
            idle = self.warming is not None and not self.eof
            for key, _ in self.sel.select(0 if idle else None):
                if key.fd == 0:
                    self._read_inbox()
                else:
                    self._read_child(key.fd)
            while self.queue and len(self.children) < self.limit:
                self._start(*self.queue.pop(0))
            if idle and not self.eof:
                self._warm_step()

    def _warm_step(self) -> None:
        """One step of the warm-up; its result is the first answer (job -1)."""
        try:
            next(self.warming)
        except StopIteration as done:
            self.warming = None
            self._answer((-1, None, {}, bool(done.value)))

    def _read_inbox(self) -> None:
        chunk = os.read(0, 1 << 20)
        if not chunk:   # the run closed us (or died): no new jobs; running ones finish
            self.eof = True
            self.sel.unregister(0)
            self.queue.clear()
            return
        self.inbox += chunk
        while len(self.inbox) >= 8:
            n = int.from_bytes(self.inbox[:8], "little")
            if len(self.inbox) < 8 + n:
                break
            kind, job, payload = pickle.loads(bytes(self.inbox[8:8 + n]))
            del self.inbox[:8 + n]
            self.queue.append((kind, job, payload))

    def _start(self, kind: str, job: int, payload: bytes) -> None:
        if not hasattr(os, "fork") or threading.active_count() > 1:
            self._answer(_job(kind, job, payload))
            return
        import warnings

        r, w = os.pipe()
        with warnings.catch_warnings():   # Python 3.12+ warns of native threads (OpenBLAS's
            warnings.simplefilter("ignore", DeprecationWarning)   # pool, fork-safe by design)
            pid = os.fork()
        if pid == 0:   # the child: do the job, send its answer up the pipe, leave
            try:
                os.close(r)
                view = memoryview(_encode(_job(kind, job, payload)))
                while view:
                    view = view[os.write(w, view):]
            finally:
                os._exit(0)
        os.close(w)
        self.children[r] = [pid, job, bytearray()]
        import selectors

        self.sel.register(r, selectors.EVENT_READ)

    def _read_child(self, fd: int) -> None:
        chunk = os.read(fd, 1 << 20)
        if chunk:
            self.children[fd][2] += chunk
            return
        self.sel.unregister(fd)
        os.close(fd)
        pid, job, data = self.children.pop(fd)
        _, status = os.waitpid(pid, 0)
        try:
            answer = pickle.loads(bytes(data))
        except Exception:   # the child died before answering (a crash in native code, exit)
            answer = (job, ("FigureError", f"the helper's child process ended with status "
                                           f"{status} before answering", ""), None, None)
        self._answer(answer)

    def _answer(self, answer: tuple) -> None:
        try:
            self.answers.write(_encode(answer))
            self.answers.flush()
        except (BrokenPipeError, OSError):   # the run is gone: nobody to tell
            pass


def serve(argv: list[str]) -> None:
    """The helper of a run of the experiment ``argv[0]`` (if given): import the drawing stack,
    warm the experiment's module and the page's stack up (:func:`warm`, its result the first
    answer, job -1), then run each job."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)   # the run handles them; stdin's EOF ends us
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                            # prints from figure code go to stderr
    from bpexp import outputs, plots         # noqa: F401  matplotlib, Agg, the slide rcParams

    outputs.FIGURES = True
    _Helper(answers, warm(argv[0] if argv else None)).run()
    sys.stderr.flush()   # every answer is written: leave without the interpreter's teardown
    os._exit(0)


if __name__ == "__main__":
    serve(sys.argv[1:])
