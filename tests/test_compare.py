"""compare command and the multirun comparison table."""

import os
import subprocess
import sys

from bpexp import compare, outputs


def test_compare_filters_and_prints(tmp_path, capsys):
    for i, (exp, st) in enumerate([("lr_sweep", "finished"), ("gradcheck", "finished"), ("lr_sweep", "failed")]):
        outputs.append_index(tmp_path, {"id": f"run{i}", "experiment": exp, "status": st, "seconds": 1.0 + i,
                                        "summary": {"threshold_measured": 0.25 + i} if exp == "lr_sweep" else {"passed": True}})
    assert compare.main(["--root", str(tmp_path), "--experiment", "lr_sweep"]) == 0
    out = capsys.readouterr().out
    assert "run0" in out and "run2" in out and "run1" not in out and "threshold_measured" in out
    assert compare.main(["--root", str(tmp_path), "--experiment", "lr_sweep", "--status", "finished"]) == 0
    out = capsys.readouterr().out
    assert "run0" in out and "run2" not in out
    header, rows = compare.table(outputs.read_index(tmp_path))
    assert header[:4] == ["run", "experiment", "status", "seconds"]
    assert rows[0][header.index("threshold_measured")] == 0.25 and rows[1][header.index("passed")] is True
    assert compare.main(["--root", str(tmp_path / "nope")]) == 2


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
