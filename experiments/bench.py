"""How fast is the grid engine, and how close to the machine's peak?

Question: training a grid of runs, how does one vmapped, compiled call compare with (b) a
jitted scan per run looped in Python and (c) a Python loop over a jitted step?
Theory: every run does the same GEMM-shaped work, 6 * weights * examples FLOPs per step
(forward 2, backward 4); batching runs into one call removes per-call overhead and gives the
matmuls more rows, so the engine should approach the GEMM peak of the same process.
Expected (2-core CPU): engine >= (b), >= 3x (c) where dispatch overhead matters, >= 50% of
the measured float32 GEMM peak; cost linear in the number of runs.
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
import xarray as xr

from bpexp import docs, make, optim, plots, report, sweep, train
from bpexp.errors import UserError
from bpexp.experiments._common import load_data, question

SIZES = {  # reference grids: runs = lrs x seeds, full-batch GD on digits, two_layer_sigmoid, MSE
    "tiny": {"hidden": 8, "lrs": 4, "seeds": 2, "steps": 20, "m": 200},
    "quick": {"hidden": 32, "lrs": 8, "seeds": 4, "steps": 100, "m": 500},   # the default
    "small": {"hidden": 32, "lrs": 16, "seeds": 8, "steps": 200, "m": 0},
    "large": {"hidden": 256, "lrs": 64, "seeds": 16, "steps": 200, "m": 0},
}


USES = ()  # config sections read (make.check builds them first)


@dataclass
class Params:
    name: str = "bench"
    size: str = "quick"                 # tiny | quick | small | large
    repeats: int = 3                    # median of this many timings (after a warm-up)
    naive_runs: int = 4                 # (c) is timed on this many runs, scaled to the grid
    scaling: list = field(default_factory=lambda: [100, 1000, 10000])  # runs; [] skips
    scaling_steps: int = 50
    gemm_n: int = 1024                  # size of the square float32 matmul for the peak


def validate(cfg):
    P = cfg.experiment
    if P.size not in SIZES:
        raise UserError(f"experiment.size={P.size!r} is not allowed; choose one of "
                        f"{', '.join(SIZES)}")
    for key in ("repeats", "naive_runs", "scaling_steps", "gemm_n"):
        if getattr(P, key) < 1:
            raise UserError(f"experiment.{key}={getattr(P, key)!r} is not allowed; "
                            "allowed: an int >= 1")
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in P.scaling):
        raise UserError(f"experiment.scaling={P.scaling!r} is not allowed; allowed: a list of "
                        "run counts (ints >= 1), [] to skip")


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def gemm_peak(n, repeats, dtype=jnp.float32):
    """GFLOP/s of an n x n x n matmul in this process (median of ``repeats``)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    t, _ = _median_time(lambda: f(a, a).block_until_ready(), repeats)
    return 2 * n ** 3 / t / 1e9


def naive_step_fn(spec):
    """(c): one jitted GD step; the Python loop around it is the point."""
    model = spec.get_model()
    vg = (jax.value_and_grad(model.loss) if spec.grad == "autodiff"
          else lambda p, X, Y: (model.loss(p, X, Y), model.grad(p, X, Y)))

    @jax.jit
    def step(p, s, X, Y, lr):
        loss, g = vg(p, X, Y)
        upd, s = optim.get(spec.optimizer, lr=lr).update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    return step


@dataclass
class Result:
    backend: str                # jax.default_backend()
    devices: list               # [device] names of the devices the engine ran on
    runs: int                   # runs in the grid (lrs x seeds)
    m: int                      # examples per run (full batch)
    flops: float                # 6 x weights x examples x steps x runs: the whole grid's work
    compile_s: float            # compile seconds of the engine (its first call)
    engine_s: float             # (a) median seconds of the engine, hand-derived gradients
    engine_times: list          # [repeat] seconds of each timed engine call
    autodiff_s: float           # (a) with jax.grad gradients, median seconds
    loop_s: float               # (b) median seconds
    naive_s: float              # (c) median seconds, scaled to the grid
    naive_runs_timed: int       # runs (c) was timed on
    gemm_peak_gflops: float     # float32 GEMM peak of this process
    peak_rss_mb: float          # peak resident memory after every timing
    scaling: list               # [grid] {"runs", "seconds", "runs_per_s", "chunks", "chunk_size"}


