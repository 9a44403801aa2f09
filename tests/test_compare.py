"""compare command and the multirun comparison table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpexp import compare, outputs


def test_compare_filters_and_prints(tmp_path, capsys):
    for i, (exp, st) in enumerate([("lr_sweep", "finished"), ("gradcheck", "finished"),
                                   ("lr_sweep", "failed")]):
        outputs.append_index(tmp_path, {"id": f"run{i}", "experiment": exp, "status": st,
                                        "seconds": 1.0 + i,
                                        "summary": {"threshold_measured": 0.25 + i}
                                        if exp == "lr_sweep" else {"passed": True}})
    assert compare.main(["--root", str(tmp_path), "--experiment", "lr_sweep"]) == 0
    out = capsys.readouterr().out
    assert "run0" in out and "run2" in out and "run1" not in out and "threshold_measured" in out
    assert compare.main(["--root", str(tmp_path), "--experiment", "lr_sweep",
                         "--status", "finished"]) == 0
    out = capsys.readouterr().out
    assert "run0" in out and "run2" not in out
    header, rows = compare.table(outputs.read_index(tmp_path))
    assert header[:4] == ["run", "experiment", "status", "seconds"]
    assert (rows[0][header.index("threshold_measured")] == 0.25
            and rows[1][header.index("passed")] is True)
    assert compare.main(["--root", str(tmp_path / "nope")]) == 2


def test_each_run_once_with_its_latest_status(tmp_path, capsys):
    """A run interrupted, then continued by two shards (one finishing it) has four lines; the
    table shows it once, finished; a later failure of a late process does not undo that."""
    d = str(tmp_path / "lr_sweep" / "big")
    for st in ("interrupted", "failed", "finished", "failed"):
        outputs.append_index(tmp_path, {"id": "big", "experiment": "lr_sweep", "dir": d,
                                        "status": st, "summary": {}})
    outputs.append_index(tmp_path, {"id": "other", "experiment": "lr_sweep",
                                    "dir": str(tmp_path / "lr_sweep" / "other"),
                                    "status": "interrupted", "summary": {}})
    rows = compare.latest(outputs.read_index(tmp_path))
    assert [(r["id"], r["status"]) for r in rows] == [("big", "finished"), ("other", "interrupted")]
    assert compare.main(["--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("big") == 1


def test_multirun_writes_comparison(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    p = subprocess.run([sys.executable, "-m", "bpexp", "-m", "+experiment=worked_example",
                        "experiment.lr=0.5,0.1", f"outputs.root={tmp_path}"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    tables = list((tmp_path / "multirun").glob("*/comparison.md"))
    assert len(tables) == 1
    text = tables[0].read_text()
    assert "experiment.lr=0.5" in text and "experiment.lr=0.1" in text
    assert len(outputs.read_index(tmp_path, "worked_example")) == 2
    # the terminal table: the swept key and the headline numbers, within 120 columns
    shown = p.stdout[p.stdout.index("multirun "):p.stdout.index("comparison: ")]
    assert max(map(len, shown.splitlines())) <= 120, shown
    assert "experiment.lr" in shown and "outputs.root" not in shown
    # the CSV holds everything: every summary key of both runs
    import csv
    (path,) = (tmp_path / "multirun").glob("*/comparison.csv")
    rows = list(csv.DictReader(path.open()))
    keys = set().union(*(r["summary"] for r in outputs.read_index(tmp_path)))
    assert len(rows) == 2 and keys <= set(rows[0])


@pytest.mark.slow
def test_process_launcher_jobs_allocate_on_demand(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")  # the [slurm] extra
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-m", "bpexp", "-m", "hydra/launcher=local",
                        "+experiment=worked_example", "experiment.lr=0.5,0.1",
                        f"outputs.root={tmp_path}"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = outputs.read_index(tmp_path, "worked_example")
    assert len(rows) == 2 and len({r["id"] for r in rows}) == 2
    for r in rows:
        e = json.loads((Path(r["dir"]) / "env.json").read_text())
        assert e["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and e["status"] == "finished"
    assert len(list((tmp_path / "multirun").glob("*/comparison.md"))) == 1
