"""Why backpropagation (Lecture 5, Q4) and why store the forward values (Q8), measured.

Question: (Q4) what does it cost to compute ALL the gradients of an MLP's loss, by backprop,
by forward mode (one JVP per parameter) and by finite differences, as the parameter count P
grows from ~1e2 to ~1e6? (Q8) what do the cached z_l, a_l of the forward pass buy: memory and
time of the backward pass that stores them, one that keeps only each layer's input
(jax.checkpoint) and one that stores nothing and recomputes, as the depth grows?
Theory: reverse mode returns every dL/dtheta for a small constant multiple of one forward pass
(Baur-Strassen; Griewank's cheap gradient principle, ~3 for matmul layers: the forward matmul,
then dW and delta); forward mode needs one JVP (~2-3 forwards) per parameter and central
differences two forwards per parameter: their cost in forward-pass equivalents grows like P
(log-log slope 1), backprop's stays flat (slope 0). Storing costs memory linear in depth
(z_l and a_l: 2 m h numbers per layer); checkpointing keeps a_{l-1} only (half) and
recomputes each layer once (~one extra forward); storing nothing costs O(1) memory in depth
but recomputes a_{l-1} from the input for every layer: L(L-1)/2 layer evaluations, time
quadratic in depth.
Expected: fitted slopes of forward-pass equivalents vs P: backprop ~0, forward mode and finite
differences ~1 (FLOPs from XLA's cost analysis; wall time agrees, noisier); temp memory from
the compiled executable grows linearly with depth when storing, ~half as fast with
checkpoints, flat when recomputing, whose time grows ~quadratically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np
import xarray as xr

from bpexp import report
from bpexp.errors import UserError
from bpexp.experiments._common import question
from bpexp.experiments.backprop_cost.figures import LABELS, _g, fig_q4, fig_q8
from bpexp.experiments.backprop_cost.q4 import Q4, Q4_METHODS, run_q4
from bpexp.experiments.backprop_cost.q8 import Q8, Q8_METHODS, run_q8
from bpexp.experiments.backprop_cost.timing import slope

USES = ()  # builds its own networks and random data
SIZES = ("small", "large")
# `size` fills every list left empty: small fits ~20 s on a 2-core CPU, large is for a GPU
PRESETS = {
    "small": {"widths": [4, 8, 16, 32, 128, 512], "max_params_forward": 4000,
              "depths": [2, 4, 8, 16, 32]},
    "large": {"widths": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
              "max_params_forward": 300_000, "depths": [2, 4, 8, 16, 32, 64, 128, 256]},
}


@dataclass
class Params:
    name: str = "backprop_cost"
    size: str = "small"          # small | large: the preset for the lists left empty
    activation: str = "tanh"
    # Q4: cost of all gradients vs parameter count
    widths: list = field(default_factory=list)   # hidden width h of each net ([] = preset)
    depth: int = 3               # hidden layers; inputs n = h, one output: P ~ depth h^2
    batch: int = 64              # m examples
    max_params_forward: int = 0  # forward mode / finite differences up to this P (0 = preset)
    chunk: int = 512             # directions per vmapped chunk (lax.map batch_size)
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


def resolved(P) -> dict:
    """The lists and limits after the size preset fills the ones left empty."""
    pre = PRESETS[P.size]
    return {"widths": sorted(P.widths or pre["widths"]),
            "depths": sorted(P.depths or pre["depths"]),
            "max_params_forward": P.max_params_forward or pre["max_params_forward"]}


# ---------------------------------------------------------------- measuring


# ---------------------------------------------------------------- Q4: all the gradients


# ---------------------------------------------------------------- Q8: store vs recompute


# ---------------------------------------------------------------- compute
@dataclass
class Result:
    q4: Q4
    q8: Q8
    resolved: dict
    backend: str
    device: str


def compute(cfg, run) -> Result:
    P = cfg.experiment
    R = resolved(P)
    k4, k8 = jax.random.split(jax.random.PRNGKey(cfg.seed))
    with run.timed("q4"):
        q4 = run_q4(P, R, k4)
    with run.timed("q8"):
        q8 = run_q8(P, R, k8)
    return Result(q4, q8, R, jax.default_backend(), str(jax.devices()[0]))


# ---------------------------------------------------------------- save
def q4_table(q4: Q4) -> dict:
    """Forward-pass equivalents (time and FLOPs) and their fitted log-log slopes vs P."""
    fpe_t = q4.seconds / q4.seconds[0]
    fpe_f = q4.flops / q4.flops[0]
    return {"fpe_time": fpe_t, "fpe_flops": fpe_f,
            "slope_time": {k: slope(q4.params, fpe_t[i]) for i, k in enumerate(Q4_METHODS)
                           if i > 0},
            "slope_flops": {k: slope(q4.params, fpe_f[i]) for i, k in enumerate(Q4_METHODS)
                            if i > 0}}


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


def save(cfg, run, res: Result) -> dict:
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    t4, t8 = q4_table(q4), q8_table(q8)
    run.save_metrics(xr.Dataset(
        {"q4_seconds": (("q4_method", "net"), q4.seconds),
         "q4_flops": (("q4_method", "net"), q4.flops),
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
        "q4": {"depth": P.depth, "batch": P.batch, "activation": P.activation,
               "widths": q4.widths, "params": q4.params,
               "max_params_forward": res.resolved["max_params_forward"],
               "seconds": {k: q4.seconds[i] for i, k in enumerate(Q4_METHODS)},
               "flops": {k: q4.flops[i] for i, k in enumerate(Q4_METHODS)},
               "forward_pass_equivalents_time": {k: t4["fpe_time"][i]
                                                 for i, k in enumerate(Q4_METHODS)},
               "forward_pass_equivalents_flops": {k: t4["fpe_flops"][i]
                                                  for i, k in enumerate(Q4_METHODS)},
               "slope_time": t4["slope_time"], "slope_flops": t4["slope_flops"],
               "backprop_vs_forward_mode_rel_err": q4.fm_err,
               "finite_differences_vs_backprop_rel_err": q4.fd_err,
               "theory": {"slope": {"backprop": 0, "forward_mode": 1, "finite_differences": 1},
                          "backprop_fpe": "~3 (forward matmul, then dW and delta)",
                          "finite_differences_fpe": "2 P"}},
        "q8": {"width": h, "batch": m, "activation": P.activation, "depths": q8.depths,
               "temp_bytes": {k: q8.temp_bytes[i] for i, k in enumerate(Q8_METHODS)},
               "seconds": {k: q8.seconds[i] for i, k in enumerate(Q8_METHODS)},
               "layer_matmuls": {k: q8.layer_evals[i] for i, k in enumerate(Q8_METHODS)},
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
def present(cfg, run, res: Result, summary: dict) -> None:
    """Long because it writes the terminal table and report.md's sections in reading order;
    each section is a few lines over the same values."""
    P, q4, q8 = cfg.experiment, res.q4, res.q8
    s4, s8 = summary["q4"], summary["q8"]
    figs = ["q4_cost_vs_params.png", "q8_store_vs_recompute.png"]
    fig_q4(q4, s4, res.device, run.figure(figs[0]))
    fig_q8(q8, s8, res.device, run.figure(figs[1]))

    fpe_t, fpe_f = s4["forward_pass_equivalents_time"], s4["forward_pass_equivalents_flops"]
    hdr4 = ["width", "P", "forward (ms)", "backprop fpe (time / FLOPs)",
            "forward mode fpe", "finite diff fpe"]
    rows4 = [[int(w), int(n), 1e3 * q4.seconds[0, j],
              f"{fpe_t['backprop'][j]:.3g} / {fpe_f['backprop'][j]:.3g}",
              f"{_g(fpe_t['forward_mode'][j])} / {fpe_f['forward_mode'][j]:.3g}",
              f"{_g(fpe_t['finite_differences'][j])} / {fpe_f['finite_differences'][j]:.3g}"]
             for j, (w, n) in enumerate(zip(q4.widths, q4.params))]
    report.print_table(f"Q4: cost of ALL gradients in forward-pass equivalents (fpe), mlp depth "
                       f"{P.depth}, batch {P.batch}, {res.device}", hdr4, rows4)
    hdr_s = ["method", "slope (FLOPs)", "slope (time)", "theory"]
    rows_s = [[LABELS[k], s4["slope_flops"][k], s4["slope_time"][k],
               s4["theory"]["slope"][k]] for k in Q4_METHODS[1:]]
    rows_s.append(["backprop vs forward mode, rel err", s4["backprop_vs_forward_mode_rel_err"],
                   "", "float32 rounding"])
    report.print_table("Q4: fitted log-log slope of forward-pass equivalents vs P", hdr_s, rows_s)
    ran = np.flatnonzero(np.isfinite(q4.seconds[2]))
    j = int(ran[-1]) if ran.size else 0
    note4 = (f"Backprop costs {min(fpe_f['backprop']):.2f}..{max(fpe_f['backprop']):.2f} forward "
             f"passes in FLOPs over P = {q4.params[0]}..{q4.params[-1]} (fitted slope "
             f"{s4['slope_flops']['backprop']:.3f}); forward mode and central differences grow "
             f"like P (slopes {s4['slope_flops']['forward_mode']:.3f} and "
             f"{s4['slope_flops']['finite_differences']:.3f}). In wall time the largest P run "
             f"both ways (P = {q4.params[j]}) gives forward mode {fpe_t['forward_mode'][j]:.3g} "
             f"fpe vs {fpe_f['forward_mode'][j]:.3g} in FLOPs: there time tracks FLOPs. At small "
             f"P one forward pass takes {1e6 * q4.seconds[0, 0]:.1f} us, mostly per-operation "
             "overhead, while the P directions run as a few large batched operations, so the "
             "time ratios there fall below P and the fitted time slopes exceed 1.")
    print(note4)
    hdr8 = ["depth L", *[f"{k} temp MB" for k in Q8_METHODS], *[f"{k} ms" for k in Q8_METHODS]]
    rows8 = [[int(L), *[q8.temp_bytes[i, j] / 1e6 for i in range(3)],
              *[1e3 * q8.seconds[i, j] for i in range(3)]] for j, L in enumerate(q8.depths)]
    report.print_table(f"Q8: backward pass that stores vs recomputes, width {P.q8_width}, batch "
                       f"{P.q8_batch}, float32", hdr8, rows8)
    th = s8["theory"]
    rows_t = [[LABELS[k], s8["bytes_per_layer"][k], th[f"bytes_per_layer_{suffix}"],
               s8["slope_time"][k], th["slope_time"][k]]
              for k, suffix in zip(Q8_METHODS, ("store_z_and_a", "checkpoint_a_and_dW",
                                                "recompute"))]
    for r, k in zip(rows_t, Q8_METHODS):
        r += [s8["time_ratio_deepest"][k], s8["matmul_ratio_deepest"][k]]
    hdr_t = ["method", "temp bytes / layer", "theory", "time slope vs L",
             "theory (counted matmuls)", f"time / store's at L={int(q8.depths[-1])}",
             "theory (counted)"]
    report.print_table("Q8: theory vs measurement", hdr_t, rows_t)
    Lmax = int(q8.depths[-1])
    note8 = (f"At L = {Lmax} the stored backward needs {q8.temp_bytes[0, -1] / 1e6:.2f} MB of "
             f"temp memory ({s8['bytes_per_layer']['store'] / 1e3:.0f} kB a layer, theory "
             f"{th['bytes_per_layer_store_z_and_a'] / 1e3:.0f}), the recomputing one "
             f"{q8.temp_bytes[2, -1] / 1e6:.2f} MB whatever the depth, but it takes "
             f"{s8['time_ratio_deepest']['recompute']:.1f}x the time (counted "
             f"{s8['matmul_ratio_deepest']['recompute']:.1f}x); checkpointing takes "
             f"{s8['time_ratio_deepest']['checkpoint']:.2f}x (counted "
             f"{s8['matmul_ratio_deepest']['checkpoint']:.2f}x) for "
             f"{s8['bytes_per_layer']['checkpoint'] / 1e3:.0f} kB a layer.")
    print(note8)
    run.save_report(report.report(
        "Backprop cost (Q4) and store vs recompute (Q8)", question(__doc__), run.reproduce(),
        [("Q4: all gradients vs parameter count",
          f"MLP, {P.depth} hidden {P.activation} layers of width h, h inputs, one output, MSE, "
          f"batch {P.batch}, float32 on {res.device}. Forward-pass equivalents (fpe) = cost of "
          f"all P gradients / cost of one forward pass, as wall time (best of {P.repeats}) and "
          f"as FLOPs from XLA's cost analysis (one direction's FLOPs x P for forward mode and "
          f"finite differences). Forward mode and finite differences run up to P = "
          f"{res.resolved['max_params_forward']}; beyond, their FLOPs are counted only.\n\n"
          + report.markdown_table(hdr4, rows4) + "\n" + report.markdown_table(hdr_s, rows_s)
          + "\n" + note4),
         ("Q8: store vs recompute",
          f"Depth-L MLP, every layer {P.q8_width} x {P.q8_width}, batch {P.q8_batch}. Temp "
          "memory is the compiled executable's `memory_analysis().temp_size_in_bytes` "
          "(deterministic); time is best of "
          f"{P.repeats}. The stored backward is grads.py's; the checkpointed one is jax.grad "
          "through a lax.scan of jax.checkpoint layers (it also stacks the per-layer dW, h^2 x "
          "4 B a layer); the recomputing one is the same delta recursion with nothing "
          "stored (a_{l-1} recomputed from X for each l).\n\n"
          + report.markdown_table(hdr8, rows8) + "\n" + report.markdown_table(hdr_t, rows_t)
          + "\n" + note8)],
        figs))