def compute(cfg, run) -> Result:
    """Long because it runs the experiment's parts one after another (each a few lines) sharing
    their inputs."""
    P = cfg.experiment
    S = SIZES[P.size]
    ds = load_data(cfg, run, name="digits", m=S["m"], features=None)
    dtype = make.dtype(cfg).type
    devices = sweep.devices_for(cfg.device)
    spec = train.TrainSpec(model="two_layer_sigmoid", n=ds.n, d_out=ds.d_out, m=ds.m,
                           steps=S["steps"],
                           model_hparams=(("hidden", S["hidden"]), ("init", "standard")),
                           optimizer="gd", opt_hparams=("lr",), dtype=cfg.precision)
    grid = sweep.Grid({"lr": np.geomspace(0.01, 10, S["lrs"]), "seed": np.arange(S["seeds"])})
    flat = grid.flat()
    n_runs = grid.size
    weights = ds.n * S["hidden"] + S["hidden"] * ds.d_out
    flops = 6.0 * weights * ds.m * S["steps"] * n_runs

    # (a) the engine; the first call compiles (warm-up), then the median of `repeats`
    def engine(grad):
        s = spec if grad == "manual" else train.TrainSpec(**{**spec.__dict__, "grad": grad})
        return sweep.run_grid(s, ds.X, ds.Y, grid, devices=devices, progress=False)

    with run.timed("engine"):
        compile_s = engine("manual").stats["compile_s"]
        engine_s, engine_ts = _median_time(lambda: engine("manual"), P.repeats)
    with run.timed("autodiff"):
        engine("autodiff")
        autodiff_s, _ = _median_time(lambda: engine("autodiff"), P.repeats)

    # (b) a jitted scan per run, looped in Python
    X, Y = jnp.asarray(ds.X, dtype), jnp.asarray(ds.Y, dtype)
    one = jax.jit(train.make_run(spec))

    def hp(i):
        return {"lr": dtype(flat["lr"][i]), "seed": np.int32(flat["seed"][i]),
                "init_scale": dtype(1.0)}

    jax.block_until_ready(one(hp(0), X, Y))

    def loop():
        outs = [one(hp(i), X, Y) for i in range(n_runs)]
        jax.block_until_ready(outs)
        return outs

    with run.timed("loop"):
        loop_s, _ = _median_time(loop, P.repeats)

    # (c) a Python loop over a jitted step, timed on naive_runs runs and scaled to the grid
    model = spec.get_model()
    step = naive_step_fn(spec)
    k = min(P.naive_runs, n_runs)
    inits = [model.init(train.run_keys(int(flat["seed"][i]))[0], ds.n, ds.d_out,
                        hidden=S["hidden"], dtype=dtype) for i in range(k)]
    opt = optim.get("gd", lr=0.1)
    jax.block_until_ready(step(inits[0], opt.init(inits[0]), X, Y, dtype(0.1)))

    def naive():
        losses = []
        for i in range(k):
            p, s = inits[i], opt.init(inits[i])
            for _ in range(S["steps"]):
                p, s, loss = step(p, s, X, Y, dtype(flat["lr"][i]))
                losses.append(loss)
        jax.block_until_ready(losses)

    with run.timed("naive"):
        naive_k, _ = _median_time(naive, P.repeats)
    naive_s = naive_k * n_runs / k

    with run.timed("gemm"):
        peak = gemm_peak(P.gemm_n, P.repeats, jnp.float32)

    # the engine is linear in runs: a small model from 10^2 to 10^5 runs
    scaling = []
    if P.scaling:
        dia = load_data(cfg, None, name="diabetes", m=0, features=None)
        s_spec = train.TrainSpec(model="multivariate", n=dia.n, d_out=1, m=dia.m,
                                 steps=P.scaling_steps, record_every=P.scaling_steps,
                                 optimizer="gd", opt_hparams=("lr",),
                                 model_hparams=(("init", "standard"),), dtype=cfg.precision)
        with run.timed("scaling"):
            for n in P.scaling:
                g = sweep.Grid({"lr": np.geomspace(1e-3, 0.2, n), "seed": np.arange(1)})
                # the first call compiles: time the second
                sweep.run_grid(s_spec, dia.X, dia.Y, g, devices=devices, progress=False)
                r = sweep.run_grid(s_spec, dia.X, dia.Y, g, devices=devices, progress=True,
                                   label=f"{n} runs")
                scaling.append({"runs": n, "seconds": r.stats["run_s"],
                                "runs_per_s": r.stats["runs_per_s"],
                                "chunks": r.stats["chunks"], "chunk_size": r.stats["chunk_size"]})

    return Result(backend=jax.default_backend(), devices=[str(d) for d in devices], runs=n_runs,
                  m=ds.m, flops=flops, compile_s=compile_s, engine_s=engine_s,
                  engine_times=engine_ts, autodiff_s=autodiff_s, loop_s=loop_s, naive_s=naive_s,
                  naive_runs_timed=k, gemm_peak_gflops=peak,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  scaling=scaling)


