"""The device check, one prepared command: ``python tools/gpucheck.py [--size large]
[--device gpu] [--root DIR]`` (a script of the repository, beside the package: it names
experiments, which the library never does).

Runs, each as a user would (a child ``python -m bpexp``), on the chosen device:
1. ``+experiment=bench experiment.size=SIZE``: the engine (one vmapped compiled call) against a
   loop of compiled runs and a loop of compiled steps, its GFLOP/s and the GEMM peak;
2. ``+experiment=e2e`` with the main job on the device: its wall time by phase, cold and warm;
and prints one table from their summaries (TFLOP/s, speed-ups, the e2e ratio). On a machine
without the device it says so in one line and exits 2. The run folders stay under ``--root``
for a closer look (``python -m bpexp.compare --root DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _child(args: list[str], root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-m", "bpexp", *args, f"outputs.root={root}",
                        "sweep.progress=false"], capture_output=True, text=True, env=env,
                       cwd=root)
    if p.returncode != 0:
        raise SystemExit(f"error: python -m bpexp {' '.join(args)} failed ({p.returncode}): "
                         + (p.stderr.strip().splitlines() or ["no output"])[-1])
    run_dir = Path(p.stdout.strip().splitlines()[-1].removeprefix("run dir: "))
    return json.loads((run_dir / "summary.json").read_text())


def has_device(device: str) -> bool:
    if device == "cpu":
        return True
    import jax

    try:
        return bool(jax.devices(device))
    except RuntimeError:
        return False


def rows(bench: dict, e2e: dict) -> list[list]:
    """The table: what was measured, its value, how to read it."""
    return [["runs x steps (bench)", f"{bench['runs']} x {bench['steps']}",
             f"hidden {bench['hidden']}, {bench['backend']}"],
            ["engine seconds", bench["engine_s"], f"compile {bench['compile_s']:.2f} s"],
            ["engine TFLOP/s", bench["gflops"] / 1e3,
             f"{bench['frac_of_peak']:.0%} of the GEMM peak {bench['gemm_peak_gflops'] / 1e3:.3g}"],
            ["engine vs a loop of compiled runs", bench["speedup_vs_loop"], "x faster"],
            ["engine vs a loop of compiled steps", bench["speedup_vs_naive"], "x faster"],
            ["hand backward vs jax.grad", bench["autodiff_s"] / bench["manual_s"], "x"],
            ["main job end to end, warm", e2e["warm_wall_s"], f"cold {e2e['cold_wall_s']:.2f}"],
            ["e2e / (import jax + compile + sweep)", e2e["ratio_e2e_over_compute"], "x"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tools/gpucheck.py",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    ap.add_argument("--size", default="large", choices=("tiny", "small", "large"))
    ap.add_argument("--root", default=None, help="where the run folders go (default: a temp dir)")
    a = ap.parse_args(argv)
    if not has_device(a.device):
        print(f"error: no {a.device} device visible to JAX here; run this where one is",
              file=sys.stderr)
        return 2
    root = Path(a.root or tempfile.mkdtemp(prefix="bpexp-gpucheck-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    bench = _child(["+experiment=bench", f"experiment.size={a.size}", f"device={a.device}"]
                   + (["experiment.repeats=1", "experiment.naive_runs=2",
                       "experiment.scaling=[]", "experiment.gemm_n=256"]
                      if a.size == "tiny" else []), root)
    args = [f"device={a.device}"] + (["train.steps=40", "sweep.seeds=2",
                                       "experiment.refine_rounds=0"] if a.size == "tiny" else [])
    e2e = _child(["+experiment=e2e", "experiment.repeats=1",
                  "experiment.args=[" + ",".join(f"'{x}'" for x in args) + "]"], root)
    from bpexp import report

    report.print_table(f"device check: {a.device}, bench size {a.size}",
                       ["quantity", "value", "note"], rows(bench, e2e))
    print(f"run folders: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
