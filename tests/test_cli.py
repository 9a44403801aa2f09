"""``python -m bpexp`` end to end, in subprocesses (fresh JAX, no test settings inherited).

Every subprocess of this module is started at once by one fixture (each costs seconds of
imports and compiles; they overlap), then each test waits for its own.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bpexp import data, models

RUN_ID = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}"
TIMEOUT = 420
GRADCHECK = ["+experiment=gradcheck", "experiment.depths=[1,2]"]
WORKED = ["+experiment=worked_example"]
# (id, args, key the message must name, bad value it must name, names it must list)
CONFIG_ERRORS = [
    ("model_group", ["+experiment=gradcheck", "model=nope"], "model", "nope", models.NAMES),
    ("data_group", ["+experiment=gradcheck", "data=nope"], "data", "nope", data.NAMES),
    ("experiment_group", ["+experiment=nope"], "experiment", "nope",
     ("gradcheck", "worked_example")),
    ("model_name", ["+experiment=gradcheck", "model.name=nope"], "model.name", "nope",
     models.NAMES),
    ("train_steps", ["+experiment=gradcheck", "train.steps=-5"], "train.steps", "-5", ()),
    ("model_hidden", ["+experiment=gradcheck", "model.hidden=0"], "model.hidden", "0", ()),
    ("data_m", ["+experiment=gradcheck", "data.m=-1"], "data.m", "-1", ()),
    ("optimizer_lr", ["+experiment=gradcheck", "optimizer.lr=abc"], "optimizer.lr", "abc", ()),
    ("no_experiment", [], "+experiment", "", ()),
    # values only the grid, the data, the model or the experiment can judge: still one line,
    # still before any run folder (the validation phase builds every object first)
    ("lr_negative", ["+experiment=lr_sweep", "sweep.lr={start: -1, stop: 1, num: 3}"],
     "sweep.lr", "-1", ()),
    ("lr_empty", ["+experiment=lr_sweep", "sweep.lr=[]"], "sweep.lr", "[]", ()),
    ("seeds_zero", ["+experiment=lr_sweep", "sweep.seeds=0"], "sweep.seeds", "0", ()),
    ("seeds_str", ["+experiment=lr_sweep", "sweep.seeds=[a]"], "sweep.seeds", "'a'", ()),
    ("record_every", ["+experiment=lr_sweep", "train.record_every=7"],
     "train.record_every", "7", ()),
    ("univariate_multi", ["+experiment=lr_sweep", "model=univariate"], "univariate", "n=10", ()),
    ("feature_range", ["+experiment=lr_sweep", "data.features=[99]"], "data.features", "99", ()),
    ("hparam_gd", ["+experiment=lr_sweep", "+sweep.hparams.beta1=[0.5]"],
     "sweep.hparams.beta1", "gd", ()),
    ("hidden_list", ["+experiment=lr_sweep", "model=two_layer_sigmoid", "model.hidden=[4,4]"],
     "model.hidden", "[4, 4]", ()),
    ("toy_lrs", ["+experiment=landscape", "experiment.toy_lrs=abc"],
     "experiment.toy_lrs", "abc", ()),
    ("data_m_big", ["+experiment=lr_sweep", "data.m=100000"], "data.m", "100000", ("442",)),
    ("softmax_one_row", ["+experiment=lr_sweep", "model=mlp", "model.output=softmax_ce"],
     "model.output", "softmax_ce", ()),
]


def clean_env():
    """The parent's environment minus JAX/XLA settings (the tests' x64 must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Job:
    """``python -m bpexp ARGS outputs.root=<cwd>/out`` running in its own folder."""

    def __init__(self, cwd: Path, args):
        self.cwd, self.root = cwd, cwd / "out"
        cwd.mkdir(parents=True)
        self.stdout_f, self.stderr_f = open(cwd / "stdout.txt", "w"), open(cwd / "stderr.txt", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bpexp", *args, f"outputs.root={self.root}"],
            cwd=cwd, env=clean_env(), stdout=self.stdout_f, stderr=self.stderr_f)

    def wait(self):
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.stdout_f.close()
            self.stderr_f.close()
        return rc, (self.cwd / "stdout.txt").read_text(), (self.cwd / "stderr.txt").read_text()


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    """Start the subprocesses of every selected test of this module at once."""
    commands = {"gradcheck": GRADCHECK, "worked_example": WORKED,
                **{name: args for name, args, *_ in CONFIG_ERRORS}}
    wanted = set()
    for item in request.session.items:
        if getattr(item, "module", None) is not sys.modules[__name__]:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "name" in callspec.params:
            wanted.add(callspec.params["name"])
        else:
            wanted |= {k for k in ("gradcheck", "worked_example") if k in item.name}
    base = tmp_path_factory.mktemp("cli")
    started = {name: Job(base / name, commands[name]) for name in commands if name in wanted}
    yield started
    for job in started.values():
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def strict_json(path):
    def bad(c):
        raise ValueError(f"non-JSON constant {c}")
    return json.loads(Path(path).read_text(), parse_constant=bad)


