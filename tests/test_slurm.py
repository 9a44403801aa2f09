"""One grid over Slurm jobs, on a real one-node Slurm (tests/cluster/slurm-up) through Hydra's
submitit launcher: the README's sharded command, a job signalled as at its time limit and
requeued, a job cancelled and its shard redone, job arrays' parallelism. Every result is
bitwise equal to one process running the same grid.

Marked ``slurm``: ``pytest -m slurm -n 0`` (.ci/run does, after installing Debian's slurmctld,
slurmd, slurm-client and munge). Without Slurm the tests skip with one line, except under CI
(the environment variable CI set), where a missing Slurm fails them.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from bpexp import outputs, verify

pytestmark = pytest.mark.slurm
UP = Path(__file__).parent / "cluster" / "slurm-up"
GRID = ["+experiment=lr_sweep", "model=multivariate", "data=diabetes", "train.steps=400",
        "train.record_every=20", "sweep.lr={start: 0.01, stop: 1.0, num: 32}", "sweep.seeds=4",
        "sweep.chunk_size=8", "sweep.progress=false", "experiment.refine_rounds=0"]
N_CHUNKS = 16
# the README's launcher overrides (section "Run on a Slurm cluster")
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug",
         "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Slurm for this module; SLURM_CONF in the environment of every process."""
    if shutil.which("slurmctld") is None and not Path("/usr/sbin/slurmctld").exists():
        msg = "Slurm is not installed (Debian: apt-get install slurmctld slurmd slurm-client munge)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    d = tmp_path_factory.mktemp("slurm")
    p = subprocess.run([str(UP), "start", str(d)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(p.stderr.strip())
        pytest.skip(p.stderr.strip().splitlines()[-1])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["SLURM_CONF"] = str(d / "slurm.conf")
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin"
    yield {"dir": d, "env": env}
    subprocess.run([str(UP), "stop", str(d)], timeout=60)


def bpexp(cluster, root, *args, wait=True):
    p = subprocess.Popen([sys.executable, "-m", "bpexp", *args, f"outputs.root={root}"],
                         cwd=root, env=cluster["env"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if not wait:
        return p
    out, err = p.communicate(timeout=600)
    return p.returncode, out, err


def metrics(d):
    ds = xr.open_zarr(Path(d) / "metrics.zarr")
    return {k: ds[k].values for k in ds.data_vars}


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """The same grid in one process, no launcher."""
    root = tmp_path_factory.mktemp("ref")
    code, out, err = bpexp(cluster, root, *GRID, "run_id=ref")
    assert code == 0, err[-3000:]
    return metrics(root / "lr_sweep" / "ref")


def assert_bitwise(d, ref):
    got = metrics(d)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def squeue(cluster) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                         env=cluster["env"]).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def wait_until(cond, timeout=300, proc=None):
    t = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended first: {proc.communicate()}")
        assert time.time() - t < timeout, "timed out"
        time.sleep(0.2)


def chunks_done(d) -> int:
    p = Path(d) / "metrics.zarr" / "chunk_done"
    return sum(n.isdigit() for n in os.listdir(p)) if p.is_dir() else 0


def test_the_readme_sharded_command_equals_one_process(cluster, reference, tmp_path):
    """The README's command over 3 Slurm jobs: one finished run, bitwise equal to one
    process, one valid index line per job."""
    code, out, err = bpexp(cluster, tmp_path, "-m", *SLURM, *GRID, "run_id=s",
                           "sweep.num_shards=3", "sweep.shard=range(3)")
    assert code == 0, err[-3000:]
    d = tmp_path / "lr_sweep" / "s"
    assert json.loads((d / "env.json").read_text())["status"] == "finished"
    assert_bitwise(d, reference)
    lines = outputs.read_index(tmp_path, warn=False)
    assert len(lines) == 3 and sorted(r["status"] for r in lines) == [
        "finished", "share done", "share done"]
    envs = json.loads((d / "env.json").read_text())["processes"]
    assert sorted(p["shard"][0] for p in envs) == [0, 1, 2]
    assert all(p.get("host") for p in envs)
    assert "multirun" in out and "threshold_measured" in out


def test_a_job_at_its_time_limit_is_requeued_and_resumes(cluster, reference, tmp_path):
    """USR2 is what Slurm sends a submitit job before its time limit: submitit checkpoints
    (Hydra's launcher resubmits the same job) and requeues it; the requeued job continues
    the store, and the run ends bitwise equal."""
    slow = [a for a in GRID if not a.startswith("train.steps=")] + ["train.steps=3000"]
    p = bpexp(cluster, tmp_path, "-m", *SLURM, "hydra.launcher.max_num_timeout=3",
              "hydra.launcher.signal_delay_s=60", *slow, "run_id=t", "sweep.num_shards=1",
              "sweep.shard=0", wait=False)
    d = tmp_path / "lr_sweep" / "t"
    wait_until(lambda: chunks_done(d) >= 2, proc=p)
    (job, _), = [j for j in squeue(cluster) if j[1] == "RUNNING"]
    subprocess.run(["scancel", "--signal=USR2", job], check=True, env=cluster["env"])
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    procs = json.loads((d / "env.json").read_text())["processes"]
    assert len(procs) >= 2 and procs[-1]["status"] == "finished", procs
    assert procs[0]["status"] in ("interrupted", "killed"), procs
    assert procs[-1]["chunks_computed"] < N_CHUNKS                 # it continued the store
    code, _, e = bpexp(cluster, tmp_path, *slow, "run_id=t1")   # the same grid, one process
    assert code == 0, e[-2000:]
    assert_bitwise(d, metrics(tmp_path / "lr_sweep" / "t1"))


def test_a_cancelled_job_leaves_its_shard_missing_and_a_rerun_computes_only_that(
        cluster, reference, tmp_path):
    # small chunks of long runs: the cancel lands while shard 0 (running first, alone) is busy
    slow = [*GRID, "train.steps=6000", "sweep.chunk_size=2"]
    p = bpexp(cluster, tmp_path, "-m", *SLURM, "hydra.launcher.array_parallelism=1", *slow,
              "run_id=c", "sweep.num_shards=2", "sweep.shard=range(2)", wait=False)
    d = tmp_path / "lr_sweep" / "c"
    wait_until(lambda: chunks_done(d) >= 2, proc=p)
    running = [j for j, st in squeue(cluster) if st == "RUNNING"]
    subprocess.run(["scancel", *running], check=True, env=cluster["env"])
    # the other shard runs to its end; then stop waiting, as a user would (the launcher learns
    # of a cancelled job from Slurm's accounting, which this one-node cluster does not keep)
    wait_until(lambda: not squeue(cluster), timeout=600)
    p.terminate()
    p.communicate(timeout=120)
    missing = 4 * N_CHUNKS - chunks_done(d)
    assert missing > 0 and json.loads((d / "env.json").read_text())["status"] != "finished"
    code, out, err = bpexp(cluster, tmp_path, *slow, "run_id=c")
    assert code == 0, err[-3000:]
    assert f"computing {missing}" in out
    procs = json.loads((d / "env.json").read_text())["processes"]
    assert procs[-1]["chunks_computed"] == missing
    code, _, e = bpexp(cluster, tmp_path, *slow, "run_id=c1")
    assert code == 0, e[-2000:]
    assert_bitwise(d, metrics(tmp_path / "lr_sweep" / "c1"))
    assert verify.problems(d) == []


def test_job_arrays_respect_their_parallelism(cluster, reference, tmp_path):
    """hydra.launcher.array_parallelism=1: the array's jobs run one after another (Slurm's
    job completion log: no two overlap), and the run is still bitwise equal."""
    log = cluster["dir"] / "jobcomp.log"
    before = log.read_text() if log.exists() else ""
    code, out, err = bpexp(cluster, tmp_path, "-m", *SLURM, "hydra.launcher.array_parallelism=1",
                           *GRID, "run_id=a", "sweep.num_shards=2", "sweep.shard=range(2)")
    assert code == 0, err[-3000:]

    def completed() -> list[str]:
        """This test's job records (slurmctld writes a job's record a moment after the job
        ends, so an earlier test's record can land after ``before`` was read)."""
        text = log.read_text()[len(before):] if log.exists() else ""
        return [line for line in text.splitlines() if f"WorkDir={tmp_path} " in line]

    wait_until(lambda: len(completed()) >= 2, timeout=60)
    new = "\n".join(completed())
    spans = sorted((m["start"], m["end"]) for m in re.finditer(
        r"StartTime=(?P<start>\S+) EndTime=(?P<end>\S+)", new))
    assert len(spans) == 2, new
    assert spans[0][1] <= spans[1][0], spans                       # one at a time
    assert_bitwise(tmp_path / "lr_sweep" / "a", reference)


def test_the_readme_spells_the_tested_commands():
    """README's "Run on a Slurm cluster" holds the launcher overrides these tests use."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Run on a Slurm cluster"):]
    section = section[:section.index("\n## ", 3)]
    for arg in SLURM + ["sweep.num_shards=3", "'sweep.shard=range(3)'",
                        "hydra.launcher.array_parallelism=1", "hydra.launcher.max_num_timeout=3",
                        "tests/cluster/slurm-up start"]:
        assert arg in section, arg
