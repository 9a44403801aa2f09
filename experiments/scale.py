"""Does a sweep stay in bounded memory as the grid grows, and what does streaming it cost?

Question: run lr_sweep (multivariate regression on diabetes, 50 steps, a loss record every
10 steps) with 10^3, 10^4 and 10^5 runs (10^6 one override away), each in its own process
streaming into its metrics.zarr: how do peak memory, throughput and store size scale? What
does writing each chunk to the store cost against keeping the grid in memory, what does
skipping completed chunks cost on a resume, and what does JAX's persistent compilation cache
save a second process?
Theory: the engine holds one chunk of runs at a time (experiment.chunk_size runs; with 0,
sweep.MEMORY_BUDGET sizes it) and the summary reads the store in blocks of learning rates, so
peak memory is the process's fixed cost (JAX, the data, one chunk, one block) whatever the
number of runs, while a grid kept in memory would grow by the stored bytes per run. Time and
store size grow linearly with the runs.
Expected: peak RSS flat (within ~20%) from 10^3 to 10^5 runs; streaming costs a few ms per
chunk (writing its records), a large share only where a chunk computes in tens of ms as here;
skipping a complete chunk costs a directory listing, not a computation; a warm cache turns
seconds of compilation into a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bpexp import data, docs, plots, report, sweep, train
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.store import GridStore

USES = ()  # the child runs are configured below; this process reads no shared section


@dataclass
class Params:
    name: str = "scale"
    runs: list = field(default_factory=lambda: [1_000, 10_000, 100_000])  # grid sizes
    lrs: int = 1000               # learning rates per grid (runs = lrs x seeds)
    steps: int = 50
    record_every: int = 10
    overhead_runs: int = 10_000   # in-process: streamed vs in-memory engine on this many runs
    repeats: int = 2              # median of this many timings (after a warm-up)
    # runs per compiled call, for every grid (children and the in-process measurement): one
    # program for every grid size, compiled once and loaded by every grid's process from the
    # persistent cache, as in a researcher's loop over grid sizes (0: the engine's
    # memory-based choice, a program per size: each grid's process then compiles its own)
    chunk_size: int = 1000
    keep_stores: bool = False     # keep the child runs' metrics.zarr (10^6 runs: ~100 MB)


def validate(cfg):
    P = cfg.experiment
    if not (isinstance(P.runs, list) and P.runs and all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in P.runs)):
        raise UserError(f"experiment.runs={P.runs!r} is not allowed; allowed: a non-empty list "
                        "of run counts (ints >= 1)")
    for key in ("lrs", "steps", "record_every", "overhead_runs", "repeats"):
        if getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; "
                            "allowed: an int >= 1")
    if not (isinstance(P.chunk_size, int) and not isinstance(P.chunk_size, bool)
            and P.chunk_size >= 0):
        raise UserError(f"experiment.chunk_size={P.chunk_size!r} is not allowed; allowed: an "
                        "int >= 0 (0: the engine's memory-based choice)")
    bad = [r for r in P.runs if r % P.lrs]
    if bad:
        raise UserError(f"experiment.runs={P.runs!r} is not allowed with experiment.lrs="
                        f"{P.lrs}: every run count must be a multiple of lrs (runs = lrs x "
                        "seeds)")
    if P.steps % P.record_every:
        raise UserError(f"experiment.record_every={P.record_every} is not allowed; allowed: a "
                        f"divisor of experiment.steps={P.steps}")


def child_args(P, n_runs: int, root: Path, cache: Path, run_id: str) -> list[str]:
    return ["+experiment=lr_sweep", f"outputs.root={root}", f"outputs.compile_cache={cache}",
            f"run_id={run_id}", f"train.steps={P.steps}", f"train.record_every={P.record_every}",
            f"sweep.lr={{start: 0.001, stop: 10.0, num: {P.lrs}}}",
            f"sweep.seeds={n_runs // P.lrs}", f"sweep.chunk_size={P.chunk_size}",
            "sweep.progress=false",
            # the grid as a researcher's loop runs it: no refinement rounds, no PNGs or page
            "experiment.refine_rounds=0", "outputs.figures=false"]


def run_child(args: list[str], cwd, argv: list[str] | None = None) -> dict:
    """``python -m bpexp ARGS`` (or ``python ARGV``) in a fresh process: its exit status, wall
    seconds, peak resident memory (the kernel's ru_maxrss of that one child, via wait4) and
    the last line it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen([sys.executable, *(argv or ["-m", "bpexp", *args])], cwd=cwd,
                             env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        out.seek(0)
        log = out.read()
    if p.returncode != 0:
        raise RuntimeError(f"child {(argv or args)[:2]} failed ({p.returncode}): {log[-2000:]}")
    last = (log.strip().splitlines() or [""])[-1]
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "last_line": last}  # KiB


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def streaming_overhead(P, work: Path) -> dict:
    """In this process, the same grid (``overhead_runs``) through the engine with the metrics
    gathered in memory and streamed into a Zarr store: medians of ``repeats`` after one
    warm-up, the results compared bitwise; then the cost of a rerun that finds every chunk
    complete (what a resume pays per skipped chunk)."""
    ds = data.load("diabetes", dtype=np.float32)
    spec = train.TrainSpec(model="multivariate", n=ds.n, d_out=ds.d_out, m=ds.m,
                           steps=P.steps, record_every=P.record_every, opt_hparams=("lr",))
    seeds = max(1, P.overhead_runs // P.lrs)
    grid = sweep.Grid({"lr": np.geomspace(1e-3, 10, P.lrs), "seed": np.arange(seeds)})
    lay = sweep.layout(spec, grid, P.chunk_size)

    def new_store(i):
        path = work / f"overhead_{i}.zarr"
        return GridStore.open(path, lay, sweep.metric_shapes(spec), sweep.record_coords(spec))

    def in_memory():
        return sweep.run_grid(spec, ds.X, ds.Y, grid, progress=False, chunk_size=P.chunk_size)

    mem = in_memory()                                           # warm-up: compile
    compile_s = mem.stats["compile_s"]
    t_mem, t_store, stores = [], [], []
    for i in range(P.repeats):
        t = time.perf_counter()
        in_memory()
        t_mem.append(time.perf_counter() - t)
        st = new_store(i)
        t = time.perf_counter()
        sweep.run_grid(spec, ds.X, ds.Y, grid, progress=False, store=st)
        t_store.append(time.perf_counter() - t)
        stores.append(st)
    ds_store = stores[-1].dataset()
    equal = all(np.array_equal(ds_store[k].values, v, equal_nan=True)
                for k, v in mem.metrics.items())
    t = time.perf_counter()
    for _ in range(P.repeats):                                 # every chunk already complete
        sweep.run_grid(spec, ds.X, ds.Y, grid, progress=False, store=stores[-1])
    skip = (time.perf_counter() - t) / P.repeats
    return {"runs": grid.size, "chunks": lay.n_chunks, "runs_per_chunk": lay.runs_per_chunk,
            "compile_s": compile_s, "in_memory_s": statistics.median(t_mem),
            "streamed_s": statistics.median(t_store),
            "overhead": statistics.median(t_store) / statistics.median(t_mem) - 1,
            "streamed_equals_in_memory": bool(equal), "resume_skip_all_s": skip,
            "resume_skip_per_chunk_ms": 1e3 * skip / lay.n_chunks,
            "store_mb": folder_mb(stores[-1].path),
            "in_memory_mb": sum(v.nbytes for v in mem.metrics.values()) / 2**20}


@dataclass
class Result:
    grids: list          # one dict per grid size
    cache: dict          # cold / warm compile seconds
    overhead: dict


def compute(cfg, run) -> Result:
    P = cfg.experiment
    root = run.path("runs").resolve()     # the child runs' outputs root (own index.jsonl)
    cache = run.path("jax_cache").resolve()   # fresh: the first child compiles cold
    # the first process measures the streaming in process, compiling the grids' program cold
    # (its cache is empty); with one chunk size for every grid (experiment.chunk_size) each
    # grid's process then loads that program from the cache, so the grids are measured alike,
    # none of them paying the compiler's time and memory
    with tempfile.TemporaryDirectory(dir=run.dir) as work:
        overhead = json.loads(run_child([], run.dir, overhead_argv(P, Path(work), cache))[
            "last_line"])
    grids = []
    for n in P.runs:
        rid = f"runs_{n}"
        meas = run_child(child_args(P, n, root, cache, rid), run.dir)
        d = root / "lr_sweep" / rid
        s = json.loads((d / "summary.json").read_text())
        env = json.loads((d / "env.json").read_text())
        grids.append({"runs": s["runs"], **meas, "sweep_s": s["sweep_s"],
                      "compile_s": s["compile_s"], "runs_per_s": s["runs"] / s["sweep_s"],
                      "chunks": s["chunks"], "runs_per_chunk": s["runs_per_chunk"],
                      "store_mb": folder_mb(d / "metrics.zarr"),
                      "timings": env.get("timings", {}),
                      "threshold_refined": s["threshold_refined"],
                      "threshold_theory": s["threshold_theory"]})
        if not P.keep_stores:
            shutil.rmtree(d / "metrics.zarr")
    # the warm compile: a grid's process that loaded the first process's program (same chunk),
    # else the smallest grid again (its own program is in the cache now)
    same = [g for g in grids if g["runs_per_chunk"] == overhead["runs_per_chunk"]]
    if same:
        warm_id, warm_s = f"runs_{same[0]['runs']}", same[0]["compile_s"]
    else:
        warm_id = "warm"
        run_child(child_args(P, P.runs[0], root, cache, warm_id), run.dir)
        warm_s = json.loads((root / "lr_sweep" / warm_id / "summary.json").read_text())[
            "compile_s"]
        shutil.rmtree(root / "lr_sweep" / warm_id / "metrics.zarr")
    cache_info = {"cold_compile_s": overhead.pop("compile_s"), "warm_compile_s": warm_s,
                  "warm_process": warm_id, "cache_mb": folder_mb(cache)}
    return Result(grids, cache_info, overhead)


def overhead_argv(P, work: Path, cache: Path) -> list[str]:
    """The command line of a process that runs :func:`streaming_overhead` with ``cache`` as
    its persistent compilation cache and prints its result as one JSON line."""
    params = {k: getattr(P, k) for k in ("lrs", "steps", "record_every", "overhead_runs",
                                         "repeats", "chunk_size")}
    code = "import sys; from bpexp.experiments import scale; scale.overhead_main(sys.argv[1:])"
    return ["-c", code, json.dumps(params), str(work), str(cache)]


def overhead_main(argv: list[str]) -> None:
    """Entry of :func:`overhead_argv`'s process."""
    from bpexp.xla import use_compile_cache

    params, work, cache = json.loads(argv[0]), Path(argv[1]), argv[2]
    use_compile_cache(cache)
    print(json.dumps(streaming_overhead(Params(**params), work)))


def save(cfg, run, res: Result) -> dict:
    import xarray as xr

    g = res.grids
    runs = [x["runs"] for x in g]
    keys = ("peak_rss_mb", "wall_s", "sweep_s", "compile_s", "runs_per_s", "store_mb")
    run.save_metrics(xr.Dataset({k: (("runs",), np.array([x[k] for x in g], float))
                                 for k in keys}, coords={"runs": np.array(runs)}))
    rss = [x["peak_rss_mb"] for x in g]
    return {"grids": g, "peak_rss_mb": rss, "rss_max_over_min": max(rss) / min(rss),
            "bytes_per_run_stored": [x["store_mb"] * 2**20 / x["runs"] for x in g],
            "compile_cache": res.cache, "streaming": res.overhead,
            "streaming_overhead": res.overhead["overhead"],
            "resume_skip_per_chunk_ms": res.overhead["resume_skip_per_chunk_ms"],
            "largest_runs": max(runs), "largest_runs_per_s": g[-1]["runs_per_s"]}


def present(cfg, run, res: Result, summary: dict) -> None:
    g, o, c = res.grids, res.overhead, res.cache
    rows = [[x["runs"], x["peak_rss_mb"], x["wall_s"], x["sweep_s"], x["runs_per_s"],
             x["store_mb"], f"{x['chunks']} x {x['runs_per_chunk']}"] for x in g]
    header = ["runs", "peak RSS (MB)", "wall (s)", "sweep (s)", "runs/s", "store (MB)",
              "chunks x runs"]
    report.print_table("scale: one lr_sweep process per grid size", header, rows)
    other = [["peak RSS max / min over the grid sizes", summary["rss_max_over_min"],
              "flat: bounded by the chunk, not the grid"],
             [f"streamed / in-memory engine - 1 ({o['runs']} runs)", o["overhead"],
              f"{o['streamed_s']:.2f} s vs {o['in_memory_s']:.2f} s; bitwise equal: "
              f"{o['streamed_equals_in_memory']}"],
             ["resume: skip one complete chunk (ms)", o["resume_skip_per_chunk_ms"],
              f"{o['chunks']} chunks skipped in {o['resume_skip_all_s']:.3f} s"],
             ["compile, cold cache (s)", c["cold_compile_s"],
              "first process (the streaming measurement)"],
             ["compile, warm cache (s)", c["warm_compile_s"],
              f"process {c['warm_process']}; cache {c['cache_mb']:.1f} MB"]]
    report.print_table("scale: streaming, resume and compile cache",
                       ["quantity", "value", "note"], other)
    fig_scale(g, o, run.figure("scale.png"))
    run.save_report(report.report(
        "Scale: memory, throughput and store size vs the number of runs", question(__doc__),
        run.reproduce(),
        [("Setup", f"Each grid is `lr_sweep` (multivariate on diabetes, {cfg.experiment.steps} "
                   f"steps, record every {cfg.experiment.record_every}) with "
                   f"{cfg.experiment.lrs} learning rates x (runs / {cfg.experiment.lrs}) seeds, "
                   "run as its own process streaming into its metrics.zarr; peak RSS is the "
                   "kernel's ru_maxrss of that process. The child runs are in `runs/` (their "
                   "stores deleted after measuring unless experiment.keep_stores=true)."),
         ("Grid sizes", report.markdown_table(header, rows)),
         ("Streaming, resume, compile cache",
          report.markdown_table(["quantity", "value", "note"], other))],
        ["scale.png"], shows=shows(summary)))


def per_chunk_ms(o: dict) -> float:
    """What streaming adds per chunk, in ms: (streamed - in memory) / chunks."""
    return 1e3 * (o["streamed_s"] - o["in_memory_s"]) / o["chunks"]


def shows(s: dict) -> list[str]:
    """report.md's opening sentences, computed from the summary (timings: this machine's)."""
    g, o, c = s["grids"], s["streaming"], s["compile_cache"]
    flat = s["rss_max_over_min"] < 1.5
    return [f"From {g[0]['runs']} to {g[-1]['runs']} runs the peak memory goes from "
            f"{g[0]['peak_rss_mb']:.0f} to {g[-1]['peak_rss_mb']:.0f} MB (x"
            f"{s['rss_max_over_min']:.2f}): " + ("flat, bounded by the chunk, not the grid."
                                                 if flat else "it grows with the grid."),
            f"Streaming into metrics.zarr costs {o['overhead']:+.0%} against the in-memory "
            f"engine ({per_chunk_ms(o):.2g} ms per chunk written, against "
            f"{1e3 * o['in_memory_s'] / o['chunks']:.2g} ms of compute per chunk), and the "
            "results are "
            + ("bitwise equal." if o["streamed_equals_in_memory"] else "NOT bitwise equal."),
            f"A resume skips a complete chunk in {o['resume_skip_per_chunk_ms']:.2g} ms; a "
            f"second process compiles in {c['warm_compile_s']:.2g} s from JAX's persistent "
            f"cache against {c['cold_compile_s']:.2g} s cold (timings of this machine)."]


def readme(record: dict) -> str:
    """The README's block: the grid table of the recorded run (timings, memory and store size
    marked machine-dependent; the grids and their chunking are reproduced)."""
    s, m = record["summary"], docs.measured
    o, c = s["streaming"], s["compile_cache"]
    lines = [f"`{record['command']}`, {docs.machine('timings and memory', record)}:", "",
             "| runs | peak RSS, MB | wall, s | sweep, s | runs/s | store, MB | chunks x runs |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['runs']} | {m(format(x['peak_rss_mb'], '.0f'))} | "
              f"{m(format(x['wall_s'], '.1f'))} | {m(format(x['sweep_s'], '.2f'))} | "
              f"{m(format(x['runs_per_s'], ',.0f'))} | {m(format(x['store_mb'], '.2f'))} | "
              f"{x['chunks']} x {x['runs_per_chunk']} |" for x in s["grids"]]
    lines += ["", f"Peak memory max / min over the grid sizes: "
                  f"{m(format(s['rss_max_over_min'], '.2f'))}. Streaming {o['runs']} runs into "
                  f"metrics.zarr costs {m(format(o['overhead'], '+.1%'))} against gathering "
                  f"them in memory ({m(format(per_chunk_ms(o), '.2g'))} ms per chunk written; "
                  f"bitwise equal: {o['streamed_equals_in_memory']}); a resume "
                  f"skips a complete chunk in {m(format(o['resume_skip_per_chunk_ms'], '.2g'))} "
                  f"ms; a second process compiles in {m(format(c['warm_compile_s'], '.2g'))} s "
                  f"from the persistent cache against {m(format(c['cold_compile_s'], '.2g'))} s "
                  "cold."]
    return "\n".join(lines) + "\n"


def fig_scale(grids, overhead, path):
    """Peak RSS (measured, streamed) beside what keeping the grid in memory would add, and
    throughput, against the number of runs."""
    runs = np.array([x["runs"] for x in grids], float)
    rss = np.array([x["peak_rss_mb"] for x in grids])
    per_run = overhead["in_memory_mb"] / overhead["runs"]
    fig, (ax, ax2) = plots.slide(1, 2)
    ax.plot(runs, rss, "o-", color="tab:blue", label="measured peak RSS (streamed to Zarr)")
    ax.plot(runs, rss[0] + per_run * (runs - runs[0]), "s--", color="tab:gray",
            label=f"+ the grid kept in memory ({per_run * 2**20:.0f} B/run)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.15 * max(rss.max(), rss[0] + per_run * (runs[-1] - runs[0])))
    ax.set_xlabel("runs in the grid (log)")
    ax.set_ylabel("peak resident memory of the process, MB")
    ax.set_title("Memory stays flat: one chunk at a time")
    plots.legend_outside(ax, "below", ncol=1)
    ax2.plot(runs, [x["runs_per_s"] for x in grids], "o-", color="tab:green")
    ax2.set_xscale("log")
    ax2.set_xlabel("runs in the grid (log)")
    ax2.set_ylabel("runs per second (sweep only)")
    ax2.set_title(f"Throughput; streaming overhead {100 * overhead['overhead']:+.1f}%\n"
                  f"({overhead['runs']} runs, this machine)")
    ax2.set_ylim(bottom=0)
    return plots.save(fig, path)
