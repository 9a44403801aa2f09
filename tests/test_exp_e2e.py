"""e2e: the main job timed end to end as a user runs it (child processes), its wall time split
by phase from each child's own env.json; the split adds up and the ratio is computed from it."""

import json

import numpy as np
import pytest

from bpexp.errors import UserError
from bpexp.experiments import e2e
from helpers import build_cfg, run_experiment


@pytest.mark.slow
def test_phases_add_up_and_the_ratio_is_computed(tmp_path):
    # a relative outputs.root, as the default: the children run in the run folder
    d = run_experiment("e2e", tmp_path, "experiment.repeats=1",
                       "experiment.args=['train.steps=40','train.record_every=4',"
                       "'sweep.seeds=2','experiment.refine_rounds=0']",
                       "experiment.defaults=[worked_example]", "experiment.limit_s=0.5",
                       timeout=900, outputs_root="outputs")
    s = json.loads((d / "summary.json").read_text())
    child = json.loads((d / "runs" / "lr_sweep" / "warm1" / "env.json").read_text())
    t, csum = child["timings"], json.loads((d / "runs" / "lr_sweep" / "warm1" /
                                             "summary.json").read_text())
    assert child["status"] == "finished" and child["argv"][1:4] == [
        "+experiment=lr_sweep", "train.steps=40", "train.record_every=4"]
    assert set(s["figures"]) == {"loss_curves.png", "final_loss_vs_lr.png",
                                 "too_small_good_too_large.png"}
    assert s["figures"] == {k.removeprefix("figure "): v for k, v in t.items()
                            if k.startswith("figure ")}
    assert sum(s["phases"].values()) == pytest.approx(s["warm_wall_s"], rel=1e-9)
    assert s["phases"]["startup (imports, config)"] == t["startup"] > 0
    assert s["phases"]["compute"] == t["compute"] > 0
    if s["figure_helper"]:   # the PNGs and the page's figures, both made in the helper
        assert s["phases"][e2e.WAIT] == pytest.approx(t["page"] + t["figures_wait"], abs=1e-12)
        assert "page (its figures)" not in s["phases"]
    assert s["sweep_s"] == csum["sweep_s"] and s["warm_compile_s"] == csum["compile_s"]
    want = s["warm_wall_s"] / (s["import_jax_s"] + csum["compile_s"] + csum["sweep_s"])
    assert s["ratio_e2e_over_compute"] == pytest.approx(want, rel=1e-12)
    assert s["warm_walls"] == [s["warm_wall_s"]] and s["cold_wall_s"] > 0
    # the default run of each listed experiment, cold then warm, each a real child run
    row = s["defaults"]["worked_example"]
    for kind in ("cold", "warm"):
        env = json.loads((d / "defaults" / "worked_example" / kind / "env.json").read_text())
        assert env["status"] == "finished" and env["argv"][1] == "+experiment=worked_example"
        assert 0 < env["seconds"] < row[f"{kind}_s"]
    assert s["defaults_over_limit"] == ["worked_example"] and s["limit_s"] == 0.5
    md = (d / "report.md").read_text()
    assert "Every experiment's default run" in md and "over 0.5 s" in md
    assert f"{s['ratio_e2e_over_compute']:.1f}x the" in md
    big = max(s["phases"], key=s["phases"].get)
    assert f"The largest part is {big}" in md
    assert np.isfinite(s["import_jax_s"]) and s["import_jax_s"] > 0
    # JAX's extra dtypes are a part of importing JAX, timed alone in their own processes
    assert 0 < s["import_ml_dtypes_s"] < s["import_jax_s"]
    # the README block marks every number machine-dependent (masked: none left)
    from bpexp import docs
    rec = {"summary": s, "command": "python -m bpexp +experiment=e2e", "machine": {}}
    docs.MASK = True
    try:
        text = e2e.readme(rec)
    finally:
        docs.MASK = False
    assert not any(ch.isdigit() for ch in text.replace("e2e", "").replace("1-minute", "")), text
    assert text.count("(machine-dependent)") >= len(s["phases"]) + 4


@pytest.mark.parametrize("key,value", [("target", "nope"), ("target", "e2e"), ("repeats", 0),
                                       ("defaults", ["nope"]), ("defaults", ["e2e"]),
                                       ("limit_s", 0),
                                       ("args", ["outputs.root=/x"]), ("args", ["noequals"])])
def test_bad_values_are_one_line(key, value):
    with pytest.raises(UserError, match=f"experiment.{key}="):
        build_cfg({"experiment": {"name": "e2e", key: value}})
