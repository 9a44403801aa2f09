"""The fault matrix: bad inputs, signals at any moment, every kind of store / env / index
damage, and concurrent processes of one run_id. Each case ends in one clear line, a repaired
run or a right number; never a traceback, a silent NaN or a wrong number. The session prints
the matrix's counts at the end (tests/conftest.py adds up each test's recorded
``fault_matrix`` property, so they show under xdist too). The signal and concurrency rows are
``slow``: `pytest -m slow` (and .ci/run) runs them.

Every process of the bad-input rows starts at once (module fixture) so their start-up costs
overlap; the damage and concurrency rows work on copies of one small reference run.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from bpexp import compare, outputs, verify

GRID = ["+experiment=lr_sweep", "train.steps=200", "train.record_every=20",
        "sweep.lr={start: 0.01, stop: 1.0, num: 8}", "sweep.seeds=4", "sweep.chunk_size=8",
        "sweep.progress=false", "experiment.refine_rounds=0"]
N_CHUNKS = 4

# (id, overrides after +experiment=lr_sweep, text the one line must hold)
BAD = [
    ("lr_inf", ["sweep.lr=[inf,0.1]"], "sweep.lr=inf is not a finite float32"),
    ("lr_underflows", ["sweep.lr=[1e-300]"], "is 0 in float32"),
    ("lr_overflows", ["sweep.lr=[1e300]"], "not a finite float32"),
    ("lr_zero", ["sweep.lr=[0.0,0.1]"], "sweep.lr"),
    ("lr_repeated", ["sweep.lr=[0.1,0.1]"], "lists 0.1 twice"),
    ("lr_range_repeated", ["sweep.lr={start: 0.1, stop: 0.1, num: 3}"], "repeats"),
    ("lr_nan_start", ["sweep.lr={start: nan, stop: 1, num: 3}"], "sweep.lr"),
    ("lr_huge_num", ["sweep.lr={start: 0.001, stop: 1, num: 100000000}"], "runs store up to"),
    ("seeds_repeated", ["sweep.seeds=[1,1]"], "lists 1 twice"),
    ("seeds_huge", ["sweep.seeds=2147483647"], "is more than"),
    ("steps_huge", ["train.steps=1000000000", "train.record_every=1"], "train.record_every"),
    ("init_scale_inf", ["sweep.init_scale=[inf]"], "sweep.init_scale=inf"),
    ("init_scale_neg", ["model.init_scale=-1"], "model.init_scale"),
    ("data_n_zero", ["data=synthetic", "data.n=0"], "data.n=0"),
    ("batch_above_m", ["train.batch_size=1000"], "train.batch_size=1000 is more than the 442"),
    ("features_repeated", ["data.features=[1,1]"], "lists a feature twice"),
    ("hparams_form", ["sweep.hparams={beta: [0.5]}"], "sweep.hparams.beta"),
    ("hparams_unknown", ["optimizer=momentum", "sweep.hparams={nope: [0.5]}"],
     "sweep.hparams.nope"),
    ("root_under_file", ["outputs.root=ROOT/a_file/sub"], "outputs.root="),
    ("root_is_file", ["outputs.root=ROOT/a_file"], "outputs.root="),
    ("shard_without_id", ["sweep.num_shards=2", "sweep.shard=0"], "needs run_id"),
    ("run_id_unsafe", ["run_id=../x"], "run_id="),
    ("unknown_key", ["train.nope=1"], "train.nope"),
    ("experiment_key", ["experiment.nope=1"], "experiment.nope"),
]


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}


def bpexp(root, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bpexp", *args], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
                            **kw)


def finish(p, timeout=600):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file").write_text("not a folder")
    procs = {}
    for name, args, _ in BAD:
        args = [a.replace("ROOT", str(root)) for a in args]
        out = [] if any(a.startswith("outputs.root=") for a in args) else [
            f"outputs.root={root / name}"]
        procs[name] = bpexp(root, "+experiment=lr_sweep", *out, *args)
    return root, {name: finish(p) for name, p in procs.items()}


@pytest.mark.parametrize("name,args,text", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_before_any_folder(bad_runs, name, args, text, record_property):
    root, results = bad_runs
    code, out, err = results[name]
    lines = [s for s in err.splitlines() if s.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], err
    assert "Traceback" not in err + out
    assert not (root / name / "lr_sweep").exists()      # no run folder was made
    record_property("fault_matrix", ("bad inputs", 1))


# ---------------------------------------------------------------- signals
def _wait(cond, proc, timeout=120):
    t = time.time()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout
        time.sleep(0.02)


SLOW_GRID = [*GRID[:-4], "sweep.lr={start: 0.01, stop: 1.0, num: 64}", "sweep.seeds=8",
             "sweep.chunk_size=8", "train.steps=2000", "sweep.progress=false",
             "experiment.refine_rounds=0"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["int_at_start", "int_twice_at_start", "int_twice_running",
                                  "term_running", "kill_running"])
def test_signals_end_in_one_line_or_a_resumable_run(tmp_path, case, record_property):
    """Ctrl-C (once or twice) while starting up or running, SIGTERM and kill -9 while running:
    exit 130 / 143 without a traceback, the run recorded interrupted (a killed one is shown
    interrupted: its processes are gone) and resumable."""
    p = bpexp(tmp_path, *SLOW_GRID, f"outputs.root={tmp_path}", "run_id=r")
    d = tmp_path / "lr_sweep" / "r"
    if case.endswith("at_start"):
        time.sleep(0.4)
    else:
        _wait(lambda: (d / "metrics.zarr" / "chunk_done").is_dir() and any(
            n.isdigit() for n in os.listdir(d / "metrics.zarr" / "chunk_done")), p)
    sig = {"term": signal.SIGTERM, "kill": signal.SIGKILL}.get(case.split("_")[0],
                                                             signal.SIGINT)
    p.send_signal(sig)
    if "twice" in case:
        time.sleep(0.05)
        p.send_signal(signal.SIGINT)
    code, out, err = finish(p)
    assert "Traceback" not in err + out, err
    if case == "kill_running":
        assert code == -9
        rows = compare.runs(tmp_path)
        assert [r["status"] for r in rows] == ["interrupted"], rows
    else:
        assert code == (143 if case == "term_running" else 130), (code, err)
    if case in ("term_running", "kill_running"):          # resumable: rerun completes it
        q = bpexp(tmp_path, *SLOW_GRID, f"outputs.root={tmp_path}", "run_id=r")
        code2, out2, err2 = finish(q)
        assert code2 == 0 and verify.problems(d) == [], err2[-2000:]
    record_property("fault_matrix", ("signal cases", 1))


# ---------------------------------------------------------------- damage
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    code, out, err = finish(bpexp(root, *GRID, f"outputs.root={root}", "run_id=ref"))
    assert code == 0, err[-3000:]
    d = root / "lr_sweep" / "ref"
    ds = xr.open_zarr(d / "metrics.zarr")
    return d, {k: ds[k].values for k in ds.data_vars}, json.loads((d / "summary.json")
                                                                  .read_text())


def _chunk_files(z, name):
    return sorted(p for p in (z / name).iterdir() if p.name[0].isdigit())


def _truncate(f):
    f.write_bytes(f.read_bytes()[:9])


def _reverse(f):
    f.write_bytes(f.read_bytes()[::-1])


# each case damages a copy of the reference several ways at once (how many: the number); one
# rerun repairs them all
DAMAGE = {
    "chunk files deleted, truncated, altered": (3, lambda d: (
        _chunk_files(d / "metrics.zarr", "loss")[1].unlink(),
        _truncate(_chunk_files(d / "metrics.zarr", "grad_norm")[2]),
        _reverse(_chunk_files(d / "metrics.zarr", "final_loss")[0]))),
    "array and group metadata": (2, lambda d: (
        (d / "metrics.zarr" / "loss" / ".zarray").write_text("{"),
        [(d / "metrics.zarr" / f).write_text("x") for f in (".zattrs", ".zmetadata")])),
    "env.json broken, config.yaml gone": (2, lambda d: (
        (d / "env.json").write_text("{broken"), (d / "config.yaml").unlink())),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_found_and_repaired_to_the_same_bits(tmp_path, reference, kind, record_property):
    ref_dir, ref_metrics, ref_summary = reference
    d = tmp_path / "lr_sweep" / "ref"
    shutil.copytree(ref_dir, d)
    n_kinds, damage = DAMAGE[kind]
    damage(d)
    assert verify.problems(d), kind                           # damage is seen, never silent
    code, out, err = finish(bpexp(tmp_path, *GRID, f"outputs.root={tmp_path}", "run_id=ref"))
    assert code == 0 and "Traceback" not in err, (kind, err[-2000:])
    assert verify.problems(d) == []
    ds = xr.open_zarr(d / "metrics.zarr")
    for k, v in ref_metrics.items():
        np.testing.assert_array_equal(ds[k].values, v, err_msg=f"{kind}: {k}")
    s = json.loads((d / "summary.json").read_text())
    assert s["threshold_measured"] == ref_summary["threshold_measured"]
    record_property("fault_matrix", ("damage cases", n_kinds))


def test_load_reports_damage_instead_of_silent_nan(tmp_path, reference, record_property):
    import bpexp

    d = tmp_path / "r"
    shutil.copytree(reference[0], d)
    _chunk_files(d / "metrics.zarr", "loss")[0].unlink()
    with pytest.warns(UserWarning, match="damaged chunk 0"):
        ds = bpexp.load(d)
    assert ds.attrs["damaged"] == ["chunk 0"]
    p = subprocess.run([sys.executable, "-m", "bpexp.verify", str(d)], capture_output=True,
                       text=True, env=env())
    assert p.returncode == 1 and "chunk 0" in p.stdout
    record_property("fault_matrix", ("damage cases", 1))


def test_a_bad_index_line_is_skipped_and_counted(tmp_path, reference, record_property):
    root = tmp_path
    shutil.copy(reference[0].parent.parent / "index.jsonl", root)
    with open(root / "index.jsonl", "a") as f:
        f.write("not json\n{\"id\": \"half")             # a bad line, then one cut mid-write
    outputs.append_index(root, {"id": "new", "experiment": "x", "status": "finished"})
    rows = outputs.read_index(root, warn=False)
    assert rows[-1]["id"] == "new"                          # never glued onto the cut line
    p = subprocess.run([sys.executable, "-m", "bpexp.compare", "--root", str(root)],
                       capture_output=True, text=True, env=env())
    assert p.returncode == 0 and "2 unreadable lines skipped" in p.stderr, p.stderr
    p = subprocess.run([sys.executable, "-m", "bpexp.pages", "--index", str(root)],
                       capture_output=True, text=True, env=env())
    assert p.returncode == 0 and (root / "index.html").exists(), p.stderr
    record_property("fault_matrix", ("damage cases", 1))


# ---------------------------------------------------------------- concurrency
@pytest.mark.slow
def test_processes_of_one_run_id_share_the_chunks(tmp_path, reference, record_property):
    """Three processes with the same run_id at once: every chunk is computed once in all,
    one of them finalizes, and the result is the reference bit for bit."""
    procs = [bpexp(tmp_path, *GRID, f"outputs.root={tmp_path}", "run_id=ref")
             for _ in range(3)]
    results = [finish(p) for p in procs]
    assert all(c == 0 for c, _, _ in results), [e[-1500:] for _, _, e in results]
    d = tmp_path / "lr_sweep" / "ref"
    env_ = json.loads((d / "env.json").read_text())
    computed = [p.get("chunks_computed", 0) for p in env_["processes"]]
    assert sum(computed) == N_CHUNKS, env_["processes"]
    assert env_["status"] == "finished"
    ds = xr.open_zarr(d / "metrics.zarr")
    for k, v in reference[1].items():
        np.testing.assert_array_equal(ds[k].values, v, err_msg=k)
    record_property("fault_matrix", ("concurrency cases", 1))
