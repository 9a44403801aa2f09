"""run_id, resume and shards through the CLI, in real processes: kill -9 at several points and
resume to bitwise-equal metrics; concurrent shards finalize once; the submitit local launcher;
config mismatch and every bad input leave the folder untouched."""

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bpexp import compare, outputs, resume

# 32 lrs x 4 seeds in chunks of 8 runs (2 lrs x 4 seeds): 16 chunks, ~0.1 s each
GRID = ["+experiment=lr_sweep", "train.steps=800", "train.record_every=50",
        "sweep.lr={start: 0.01, stop: 2.0, num: 32}", "sweep.seeds=4", "sweep.chunk_size=8",
        "sweep.progress=false", "experiment.refine_rounds=1"]
N_CHUNKS = 16


def env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}


def cli(root, *args, timeout=600, flags=()):
    return subprocess.run([sys.executable, "-m", "bpexp", *flags, *GRID, f"outputs.root={root}",
                           *args],
                          cwd=root, capture_output=True, text=True, env=env(), timeout=timeout)


def start(root, *args):
    return subprocess.Popen([sys.executable, "-m", "bpexp", *GRID, f"outputs.root={root}",
                             *args], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())


def chunks_done(run_dir) -> int:
    d = Path(run_dir) / "metrics.zarr" / "chunk_done"
    return sum(n.isdigit() for n in os.listdir(d)) if d.is_dir() else 0


def wait_for(cond, proc, timeout=300):
    t = time.time()
    while not cond():
        assert proc.poll() is None, "the process ended before the kill point"
        assert time.time() - t < timeout
        time.sleep(0.02)


def metrics(run_dir) -> dict:
    ds = xr.open_zarr(Path(run_dir) / "metrics.zarr")
    return {k: ds[k].values for k in ds.data_vars}


