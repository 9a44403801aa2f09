"""Running an experiment in its run folder: the continuation check, the experiment contract
(compute -> save -> present), the pages, what is printed and the exit code.
"""

from __future__ import annotations

import os
import signal
import sys

from bpexp import outputs, render, verify
from bpexp.errors import UserError, die, quiet_interrupt
from bpexp.outputs import run_dir, write_json
from bpexp.resume import existing_run, reopen
from bpexp.runfolder import Run, Stopped, open_run


def check_continuation(module, cfg, config_yaml: str) -> dict | None:
    """With run_id: the existing run folder's env.json (None if new), after checking that it
    is this experiment with this config and, for a streamed grid, this chunking. Reads only."""
    if cfg.run_id is None:
        return None
    env = existing_run(cfg.outputs.root, cfg.experiment.name, cfg.run_id, config_yaml)
    if env is None or not getattr(module, "STREAMS", False):
        return env
    from bpexp import make, store

    path = run_dir(cfg.outputs.root, cfg.experiment.name, cfg.run_id) / store.STORE
    if path.exists() and not path.is_dir():
        raise UserError(f"run_id={cfg.run_id}: {path} is not a store; remove it or choose "
                        "another run_id")
    try:
        have = store.read_layout(path)
    except store.StoreMismatch:
        have = None    # damaged metadata: the store rebuilds it from this (same) config
    differs = have and store.layout_mismatch(have, make.layout(cfg).describe())
    if differs:
        raise UserError(f"sweep.chunk_size={cfg.sweep.chunk_size}: the store {path} was written "
                        f"with {differs} (runs per chunk {have.get('runs_per_chunk')}); rerun "
                        f"with sweep.chunk_size={have.get('runs_per_chunk')}")
    return env




def run_contract(module, cfg, run: Run) -> dict:
    """The experiment contract: compute the numbers, save them (-> summary), present them."""
    with run.timed("compute"):
        res = module.compute(cfg, run)
    with run.timed("save"):
        summary = module.save(cfg, run, res)
    with run.timed("present"):
        module.present(cfg, run, res, summary)
    return summary


def execute(module, cfg, config_yaml: str, overrides: list[str]) -> None:
    """Run the experiment in its folder and write its pages; the last lines printed are
    ``report: <page>`` and ``run dir: <folder>``. Exit codes: 0 done (or this process's share
    done), 2 bad input (before any folder), 1 a bug (error.txt in the folder), 130/143
    interrupted (the run stays resumable; its resume command is printed)."""
    try:
        previous = check_continuation(module, cfg, config_yaml)
    except UserError as e:
        die(str(e))
    name = cfg.experiment.name
    if previous is not None and previous.get("status") == "finished":
        folder = run_dir(cfg.outputs.root, name, cfg.run_id)
        damaged = verify.problems(folder)
        if not damaged:
            print(f"run {cfg.run_id} is already finished (see its summary.json); nothing to do")
            print(f"run dir: {folder}")
            return
        print(f"run {cfg.run_id} is finished but damaged ({'; '.join(damaged[:3])}): "
              "computing it again")
        reopen(folder)
    shard = (cfg.sweep.shard, cfg.sweep.num_shards) if cfg.sweep.shard is not None else None
    outputs.FIGURES = bool(cfg.outputs.figures)
    render.configure(outputs.FIGURES, str(cfg.outputs.figure_worker).lower(), name)
    run = None
    _on_sigint(signal.default_int_handler)   # from now on Ctrl-C is recorded in the folder
    try:
        with open_run(cfg.outputs.root, name, config_yaml, run_id=cfg.run_id,
                      shard=shard) as run:
            run.overrides = list(overrides)
            run.timings["figure_helper"] = float(render.active())   # PNGs drawn in parallel
            import bpexp   # imports, config and validation: process start to the run folder
            run.timings.setdefault("startup", round(run.t0 - bpexp.STARTED, 4))
            if run.resumed:
                print(f"continuing run {run.id} in {run.dir}")
            elif getattr(module, "STREAMS", False):   # kill -9 prints nothing: say it now
                print(f"run {run.id}: if it stops, resume with: {run.resume_command()}",
                      flush=True)
            prepared = _complete(module, cfg, run)
    except Stopped as e:
        print(str(e))
        print(f"run dir: {run.dir}")
        return
    except UserError as e:   # bad input that only showed while running: recorded failed
        _ended(run, f"error: {e}", code=1)
    except (KeyboardInterrupt, SystemExit) as e:   # Ctrl-C, SIGTERM, a requeued Slurm job
        _on_sigint(quiet_interrupt)          # a second Ctrl-C while recording: just leave
        if run is not None:
            what = {"Terminated": "terminated (SIGTERM)", "SystemExit": "stopped"}.get(
                type(e).__name__, "interrupted")
            _write_pages(run, page=False)   # the index shows it interrupted
            print(f"\n{what}; resume with:\n  {run.resume_command()}\nrun dir: {run.dir}")
        raise
    except BaseException as e:
        if run is None:
            raise
        _ended(run, f"error: a bug in bpexp ({type(e).__name__}: {_first_line(e)}); traceback "
                    f"in {run.dir / 'error.txt'}", code=1, resume=True)
    _note_in_sweep(run)
    page = _write_pages(run, page=outputs.FIGURES, prepared=prepared)
    if page is not None:
        print(f"report: {page}")
    print(f"run dir: {run.dir}")