def finished_run(job, experiment):
    """Checks shared by successful runs; returns the run folder."""
    rc, out, err = job.wait()
    assert rc == 0, f"exit {rc}\nstdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"run dir: (.+)", last)
    assert m, f"last stdout line is {last!r}"
    run_dir = Path(m[1])
    if not run_dir.is_absolute():
        run_dir = job.cwd / run_dir
    assert run_dir.is_dir() and re.fullmatch(RUN_ID, run_dir.name)
    assert run_dir.parent.resolve() == (job.root / experiment).resolve()
    for f in ("config.yaml", "env.json", "summary.json", "report.md"):
        assert (run_dir / f).is_file() and (run_dir / f).stat().st_size > 0, f
    env = strict_json(run_dir / "env.json")
    assert env["status"] == "finished" and env["end"] is not None
    lines = [json.loads(s) for s in (job.root / "index.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["status"] == "finished" and lines[0]["id"] == run_dir.name
    assert lines[0]["experiment"] == experiment
    assert os.readlink(job.root / experiment / "latest") == run_dir.name
    assert not [p for p in job.root.rglob("*") if ".tmp-" in p.name]
    return run_dir, env


def is_png(path):
    return Path(path).is_file() and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_gradcheck_experiment(jobs):
    run_dir, env = finished_run(jobs["gradcheck"], "gradcheck")
    assert env["x64"] is True, "the experiment itself switches float64 on"
    s = strict_json(run_dir / "summary.json")
    assert set(s) == {"dtype", "models", "passed"}
    assert s["dtype"] == "float64" and s["passed"] is True
    for name in ("univariate", "multivariate", "two_layer_linear", "two_layer_sigmoid", "logistic"):
        assert name in s["models"], name
    assert any(k.startswith("mlp") for k in s["models"])
    for name, r in s["models"].items():
        assert set(r) == {"rel_err_autodiff", "rel_err_fd", "n_params"}, name
        assert isinstance(r["rel_err_autodiff"], float) and isinstance(r["rel_err_fd"], float), name
        assert (isinstance(r["n_params"], int) and not isinstance(r["n_params"], bool)
                and r["n_params"] > 0)
        assert 0 <= r["rel_err_autodiff"] < 1e-10, (name, r)
        assert 0 <= r["rel_err_fd"] < 1e-6, (name, r)
    assert is_png(run_dir / "figures" / "gradcheck_errors.png")
    shows = (run_dir / "report.md").read_text().split("## What this run shows\n\n")[1]
    worst = max(r["rel_err_autodiff"] for r in s["models"].values())
    worst_fd = max(r["rel_err_fd"] for r in s["models"].values())
    assert f"All {len(s['models'])} models pass" in shows
    assert f"{worst:.1e} relative at worst" in shows and f"is {worst_fd:.1e} (" in shows


def _sig(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_worked_example_experiment(jobs):
    run_dir, env = finished_run(jobs["worked_example"], "worked_example")
    s = strict_json(run_dir / "summary.json")
    # Lecture 5 s.8 by hand: x = [1, 2], W1 = [.5, .5], b1 = 0, W2 = .5, b2 = 0, y = 1, lr = .5
    x, y, lr = (1.0, 2.0), 1.0, 0.5
    z1 = 0.5 * x[0] + 0.5 * x[1]
    a1 = _sig(z1)
    z2 = 0.5 * a1
    a2 = _sig(z2)
    d2 = -2 * (y - a2) * a2 * (1 - a2)
    d1 = 0.5 * d2 * a1 * (1 - a1)
    expect = {"forward": {"z1": z1, "a1": a1, "z2": z2, "a2": a2, "loss": (y - a2) ** 2},
              "grads": {"W1": [d1 * x[0], d1 * x[1]], "b1": d1, "W2": d2 * a1, "b2": d2},
              "updated": {"W1": [0.5 - lr * d1 * x[0], 0.5 - lr * d1 * x[1]],
                          "W2": 0.5 - lr * d2 * a1}}
    for section, values in expect.items():
        assert set(values) <= set(s[section]), (section, s[section])
        for k, v in values.items():
            got = s[section][k]
            if isinstance(v, list):
                assert isinstance(got, list) and len(got) == len(v), (section, k, got)
                assert all(abs(g - e) < 1e-6 for g, e in zip(got, v)), (section, k, got, v)
            else:
                assert isinstance(got, float) and abs(got - v) < 1e-6, (section, k, got, v)
    assert is_png(run_dir / "figures" / "backprop_flow.png")
    # the report's opening claims, against the hand computation above
    shows = (run_dir / "report.md").read_text().split("## What this run shows\n\n")[1]
    shows = shows.split("\n")[0]
    assert f"a2 = {a2:.4f}" in shows and f"loss {(y - a2) ** 2:.4f}" in shows
    assert f"delta1 = {d1:.5f}" in shows and f"dW1 = [{d1 * x[0]:.5f}, {d1 * x[1]:.5f}]" in shows
    lecture = s["lecture"]
    n_ok = sum(v["matches"] for v in lecture.values())
    assert f"{n_ok} of {len(lecture)} numbers match" in shows
    assert f"{s['max_abs_diff_vs_autodiff']:.1e}" in shows


@pytest.mark.parametrize("name,args,key,value,listed", CONFIG_ERRORS,
                         ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors_are_one_line(jobs, name, args, key, value, listed):
    job = jobs[name]
    rc, out, err = job.wait()
    assert rc == 2, (rc, err)
    lines = [s for s in err.splitlines() if s.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert key in line and value in line, line
    assert all(n in line for n in listed), line
    if name == "no_experiment":
        assert "+experiment=" in line
    assert not list(job.cwd.rglob("env.json")), "no run folder is made for bad input"
    assert not (job.root / "index.jsonl").exists()


def test_list_form_of_sweep_lr_works(tmp_path):
    """sweep.lr may be a list where the experiment's YAML gives a {start, stop, num} dict."""
    from helpers import run_experiment

    run_dir = run_experiment("lr_sweep", tmp_path, "sweep.lr=[0.01,0.1]", "sweep.seeds=2",
                             "train.steps=20")
    s = strict_json(run_dir / "summary.json")
    assert s["lrs"] == [0.01, 0.1] and s["runs"] == 4


def test_a_bug_is_a_traceback_in_error_txt_and_one_line(tmp_path):
    """Any exception other than a UserError is a bug: exit 1, one line naming it, the whole
    traceback in error.txt, the run recorded failed; never shown as a config error."""
    code = ("import sys; import bpexp.experiments.worked_example as w\n"
            "def broken(cfg, run):\n    raise ZeroDivisionError('injected bug')\n"
            "w.compute = broken\n"
            "from bpexp.__main__ import main\nfrom bpexp.cli import run as cli\n"
            f"sys.argv = ['bpexp', '+experiment=worked_example', 'outputs.root={tmp_path}']"
            "\ncli(main)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 1, p.stderr
    lines = [s for s in p.stderr.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: a bug in bpexp (ZeroDivisionError: injected bug)"), p.stderr
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("run dir: "))
    tb = (run_dir / "error.txt").read_text()
    assert "Traceback" in tb and "def broken" not in tb and "injected bug" in tb and "broken" in tb
    assert strict_json(run_dir / "env.json")["status"] == "failed"
    assert json.loads((tmp_path / "index.jsonl").read_text())["status"] == "failed"
