"""End to end: where does the wall time of a whole job go?

Question: a teacher changes one learning rate and reruns the main job. How long does the whole
command take, and how much of it is the science (compile + sweep) rather than imports, figures,
the page and writing? Does JAX's persistent compilation cache help the second run?
Measurement: the target experiment (``experiment.target``, default lr_sweep, with
``experiment.args``) run as a child process, exactly as a user types it: once cold (an empty
compile cache) and ``repeats`` times warm (the same cache, new run folders). Each child's
env.json carries its own phase timings (startup = interpreter, imports, config and validation;
compute and its parts; present; each figure's rendering); the rest of the wall time (the run
page, the index, interpreter exit) is the remainder. A bare ``import jax`` (plus one tiny
computation) is timed in a child of its own. The ratio the product is judged by: warm end to end
over (import jax + compile + sweep) of the same run.
Expected: nothing to assume: the table states the machine's numbers (they depend on the machine
and its load; run it where it matters).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bpexp import docs, plots, report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.scale import run_child

USES = ()
HEADLINE = ("warm_wall_s", "ratio_e2e_over_compute", "cold_wall_s", "import_jax_s")


@dataclass
class Params:
    name: str = "e2e"
    target: str = "lr_sweep"          # the experiment timed end to end
    args: Any = field(default_factory=list)   # its overrides, as typed
    repeats: int = 3                  # warm runs (the median is reported)
    defaults: Any = field(default_factory=list)   # experiments whose default run is timed too,
                                      # cold then warm: names, or [all] (every one but e2e)
    limit_s: float = 20.0             # a default run is flagged when its cold wall exceeds this


def validate(cfg):
    from bpexp import experiments

    P = cfg.experiment
    if P.target not in experiments.names() or P.target == "e2e":
        raise UserError(f"experiment.target={P.target!r} is not allowed; allowed: one of "
                        f"{', '.join(n for n in experiments.names() if n != 'e2e')}")
    if not 1 <= P.repeats <= 20:
        raise UserError(f"experiment.repeats={P.repeats!r} is not allowed; allowed: an int in "
                        "[1, 20]")
    others = [n for n in experiments.names() if n != "e2e"]
    if not all(d in others or d == "all" for d in P.defaults):
        raise UserError(f"experiment.defaults={list(P.defaults)!r} is not allowed; allowed: a "
                        f"list of experiment names ({', '.join(others)}) or [all]")
    if not P.limit_s > 0:
        raise UserError(f"experiment.limit_s={P.limit_s!r} is not allowed; allowed: seconds > 0")
    if not all(isinstance(a, str) and "=" in a and not a.startswith(("outputs.", "run_id"))
               for a in P.args):
        raise UserError(f"experiment.args={list(P.args)!r} is not allowed; allowed: a list of "
                        "KEY=VALUE overrides (outputs.* and run_id are set by e2e)")


@dataclass
class Result:
    import_jax_s: float
    python_s: float
    import_ml_dtypes_s: float
    runs: list            # per child: {"kind", "wall_s", "peak_rss_mb", "timings", "summary"}
    load: tuple = ()      # 1-minute load average before and after: how shared the machine was
    defaults: dict = field(default_factory=dict)   # name -> {cold_s, warm_s, peak_rss_mb}


def _import_s(code: str, samples: int) -> float:
    """Median seconds a fresh process prints after running ``code`` (which times itself)."""
    out = []
    for _ in range(samples):
        text = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout
        out.append(float(text.strip().splitlines()[-1]))
    return statistics.median(out)


def time_import_jax(samples: int = 5) -> tuple[float, float, float]:
    """(seconds of a bare python, seconds of ``import jax`` + one tiny computation inside a
    fresh process, seconds of importing ``ml_dtypes`` alone after numpy: the part of
    ``import jax`` that JAX's extra dtypes cost) — what any JAX program pays before its own
    work; medians of ``samples`` fresh processes each (one process moves by tens of percent
    on a shared machine)."""
    bare = []
    for _ in range(samples):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t)
    jax_s = _import_s("import time; t = time.perf_counter(); import jax; "
                      "jax.numpy.zeros(1).block_until_ready(); print(time.perf_counter() - t)",
                      samples)
    dtypes_s = _import_s("import time, numpy; t = time.perf_counter(); import ml_dtypes; "
                         "print(time.perf_counter() - t)", samples)
    return statistics.median(bare), jax_s, dtypes_s


def compute(cfg, run) -> Result:
    P = cfg.experiment
    load0 = os.getloadavg()[0]
    bare, imp, dtypes = time_import_jax()
    # absolute: the children run in the run folder, and outputs.root may be relative
    root, cache = run.path("runs").resolve(), run.path("jax_cache").resolve()
    runs = []
    for i in range(1 + P.repeats):
        kind = "cold" if i == 0 else "warm"
        rid = f"{kind}{i}"
        meas = run_child([f"+experiment={P.target}", *P.args, f"outputs.root={root}",
                          f"outputs.compile_cache={cache}", f"run_id={rid}",
                          "sweep.progress=false"], run.dir)
        d = Path(root) / P.target / rid
        env = json.loads((d / "env.json").read_text())
        runs.append({"kind": kind, **meas, "timings": env.get("timings", {}),
                     "summary": json.loads((d / "summary.json").read_text())})
    return Result(import_jax_s=imp, python_s=bare, import_ml_dtypes_s=dtypes, runs=runs,
                  defaults=time_defaults(P, run), load=(load0, os.getloadavg()[0]))


def time_defaults(P, run) -> dict:
    """Each of ``P.defaults``' default run (``python -m bpexp +experiment=NAME``, nothing else)
    in a child process: cold (its own empty compile cache), then warm (that cache)."""
    from bpexp import experiments

    names = ([n for n in experiments.names() if n != "e2e"] if "all" in P.defaults
             else list(P.defaults))
    root, out = run.path("defaults").resolve(), {}
    for name in names:
        cache, row = root / ".cache" / name, {}
        for kind in ("cold", "warm"):
            meas = run_child([f"+experiment={name}", f"outputs.root={root}",
                              f"outputs.compile_cache={cache}", f"run_id={kind}",
                              "sweep.progress=false"], run.dir)
            row[f"{kind}_s"] = meas["wall_s"]
            row["peak_rss_mb"] = max(row.get("peak_rss_mb", 0.0), meas["peak_rss_mb"])
        out[name] = row
    return out


WAIT = "PNGs and the page's figures"   # their wait, when the figure helper makes them
COMPUTE_PARTS = ("compile_s", "sweep_s")   # the science, as the target's summary states it
REFINE_PARTS = ("refine_compile_s", "refine_sweep_s")   # lr_sweep's refinement rounds, if any


def breakdown(r: dict) -> dict:
    """A child run's wall seconds by phase, in order: startup, the experiment's own phases
    (compute, save, present), then either the wait for the figure helper (its PNGs and the
    page's slow part, prepared there at the same time) or, without a helper, the PNGs (drawn
    inside present) and the page's slow part as phases of their own; the remainder is the
    page written, the index and the exit."""
    t = r["timings"]
    figs = sum(v for k, v in t.items() if k.startswith("figure "))
    helper = bool(t.get("figure_helper"))
    inline = 0.0 if helper else figs
    parts = {"startup (imports, config)": t.get("startup", 0.0),
             "compute": t.get("compute", 0.0), "save": t.get("save", 0.0),
             "present (tables, report)": t.get("present", 0.0) - inline}
    if helper:
        parts[WAIT] = t.get("page", 0.0) + t.get("figures_wait", 0.0)
    else:
        parts["figures (PNG)"] = inline
        parts["page (its figures)"] = t.get("page", 0.0)
    parts["page written, index, exit"] = r["wall_s"] - sum(parts.values())
    return parts


def save(cfg, run, res: Result) -> dict:
    warm = [r for r in res.runs if r["kind"] == "warm"]
    walls = [r["wall_s"] for r in warm]
    med = warm[int(np.argsort(walls)[len(walls) // 2])]
    cold = res.runs[0]
    science = {k: float(med["summary"].get(k, float("nan"))) for k in COMPUTE_PARTS}
    refine = {k: float(med["summary"].get(k) or 0.0) for k in REFINE_PARTS}
    coarse = res.import_jax_s + sum(science.values())
    denom = coarse + sum(refine.values())   # every engine call of the job: its compile + sweep
    parts = breakdown(med)
    run.save_metrics(xr.Dataset(
        {"wall_s": ("child", np.array([r["wall_s"] for r in res.runs])),
         "peak_rss_mb": ("child", np.array([r["peak_rss_mb"] for r in res.runs]))},
        coords={"child": [r["kind"] for r in res.runs]}))
    return {"target": cfg.experiment.target, "args": list(cfg.experiment.args),
            "python_s": res.python_s, "import_jax_s": res.import_jax_s,
            "import_ml_dtypes_s": res.import_ml_dtypes_s,
            "cold_wall_s": cold["wall_s"], "warm_wall_s": med["wall_s"], "warm_walls": walls,
            "cold_compile_s": float(cold["summary"].get("compile_s", float("nan"))),
            "warm_compile_s": science.get("compile_s"), "sweep_s": science.get("sweep_s"),
            "phases": parts, "figures": {k.removeprefix("figure "): v
                                         for k, v in med["timings"].items()
                                         if k.startswith("figure ")},
            **refine, "figure_helper": bool(med["timings"].get("figure_helper")),
            "ratio_e2e_over_compute": med["wall_s"] / denom if denom > 0 else None,
            "ratio_e2e_over_coarse_compute": med["wall_s"] / coarse if coarse > 0 else None,
            "peak_rss_mb": med["peak_rss_mb"], "cpu_count": os.cpu_count(),
            "defaults": res.defaults, "limit_s": cfg.experiment.limit_s,
            "defaults_over_limit": sorted(n for n, r in res.defaults.items()
                                          if r["cold_s"] > cfg.experiment.limit_s),
            "load_average": list(res.load)}


def refine_s(s: dict) -> float:
    """The refinement rounds' compile + sweep seconds (0 for targets without them)."""
    return sum(s.get(k) or 0.0 for k in REFINE_PARTS)


def science_s(s: dict) -> float:
    """import jax + every engine call's compile and sweep (the refinement rounds included)."""
    return s["import_jax_s"] + s["warm_compile_s"] + s["sweep_s"] + refine_s(s)


def shows(s: dict) -> list[str]:
    """report.md's opening sentences (this machine's timings)."""
    ph = s["phases"]
    big = max(ph, key=ph.get)
    refine = refine_s(s)
    out = [f"The warm `{s['target']}` takes {s['warm_wall_s']:.2f} s end to end, "
           f"{s['ratio_e2e_over_compute']:.1f}x the {s['import_jax_s']:.2f} s of importing JAX "
           f"plus its own compile ({s['warm_compile_s']:.2f} s) and sweep ({s['sweep_s']:.2f} s)"
           + (f" and its refinement rounds ({refine:.2f} s, compile and sweep); against the "
              f"coarse sweep alone it is {s['ratio_e2e_over_coarse_compute']:.1f}x"
              if refine else "") + ".",
           f"The largest part is {big}: {ph[big]:.2f} s ({ph[big] / s['warm_wall_s']:.0%})."]
    if s.get("figure_helper"):
        out.append(f"A second process drew the {len(s['figures'])} PNGs "
                   f"({sum(s['figures'].values()):.2f} s of drawing, one child process per "
                   "figure) and prepared the page's figures beside them; after its report the "
                   f"run waited {ph.get(WAIT, 0.0):.2f} s for them.")
    out.append(f"The cold run (empty compile cache) takes {s['cold_wall_s']:.2f} s and compiles "
               f"in {s['cold_compile_s']:.2f} s; warm, the persistent cache brings compile to "
               f"{s['warm_compile_s']:.2f} s.")
    return out


def present(cfg, run, res: Result, summary: dict) -> None:
    s = summary
    rows = [[k, v, f"{v / s['warm_wall_s']:.0%}"] for k, v in s["phases"].items()]
    where = "drawn in the figure helper, in parallel" if s.get("figure_helper") else ""
    rows += [[f"  figure {k}", v, where] for k, v in s["figures"].items()]
    refine = refine_s(s)
    rows += [["end to end, warm (median)", s["warm_wall_s"], f"{len(s['warm_walls'])} runs"],
             ["end to end, cold", s["cold_wall_s"], "empty compile cache"],
             ["import jax (median of 5 bare processes)", s["import_jax_s"],
              f"python alone {s['python_s']:.2f}"],
             ["  of which import ml_dtypes (after numpy)", s["import_ml_dtypes_s"],
              "JAX's extra dtypes"],
             ["compile + sweep (coarse grid)", s["warm_compile_s"] + s["sweep_s"], ""],
             ["compile + sweep (refinement rounds)", refine, ""],
             ["ratio e2e / (import jax + compile + sweep)", s["ratio_e2e_over_compute"],
              "every engine call"],
             ["ratio e2e / (import jax + coarse grid)", s["ratio_e2e_over_coarse_compute"], ""]]
    report.print_table(f"e2e: python -m bpexp +experiment={s['target']} (this machine)",
                       ["phase", "seconds", "share"], rows)
    fig, ax = plots.slide()
    names = [*s["phases"], "end to end (their sum)"]
    vals = [*s["phases"].values(), s["warm_wall_s"]]
    colors = [plots.PALETTE[i % 7] for i in range(len(names) - 1)] + ["0.35"]
    ax.barh(names[::-1], vals[::-1], color=colors[::-1])
    plots.theory_line(ax, x=science_s(s), label="import jax + compile + sweep")
    plots.theory_line(ax, x=2 * science_s(s), label="2x that (the target)", color="0.5")
    ax.set_xlabel("seconds (warm run, this machine)")
    ax.set_title(f"{s['target']} end to end: {s['warm_wall_s']:.2f} s, "
                 f"{s['ratio_e2e_over_compute']:.1f}x its import + compile + sweep")
    plots.legend_outside(ax, "below")
    plots.save(fig, run.figure("e2e.png"))
    sections = [("Phases (warm run, median)", report.markdown_table(
        ["phase", "seconds", "share"], rows))]
    if s["defaults"]:
        drows = default_rows(s)
        report.print_table("every experiment's default run (this machine)",
                           ["experiment", "cold s", "warm s", "peak RSS MB", "note"], drows)
        sections.append(("Every experiment's default run", report.markdown_table(
            ["experiment", "cold s", "warm s", "peak RSS MB", "note"], drows)))
    run.save_report(report.report("End to end", question(__doc__), run.reproduce(), sections,
                                  ["e2e.png"], shows=shows(s)))


def default_rows(s: dict) -> list:
    """[name, cold s, warm s, peak RSS MB, note] per timed default run."""
    return [[n, r["cold_s"], r["warm_s"], r["peak_rss_mb"],
             f"over {s['limit_s']:g} s" if n in s["defaults_over_limit"] else ""]
            for n, r in s["defaults"].items()]


def readme(record: dict) -> str:
    """The README's block: the phase table of the recorded run (the record ``e2e``), or its
    table of every experiment's default run (``e2e_defaults``); marked machine-dependent."""
    s = record["summary"]

    def sec(v):
        return docs.measured(f"{v:.2f}")

    if record.get("name") == "e2e_defaults":
        lines = [f"`{record['command']}`, {docs.machine('timings', record)}:", "",
                 "| experiment (default run) | cold compile cache, s | warm, s | peak RSS, MB |",
                 "|---|---|---|---|"]
        lines += [f"| `{n}` | {sec(r['cold_s'])} | {sec(r['warm_s'])} | "
                  f"{docs.measured(format(r['peak_rss_mb'], '.0f'))} |"
                  for n, r in s["defaults"].items()]
        over = ", ".join(s["defaults_over_limit"]) or "none"
        return "\n".join(lines) + (f"\n\nOver {s['limit_s']:g} s cold: "
                                   f"{docs.measured(over)}.\n")

    load = docs.measured(f"{s['load_average'][0]:.1f} before, {s['load_average'][1]:.1f} after")
    lines = [f"`{record['command']}`, {docs.machine('timings', record)}, 1-minute load "
             f"average {load}:", "",
             "| phase (warm run) | seconds |", "|---|---|"]
    lines += [f"| {k} | {sec(v)} |" for k, v in s["phases"].items()]
    refine = refine_s(s)
    lines += [f"| **end to end** | {sec(s['warm_wall_s'])} |",
              f"| import jax + compile + sweep | {sec(science_s(s))} |",
              f"| of which import jax | {sec(s['import_jax_s'])} |",
              f"| of which import ml_dtypes (JAX's extra dtypes) | "
              f"{sec(s['import_ml_dtypes_s'])} |"]
    if refine:
        lines += [f"| of which the refinement rounds (compile + sweep) | {sec(refine)} |"]
    if s.get("figure_helper"):
        lines += [f"| PNGs drawn by the figure helper meanwhile | "
                  f"{sec(sum(s['figures'].values()))} |"]
    lines += [f"| end to end / (import jax + compile + sweep) | "
              f"{docs.measured(format(s['ratio_e2e_over_compute'], '.2f'))} |",
              f"| end to end, cold compile cache | {sec(s['cold_wall_s'])} |"]
    return "\n".join(lines) + "\n"