def _complete(module, cfg, run: Run):
    """The experiment's contract, its summary, every PNG, then the run marked finished;
    returns the page's slow part, prepared by the figure helper beside the PNGs (or here
    without one; None when it failed: the page is then built whole)."""
    with run.timed("experiment"):  # compute / save / present add finer timings
        summary = run_contract(module, cfg, run)
    run.save_summary(summary)
    prepared = ticket = None
    with run.timed("page"):        # in the figure helper beside the PNGs, else here meanwhile
        if outputs.FIGURES and render.warm(cfg.experiment.name):
            ticket = render.ask("bpexp.pages:prepare_run", str(run.dir))
        if outputs.FIGURES and ticket is None:
            prepared = _prepare_page(run)
    with run.timed("figures_wait"):
        render.drain()             # every PNG written (or its error raised) first
        if ticket is not None:
            prepared = ticket.get()   # None when it failed: _write_pages builds it whole
    run.finish("finished", summary)
    return prepared


def _on_sigint(handler) -> None:
    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:   # not the main thread (a launcher's worker): leave it as it is
        pass


def _ended(run: Run, message: str, code: int, resume: bool = False):
    """A run that failed: its index page, one line on stderr, the folder, exit ``code``."""
    _write_pages(run, page=False)
    print(message, file=sys.stderr)
    if resume:
        print(f"resume with:\n  {run.resume_command()}")
    print(f"run dir: {run.dir}")
    sys.exit(code)


def _prepare_page(run: Run):
    """The slow part of the run's page (bpexp.pages.prepare_run), or None when it fails (the
    page is then built whole, or warned about, by _write_pages)."""
    try:
        from bpexp import pages

        return pages.prepare_run(run.dir)
    except Exception:
        return None


def _write_pages(run: Run, page: bool = True, prepared: dict | None = None):
    """The run's report.html (when ``page``) and the outputs root's index.html; returns the
    page's path. Building pages never fails a run: one warning line instead."""
    try:
        from bpexp import pages

        path = pages.write_run(run.dir, prepared=prepared) if page else None
        pages.write_index(run.root)
        return path
    except Exception as e:
        print(f"warning: pages not built ({type(e).__name__}: {_first_line(e)})",
              file=sys.stderr)
        return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _note_in_sweep(run: Run) -> None:
    """In a multirun, leave the run folder's path in the job's sweep subfolder."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        write_json(os.path.join(hc.runtime.output_dir, "job.json"),
                   {"run_dir": str(run.dir), "overrides": list(hc.overrides.task)})
