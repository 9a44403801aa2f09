"""The figure helper (bpexp.render): PNGs drawn in a second process are the same bytes as drawn
inline, its jobs run at the same time in forked children, asked values (the run's page) come
back equal to the ones computed here, errors come back as themselves, the helper never
outlives the run, and the command line keeps its outputs with the helper on or off."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bpexp import outputs, plots, render
from helpers import run_experiment


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}


@pytest.fixture
def pool(monkeypatch):
    """A helper that can import tests/render_jobs.py."""
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        here, os.environ.get("PYTHONPATH")])))
    render.close()
    render.configure(True, "true", "lr_sweep")
    assert render.active()
    yield render
    render.close()


def _line_figure(title="loss"):
    fig, ax = plots.slide()
    x = np.linspace(1e-3, 10, 200)
    ax.plot(x, np.exp(-x) + 1e-3, **plots.style(0))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title)
    return fig


def test_offloaded_figure_is_the_same_png_as_inline(tmp_path, pool):
    plots.save(_line_figure(), tmp_path / "helper.png")   # handed over
    done = render.drain()
    assert set(done) == {"helper.png"} and done["helper.png"] > 0
    assert outputs.FIGURE_S["helper.png"] == done["helper.png"]
    render.close()
    assert not render.active()
    plots.save(_line_figure(), tmp_path / "inline.png")   # no helper: drawn here
    a, b = (tmp_path / "helper.png").read_bytes(), (tmp_path / "inline.png").read_bytes()
    assert a[:8] == b"\x89PNG\r\n\x1a\n" and a == b


def test_figure_functions_by_name_draw_the_same_bytes(tmp_path, pool):
    from bpexp.experiments.lr_sweep import figures

    steps = np.arange(0, 100, 5)
    lrs = np.geomspace(1e-3, 1, 8)
    loss = np.exp(-np.outer(lrs, steps) / 10) + 0.1
    loss[-1] = np.exp(steps / 20)
    args = (steps, loss, lrs)
    render.draw("bpexp.experiments.lr_sweep.figures:loss_curves_by_lr", *args,
                tmp_path / "a.png", title="by name", thr=0.3)
    assert set(render.drain()) == {"a.png"}
    render.close()                                   # now inline, in this process
    figures.loss_curves_by_lr(*args, tmp_path / "b.png", title="by name", thr=0.3)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_a_too_wide_figure_fails_at_drain_as_an_aspect_error(tmp_path, pool):
    fig, ax = plots.plt.subplots(figsize=(20, 4))
    ax.plot([0, 1], [0, 1])
    plots.save(fig, tmp_path / "strip.png")
    with pytest.raises(plots.AspectError, match="strip.png"):
        render.drain()
    assert not (tmp_path / "strip.png").exists()
    plots.save(_line_figure(), tmp_path / "after.png")   # the helper goes on
    assert set(render.drain()) == {"after.png"}


def test_an_error_in_a_figure_function_comes_back_as_itself(tmp_path, pool):
    render.draw("bpexp.experiments.lr_sweep.figures:loss_curves_by_lr", np.arange(3),
                np.ones((2, 4)), np.ones(2), tmp_path / "bad.png")   # shapes disagree
    with pytest.raises(ValueError) as e:
        render.drain()
    assert "figure helper" in "".join(getattr(e.value, "__notes__", []))


def test_an_unpicklable_figure_is_drawn_here(tmp_path, pool):
    fig = _line_figure()
    fig.axes[0].xaxis.set_major_formatter(plots.matplotlib.ticker.FuncFormatter(
        lambda x, pos: f"{x:g}"))            # a lambda does not pickle
    assert not render.offload(fig, tmp_path / "x.png")
    plots.save(fig, tmp_path / "x.png")
    assert (tmp_path / "x.png").exists() and render.drain() == {}


def test_jobs_run_in_forked_children_and_their_values_come_back(pool):
    tickets = [render.ask("render_jobs:pid") for _ in range(3)]
    pids = [t.get() for t in tickets]
    helper = render._POOL.proc.pid
    assert all(isinstance(p, int) for p in pids) and helper not in pids
    assert len(set(pids)) == 3     # one child per job
    assert [t.get() for t in tickets] == pids   # asked again: the same value, no new wait
    assert render.drain() == {}


@pytest.mark.skipif(render.usable_cores() < 2, reason="jobs run at the same time only with "
                                                      "2 or more cores")
def test_two_jobs_run_at_the_same_time(tmp_path, pool):
    a, b = tmp_path / "a", tmp_path / "b"
    first = render.ask("render_jobs:meet", str(a), str(b))
    second = render.ask("render_jobs:meet", str(b), str(a))
    assert first.get() is True and second.get() is True   # each saw the other's file


def test_a_failed_ask_is_its_tickets_alone(tmp_path, pool):
    bad = render.ask("render_jobs:fail", "no page today")
    render.draw("bpexp.experiments.lr_sweep.figures:loss_curves_by_lr", np.arange(4),
                np.ones((2, 4)), np.array([0.1, 1.0]), tmp_path / "ok.png")
    assert set(render.drain()) == {"ok.png"}          # drain does not raise it
    assert bad.get() is None and "ValueError: no page today" in bad.error


def test_a_value_that_does_not_pickle_is_the_tickets_error(pool):
    t = render.ask("render_jobs:unpicklable")
    assert t.get() is None and "does not pickle" in t.error
    assert render.ask("render_jobs:pid").get() > 0   # the stream goes on


def test_a_child_that_dies_is_an_error_and_the_helper_goes_on(tmp_path, pool):
    render.draw("os:_exit", 3)                        # dies without answering
    gone = render.ask("os:_exit", 4)
    with pytest.raises(render.FigureError, match="status"):
        render.drain()
    assert gone.get() is None and "status" in gone.error
    plots.save(_line_figure(), tmp_path / "after.png")
    assert set(render.drain()) == {"after.png"} and render.active()


def test_the_helper_warms_up_a_light_experiment_and_never_imports_jax(tmp_path, pool):
    """lr_sweep's module imports without JAX: the helper holds it and the page's stack, so
    the run asks it for the page. worked_example's needs JAX: the helper leaves it (and JAX)
    to the run, which then prepares its page itself; an unknown name is the same."""
    has = "sys:modules.__contains__"
    assert render.warm("lr_sweep") and not render.warm("worked_example")
    assert render.ask(has, "bpexp.experiments.lr_sweep").get() is True
    assert render.ask(has, "xarray").get() is True and render.ask(has, "jax").get() is False
    for name in ("worked_example", "no_such_experiment"):
        render.close()
        render.configure(True, "true", name)
        assert not render.warm(name)
        assert render.ask(has, "jax").get() is False
        assert render.ask(has, "xarray").get() is False
        plots.save(_line_figure(), tmp_path / f"{name}.png")   # figures as always
        assert set(render.drain()) == {f"{name}.png"}


@pytest.mark.parametrize("argv,cores,want", [
    (["+experiment=lr_sweep"], 2, True),
    (["+experiment=lr_sweep"], 1, False),
    (["+experiment=lr_sweep", "outputs.figure_worker=true"], 1, True),
    (["+experiment=lr_sweep", "outputs.figure_worker=false"], 2, False),
    (["+experiment=lr_sweep", "outputs.figures=false"], 2, False),
    (["+experiment=lr_sweep", "outputs.figures=false", "outputs.figure_worker=true"], 2, False),
    (["+experiment=lr_sweep", "-m"], 2, False),
    (["+experiment=lr_sweep", "--cfg", "job"], 2, False),
    (["--help"], 2, False),
])
def test_which_command_lines_start_a_helper(argv, cores, want, monkeypatch):
    monkeypatch.setattr(render, "usable_cores", lambda: cores)
    assert render.wanted(argv) is want


def test_the_helper_leaves_when_its_run_is_killed(tmp_path):
    """kill -9 of the run: the helper sees its stdin close and exits."""
    code = ("import os, sys, time\nfrom bpexp import render\n"
            "render.configure(True, 'true')\nprint(render._POOL.proc.pid, flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env=clean_env())
    helper = int(p.stdout.readline())
    os.kill(helper, 0)                          # running
    p.send_signal(signal.SIGKILL)
    p.wait()
    for _ in range(100):
        try:
            os.kill(helper, 0)
        except ProcessLookupError:
            break
        try:                                    # reap it if it is our grandchild's zombie
            os.waitpid(helper, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    else:
        pytest.fail(f"helper {helper} still alive after its run was killed")


def test_the_command_line_writes_the_same_pngs_with_the_helper_on_or_off(tmp_path):
    args = ("train.steps=40", "train.record_every=4", "sweep.seeds=2",
            "sweep.lr={start: 0.01, stop: 1.0, num: 6, log: true}", "experiment.refine_rounds=1",
            "sweep.progress=false")
    on = run_experiment("lr_sweep", tmp_path, *args, "outputs.figure_worker=true",
                        "run_id=on")
    off = run_experiment("lr_sweep", tmp_path, *args, "outputs.figure_worker=false",
                         "run_id=off")
    import json

    t_on = json.loads((on / "env.json").read_text())["timings"]
    t_off = json.loads((off / "env.json").read_text())["timings"]
    assert t_on["figure_helper"] == 1.0 and t_off["figure_helper"] == 0.0
    names = sorted(p.name for p in (off / "figures").iterdir())
    assert names == sorted(p.name for p in (on / "figures").iterdir()) and len(names) == 3
    for n in names:
        assert (on / "figures" / n).read_bytes() == (off / "figures" / n).read_bytes(), n
        assert f"figure {n}" in t_on and f"figure {n}" in t_off
    assert (on / "report.html").exists() and (off / "report.html").exists()
    on_s = json.loads((on / "summary.json").read_text())
    off_s = json.loads((off / "summary.json").read_text())
    for k in ("lrs", "diverged_fraction", "threshold_refined"):
        assert on_s[k] == off_s[k]
    # the page's slow part, prepared in the helper (as the run did) and here: the same
    from bpexp import pages

    render.close()
    render.configure(True, "true", "lr_sweep")
    there = render.ask("bpexp.pages:prepare_run", str(on)).get()
    render.close()
    here = pages.prepare_run(on)
    assert there == here and there["main"] and there["rest"]


def test_a_bad_figure_worker_value_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=lr_sweep",
                        f"outputs.root={tmp_path}", "outputs.figure_worker=maybe"],
                       capture_output=True, text=True, env=clean_env(), cwd=tmp_path)
    assert p.returncode == 2
    lines = [s for s in p.stderr.splitlines() if s.strip()]
    assert len(lines) == 1 and "outputs.figure_worker='maybe'" in lines[0] \
        and "auto, true, false" in lines[0], p.stderr
    assert not (tmp_path / "lr_sweep").exists()
