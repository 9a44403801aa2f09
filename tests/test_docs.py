"""README numbers come from runs: the generated blocks equal what the recorded runs render, and
a fresh run of each recorded command renders the same block (machine-dependent numbers masked)."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bpexp import docs

ROOT = Path(__file__).resolve().parents[1]
RECORDS = sorted((ROOT / docs.RESULTS).glob("*.json"))


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}


def _run(command: str, root: Path) -> Path:
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "bpexp"], command
    p = subprocess.run([sys.executable, "-m", "bpexp", *argv[3:], f"outputs.root={root}",
                        "sweep.progress=false"], capture_output=True, text=True, env=_env(),
                       timeout=1200, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    return Path(p.stdout.strip().splitlines()[-1].removeprefix("run dir: "))


def test_readme_blocks_are_rendered_from_the_records():
    """Every generated block of README.md is what its record renders (python -m bpexp.docs
    check), every record has a block, and no block lacks its record."""
    text = (ROOT / "README.md").read_text()
    names = docs.blocks(text)
    assert docs.render(text) == text, "run: python -m bpexp.docs render"
    assert sorted(names) == sorted(p.stem for p in RECORDS)
    assert len(names) == len(set(names))
    assert docs.main(["check"]) == 0


def test_record_render_and_check_round_trip(tmp_path, capsys):
    """A real run recorded, a README with its block rendered from it; a hand edit inside the
    block is caught by check; machine-dependent numbers name the machine or are masked."""
    run_dir = _run("python -m bpexp +experiment=lr_sweep train.steps=100 train.record_every=5 "
                   "sweep.seeds=2 'sweep.lr={start: 0.01, stop: 1, num: 12}'", tmp_path)
    rec = docs.record(run_dir, "demo")
    assert rec["command"].startswith("python -m bpexp +experiment=lr_sweep")
    assert "outputs.root" not in rec["command"] and "'sweep.lr={start: 0.01" in rec["command"]
    assert rec["summary"] == json.loads((run_dir / "summary.json").read_text())
    (tmp_path / docs.RESULTS).mkdir(parents=True)
    (tmp_path / docs.RESULTS / "demo.json").write_text(json.dumps(rec))
    readme = "intro\n<!-- generated: demo -->\nstale 0.1\n<!-- end generated: demo -->\nend\n"
    new = docs.render(readme, tmp_path)
    body = new.split("<!-- generated: demo -->\n")[1].split("<!-- end generated")[0]
    s = rec["summary"]
    assert f"{s['lambda_max']:.4g}" in body and f"{s['threshold_theory']:.4g}" in body
    assert "stale" not in new and new.startswith("intro\n") and new.endswith("end\n")
    assert docs.render(new, tmp_path) == new
    assert docs.render(new.replace(f"{s['lambda_max']:.4g}", "9.999"), tmp_path) == new
    assert "measured on a" in docs.machine("1.2 s", rec)
    docs.MASK = True
    try:
        assert docs.machine("1.2 s", rec) == "(machine-dependent)"
    finally:
        docs.MASK = False


RERUN = [p for p in RECORDS if not json.loads(p.read_text()).get("timings_only")]


def test_timings_only_records_are_every_experiment_timed_and_fully_masked():
    """A record stored --timings-only is not rerun: its block has no number left once the
    machine-dependent ones are masked, and the defaults table covers every experiment."""
    from bpexp import experiments

    only = [p for p in RECORDS if p not in RERUN]
    for p in only:
        rec = json.loads(p.read_text())
        module = experiments.get(rec["experiment"])
        docs.MASK = True
        try:
            text = module.readme(rec)
        finally:
            docs.MASK = False
        limit = rec["summary"].get("limit_s")   # a config value, not a measurement
        rest = text.replace(rec["command"], "").replace(
            f"Over {limit:g} s" if limit else "e2e", "")   # the command as typed, the limit
        assert not any(c.isdigit() for c in rest), (p.name, text)
        if rec["name"] == "e2e_defaults":
            assert set(rec["summary"]["defaults"]) == set(experiments.names()) - {"e2e"}
            assert all(r["cold_s"] > 0 and r["warm_s"] > 0
                       for r in rec["summary"]["defaults"].values())


@pytest.mark.slow
@pytest.mark.parametrize("path", RERUN, ids=[p.stem for p in RERUN])
def test_a_fresh_run_reproduces_the_readme_block(tmp_path, path, monkeypatch):
    """The recorded command, run again now, renders the same README block: every number in it
    is reproduced (machine-dependent ones masked)."""
    from bpexp import experiments

    rec = json.loads(path.read_text())
    fresh = docs.record(_run(rec["command"], tmp_path), rec["name"])
    monkeypatch.setattr(docs, "MASK", True)
    module = experiments.get(rec["experiment"])
    assert module.readme(fresh) == module.readme(rec)
