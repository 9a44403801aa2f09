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
    ("record_every", 7, "a divisor of experiment.steps=100"),
])
def test_bad_values(key, value, expect):
    with pytest.raises(UserError, match=expect.replace("[", r"\[").replace("]", r"\]")):
        build_cfg({"experiment": {"name": "scale", "lrs": 100, key: value}})


@pytest.mark.slow
def test_scale_through_the_cli(tmp_path):
    d = run_experiment("scale", tmp_path, "experiment.runs=[1000,3000]", "experiment.lrs=100",
                       "experiment.overhead_runs=2000", "experiment.repeats=1")
    s = json.loads((d / "summary.json").read_text())
    assert [g["runs"] for g in s["grids"]] == [1000, 3000]
    for g in s["grids"]:
        assert g["peak_rss_mb"] > 50 and g["runs_per_s"] > 0 and g["store_mb"] > 0
        # the child runs are real lr_sweeps: 100 steps resolve the threshold to a few percent
        assert g["threshold_refined"] == pytest.approx(g["threshold_theory"], rel=0.05)
    assert s["rss_max_over_min"] == pytest.approx(max(s["peak_rss_mb"]) / min(s["peak_rss_mb"]))
    assert s["streaming"]["streamed_equals_in_memory"] is True
    c = s["compile_cache"]                   # measured, not asserted (shared, noisy machines)
    assert c["cache_mb"] > 0 and c["warm_compile_s"] > 0 and c["cold_compile_s"] > 0
    assert any((d / "jax_cache").iterdir())
    m = xr.open_zarr(d / "metrics.zarr")
    np.testing.assert_array_equal(m["runs"].values, [1000, 3000])
    np.testing.assert_allclose(m["peak_rss_mb"].values, s["peak_rss_mb"])
    assert not (d / "runs" / "lr_sweep" / "runs_1000" / "metrics.zarr").exists()
    assert (d / "figures" / "scale.png").stat().st_size > 10_000
    shows = (d / "report.md").read_text().split("## What this run shows\n\n")[1]
    rss = max(s["peak_rss_mb"]) / min(s["peak_rss_mb"])
    assert f"(x{rss:.2f})" in shows and ("flat" in shows) == (rss < 1.5)
    assert "results are bitwise equal" in shows