def assert_bitwise(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)   # NaN == NaN here


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted single-process run (same chunking) every test compares with."""
    root = tmp_path_factory.mktemp("ref")
    p = cli(root, "run_id=ref")
    assert p.returncode == 0, p.stderr[-3000:]
    d = root / "lr_sweep" / "ref"
    return {"dir": d, "metrics": metrics(d),
            "summary": json.loads((d / "summary.json").read_text())}


def test_kill_9_at_three_points_then_resume_is_bitwise_equal(tmp_path, reference):
    """As a new user: an unnamed run prints its resume command first; SIGKILL it mid-grid,
    then (with that command) while it starts up and after the last chunk but before the
    summary; the command finally finishes it with metrics equal to the reference, bitwise."""
    p = start(tmp_path)
    first = p.stdout.readline()
    assert "if it stops, resume with: python -m bpexp " in first, first
    cmd = shlex.split(first.split("resume with: ")[1])
    run_id = [a for a in cmd if a.startswith("run_id=")][0].split("=", 1)[1]
    d = tmp_path / "lr_sweep" / run_id
    wait_for(lambda: chunks_done(d) >= N_CHUNKS // 2, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    seen = [chunks_done(d)]
    assert N_CHUNKS // 2 <= seen[0] < N_CHUNKS

    def resume():
        return subprocess.Popen([sys.executable, "-m", "bpexp", *cmd[3:]], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env())

    t_env = (d / "env.json").stat().st_mtime_ns
    for cond in [lambda: (d / "env.json").stat().st_mtime_ns != t_env,    # starting up
                 lambda: chunks_done(d) == N_CHUNKS]:                       # before finalizing
        p = resume()
        wait_for(cond, p)
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert not (d / "summary.json").exists(), "killed too late: the run had finished"
        seen.append(chunks_done(d))
        assert json.loads((d / "env.json").read_text())["status"] == "running"  # no goodbye
    assert seen[2] == N_CHUNKS
    p = resume()
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    assert "continuing run" in out
    assert_bitwise(metrics(d), reference["metrics"])
    s = json.loads((d / "summary.json").read_text())
    assert s["threshold_refined"] == reference["summary"]["threshold_refined"]
    assert s["chunks_computed_by_finalizer"] == 0 and s["chunks"] == N_CHUNKS
    e = json.loads((d / "env.json").read_text())
    assert e["status"] == "finished" and e["chunks_done"] == e["chunks_total"] == N_CHUNKS
    assert len(e["processes"]) == 4 and e["processes"][-1]["status"] == "finished"
    rows = compare.latest(outputs.read_index(tmp_path))
    assert [(r["id"], r["status"]) for r in rows] == [(run_id, "finished")]
    # a rerun of a finished run does nothing and says so
    again = cli(tmp_path, f"run_id={run_id}")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert again.stdout.strip().splitlines()[-1] == f"run dir: {d}"


@pytest.mark.slow
def test_sigterm_records_interrupted_and_prints_the_resume_command(tmp_path, reference):
    d = tmp_path / "lr_sweep" / "t"
    p = start(tmp_path, "run_id=t")
    wait_for(lambda: chunks_done(d) >= 2, p)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert "terminated (SIGTERM); resume with:" in out
    cmd = out.split("resume with:")[1].strip().splitlines()[0]
    assert cmd.startswith("python -m bpexp ") and "run_id=t" in cmd
    assert json.loads((d / "env.json").read_text())["status"] == "interrupted"
    assert outputs.read_index(tmp_path)[-1]["status"] == "interrupted"
    args = shlex.split(cmd)[3:]   # the printed command, as a shell would run it
    r = subprocess.run([sys.executable, "-m", "bpexp", *args],
                       cwd=tmp_path, capture_output=True, text=True, env=env(), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_bitwise(metrics(d), reference["metrics"])


def test_three_concurrent_shards_finalize_once(tmp_path, reference):
    procs = [start(tmp_path, "run_id=s", "sweep.num_shards=3", f"sweep.shard={k}")
             for k in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    d = tmp_path / "lr_sweep" / "s"
    finalized = [o for o, _ in outs if "lr_sweep: theory vs measurement" in o]
    assert len(finalized) == 1
    others = [o for o, _ in outs if o not in finalized]
    assert all(("chunks are still missing" in o or "finished by another process" in o)
               and o.strip().splitlines()[-1] == f"run dir: {d}" for o in others)
    assert_bitwise(metrics(d), reference["metrics"])
    lines = outputs.read_index(tmp_path)             # valid JSON lines, one per process
    assert sorted(r["status"] for r in lines) == ["finished", "share done", "share done"]
    assert [r["status"] for r in compare.latest(lines)] == ["finished"]
    e = json.loads((d / "env.json").read_text())
    assert e["status"] == "finished" and len(e["processes"]) == 3
    assert sorted(p["shard"][0] for p in e["processes"]) == [0, 1, 2]
    assert sum(p.get("chunks_computed", 0) for p in e["processes"]) == N_CHUNKS
    assert os.readlink(tmp_path / "lr_sweep" / "latest") == "s"


@pytest.mark.slow
def test_a_missing_shard_is_computed_by_a_rerun_without_shard(tmp_path, reference):
    p = cli(tmp_path, "run_id=h", "sweep.num_shards=2", "sweep.shard=0")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "shard 0 of 2 computed 8 chunks; 8 of 16 chunks are still missing" in p.stdout
    assert "python -m bpexp" in p.stdout and not (tmp_path / "lr_sweep/h/summary.json").exists()
    p = cli(tmp_path, "run_id=h")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "8 of 16 chunks already in the store; computing 8" in p.stdout
    assert_bitwise(metrics(tmp_path / "lr_sweep" / "h"), reference["metrics"])


def test_submitit_local_launcher_shards(tmp_path, reference):
    """Hydra multirun with the submitit launcher: one process per shard, one finished run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    p = cli(tmp_path, "hydra/launcher=local", "run_id=sub", "sweep.num_shards=2",
            "sweep.shard=range(2)", flags=["-m"])
    assert p.returncode == 0, p.stderr[-3000:]
    d = tmp_path / "lr_sweep" / "sub"
    assert_bitwise(metrics(d), reference["metrics"])
    lines = outputs.read_index(tmp_path)             # one line per job
    assert sorted(r["status"] for r in lines) == ["finished", "share done"]
    procs = json.loads((d / "env.json").read_text())["processes"]
    assert sorted(p["shard"][0] for p in procs) == [0, 1] and len({p["pid"] for p in procs}) == 2