def save(cfg, run, res: Result) -> dict:
    P = cfg.experiment
    S = SIZES[P.size]
    # the timed engine calls over ``repeat``; the scaling grids over ``scaling_runs`` (the run
    # count of each grid: select with .sel(scaling_runs=1000)), empty when scaling is []
    sc = {k: np.array([g[k] for g in res.scaling], dtype)
          for k, dtype in (("runs", np.int64), ("seconds", np.float64),
                           ("runs_per_s", np.float64), ("chunks", np.int64),
                           ("chunk_size", np.int64))}
    run.save_metrics(xr.Dataset(
        {"engine_times": ("repeat", np.array(res.engine_times, np.float64)),
         **{f"scaling_{k}": ("scaling_runs", v) for k, v in sc.items() if k != "runs"}},
        coords={"repeat": np.arange(len(res.engine_times)), "scaling_runs": sc["runs"]}))
    gflops = res.flops / res.engine_s / 1e9
    return {"backend": res.backend, "devices": res.devices, "size": P.size, "runs": res.runs,
            "steps": S["steps"], "hidden": S["hidden"], "m": res.m, "engine_s": res.engine_s,
            "loop_s": res.loop_s, "naive_s": res.naive_s,
            "speedup_vs_loop": res.loop_s / res.engine_s,
            "speedup_vs_naive": res.naive_s / res.engine_s,
            "gflops": gflops, "gemm_peak_gflops": res.gemm_peak_gflops,
            "frac_of_peak": gflops / res.gemm_peak_gflops, "compile_s": res.compile_s,
            "manual_s": res.engine_s, "autodiff_s": res.autodiff_s,
            "peak_rss_mb": res.peak_rss_mb, "naive_runs_timed": res.naive_runs_timed,
            "engine_times": res.engine_times, "scaling": res.scaling}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P, s = cfg.experiment, summary
    rows = [["(a) engine: one vmapped compiled call", s["engine_s"],
             f"{s['gflops']:.1f} GFLOP/s = {s['frac_of_peak']:.0%} of GEMM peak"],
            ["(b) jitted scan per run, Python loop", s["loop_s"],
             f"engine {s['speedup_vs_loop']:.2f}x faster"],
            ["(c) Python loop over a jitted step", s["naive_s"],
             f"engine {s['speedup_vs_naive']:.2f}x faster "
             f"(timed on {s['naive_runs_timed']} runs)"],
            ["engine, autodiff gradients", s["autodiff_s"],
             f"manual/autodiff time {s['manual_s'] / s['autodiff_s']:.2f}"],
            ["compile (engine)", s["compile_s"], ""],
            ["float32 GEMM peak (GFLOP/s)", s["gemm_peak_gflops"], f"{P.gemm_n}^3 matmul"],
            ["peak RSS (MB)", s["peak_rss_mb"], ""]]
    rows += [[f"scaling: {g['runs']:,} runs x {P.scaling_steps} steps", g["seconds"],
              f"{g['runs_per_s']:,.0f} runs/s, {g['chunks']} chunk(s) of {g['chunk_size']}"]
             for g in s["scaling"]]
    title = (f"bench ({P.size}: {s['runs']} runs x {s['steps']} steps, hidden {s['hidden']}, "
             f"m={s['m']}, {s['backend']})")
    report.print_table(title, ["what", "seconds / value", "note"], rows)
    plot_times({"(a) engine": s["engine_s"], "(b) scan per run": s["loop_s"],
                "(c) loop over step": s["naive_s"], "engine, autodiff": s["autodiff_s"]},
               s["scaling"], run.figure("times.png"), title=title)
    run.save_report(report.report(
        "Benchmark", question(__doc__), run.reproduce(),
        [("Machine", f"backend {s['backend']}, devices {', '.join(s['devices'])}, "
                     f"{cfg.precision}; timings are medians of {P.repeats} after a warm-up."),
         ("Times", report.markdown_table(["what", "seconds / value", "note"], rows))],
        ["times.png"], shows=shows(s)))


