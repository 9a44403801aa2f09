"""Every sentence backprop_cost writes from its numbers: the figure titles, report.md's "What
this run shows" and the README block (``readme(record)``). Each reads the summary alone, so a
test can check each claim against the numbers it states; nothing here is typed in advance."""

from __future__ import annotations

import math

from bpexp import docs

# a measured slope "agrees" with the theory's when within this of it (the fits span >= 2
# decades of P, where a constant-factor change of 20% moves a slope by < 0.05)
SLOPE_TOL = 0.15
# time "tracks" FLOPs when the cost of all gradients in forward passes, measured in time, is
# within this factor of the same cost in FLOPs (both / one forward pass of the same net)
TRACK = 1.5
NAMES = {"forward": "one forward pass", "backprop": "backprop", "forward_mode": "forward mode",
         "finite_differences": "central differences"}


def num(v) -> float:
    """A summary number: JSON stores nan as null."""
    return math.nan if v is None else float(v)


def finite(vs) -> list[float]:
    return [v for v in map(num, vs) if math.isfinite(v)]


def agrees(s4, method, what="flops") -> bool:
    sl = num(s4[f"slope_{what}"][method])
    return bool(math.isfinite(sl) and abs(sl - s4["theory"]["slope"][method]) <= SLOPE_TOL)


def slope_text(s4, method, what="flops") -> str:
    sl, se = num(s4[f"slope_{what}"][method]), num(s4[f"slope_{what}_stderr"][method])
    err = f" ± {se:.3f}" if math.isfinite(se) else ""
    return f"P^{sl:.3f}{err}"


def tracks_text(s4, method) -> str:
    """'time tracks FLOPs' or not, by the TRACK rule, with the ratio that decides it."""
    t = s4["time_vs_flops"][method]
    word = "tracks" if t["tracks"] else "does not track"
    return (f"{NAMES[method]}: time {word} FLOPs at P = {t['params']:,} ({t['fpe_time']:.3g} "
            f"forward passes in time vs {t['fpe_flops']:.3g} in FLOPs, ratio {t['ratio']:.2f}; "
            f"its program holds {t['temp_mb']:.3g} MB of temporaries)")


def per_p(s4, method) -> str:
    """The range over P of (cost in forward passes) / P, measured in FLOPs."""
    r = [f / p for f, p in zip(map(num, s4["forward_pass_equivalents_flops"][method]),
                               s4["params"]) if math.isfinite(f)]
    return f"{min(r):.2f}..{max(r):.2f}"


def q4_title(s4) -> str:
    sl = s4["slope_flops"]
    return (f"Q4: all P gradients cost $P^{{{num(sl['backprop']):.2f}}}$ FLOPs by backprop, "
            f"$P^{{{num(sl['forward_mode']):.2f}}}$ by forward mode, "
            f"$P^{{{num(sl['finite_differences']):.2f}}}$ by differences (theory 1, 2, 2)")


def fpe_title(s4) -> str:
    bp = finite(s4["forward_pass_equivalents_flops"]["backprop"])
    return f"backprop = {min(bp):.1f}..{max(bp):.1f} forward passes (FLOPs), whatever P"


def rate_title(s4) -> str:
    if not s4["time_vs_flops"]:
        return "time vs FLOPs: forward mode was timed at no P (max_params_forward)"
    yes = [NAMES[k] for k, t in s4["time_vs_flops"].items() if t["tracks"]]
    no = [NAMES[k] for k, t in s4["time_vs_flops"].items() if not t["tracks"]]
    if not no:
        return f"time tracks FLOPs (within x{TRACK}) for all three"
    if not yes:
        return f"time does not track FLOPs (x{TRACK}) for any of the three"
    return f"time tracks FLOPs (x{TRACK}) for {', '.join(yes)}; not for {', '.join(no)}"


def q8_title(s8) -> str:
    L = s8["depths"][-1]
    return (f"Q8: storing z, a costs {s8['bytes_per_layer']['store'] / 1e3:.0f} kB a layer; "
            f"storing nothing stays flat but takes {s8['time_ratio_deepest']['recompute']:.1f}x "
            f"the time at L = {L} (this machine; counted "
            f"{s8['matmul_ratio_deepest']['recompute']:.1f}x)")


