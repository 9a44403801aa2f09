"""The backprop_cost figures."""

from __future__ import annotations

import numpy as np

from bpexp import plots
from bpexp.experiments.backprop_cost.q4 import Q4, Q4_METHODS
from bpexp.experiments.backprop_cost.q8 import Q8, Q8_METHODS
from bpexp.plots import plt

LABELS = {"forward": "one forward pass", "backprop": "backprop (grads.py, all P)",
          "forward_mode": "forward mode (P JVPs, vmapped)",
          "finite_differences": "central differences (2P forwards)",
          "store": "store z, a (grads.py)", "checkpoint": "jax.checkpoint per layer (scan)",
          "recompute": "store nothing, recompute"}


def _g(v):
    return "-" if not np.isfinite(v) else f"{v:.3g}"


COLORS = {"backprop": "tab:blue", "forward_mode": "tab:orange", "finite_differences": "tab:red",
          "forward": "0.3", "store": "tab:blue", "checkpoint": "tab:green",
          "recompute": "tab:red"}


def fig_q4(q4: Q4, s4, device, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    x = q4.params.astype(np.float64)
    for ax, key, what in ((axes[0], "forward_pass_equivalents_flops", "FLOPs"),
                          (axes[1], "forward_pass_equivalents_time", "wall time")):
        sl = s4["slope_flops" if what == "FLOPs" else "slope_time"]
        for k in Q4_METHODS[1:]:
            y = np.asarray(s4[key][k], np.float64)
            ok = np.isfinite(np.asarray(s4["seconds"][k], np.float64))  # run (else counted)
            ax.loglog(x[ok], y[ok], "o-", color=COLORS[k], label=f"{LABELS[k]}: slope {sl[k]:.2f}")
            if what == "FLOPs" and (~ok).any():
                ax.loglog(x[ok.sum() - 1:], y[ok.sum() - 1:], "--", color=COLORS[k])
                ax.loglog(x[~ok], y[~ok], "o", color=COLORS[k], mfc="w")
        bp = np.asarray(s4[key]["backprop"], np.float64)
        ax.loglog(x, np.full_like(x, np.median(bp)), ":", color="k", lw=1,
                  label="slope 0 (a constant)")
        ref = np.asarray(s4[key]["finite_differences"], np.float64)
        i0 = int(np.flatnonzero(np.isfinite(ref))[-1])  # through the largest measured P
        ax.loglog(x, ref[i0] * x / x[i0], "--", color="0.5", lw=1, label="slope 1 (∝ P)")
        ax.set_xlabel("parameters P")
        ax.set_ylabel(f"cost of all P gradients / one forward pass ({what})")
        ax.legend(fontsize=7.5, loc="upper left")
    axes[0].set_title("FLOPs (XLA cost analysis); open markers: counted, not run", fontsize=10)
    axes[1].set_title(f"measured wall time on {device}", fontsize=10)
    fig.suptitle("Q4: backprop costs a few forward passes whatever P; forward mode and finite "
                 "differences grow like P", fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)


def fig_q8(q8: Q8, s8, device, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    L = q8.depths.astype(np.float64)
    for i, k in enumerate(Q8_METHODS):
        axes[0].plot(L, q8.temp_bytes[i] / 1e6, "o-", color=COLORS[k],
                     label=f"{LABELS[k]}: {s8['bytes_per_layer'][k] / 1e3:.0f} kB/layer")
        axes[1].loglog(L, 1e3 * q8.seconds[i], "o-", color=COLORS[k],
                       label=f"{LABELS[k]}: slope {s8['slope_time'][k]:.2f}")
    th = s8["theory"]
    per = th["bytes_per_layer_store_z_and_a"]
    axes[0].plot(L, L * per / 1e6, ":", color="tab:blue", lw=1,
                 label=f"theory: z and a, 2mh x 4 B = {per / 1e3:.0f} kB/layer")
    per = th["bytes_per_layer_checkpoint_a_and_dW"]
    axes[0].plot(L, L * per / 1e6, ":", color="tab:green", lw=1,
                 label=f"theory: a and dW, (mh + h²) x 4 B = {per / 1e3:.0f} kB/layer")
    axes[0].set_xlabel("depth L (layers)")
    axes[0].set_ylabel("temp memory of the compiled backward (MB)")
    axes[0].set_title("memory: storing grows with depth, recomputing does not", fontsize=10)
    axes[0].legend(fontsize=7.5)
    # theory: counted layer matmuls x the time of one, taken from the stored backward at max L
    per = q8.seconds[0, -1] / q8.layer_evals[0, -1]
    for i, k in enumerate(Q8_METHODS):
        axes[1].loglog(L, 1e3 * per * q8.layer_evals[i], ":", color=COLORS[k], lw=1.2,
                       label="theory: counted matmuls" if i == 0 else None)
    axes[1].set_xticks(L, [str(int(v)) for v in L])
    axes[1].minorticks_off()
    axes[1].set_xlabel("depth L (layers)")
    axes[1].set_ylabel("time of one backward pass (ms)")
    axes[1].set_title(f"time on {device}: recomputing costs L(L-1)/2 layer evaluations",
                      fontsize=10)
    axes[1].legend(fontsize=7.5)
    fig.suptitle(f"Q8: why store z and a (width {s8['width']}, batch {s8['batch']}, float32)",
                 fontsize=11)
    fig.tight_layout()
    return plots.save(fig, path)