def shows(s: dict) -> list[str]:
    """report.md's opening sentences, computed from the summary (timings: this machine's)."""
    out = [f"On this machine ({s['backend']}), {s['runs']} training runs of {s['steps']} steps "
           f"take {s['engine_s']:.3g} s as one vmapped compiled call, {s['speedup_vs_loop']:.1f}x "
           f"faster than a loop of compiled runs and {s['speedup_vs_naive']:.0f}x faster than a "
           "loop of compiled steps.",
           f"The engine computes {s['gflops']:.3g} GFLOP/s, {s['frac_of_peak']:.0%} of this "
           f"machine's GEMM peak ({s['gemm_peak_gflops']:.3g} GFLOP/s): small networks are "
           "memory- and overhead-bound, not compute-bound.",
           f"The hand-written backward takes {s['manual_s']:.3g} s against jax.grad's "
           f"{s['autodiff_s']:.3g} s ({s['autodiff_s'] / s['manual_s']:.2f}x)."]
    if s["scaling"]:
        a, b = s["scaling"][0], s["scaling"][-1]
        out.append(f"From {a['runs']} to {b['runs']} runs the throughput goes from "
                   f"{a['runs_per_s']:.3g} to {b['runs_per_s']:.3g} runs/s.")
    return out


def plot_times(times: dict, scaling: list, path, title="bench"):
    """Bars of wall seconds per method; beside it, seconds vs number of runs (log-log) with a
    linear-cost reference line."""
    fig, axes = plots.slide(1, 2 if scaling else 1)
    ax = axes[0] if scaling else axes
    names = list(times)
    ax.barh(names, [times[k] for k in names],
            color=["tab:green", "tab:blue", "tab:orange", "tab:purple"][:len(names)])
    for i, k in enumerate(names):
        ax.text(times[k], i, f" {times[k]:.2f} s", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(times.values()) * 1.2)  # room for the labels
    ax.set_xlabel("wall seconds for the whole grid (median)")
    ax.set_title(title, fontsize=9)
    if scaling:
        ax2 = axes[1]
        r = np.array([s["runs"] for s in scaling], float)
        t = np.array([s["seconds"] for s in scaling], float)
        ax2.loglog(r, t, "o-", label="engine")
        ax2.loglog(r, t[-1] * r / r[-1], "k--", lw=1, label="linear in runs")
        ax2.set_xlabel("runs in the grid (log)")
        ax2.set_ylabel("wall seconds (log)")
        ax2.set_title("Cost vs number of runs (small model)", fontsize=9)
        ax2.legend(fontsize=8)
    return plots.save(fig, path)


def readme(record: dict) -> str:
    """The README block: the recorded run's table, every number marked machine-dependent."""
    s = record["summary"]

    def t(v, f=".2f"):
        return docs.measured(format(v, f))

    rows = [("(a) the engine: one vmapped, compiled call", t(s["engine_s"]),
             f"{t(s['gflops'], '.0f')} GFLOP/s (6 x weights x examples per step)"),
            ("(b) a jitted `lax.scan` per run, looped in Python", t(s["loop_s"]),
             f"{t(s['speedup_vs_loop'])}x the engine's time"),
            ("(c) a Python loop over a jitted step", t(s["naive_s"]),
             f"{t(s['speedup_vs_naive'])}x the engine's time"),
            ("engine with `jax.grad` instead of the hand-derived backward pass",
             t(s["autodiff_s"]), f"{t(s['autodiff_s'] / s['manual_s'])}x the hand-derived"),
            ("compile", t(s["compile_s"]), "once per structure; new lr values do not recompile"),
            ("float32 GEMM peak of the same process", f"{t(s['gemm_peak_gflops'], '.0f')} "
             "GFLOP/s", f"engine at {t(s['frac_of_peak'], '.0%')} of it"),
            ("peak RSS", f"{t(s['peak_rss_mb'], '.0f')} MB", "")]
    lines = [f"`{record['command']}` ({s['runs']} runs x {s['steps']} steps, hidden "
             f"{s['hidden']}, {s['backend']}), {docs.machine('timings', record)}:", "",
             "| | seconds | |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if s["scaling"]:
        lines += ["", "Cost vs the number of runs: " + ", ".join(
            f"{g['runs']} runs in {t(g['seconds'], '.3g')} s" for g in s["scaling"]) + "."]
    return "\n".join(lines) + "\n"
