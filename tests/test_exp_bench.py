"""bench on a tiny grid through the CLI writes its schema with consistent numbers."""

import json
import os

import pytest

import bpexp
from bpexp.errors import UserError
from helpers import build_cfg, run_experiment

KEYS = ("backend", "runs", "steps", "engine_s", "loop_s", "naive_s", "speedup_vs_loop",
        "speedup_vs_naive", "gflops", "gemm_peak_gflops", "frac_of_peak", "compile_s",
        "manual_s", "autodiff_s", "peak_rss_mb")


@pytest.mark.slow
def test_bench_tiny(tmp_path):
    run_dir = run_experiment("bench", tmp_path, "experiment.size=tiny", "experiment.repeats=1",
                             "experiment.naive_runs=2", "experiment.scaling=[10,40]",
                             "experiment.scaling_steps=10", "experiment.gemm_n=256")
    s = json.loads(open(f"{run_dir}/summary.json").read())
    assert set(KEYS) <= set(s)
    assert s["runs"] == 8 and s["steps"] == 20 and s["backend"] == "cpu"
    # the derived numbers are the ratios of the measured ones
    assert s["speedup_vs_loop"] == pytest.approx(s["loop_s"] / s["engine_s"])
    assert s["speedup_vs_naive"] == pytest.approx(s["naive_s"] / s["engine_s"])
    weights = 64 * 8 + 8 * 10
    assert s["gflops"] == pytest.approx(6 * weights * 200 * 20 * 8 / s["engine_s"] / 1e9)
    assert s["frac_of_peak"] == pytest.approx(s["gflops"] / s["gemm_peak_gflops"])
    assert [r["runs"] for r in s["scaling"]] == [10, 40]
    assert all(v > 0 for v in (s["engine_s"], s["loop_s"], s["naive_s"], s["gemm_peak_gflops"],
                               s["peak_rss_mb"]))
    assert os.path.getsize(f"{run_dir}/figures/times.png") > 5000
    ds = bpexp.load(run_dir)
    assert ds["engine_times"].dims == ("repeat",) and ds["repeat"].values.tolist() == [0]
    assert ds["engine_times"].values.tolist() == s["engine_times"]
    assert ds["scaling_runs"].values.tolist() == [10, 40]
    for k in ("seconds", "runs_per_s", "chunks", "chunk_size"):
        assert ds[f"scaling_{k}"].dims == ("scaling_runs",), k
        assert ds[f"scaling_{k}"].values.tolist() == [r[k] for r in s["scaling"]], k
    assert float(ds["scaling_seconds"].sel(scaling_runs=40)) == s["scaling"][1]["seconds"]
    shows = open(f"{run_dir}/report.md").read().split("## What this run shows\n\n")[1]
    assert f"{s['loop_s'] / s['engine_s']:.1f}x faster than a loop of compiled runs" in shows
    assert f"{s['gflops'] / s['gemm_peak_gflops']:.0%} of this machine's GEMM peak" in shows
    assert f"({s['autodiff_s'] / s['engine_s']:.2f}x)" in shows
    # the README block: every timing masked in the reproduction check, shown otherwise
    from bpexp import docs
    from bpexp.experiments import bench
    rec = {"summary": s, "command": "python -m bpexp +experiment=bench", "machine": {}}
    assert f"| {s['engine_s']:.2f} |" in bench.readme(rec)
    docs.MASK = True
    try:
        masked = bench.readme(rec)
    finally:
        docs.MASK = False
    assert f"{s['engine_s']:.2f}" not in masked and masked.count("(machine-dependent)") >= 12


@pytest.mark.parametrize("exp", [
    {"size": "huge"}, {"repeats": 0}, {"naive_runs": 0}, {"scaling_steps": 0},
    {"gemm_n": -1}, {"scaling": [10, 0]}, {"scaling": [2.5]}])
def test_validate_rejects_bad_experiment_values(exp):
    """One-line UserError naming the key and the value, before anything runs."""
    (key, value), = exp.items()
    with pytest.raises(UserError, match=f"experiment.{key}=") as e:
        build_cfg({"experiment": {"name": "bench", **exp}})
    assert repr(value) in str(e.value) and "allowed" in str(e.value)
    assert "\n" not in str(e.value)


def test_validate_accepts_an_empty_scaling():
    build_cfg({"experiment": {"name": "bench", "scaling": []}})


def test_save_without_scaling_writes_an_empty_scaling_axis(tmp_path):
    """experiment.scaling=[]: the Dataset keeps its dims, the scaling arrays are empty."""
    from bpexp import config, store
    from bpexp.experiments import bench as B

    class FakeRun:
        def save_metrics(self, ds):
            store.write_dataset(tmp_path / store.STORE, ds)

    res = B.Result(backend="cpu", devices=["cpu:0"], runs=8, m=200, flops=1e9, compile_s=0.1,
                   engine_s=0.5, engine_times=[0.5, 0.6], autodiff_s=0.7, loop_s=1.0,
                   naive_s=2.0, naive_runs_timed=2, gemm_peak_gflops=10.0, peak_rss_mb=100.0,
                   scaling=[])
    s = B.save(config.Cfg(experiment=B.Params(size="tiny", scaling=[])), FakeRun(), res)
    assert s["scaling"] == []
    ds = bpexp.load(tmp_path)
    assert ds["engine_times"].values.tolist() == [0.5, 0.6]
    assert ds["repeat"].values.tolist() == [0, 1]
    assert ds.sizes["scaling_runs"] == 0 and ds["scaling_seconds"].dims == ("scaling_runs",)
