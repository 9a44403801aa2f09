"""The scale benchmark: its in-process streaming measurement (bitwise equal to the in-memory
engine), its validation, and (slow) the whole experiment through the CLI on tiny grids."""

import json

import numpy as np
import pytest
import xarray as xr

from bpexp.errors import UserError
from bpexp.experiments import scale
from helpers import build_cfg, run_experiment


def test_streaming_overhead_measures_equal_results(tmp_path):
    P = scale.Params(lrs=10, overhead_runs=40, steps=20, record_every=5, repeats=1)
    o = scale.streaming_overhead(P, tmp_path)
    assert o["runs"] == 40 and o["streamed_equals_in_memory"] is True
    assert o["chunks"] == 1 and o["runs_per_chunk"] == 40 and o["compile_s"] > 0
    assert o["in_memory_s"] > 0 and o["streamed_s"] > 0
    assert o["overhead"] == pytest.approx(o["streamed_s"] / o["in_memory_s"] - 1)
    assert o["resume_skip_per_chunk_ms"] == pytest.approx(
        1e3 * o["resume_skip_all_s"] / o["chunks"])
    # 40 runs x (loss, param_norm, update_norm: 4 records; grad_norm: 4 x 2; final; first bad)
    assert o["in_memory_mb"] * 2**20 == 40 * (4 * 4 * 3 + 4 * 8 + 4 + 4)
    assert o["store_mb"] > 0


@pytest.mark.parametrize("key,value,expect", [
    ("runs", [], "experiment.runs=[] is not allowed"),
    ("runs", [150], "every run count must be a multiple of lrs"),
    ("lrs", 0, "experiment.lrs=0 is not allowed"),
    ("record_every", 7, "a divisor of experiment.steps=50"),
    ("chunk_size", -1, "experiment.chunk_size=-1 is not allowed"),
])
def test_bad_values(key, value, expect):
    with pytest.raises(UserError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        build_cfg({"experiment": {"name": "scale", "lrs": 100, key: value}})


@pytest.mark.slow
def test_scale_through_the_cli(tmp_path):
    d = run_experiment("scale", tmp_path, "experiment.runs=[1000,2000]", "experiment.lrs=100",
                       "experiment.overhead_runs=2000", "experiment.repeats=1",
                       "experiment.steps=100")
    s = json.loads((d / "summary.json").read_text())
    assert [g["runs"] for g in s["grids"]] == [1000, 2000]
    # one chunk size (1000 runs) for the measurement and both grids: one program, compiled by
    # the first process, loaded from the cache by the grids' processes
    assert [(g["chunks"], g["runs_per_chunk"]) for g in s["grids"]] == [(1, 1000), (2, 1000)]
    assert s["streaming"]["runs_per_chunk"] == 1000
    for g in s["grids"]:
        assert g["peak_rss_mb"] > 50 and g["runs_per_s"] > 0 and g["store_mb"] > 0
        # the child runs are real lr_sweeps: 100 steps resolve the threshold to a few percent
        assert g["threshold_refined"] == pytest.approx(g["threshold_theory"], rel=0.05)
    assert s["rss_max_over_min"] == pytest.approx(max(s["peak_rss_mb"]) / min(s["peak_rss_mb"]))
    assert s["streaming"]["streamed_equals_in_memory"] is True
    c = s["compile_cache"]                   # measured, not asserted (shared, noisy machines)
    # the warm compile is a process that loaded a program the cache already held: a grid
    # chunked like the first process's measurement, else the smallest grid run again
    assert c["warm_process"] == "runs_1000"
    assert (d / "runs" / "lr_sweep" / c["warm_process"] / "summary.json").exists()
    assert c["cache_mb"] > 0 and c["warm_compile_s"] > 0 and c["cold_compile_s"] > 0
    assert any((d / "jax_cache").iterdir())
    m = xr.open_zarr(d / "metrics.zarr")
    np.testing.assert_array_equal(m["runs"].values, [1000, 2000])
    np.testing.assert_allclose(m["peak_rss_mb"].values, s["peak_rss_mb"])
    assert not (d / "runs" / "lr_sweep" / "runs_1000" / "metrics.zarr").exists()
    assert (d / "figures" / "scale.png").stat().st_size > 10_000
    shows = (d / "report.md").read_text().split("## What this run shows\n\n")[1]
    rss = max(s["peak_rss_mb"]) / min(s["peak_rss_mb"])
    assert f"(x{rss:.2f})" in shows and ("flat" in shows) == (rss < 1.5)
    assert "results are bitwise equal" in shows
    o = s["streaming"]
    ms = 1e3 * (o["streamed_s"] - o["in_memory_s"]) / o["chunks"]
    assert f"({ms:.2g} ms per chunk written, against" in shows


@pytest.mark.slow
def test_scale_auto_chunks_time_a_warm_process_of_their_own(tmp_path):
    """experiment.chunk_size=0: each grid gets the engine's chunking, here not the first
    process's, so the smallest grid runs again to time a warm compile."""
    d = run_experiment("scale", tmp_path, "experiment.runs=[1000]", "experiment.lrs=100",
                       "experiment.overhead_runs=3000", "experiment.repeats=1",
                       "experiment.chunk_size=0")
    s = json.loads((d / "summary.json").read_text())
    assert s["streaming"]["runs_per_chunk"] == 1500 and s["grids"][0]["runs_per_chunk"] == 1000
    c = s["compile_cache"]
    assert c["warm_process"] == "warm" and c["warm_compile_s"] > 0
    warm = json.loads((d / "runs" / "lr_sweep" / "warm" / "summary.json").read_text())
    assert warm["compile_s"] == c["warm_compile_s"] and warm["runs"] == 1000
    assert not (d / "runs" / "lr_sweep" / "warm" / "metrics.zarr").exists()
