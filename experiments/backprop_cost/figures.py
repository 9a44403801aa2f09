"""The backprop_cost figures: slides (bpexp.plots), titles computed by text.py."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from bpexp import plots
from bpexp.experiments.backprop_cost import text
from bpexp.experiments.backprop_cost.q4 import Q4, Q4_METHODS
from bpexp.experiments.backprop_cost.q8 import Q8, Q8_METHODS

LABELS = {"forward": "one forward pass", "backprop": "backprop (grads.py, all P)",
          "forward_mode": "forward mode (jax.jacfwd: P JVPs)",
          "finite_differences": "central differences (2P forwards)",
          "store": "store z, a (grads.py)", "checkpoint": "jax.checkpoint per layer (scan)",
          "recompute": "store nothing, recompute"}
# palette index (colour + dash, plots.style) and marker of each method: no two alike
STYLE = {"forward": (2, "D"), "backprop": (0, "o"), "forward_mode": (1, "s"),
         "finite_differences": (4, "^"), "store": (0, "o"), "checkpoint": (2, "s"),
         "recompute": (3, "^")}
# theory curves: black (plots.theory_line), told apart by their dashes
THEORY_DASH = {1: (0, (4, 2)), 2: (0, (1, 1.5)), "store": (0, (4, 2)),
               "checkpoint": (0, (1, 1.5)), "recompute": (0, (6, 2, 1, 2))}


def _g(v):
    return "-" if not np.isfinite(v) else f"{v:.3g}"


def _st(k, **kw):
    i, m = STYLE[k]
    return {**plots.style(i), "marker": m, **kw}


def _guide(ax, x, y, power, label):
    """Theory slope `power` through the measured point at the largest finite x, drawn over the
    measured range."""
    ok = np.flatnonzero(np.isfinite(y))
    if ok.size:
        j, xs = ok[-1], x[ok]
        plots.theory_line(ax, xs, y[j] * (xs / x[j]) ** power, label,
                          linestyle=THEORY_DASH[power])


def _loglog(ax, xlabel, ylabel, title):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=13)
    ax.set_ylabel(ylabel, fontsize=13)
    ax.set_title(title, fontsize=13)


def _fig_legend(fig, axes, ncol):
    seen = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=ncol,
               fontsize=12, frameon=False)


def fig_q4(q4: Q4, s4, device, path):
    """Long because its four panels (FLOPs, time, forward-pass equivalents, throughput) each
    draw the methods and their theory; each block is a few lines."""
    fig, axes = plots.slide(2, 2)
    x = q4.params.astype(np.float64)
    a, b, c, d = axes.ravel()
    for i, k in enumerate(Q4_METHODS):
        a.plot(x, q4.flops[i], label=LABELS[k], **_st(k))
        b.plot(x, q4.seconds[i], **_st(k))
        if k != "forward":
            c.plot(x, q4.flops[i] / q4.flops[0], **_st(k))
            c.plot(x, q4.seconds[i] / q4.seconds[0], **_st(k, mfc="white", lw=1, alpha=0.8))
        d.plot(x, q4.flops[i] / q4.seconds[i] / 1e9, **_st(k))
    for ax, arr in ((a, q4.flops), (b, q4.seconds)):
        _guide(ax, x, arr[1], 1, "theory ∝ P (backprop)")
        _guide(ax, x, arr[2], 2, "theory ∝ P² (forward mode)")
    plots.theory_line(c, y=3.0, label="theory: backprop ~3 forward passes", linestyle=(0, (4, 2)))
    _guide(c, x, q4.flops[2] / q4.flops[0], 1, None)
    c.plot([], [], "o", color="0.4", mfc="white", label="open markers: wall time, else FLOPs")
    _loglog(a, "parameters P", "FLOPs of all P gradients", "FLOPs: XLA cost analysis of "
            "the compiled all-P program")
    _loglog(b, "parameters P", "seconds", f"wall time on {device} (machine-dependent)")
    _loglog(c, "parameters P", "cost / one forward pass", text.fpe_title(s4))
    _loglog(d, "parameters P", "GFLOP/s achieved", text.rate_title(s4))
    d.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    d.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    d.yaxis.set_minor_formatter(NullFormatter())
    if not np.isfinite(q4.seconds[2]).all():
        plots.note(b, f"forward mode, differences: timed to P = "
                   f"{int(x[np.isfinite(q4.seconds[2])].max()):,}", "lower right")
    _fig_legend(fig, axes, 3)
    fig.suptitle(text.q4_title(s4), fontsize=16)
    return plots.save(fig, path)


def fig_q8(q8: Q8, s8, device, path):
    fig, axes = plots.slide(1, 2)
    L = q8.depths.astype(np.float64)
    th = s8["theory"]
    per = {"store": th["bytes_per_layer_store_z_and_a"],
           "checkpoint": th["bytes_per_layer_checkpoint_a_and_dW"], "recompute": 0}
    what = {"store": "z and a, 2mh x 4 B", "checkpoint": "a and dW, (mh + h²) x 4 B",
            "recompute": "flat"}
    counted = {"store": "3L", "checkpoint": "4L - 1", "recompute": "3L + 1 + L(L-1)/2"}
    # counted layer matmuls x the time of one, taken from the stored backward at max L
    t_one = q8.seconds[0, -1] / q8.layer_evals[0, -1]
    for i, k in enumerate(Q8_METHODS):
        axes[0].plot(L, q8.temp_bytes[i] / 1e6, label=LABELS[k], **_st(k))
        axes[1].plot(L, 1e3 * q8.seconds[i], **_st(k))
        # theory slope per layer, through the measured first depth
        plots.theory_line(axes[0], L, (q8.temp_bytes[i, 0] + (L - L[0]) * per[k]) / 1e6,
                          f"theory {k}: {what[k]} = {per[k] / 1e3:.0f} kB/layer",
                          linestyle=THEORY_DASH[k])
        plots.theory_line(axes[1], L, 1e3 * t_one * q8.layer_evals[i],
                          f"theory {k}: {counted[k]} layer matmuls", linestyle=THEORY_DASH[k])
    axes[0].set_xlabel("depth L (layers)")
    axes[0].set_ylabel("temp memory of the backward (MB)")
    axes[0].set_title("memory: storing grows with depth,\nrecomputing does not", fontsize=14)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xticks(L, [str(int(v)) for v in L])
    axes[1].minorticks_off()
    axes[1].set_xlabel("depth L (layers)")
    axes[1].set_ylabel("time of one backward pass (ms)")
    axes[1].set_title(f"time on {device} (machine-dependent)", fontsize=14)
    for ax in axes:
        plots.legend_outside(ax, "below", ncol=1, fontsize=11)
    fig.suptitle(text.q8_title(s8), fontsize=16)
    return plots.save(fig, path)
