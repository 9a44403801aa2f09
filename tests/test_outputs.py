"""bpexp.outputs: run folders, env.json, atomic files, index.jsonl, latest, failure handling
and uniqueness under parallel starts (threads and processes)."""

import concurrent.futures as cf
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import re
import secrets
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from bpexp import outputs, runfolder

RUN_ID = re.compile(r"^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}$")
ENV_KEYS = {"bpexp", "git_commit", "git_dirty", "python", "jax", "jaxlib", "optax", "backend",
            "devices", "x64", "matmul_precision", "argv", "start", "end", "status"}


def strict_json(path):
    """json.loads that rejects NaN / Infinity (they are not JSON)."""
    def bad(c):
        raise ValueError(f"non-JSON constant {c}")
    return json.loads(Path(path).read_text(), parse_constant=bad)


def index_lines(root):
    text = (Path(root) / "index.jsonl").read_text()
    assert text.endswith("\n")
    return [json.loads(s) for s in text.splitlines()]


def assert_no_tmp_files(root):
    left = [p for p in Path(root).rglob("*") if ".tmp-" in p.name]
    assert not left, left


def test_run_folder_layout(tmp_path):
    run = runfolder.Run(tmp_path, "exp", "model:\n  name: mlp\n")
    assert RUN_ID.match(run.id) and run.dir.name == run.id
    assert run.dir.parent == tmp_path / "exp" and run.dir.is_dir()
    assert (run.dir / "config.yaml").read_text() == "model:\n  name: mlp\n"
    assert (run.dir / "figures").is_dir()
    assert run.figure("loss.png") == run.dir / "figures" / "loss.png"
    assert run.path("x.txt") == run.dir / "x.txt"
    env = strict_json(run.dir / "env.json")
    assert ENV_KEYS <= set(env), ENV_KEYS - set(env)
    assert env["status"] == "running" and env["end"] is None and env["run_id"] == run.id
    assert env["experiment"] == "exp" and isinstance(env["x64"], bool)
    assert isinstance(env["devices"], list) and isinstance(env["argv"], list)
    dt.datetime.fromisoformat(env["start"])
    assert not (tmp_path / "index.jsonl").exists(), "index lines are for closed runs only"


def test_save_files_readable_without_bpexp(tmp_path):
    run = runfolder.Run(tmp_path, "exp")
    X = np.arange(15, dtype=np.float32).reshape(3, 5)
    Y = np.ones((1, 5), np.float32)
    assert run.save_data(X, Y) is True
    with np.load(run.dir / "data.npz", allow_pickle=False) as z:
        assert set(z.files) == {"X", "Y"}
        np.testing.assert_array_equal(z["X"], X)
        np.testing.assert_array_equal(z["Y"], Y)
        assert z["X"].dtype == np.float32
    import xarray as xr

    run.save_metrics(xr.Dataset({"loss": (("step", "lr"), np.linspace(1, 0, 7).reshape(7, 1))},
                                coords={"lr": [0.1]}))
    z = xr.open_zarr(run.dir / "metrics.zarr")
    assert z["loss"].dims == ("step", "lr") and z["loss"].shape == (7, 1)
    assert z["lr"].values[0] == 0.1
    run.save_summary({"a": 1, "b": [1.5, 2], "c": {"d": "e"}})
    assert strict_json(run.dir / "summary.json") == {"a": 1, "b": [1.5, 2], "c": {"d": "e"}}
    run.save_report("# Title\n\ntext\n")
    assert (run.dir / "report.md").read_text() == "# Title\n\ntext\n"
    assert_no_tmp_files(tmp_path)


def test_save_data_skips_50mb(tmp_path):
    run = runfolder.Run(tmp_path, "exp")
    big = np.zeros((6_300_000,), np.float64)  # 50.4 MB
    assert run.save_data(big, np.zeros(1)) is False
    assert not (run.dir / "data.npz").exists()


def test_finish_appends_exactly_one_index_line(tmp_path):
    run = runfolder.Run(tmp_path, "exp")
    run.finish("finished", {"loss": 0.5, "n": 3, "name": "x", "ok": True, "nested": {"a": 1},
                            "arr": [1, 2]})
    run.finish("failed", error="late")  # already closed: ignored
    lines = index_lines(tmp_path)
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == "finished" and line["id"] == run.id and line["experiment"] == "exp"
    assert Path(line["dir"]) == run.dir
    assert line["summary"] == {"loss": 0.5, "n": 3, "name": "x", "ok": True}
    env = strict_json(run.dir / "env.json")
    assert env["status"] == "finished" and env["end"] is not None and "error" not in env
    assert dt.datetime.fromisoformat(env["end"]) >= dt.datetime.fromisoformat(env["start"])
    assert os.readlink(tmp_path / "exp" / "latest") == run.id


