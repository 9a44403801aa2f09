"""What a credit-assignment run shows, in sentences computed from its summary."""

from __future__ import annotations


def shows(s: dict) -> list[str]:
    """3-5 sentences for report.md's "What this run shows"."""
    layers = [k for k in s["layers"] if k.startswith("W")]
    mean = {k: s["layers"][k]["grad_abs_mean"] for k in layers}
    top = max(mean, key=mean.get)
    r = s["mean_grad_ratio_first_last"]
    arch = "-".join(map(str, s["network"]))
    out = [f"At initialization the {arch} {s['activation']} network has loss {s['loss']:.4g} on "
           f"{s['m']} {s['data']} examples; the layer whose weights get the most blame per "
           f"weight (mean |dL/dW|) is {top}, {mean[top]:.3g}.",
           f"The first layer's mean |dL/dW| is {r:.3g}x the last layer's: the error signal "
           + ("shrinks" if r < 1 else "grows") + " as backprop carries it towards the input"
           + (f" (each {s['activation']} layer multiplies it by f'(z) <= "
              f"{'0.25' if s['activation'] == 'sigmoid' else '1'})." if r < 1 else "."),
           f"The hand-derived gradients equal jax.grad to {s['max_abs_diff_vs_autodiff']:.1e} "
           f"(absolute) and {s['max_rel_diff_vs_autodiff']:.1e} (relative)."]
    return out
