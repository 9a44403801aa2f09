"""Why backpropagation (Lecture 5, Q4) and why store the forward values (Q8), measured.

Question: (Q4) what does it cost to compute ALL the gradients of an MLP's loss, by backprop,
by forward mode (one JVP per parameter) and by finite differences, as the parameter count P
grows from ~1e2 to ~1e5 and beyond? (Q8) what do the cached z_l, a_l of the forward pass buy:
memory and time of the backward pass that stores them, one that keeps only each layer's input
(jax.checkpoint) and one that stores nothing and recomputes, as the depth grows?
Theory: reverse mode returns every dL/dtheta for a small constant multiple of one forward pass
(Baur & Strassen 1983; Griewank & Walther 2008, "Evaluating Derivatives", ch. 4, the cheap
gradient principle: ~3 for matmul layers, the forward matmul, then dW and delta). One forward
pass of an MLP costs ~2 m P FLOPs (m examples), so backprop's cost grows like P^1. Forward mode
needs one JVP (~2-3 forwards) per parameter and central differences two forwards per
parameter: P x O(P) = P^2. Storing costs memory linear in depth (z_l and a_l: 2 m h numbers
per layer); checkpointing keeps a_{l-1} only (half) and recomputes each layer once (~one extra
forward); storing nothing costs O(1) memory in depth but recomputes a_{l-1} from the input for
every layer: L(L-1)/2 layer evaluations, time quadratic in depth (Griewank 1992 for the
checkpointing trade-off; Chen et al. 2016, "Training deep nets with sublinear memory cost").
Expected: log-log slopes of FLOPs vs P read from XLA's cost analysis of the compiled program
that computes all P gradients: backprop ~1, forward mode and finite differences ~2; wall time
follows where the programs are large enough to be compute-bound (machine-dependent; at small P
per-operation overhead dominates). Temp memory of the compiled backward grows linearly with
depth when storing, ~half as fast with checkpoints, flat when recomputing, whose time grows
~quadratically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import jax
import numpy as np
import xarray as xr

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.backprop_cost import text
from bpexp.experiments.backprop_cost.figures import LABELS, _g, fig_q4, fig_q8
from bpexp.experiments.backprop_cost.q4 import Q4, Q4_METHODS, run_q4
from bpexp.experiments.backprop_cost.q8 import Q8, Q8_METHODS, run_q8
from bpexp.experiments.backprop_cost.timing import fit, slope

USES = ()  # builds its own networks and random data
SIZES = ("small", "large")
# `size` fills every list left empty: small fits ~20 s on a 2-core CPU, large is for a GPU
PRESETS = {
    "small": {"widths": [4, 16, 32, 256], "max_params_forward": 4000,
              "depths": [4, 8, 16, 32]},
    "large": {"widths": [4, 8, 16, 32, 64, 128, 256, 512, 1024],
              "max_params_forward": 200_000, "depths": [2, 4, 8, 16, 32, 64, 128, 256]},
}
HEADLINE_METHODS = ("backprop", "forward_mode", "finite_differences")
HEADLINE = tuple(f"flop_slope_{k}" for k in HEADLINE_METHODS)  # comparison tables
THEORY_SLOPE = {"forward": 1, "backprop": 1, "forward_mode": 2, "finite_differences": 2}


@dataclass
class Params:
    name: str = "backprop_cost"
    size: str = "small"          # small | large: the preset for the lists left empty
    activation: str = "tanh"
    # Q4: cost of all gradients vs parameter count
    widths: list = field(default_factory=list)   # hidden width h of each net ([] = preset)
    depth: int = 3               # hidden layers; inputs n = h, one output: P ~ depth h^2
    batch: int = 64              # m examples
    max_params_forward: int = 0  # forward mode / finite differences timed up to this P (0 =
    #                              preset); their FLOPs are read at every P (compiled, not run)
    max_temp_mb: float = 2048.0  # a timed all-P program needing more temp memory runs its
    #                              directions in blocks of `chunk` (lax.map) instead
    chunk: int = 512             # directions per block
    # Q8: store vs recompute as depth grows
    depths: list = field(default_factory=list)   # layers L ([] = preset)
    q8_width: int = 64           # every layer h x h (inputs and targets h too)
    q8_batch: int = 256          # m > h: the activations dominate the memory
    repeats: int = 5             # timings: best of this many
    min_seconds: float = 0.02    # each timing repeats a call until it lasts this long


def validate(cfg):
    P = cfg.experiment
    if P.size not in SIZES:
        raise UserError(f"experiment.size={P.size!r} is not allowed; choose one of "
                        f"{', '.join(SIZES)}")
    if P.activation not in ("sigmoid", "tanh", "relu"):
        raise UserError(f"experiment.activation={P.activation!r} is not allowed; choose one of "
                        "sigmoid, tanh, relu")
    for k in ("widths", "depths"):
        v = getattr(P, k)
        if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 65536 for x in v):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: a list of ints in "
                            "[1, 65536] ([] = the size preset)")
        if len(set(v)) != len(v) or (v and len(v) < 2):
            raise UserError(f"experiment.{k}={v!r} is not allowed; allowed: >= 2 distinct values "
                            "(a slope needs two points) or []")
    for k, lo in (("depth", 1), ("batch", 1), ("chunk", 1), ("q8_width", 1), ("q8_batch", 1),
                  ("repeats", 1), ("max_params_forward", 0)):
        if not lo <= getattr(P, k) <= 10**9:
            raise UserError(f"experiment.{k}={getattr(P, k)!r} is not allowed; allowed: an int "
                            f">= {lo}")
    if not 0 <= P.min_seconds < 60:
        raise UserError(f"experiment.min_seconds={P.min_seconds!r} is not allowed; allowed: in "
                        "[0, 60)")
    if not P.max_temp_mb > 0:
        raise UserError(f"experiment.max_temp_mb={P.max_temp_mb!r} is not allowed; allowed: a "
                        "number > 0 (MB)")


def resolved(P) -> dict:
    """The lists and limits after the size preset fills the ones left empty."""
    pre = PRESETS[P.size]
    return {"widths": sorted(P.widths or pre["widths"]),
            "depths": sorted(P.depths or pre["depths"]),
            "max_params_forward": P.max_params_forward or pre["max_params_forward"]}


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    q4: Q4
    q8: Q8
    resolved: dict
    backend: str
    device: str
    load: tuple       # 1-minute load average before and after: how shared the machine was


def compute(cfg, run) -> Result:
    P = cfg.experiment
    R = resolved(P)
    k4, k8 = (cfg.seed, 4), (cfg.seed, 8)   # numpy seeds of the Q4 and Q8 data (q4.problems)
    load = os.getloadavg()[0]
    with run.timed("q4"):
        q4 = run_q4(P, R, k4)
    with run.timed("q8"):
        q8 = run_q8(P, R, k8)
    return Result(q4, q8, R, jax.default_backend(), str(jax.devices()[0]),
                  (load, os.getloadavg()[0]))


# ---------------------------------------------------------------- save
def q4_table(q4: Q4) -> dict:
    """Forward-pass equivalents (cost / the forward pass's), the fitted log-log slopes of the
    measured cost vs P with their standard errors, and time against FLOPs at the largest P
    timed for every method (the TRACK rule of text.py)."""
    fpe_t, fpe_f = q4.seconds / q4.seconds[0], q4.flops / q4.flops[0]
    out = {"fpe_time": fpe_t, "fpe_flops": fpe_f, "time_vs_flops": {}}
    for what, arr in (("flops", q4.flops), ("time", q4.seconds)):
        f = {k: fit(q4.params, arr[i]) for i, k in enumerate(Q4_METHODS)}
        out[f"slope_{what}"] = {k: v[0] for k, v in f.items()}
        out[f"slope_{what}_stderr"] = {k: v[1] for k, v in f.items()}
    timed = np.flatnonzero(np.isfinite(q4.seconds).all(0))
    if timed.size:
        j = int(timed[-1])
        for i, k in enumerate(Q4_METHODS[1:], 1):
            r = float(fpe_t[i, j] / fpe_f[i, j])
            out["time_vs_flops"][k] = {"params": int(q4.params[j]), "fpe_time": float(fpe_t[i, j]),
                                       "fpe_flops": float(fpe_f[i, j]), "ratio": r,
                                       "tracks": bool(1 / text.TRACK <= r <= text.TRACK),
                                       "temp_mb": float(q4.temp_bytes[i, j] / 1e6)}
    return out


def q8_table(q8: Q8) -> dict:
    """Temp bytes per layer (linear fit) and the log-log slope of time vs depth."""
    return {"bytes_per_layer": {k: float(np.polyfit(q8.depths, q8.temp_bytes[i], 1)[0])
                                for i, k in enumerate(Q8_METHODS)},
            "slope_time": {k: slope(q8.depths, q8.seconds[i]) for i, k in enumerate(Q8_METHODS)},
            "slope_matmuls": {k: slope(q8.depths, q8.layer_evals[i])
                              for i, k in enumerate(Q8_METHODS)},
            "slope_time_last_half": {k: slope(q8.depths[len(q8.depths) // 2:],
                                              q8.seconds[i, len(q8.depths) // 2:])
                                     for i, k in enumerate(Q8_METHODS)},
            # at the deepest net: time / the stored backward's time, measured and counted
            "time_ratio_deepest": {k: float(q8.seconds[i, -1] / q8.seconds[0, -1])
                                   for i, k in enumerate(Q8_METHODS)},
            "matmul_ratio_deepest": {k: float(q8.layer_evals[i, -1] / q8.layer_evals[0, -1])
                                     for i, k in enumerate(Q8_METHODS)}}


def _by(names, arr, cast=float):
    return {k: [cast(v) for v in arr[i]] for i, k in enumerate(names)}


def save(cfg, run, res: Result) -> dict:
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    t4, t8 = q4_table(q4), q8_table(q8)
    run.save_metrics(xr.Dataset(
        {"q4_seconds": (("q4_method", "net"), q4.seconds),
         "q4_flops": (("q4_method", "net"), q4.flops),
         "q4_temp_bytes": (("q4_method", "net"), q4.temp_bytes),
         "q4_chunked": (("q4_method", "net"), q4.chunked),
         "q4_fpe_time": (("q4_method", "net"), t4["fpe_time"]),
         "q4_fpe_flops": (("q4_method", "net"), t4["fpe_flops"]),
         "q8_temp_bytes": (("q8_method", "depth"), q8.temp_bytes),
         "q8_seconds": (("q8_method", "depth"), q8.seconds),
         "q8_layer_evals": (("q8_method", "depth"), q8.layer_evals)},
        coords={"q4_method": list(Q4_METHODS), "net": np.arange(len(q4.widths)),
                "width": ("net", q4.widths), "params": ("net", q4.params),
                "q8_method": list(Q8_METHODS), "depth": q8.depths}))
    h, m = P.q8_width, P.q8_batch
    return {
        "backend": res.backend, "device": res.device, "size": P.size, "dtype": "float32",
        "cpu_count": os.cpu_count(), "load_average": list(res.load),
        **{f"flop_slope_{k}": t4["slope_flops"][k] for k in HEADLINE_METHODS},  # the index
        "q4": {"depth": P.depth, "batch": P.batch, "activation": P.activation,
               "widths": q4.widths, "params": q4.params,
               "max_params_forward": res.resolved["max_params_forward"],
               "max_temp_mb": P.max_temp_mb, "chunk": P.chunk,
               "seconds": _by(Q4_METHODS, q4.seconds), "flops": _by(Q4_METHODS, q4.flops),
               "temp_bytes": _by(Q4_METHODS, q4.temp_bytes),
               "timed_in_blocks": _by(Q4_METHODS, q4.chunked, bool),
               "forward_pass_equivalents_time": _by(Q4_METHODS, t4["fpe_time"]),
               "forward_pass_equivalents_flops": _by(Q4_METHODS, t4["fpe_flops"]),
               "slope_flops": t4["slope_flops"], "slope_flops_stderr": t4["slope_flops_stderr"],
               "slope_time": t4["slope_time"], "slope_time_stderr": t4["slope_time_stderr"],
               "time_vs_flops": t4["time_vs_flops"],
               "backprop_vs_forward_mode_rel_err": q4.fm_err,
               "finite_differences_vs_backprop_rel_err": q4.fd_err,
               "theory": {"slope": THEORY_SLOPE, "slope_tolerance": text.SLOPE_TOL,
                          "tracks_within_factor": text.TRACK,
                          "backprop_fpe": "~3 (forward matmul, then dW and delta)",
                          "finite_differences_fpe": "2 P"}},
        "q8": {"width": h, "batch": m, "activation": P.activation, "depths": q8.depths,
               "temp_bytes": _by(Q8_METHODS, q8.temp_bytes),
               "seconds": _by(Q8_METHODS, q8.seconds),
               "layer_matmuls": _by(Q8_METHODS, q8.layer_evals),
               "bytes_per_layer": t8["bytes_per_layer"],
               "slope_time": t8["slope_time"],
               "slope_time_last_half": t8["slope_time_last_half"],
               "time_ratio_deepest": t8["time_ratio_deepest"],
               "matmul_ratio_deepest": t8["matmul_ratio_deepest"],
               "grad_rel_err_vs_store": q8.err,
               "theory": {"bytes_per_layer_store_z_and_a": 2 * m * h * 4,
                          "bytes_per_layer_checkpoint_a_and_dW": (m * h + h * h) * 4,
                          "bytes_per_layer_recompute": 0,
                          "slope_time": t8["slope_matmuls"],
                          "slope_time_asymptotic": {"store": 1, "checkpoint": 1,
                                                    "recompute": 2}}}}


# ---------------------------------------------------------------- present
def readme(record) -> str:
    return text.readme(record)


def q4_rows(q4: Q4, s4) -> tuple[list, list, list, list, list, list]:
    """The three Q4 tables (per net; slopes; time vs FLOPs): (header, rows) each."""
    fpe_t, fpe_f = s4["forward_pass_equivalents_time"], s4["forward_pass_equivalents_flops"]
    hdr = ["width", "P", "forward FLOPs", "forward (us)",
           *[f"{text.NAMES[k]} fpe (FLOPs / time)" for k in Q4_METHODS[1:]]]
    rows = [[int(w), int(n), f"{q4.flops[0, j]:.3g}", f"{1e6 * q4.seconds[0, j]:.3g}",
             *[f"{fpe_f[k][j]:.3g} / {_g(fpe_t[k][j])}" + (" (blocks)" if q4.chunked[i, j]
                                                            else "")
               for i, k in enumerate(Q4_METHODS[1:], 1)]]
            for j, (w, n) in enumerate(zip(q4.widths, q4.params))]
    hdr_s = ["method", "FLOPs slope vs P", "theory", f"agrees (within {text.SLOPE_TOL})",
             "time slope (machine-dependent)"]
    rows_s = [[LABELS[k], text.slope_text(s4, k)[2:], s4["theory"]["slope"][k],
               "yes" if text.agrees(s4, k) else "no", text.slope_text(s4, k, "time")[2:]]
              for k in Q4_METHODS]
    hdr_t = ["method", "P", "fpe in time", "fpe in FLOPs", "time / FLOPs",
             f"time tracks FLOPs (ratio within x{text.TRACK})"]
    rows_t = [[LABELS[k], t["params"], t["fpe_time"], t["fpe_flops"], t["ratio"],
               "yes" if t["tracks"] else "no"] for k, t in s4["time_vs_flops"].items()]
    return hdr, rows, hdr_s, rows_s, hdr_t, rows_t


def q8_rows(q8: Q8, s8) -> tuple[list, list, list, list]:
    hdr = ["depth L", *[f"{k} temp MB" for k in Q8_METHODS], *[f"{k} ms" for k in Q8_METHODS]]
    rows = [[int(L), *[q8.temp_bytes[i, j] / 1e6 for i in range(3)],
             *[1e3 * q8.seconds[i, j] for i in range(3)]] for j, L in enumerate(q8.depths)]
    th = s8["theory"]
    rows_t = [[LABELS[k], s8["bytes_per_layer"][k], th[f"bytes_per_layer_{suffix}"],
               s8["slope_time"][k], th["slope_time"][k], s8["time_ratio_deepest"][k],
               s8["matmul_ratio_deepest"][k]]
              for k, suffix in zip(Q8_METHODS, ("store_z_and_a", "checkpoint_a_and_dW",
                                                "recompute"))]
    hdr_t = ["method", "temp bytes / layer", "theory", "time slope vs L",
             "theory (counted matmuls)", f"time / store's at L={int(q8.depths[-1])}",
             "theory (counted)"]
    return hdr, rows, hdr_t, rows_t


def present(cfg, run, res: Result, summary: dict) -> None:
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    s4, s8 = summary["q4"], summary["q8"]
    figs = ["q4_cost_vs_params.png", "q8_store_vs_recompute.png"]
    fig_q4(q4, s4, res.device, run.figure(figs[0]))
    fig_q8(q8, s8, res.device, run.figure(figs[1]))
    shows = text.shows(summary)
    h4, r4, hs, rs, ht, rt = q4_rows(q4, s4)
    report.print_table(f"Q4: FLOPs (XLA) and time of ALL gradients in forward-pass equivalents "
                       f"(fpe), mlp depth {P.depth}, batch {P.batch}, {res.device}", h4, r4)
    report.print_table("Q4: fitted log-log slope of cost vs P (± standard error)", hs, rs)
    report.print_table("Q4: does time track FLOPs? (largest P timed for every method)", ht, rt)
    h8, r8, h8t, r8t = q8_rows(q8, s8)
    report.print_table(f"Q8: backward pass that stores vs recomputes, width {P.q8_width}, batch "
                       f"{P.q8_batch}, float32", h8, r8)
    report.print_table("Q8: theory vs measurement", h8t, r8t)
    print("\n".join(shows))
    blocks = (f" Programs whose temp memory exceeded {P.max_temp_mb:g} MB were timed running "
              f"their directions in blocks of {P.chunk} (lax.map; marked 'blocks'), still all P; "
              "their FLOPs are the whole program's (XLA counts a loop body once)."
              if q4.chunked.any() else "")
    run.save_report(report.report(
        "Backprop cost (Q4) and store vs recompute (Q8)", question(__doc__), run.reproduce(),
        [("Q4: all gradients vs parameter count",
          f"MLP, {P.depth} hidden {P.activation} layers of width h, h inputs, one output, MSE, "
          f"batch {P.batch}, float32 on {res.device}. For each P the program that computes all "
          "P gradients is compiled: the loss, the hand backward (grads.py), jax.jacfwd (P JVPs "
          "vmapped over the basis directions) and central differences vmapped over the 2P "
          "perturbations. FLOPs: XLA's cost analysis of that compiled program, at every P; "
          f"wall time: the same program run (best of {P.repeats}), forward mode and differences "
          f"up to P = {res.resolved['max_params_forward']:,} (beyond: compiled, not run); "
          "forward and backprop are timed k times inside one compiled loop so the ~us dispatch "
          f"cost is not counted.{blocks} fpe = cost / one forward pass's cost. Theory (Baur & "
          "Strassen 1983; Griewank & Walther 2008, ch. 4, the cheap gradient principle): "
          "backprop a small constant number of forward passes, so FLOPs ~ P^1; forward mode "
          "and differences O(1) forward passes per parameter, so ~ P^2. It holds for FLOPs at "
          "every P; wall time follows only where the programs are compute-bound (per-operation "
          "overhead at small P, memory traffic of the P x P tangents at large P).\n\n"
          + report.markdown_table(h4, r4) + "\n" + report.markdown_table(hs, rs) + "\n"
          + report.markdown_table(ht, rt)),
         ("Q8: store vs recompute",
          f"Depth-L MLP, every layer {P.q8_width} x {P.q8_width}, batch {P.q8_batch}. Temp "
          "memory is the compiled executable's `memory_analysis().temp_size_in_bytes` "
          f"(deterministic); time is best of {P.repeats}. The stored backward is grads.py's; "
          "the checkpointed one is jax.grad through a lax.scan of jax.checkpoint layers (it also "
          "stacks the per-layer dW, h^2 x 4 B a layer); the recomputing one is the same delta "
          "recursion with nothing stored (a_{l-1} recomputed from X for each l). Theory: "
          "the store/recompute trade-off of checkpointing (Griewank 1992; Chen et al. 2016, "
          "'Training deep nets with sublinear memory cost').\n\n"
          + report.markdown_table(h8, r8) + "\n" + report.markdown_table(h8t, r8t))],
        figs, shows=shows))