def test_latest_points_at_newest_finished(tmp_path):
    a = runfolder.Run(tmp_path, "exp")
    a.finish("finished")
    b = runfolder.Run(tmp_path, "exp")
    b.finish("finished")
    latest = tmp_path / "exp" / "latest"
    assert latest.is_symlink() and os.readlink(latest) == b.id
    assert latest.resolve() == b.dir.resolve()
    c = runfolder.Run(tmp_path, "exp")
    c.finish("failed", error="x")
    d = runfolder.Run(tmp_path, "exp")
    d.finish("interrupted")
    assert os.readlink(latest) == b.id, "only finished runs become latest"
    assert [r["status"] for r in outputs.read_index(tmp_path)] == ["finished", "finished",
                                                                   "failed", "interrupted"]
    assert_no_tmp_files(tmp_path)


def test_open_run_records_failure_and_reraises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with runfolder.open_run(tmp_path, "exp", "a: 1\n") as run:
            run.save_summary({"partial": 1})
            raise RuntimeError("boom")
    env = strict_json(run.dir / "env.json")
    assert env["status"] == "failed" and "RuntimeError" in env["error"] and "boom" in env["error"]
    (line,) = index_lines(tmp_path)
    assert line["status"] == "failed" and "boom" in line["error"] and line["id"] == run.id
    tb = (run.dir / "error.txt").read_text()
    assert "RuntimeError" in tb and "boom" in tb
    assert not (tmp_path / "exp" / "latest").exists()
    assert_no_tmp_files(tmp_path)


def test_open_run_keyboard_interrupt(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with runfolder.open_run(tmp_path, "exp") as run:
            raise KeyboardInterrupt
    assert strict_json(run.dir / "env.json")["status"] == "interrupted"
    (line,) = index_lines(tmp_path)
    assert line["status"] == "interrupted"
    assert not (tmp_path / "exp" / "latest").exists()


def test_open_run_finishes_once(tmp_path):
    with runfolder.open_run(tmp_path, "exp") as run:  # no explicit finish: finished on exit
        pass
    with runfolder.open_run(tmp_path, "exp") as run2:
        run2.finish("finished", {"x": 1.0})
    lines = index_lines(tmp_path)
    assert [(r["id"], r["status"]) for r in lines] == [(run.id, "finished"), (run2.id, "finished")]
    assert lines[1]["summary"] == {"x": 1.0}
    assert os.readlink(tmp_path / "exp" / "latest") == run2.id


def test_non_finite_floats_become_null(tmp_path):
    run = runfolder.Run(tmp_path, "exp")
    summary = {"nan": float("nan"), "inf": np.float32(np.inf), "ninf": -math.inf, "ok": 1.5,
               "list": [1.0, float("nan")], "arr": np.array([1.0, np.inf]), "i": np.int64(3),
               "b": np.bool_(True), "nested": {"x": np.float64("nan")}}
    run.save_summary(summary)
    got = strict_json(run.dir / "summary.json")
    assert got == {"nan": None, "inf": None, "ninf": None, "ok": 1.5, "list": [1.0, None],
                   "arr": [1.0, None], "i": 3, "b": True, "nested": {"x": None}}
    run.finish("finished", {"loss": float("nan"), "best": np.float64(2.0)})
    raw = (tmp_path / "index.jsonl").read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    assert index_lines(tmp_path)[0]["summary"] == {"loss": None, "best": 2.0}


def test_read_index_filters_by_experiment(tmp_path):
    assert outputs.read_index(tmp_path) == []
    for exp in ("a", "b", "a"):
        runfolder.Run(tmp_path, exp).finish("finished")
    assert [r["experiment"] for r in outputs.read_index(tmp_path, "a")] == ["a", "a"]
    assert [r["experiment"] for r in outputs.read_index(tmp_path, "b")] == ["b"]
    assert len(outputs.read_index(tmp_path)) == 3
    assert outputs.read_index(tmp_path, "c") == []


def test_same_second_collision_retries(tmp_path, monkeypatch):
    """Two runs in the same second whose random suffix collides get distinct folders."""
    fixed = dt.datetime(2024, 1, 2, 3, 4, 5)
    monkeypatch.setattr(runfolder, "dt", types.SimpleNamespace(
        datetime=types.SimpleNamespace(now=lambda *a: fixed)))
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runfolder, "secrets", types.SimpleNamespace(
        token_hex=lambda k: next(suffixes) if k == 3 else secrets.token_hex(k)))
    r1, r2 = runfolder.Run(tmp_path, "exp"), runfolder.Run(tmp_path, "exp")
    assert (r1.id, r2.id) == ("2024-01-02_03-04-05_aaaaaa", "2024-01-02_03-04-05_bbbbbb")
    assert RUN_ID.match(r1.id) and r1.dir.is_dir() and r2.dir.is_dir()