def shows(s) -> list[str]:
    """report.md's "What this run shows": 4 sentences from the summary."""
    s4, s8 = s["q4"], s["q8"]
    th = s4["theory"]["slope"]
    fits = ", ".join(f"{NAMES[k]} {slope_text(s4, k)} (theory P^{th[k]}, "
                     f"{'agrees' if agrees(s4, k) else 'disagrees'})" for k in th)
    bp = finite(s4["forward_pass_equivalents_flops"]["backprop"])
    tr = ("; ".join(tracks_text(s4, k) for k in s4["time_vs_flops"])
          or "forward mode and differences were timed at no P (max_params_forward)")
    L = s8["depths"][-1]
    return [
        f"Measured on the compiled program that computes all P gradients (XLA's cost analysis, "
        f"P = {s4['params'][0]:,}..{s4['params'][-1]:,}), the FLOPs grow like: {fits}.",
        f"So backprop costs {min(bp):.2f}..{max(bp):.2f} forward passes at every P (theory ~3), "
        f"forward mode {per_p(s4, 'forward_mode')} x P and central differences "
        f"{per_p(s4, 'finite_differences')} x P (theory: a tangent pass of ~1-2 forwards, and 2 "
        "forwards, per parameter).",
        f"Wall time on {s['device']} ({s['cpu_count']} cores, 1-minute load average "
        f"{s['load_average'][0]:.1f}; machine-dependent): {tr}.",
        f"Storing z, a costs {s8['bytes_per_layer']['store']:,.0f} bytes of temp memory a layer "
        f"(theory {s8['theory']['bytes_per_layer_store_z_and_a']:,}), jax.checkpoint "
        f"{s8['bytes_per_layer']['checkpoint']:,.0f} (theory "
        f"{s8['theory']['bytes_per_layer_checkpoint_a_and_dW']:,}), storing nothing "
        f"{s8['bytes_per_layer']['recompute']:,.0f}; at L = {L} storing nothing takes "
        f"{s8['time_ratio_deepest']['recompute']:.1f}x the stored backward's time (counted "
        f"layer matmuls: {s8['matmul_ratio_deepest']['recompute']:.1f}x).",
    ]


def readme(record) -> str:
    """The README block: the recorded command, the slopes beside the theory, the machine-
    dependent numbers named with the machine they were measured on."""
    s = record["summary"]
    s4, s8 = s["q4"], s["q8"]
    th = s4["theory"]["slope"]
    rows = ["| method | FLOPs slope (fit ± s.e.) | theory | time slope* |",
            "|---|---|---|---|"]
    tslope = {k: docs.measured(f"{num(s4['slope_time'][k]):.2f}") for k in th}
    rows += [f"| {NAMES[k]} | {slope_text(s4, k)[2:]} | {th[k]} | {tslope[k]} |" for k in th]
    L = s8["depths"][-1]
    mem = s8["bytes_per_layer"]
    return "\n".join([
        f"Recorded run: `{record['command']}` (P = {s4['params'][0]:,}..{s4['params'][-1]:,}; "
        f"forward mode and differences timed up to P = {s4['max_params_forward']:,}).", "",
        *rows, "",
        *shows(s)[:2],
        f"Q8 temp memory a layer (deterministic): store {mem['store']:,.0f} B (theory "
        f"{s8['theory']['bytes_per_layer_store_z_and_a']:,}), checkpoint "
        f"{mem['checkpoint']:,.0f} (theory "
        f"{s8['theory']['bytes_per_layer_checkpoint_a_and_dW']:,}), recompute "
        f"{mem['recompute']:,.1f} (theory 0). Backprop vs forward mode: "
        f"{s4['backprop_vs_forward_mode_rel_err']:.1e} (float32).", "",
        f"\\* {docs.machine('Wall time', record)}, " + docs.measured(
            f"1-minute load average {s['load_average'][0]:.1f} before and "
            f"{s['load_average'][1]:.1f} after: "
            + ("; ".join(tracks_text(s4, k) for k in s4["time_vs_flops"]) or "not timed") +
            f". Q8 at L = {L}: checkpoint {s8['time_ratio_deepest']['checkpoint']:.2f}x the stored "
            f"backward's time (counted {s8['matmul_ratio_deepest']['checkpoint']:.2f}x), recompute "
            f"{s8['time_ratio_deepest']['recompute']:.1f}x (counted "
            f"{s8['matmul_ratio_deepest']['recompute']:.1f}x).")])
