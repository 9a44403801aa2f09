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

from bpexp import make, optim, plots, report, sweep, train
from bpexp.errors import UserError
from bpexp.experiments._common import command, load_data, question

SIZES = {  # reference grids: runs = lrs x seeds, full-batch GD on digits, two_layer_sigmoid, MSE
    "tiny": {"hidden": 8, "lrs": 4, "seeds": 2, "steps": 20, "m": 200},
    "small": {"hidden": 32, "lrs": 16, "seeds": 8, "steps": 200, "m": 0},
    "large": {"hidden": 256, "lrs": 64, "seeds": 16, "steps": 200, "m": 0},
}


USES = ()  # config sections read (make.check builds them first)


@dataclass
class Params:
    name: str = "bench"
    size: str = "small"                 # tiny | small | large
    repeats: int = 3                    # median of this many timings (after a warm-up)
    naive_runs: int = 16                # (c) is timed on this many runs, scaled to the grid
    scaling: list = field(default_factory=lambda: [100, 1000, 10000, 100000])  # runs; [] skips
    scaling_steps: int = 100
    gemm_n: int = 2048                  # size of the square float32 matmul for the peak


def validate(cfg):
    P = cfg.experiment
    if P.size not in SIZES:
        raise UserError(f"experiment.size={P.size!r} is not allowed; choose one of {', '.join(SIZES)}")
    if P.repeats < 1 or P.naive_runs < 1 or P.gemm_n < 1:
        raise UserError("experiment.repeats, experiment.naive_runs and experiment.gemm_n must be >= 1")
    if any(not isinstance(r, int) or r < 1 for r in P.scaling):
        raise UserError(f"experiment.scaling={P.scaling!r} must be a list of run counts >= 1")


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


def run(cfg, run):
    P = cfg.experiment
    S = SIZES[P.size]
    ds = load_data(cfg, run, name="digits", m=S["m"], features=None)
    dtype = make.dtype(cfg).type
    devices = sweep.devices_for(cfg.device)
    spec = train.TrainSpec(model="two_layer_sigmoid", n=ds.n, d_out=ds.d_out, m=ds.m, steps=S["steps"],
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
        r = sweep.run_grid(s, ds.X, ds.Y, grid, devices=devices, progress=False)
        return r

    with run.timed("engine"):
        first = engine("manual")
        compile_s = first.stats["compile_s"]
        engine_s, engine_ts = _median_time(lambda: engine("manual"), P.repeats)
    with run.timed("autodiff"):
        engine("autodiff")
        autodiff_s, _ = _median_time(lambda: engine("autodiff"), P.repeats)

    # (b) a jitted scan per run, looped in Python
    X, Y = jnp.asarray(ds.X, dtype), jnp.asarray(ds.Y, dtype)
    one = jax.jit(train.make_run(spec))
    hp = lambda i: {"lr": dtype(flat["lr"][i]), "seed": np.int32(flat["seed"][i]), "init_scale": dtype(1.0)}
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
        s_spec = train.TrainSpec(model="multivariate", n=dia.n, d_out=1, m=dia.m, steps=P.scaling_steps,
                                 record_every=P.scaling_steps, optimizer="gd", opt_hparams=("lr",),
                                 model_hparams=(("init", "standard"),), dtype=cfg.precision)
        with run.timed("scaling"):
            for n in P.scaling:
                g = sweep.Grid({"lr": np.geomspace(1e-3, 0.2, n), "seed": np.arange(1)})
                sweep.run_grid(s_spec, dia.X, dia.Y, g, devices=devices, progress=False)  # warm-up: compile
                r = sweep.run_grid(s_spec, dia.X, dia.Y, g, devices=devices, progress=True, label=f"{n} runs")
                scaling.append({"runs": n, "seconds": r.stats["run_s"], "runs_per_s": r.stats["runs_per_s"],
                                "chunks": r.stats["chunks"], "chunk_size": r.stats["chunk_size"]})

    gflops = flops / engine_s / 1e9
    summary = {"backend": jax.default_backend(), "devices": [str(d) for d in devices],
               "size": P.size, "runs": n_runs, "steps": S["steps"], "hidden": S["hidden"], "m": ds.m,
               "engine_s": engine_s, "loop_s": loop_s, "naive_s": naive_s,
               "speedup_vs_loop": loop_s / engine_s, "speedup_vs_naive": naive_s / engine_s,
               "gflops": gflops, "gemm_peak_gflops": peak, "frac_of_peak": gflops / peak,
               "compile_s": compile_s, "manual_s": engine_s, "autodiff_s": autodiff_s,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "naive_runs_timed": k, "engine_times": engine_ts, "scaling": scaling}

    rows = [["(a) engine: one vmapped compiled call", engine_s, f"{gflops:.1f} GFLOP/s = {gflops / peak:.0%} of GEMM peak"],
            ["(b) jitted scan per run, Python loop", loop_s, f"engine {loop_s / engine_s:.2f}x faster"],
            ["(c) Python loop over a jitted step", naive_s, f"engine {naive_s / engine_s:.2f}x faster (timed on {k} runs)"],
            ["engine, autodiff gradients", autodiff_s, f"manual/autodiff time {engine_s / autodiff_s:.2f}"],
            ["compile (engine)", compile_s, ""],
            ["float32 GEMM peak (GFLOP/s)", peak, f"{P.gemm_n}^3 matmul"],
            ["peak RSS (MB)", summary["peak_rss_mb"], ""]]
    rows += [[f"scaling: {s['runs']:,} runs x {P.scaling_steps} steps", s["seconds"],
              f"{s['runs_per_s']:,.0f} runs/s, {s['chunks']} chunk(s) of {s['chunk_size']}"] for s in scaling]
    title = f"bench ({P.size}: {n_runs} runs x {S['steps']} steps, hidden {S['hidden']}, m={ds.m}, {jax.default_backend()})"
    report.print_table(title, ["what", "seconds / value", "note"], rows)
    plots.bench_times({"(a) engine": engine_s, "(b) scan per run": loop_s, "(c) loop over step": naive_s,
                       "engine, autodiff": autodiff_s}, scaling, run.figure("times.png"), title=title)
    run.save_metrics(engine_times=np.array(engine_ts),
                     scaling_runs=np.array([s["runs"] for s in scaling]),
                     scaling_seconds=np.array([s["seconds"] for s in scaling]))
    run.save_report(report.report(
        "Benchmark", question(__doc__), command(cfg),
        [("Machine", f"backend {jax.default_backend()}, devices {', '.join(summary['devices'])}, "
                     f"{cfg.precision}; timings are medians of {P.repeats} after a warm-up."),
         ("Times", report.markdown_table(["what", "seconds / value", "note"], rows))],
        ["times.png"]))
    return summary