def _make_run(root, start_at):
    """Worker (thread or spawned process): create, write and finish one run."""
    time.sleep(max(0.0, start_at - time.time()))
    run = runfolder.Run(Path(root), "par", f"pid: {os.getpid()}\n")
    run.save_summary({"pid": os.getpid(), "thread": threading.get_ident()})
    run.finish("finished", {"pid": os.getpid()})
    return run.id


def _cheap_environment():
    """Process workers skip importing JAX (~2 s each); the thread test keeps the real one."""
    outputs.environment = lambda: {k: None for k in ENV_KEYS - {"start", "end", "status"}}


def _warm():
    time.sleep(0.3)  # keep this worker busy so every worker is started before the runs
    return os.getpid()


def _check_parallel_runs(root, ids):
    assert len(ids) == 16 and len(set(ids)) == 16
    assert all(RUN_ID.match(i) for i in ids)
    assert len({i[:19] for i in ids}) < 16, "expected several runs within the same second"
    dirs = {p.name for p in (Path(root) / "par").iterdir() if p.name != "latest"}
    assert dirs == set(ids)
    lines = index_lines(root)  # every line intact and parsable
    assert len(lines) == 16 and {r["id"] for r in lines} == set(ids)
    assert all(r["status"] == "finished" for r in lines)
    assert os.readlink(Path(root) / "par" / "latest") in ids
    for i in ids:
        assert strict_json(Path(root) / "par" / i / "env.json")["status"] == "finished"
    assert_no_tmp_files(root)


def _next_second():
    return math.floor(time.time()) + 1.02


def test_parallel_runs_threads_unique(tmp_path):
    start = _next_second()
    with cf.ThreadPoolExecutor(16) as ex:
        ids = list(ex.map(_make_run, [tmp_path] * 16, [start] * 16))
    _check_parallel_runs(tmp_path, ids)


def test_parallel_runs_processes_unique(tmp_path):
    # spawn, not fork: forking a process that runs JAX's thread pools can deadlock
    with cf.ProcessPoolExecutor(4, mp_context=mp.get_context("spawn"),
                                initializer=_cheap_environment) as ex:
        pids = set(f.result() for f in [ex.submit(_warm) for _ in range(4)])
        start = _next_second()
        ids = list(ex.map(_make_run, [str(tmp_path)] * 16, [start] * 16))
    assert len(pids) >= 2
    _check_parallel_runs(tmp_path, ids)
    pids_used = {strict_json(tmp_path / "par" / i / "summary.json")["pid"] for i in ids}
    assert len(pids_used) >= 2 and os.getpid() not in pids_used


def test_figures_off_writes_the_numbers_without_pngs_or_page(tmp_path):
    """outputs.figures=false (big grids): no PNG and no report.html, but the same summary and
    store as a run with figures, report.md saying why, and the outputs index."""
    import json

    from helpers import run_experiment

    args = ("train.steps=40", "train.record_every=4", "sweep.seeds=2",
            "sweep.lr={start: 0.05, stop: 1.0, num: 6, log: true}", "experiment.refine_rounds=0")
    (tmp_path / "on").mkdir(), (tmp_path / "off").mkdir()
    on = run_experiment("lr_sweep", tmp_path / "on", *args)
    off = run_experiment("lr_sweep", tmp_path / "off", *args, "outputs.figures=false")
    assert list((on / "figures").glob("*.png")) and (on / "report.html").exists()
    assert not list(off.rglob("*.png")) and not (off / "report.html").exists()
    assert (off.parent.parent / "index.html").exists()
    assert "outputs.figures=false" in (off / "report.md").read_text()
    s_on, s_off = (json.loads((d / "summary.json").read_text()) for d in (on, off))
    for k in ("sweep_s", "compile_s"):
        s_on.pop(k), s_off.pop(k)
    assert s_on == s_off
