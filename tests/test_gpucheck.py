"""The device check's prepared command, run on the CPU (CI has no GPU): the bench and the main
job as child processes, one table from their summaries; without the device, one line, exit 2."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpucheck.py"
_spec = importlib.util.spec_from_file_location("gpucheck", SCRIPT)
gpucheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpucheck)


@pytest.mark.slow
def test_the_device_check_runs_on_cpu(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--size",
                        "tiny", "--root", str(tmp_path)], capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    bench = json.loads(next((tmp_path / "bench").glob("*/summary.json")).read_text())
    e2e = json.loads(next((tmp_path / "e2e").glob("*/summary.json")).read_text())
    assert bench["backend"] == "cpu" and bench["runs"] == 8
    assert f"{bench['speedup_vs_loop']:.4g}" in p.stdout
    assert f"{e2e['ratio_e2e_over_compute']:.4g}" in p.stdout
    rows = gpucheck.rows(bench, e2e)
    assert rows[2][1] == pytest.approx(bench["gflops"] / 1e3)
    assert p.stdout.strip().endswith(f"run folders: {tmp_path}")


def test_without_the_device_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(gpucheck, "has_device", lambda d: False)
    assert gpucheck.main(["--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no gpu device")