def _continue(run_dir, root, **change):
    """The entry point's check before a run folder is touched, in-process: the reference's
    resolved config (with ``change`` applied) against the folder ``run_dir``."""
    import yaml

    from bpexp.launch import check_continuation
    from bpexp.experiments import get as experiment_module
    from helpers import build_cfg

    tree = yaml.safe_load((run_dir / "config.yaml").read_text())
    tree["outputs"]["root"], tree["run_id"] = str(root), run_dir.name
    for dotted, v in change.items():
        node = tree
        *path, last = dotted.split("__")
        for k in path:
            node = node[k]
        node[last] = v
    module = experiment_module("lr_sweep")
    return check_continuation(module, build_cfg(tree), yaml.safe_dump(tree))


def test_config_mismatch_exits_2_naming_the_keys_touching_nothing(tmp_path, reference):
    from bpexp.errors import UserError

    d = reference["dir"]
    root = d.parent.parent
    before = snapshot(d)
    assert _continue(d, root)["status"] == "finished"      # same config: continues
    for change, expect in [({"train__steps": 1000}, "train.steps (800 there, 1000 now)"),
                           ({"sweep__chunk_size": 16}, "sweep.chunk_size (8 there, 16 now)"),
                           ({"seed": 3, "optimizer__lr": 0.5}, "seed (0 there, 3 now)")]:
        with pytest.raises(UserError) as e:
            _continue(d, root, **change)
        assert "\n" not in str(e.value) and expect in str(e.value), str(e.value)
    # progress and the shard count do not change results: they may differ on a rerun
    assert _continue(d, root, sweep__progress=True, sweep__num_shards=4) is not None
    # through the CLI: exit 2, one line, nothing in the folder touched
    p = cli(root, "run_id=ref", "train.steps=1000")
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "run_id=ref" in p.stderr and "train.steps (800 there, 1000 now)" in p.stderr
    assert snapshot(d) == before


def test_foreign_broken_and_other_layout_folders_exit_2_touching_nothing(tmp_path, reference):
    import shutil

    from bpexp.errors import UserError

    exp = tmp_path / "lr_sweep"
    (exp / "foreign").mkdir(parents=True)
    (exp / "foreign" / "notes.txt").write_text("mine")
    (exp / "other").mkdir()
    (exp / "other" / "env.json").write_text(json.dumps({"experiment": "depth_sweep",
                                                        "schema_version": 1}))
    (exp / "other" / "config.yaml").write_text("a: 1\n")
    env_ = json.loads((reference["dir"] / "env.json").read_text())
    env_["status"] = "interrupted"
    shutil.copytree(reference["dir"], exp / "layout")
    (exp / "layout" / "env.json").write_text(json.dumps(env_))
    for f in (".zattrs", ".zmetadata"):   # a store cut differently than this config cuts it
        path = exp / "layout" / "metrics.zarr" / f
        path.write_text(path.read_text().replace('"block": 2', '"block": 1'))
    (exp / "file").mkdir()
    shutil.copy(reference["dir"] / "config.yaml", exp / "file")
    (exp / "file" / "env.json").write_text(json.dumps(env_))
    (exp / "file" / "metrics.zarr").write_text("not a store")
    snaps = {n: snapshot(exp / n) for n in ("foreign", "other", "layout", "file")}
    for run_id, expect in [("foreign", "not a readable bpexp run folder"),
                           ("other", "holds a run of 'depth_sweep'"),
                           ("layout", "sweep.chunk_size=8: the store"),
                           ("file", "is not a store")]:
        with pytest.raises(UserError) as e:
            if run_id in ("layout", "file"):
                _continue(exp / run_id, tmp_path)
            else:
                _continue_raw(tmp_path, run_id)
        assert "\n" not in str(e.value) and expect in str(e.value), str(e.value)
        assert run_id in str(e.value)
        assert snapshot(exp / run_id) == snaps[run_id]
    p = cli(tmp_path, "run_id=file")                        # the same through the CLI
    assert p.returncode == 2 and "is not a store" in p.stderr, p.stderr
    assert snapshot(exp / "file") == snaps["file"]


def test_a_damaged_store_is_repaired_to_the_same_bits(tmp_path, reference):
    """Metadata that no longer parses (the group's .zattrs, an array's .zarray) is rebuilt from
    the config, a metric array's chunk files deleted or truncated are recomputed, and the
    finished run ends bitwise equal to the reference; bpexp.verify tells before and after."""
    import shutil

    from bpexp import verify

    d = tmp_path / "lr_sweep" / "ref"
    shutil.copytree(reference["dir"], d)
    z = d / "metrics.zarr"
    (z / ".zattrs").write_text("{not json")
    (z / "grad_norm" / ".zarray").write_text("garbage")
    shutil.rmtree(z / "loss")
    chunk = next(p for p in (z / "final_loss").iterdir() if p.name[0].isdigit())
    chunk.write_bytes(chunk.read_bytes()[:7])
    assert verify.problems(d)                                  # damage is seen
    p = cli(tmp_path, "run_id=ref")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "finished but damaged" in p.stdout and "rebuilt damaged metadata" in p.stdout
    assert verify.problems(d) == []
    assert_bitwise(metrics(d), reference["metrics"])


def _continue_raw(root, run_id):
    return resume.existing_run(root, "lr_sweep", run_id, "a: 1\n")


@pytest.mark.parametrize("change,expect", [
    ({"sweep": {"num_shards": 2, "shard": 0}}, "sweep.shard=0 needs run_id=NAME"),
    ({"run_id": "x", "sweep": {"num_shards": 2, "shard": 2}},
     "sweep.shard=2 is not allowed; allowed: an int in [0, sweep.num_shards=2)"),
    ({"run_id": "x", "sweep": {"num_shards": 2, "shard": -1}}, "sweep.shard=-1 is not allowed"),
    ({"run_id": "x", "sweep": {"num_shards": 2, "shard": True}}, "sweep.shard=True is not"),
    ({"run_id": "x", "sweep": {"num_shards": 0}}, "sweep.num_shards=0 must be an int >= 1"),
    ({"run_id": "a/b"}, "run_id='a/b' is not a safe folder name"),
    ({"run_id": ".."}, "run_id='..' is not a safe folder name"),
    ({"run_id": "latest"}, "run_id='latest' is not a safe folder name"),
    ({"run_id": ".hidden"}, "run_id='.hidden' is not a safe folder name"),
    ({"run_id": "x" * 101}, "is not a safe folder name"),
    ({"outputs": {"compile_cache": 3}}, "outputs.compile_cache=3 must be a folder path"),
])
def test_bad_run_and_shard_values_are_one_line(change, expect):
    from bpexp.errors import UserError
    from helpers import build_cfg

    tree = {"experiment": {"name": "lr_sweep"}, "model": {"name": "multivariate"},
            "data": {"name": "diabetes"}, **change}
    with pytest.raises(UserError) as e:
        build_cfg(tree)
    assert "\n" not in str(e.value) and expect in str(e.value), str(e.value)


def test_bad_values_through_the_cli_write_nothing(tmp_path):
    for args, expect in [(["sweep.num_shards=2", "sweep.shard=0"], "needs run_id=NAME"),
                         (["run_id=a/b"], "run_id='a/b' is not a safe folder name")]:
        p = cli(tmp_path, *args)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and expect in p.stderr, p.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_shards_need_an_experiment_that_streams():
    from bpexp.errors import UserError
    from helpers import build_cfg

    with pytest.raises(UserError, match="sweep.shard=1 is not allowed for experiment "
                                        "worked_example"):
        build_cfg({"experiment": {"name": "worked_example"}, "run_id": "w",
                   "sweep": {"num_shards": 2, "shard": 1}})
