"""What a sharpness run shows, in sentences and a title computed from its summary (Cohen et al.
2021, "Gradient descent on neural networks typically occurs at the edge of stability", s.3)."""

from __future__ import annotations

import numpy as np

EDGE = (0.9, 1.1)   # late median of lr * sharpness / 2 inside this: "at the edge"


def _at_edge(r: float) -> bool:
    return EDGE[0] <= r <= EDGE[1]


def title(s: dict) -> str:
    """The figure's takeaway: how many lrs hover at 2/lr, and how close."""
    med = [s["late_ratio_median"][k] for k in map(str, map(float, s["lrs"]))]
    n_edge = sum(_at_edge(r) for r in med)
    span = f"late lr x S / 2 = {min(med):.2f}-{max(med):.2f}"
    if n_edge == len(med):
        return f"The sharpness rises to 2/lr and hovers there at every lr ({span})"
    return f"The sharpness reaches 2/lr at {n_edge} of {len(med)} lrs ({span})"


def shows(s: dict) -> list[str]:
    """3-5 sentences for report.md's "What this run shows"."""
    keys = [str(float(x)) for x in s["lrs"]]
    init = float(np.median([np.median([sh[0] for sh in s["sharpness"][k]]) for k in keys]))
    med = [s["late_ratio_median"][k] for k in keys]
    hits = [[h for h in s["first_step_sharpness_ge_0.9_2_over_lr"][k] if h is not None]
            for k in keys]
    out = [f"Full-batch GD starts at sharpness {init:.3g} (median over lrs and seeds), below "
           f"every 2/lr ({', '.join(f'{2 / x:.3g}' for x in s['lrs'])})."
           if init < min(2 / x for x in s["lrs"]) else
           f"Full-batch GD starts at sharpness {init:.3g} (median over lrs and seeds)."]
    reached = [f"lr {lr:g} at step {min(h)}" for lr, h in zip(s["lrs"], hits) if h]
    if reached:
        out.append("The sharpness first reaches 0.9 x 2/lr at " + ", ".join(reached) + ".")
    at = [lr for lr, r in zip(s["lrs"], med) if _at_edge(r)]
    below = [lr for lr, r in zip(s["lrs"], med) if r < EDGE[0]]
    sent = (f"Over the last {s['late_fraction']:.2g} of training the median of lr x sharpness "
            f"/ 2 is {', '.join(f'{r:.3f}' for r in med)}: ")
    if len(at) == len(med):
        sent += "every lr hovers at the edge of stability, as Cohen et al. (2021) report."
    else:
        sent += (f"{len(at)} of {len(med)} lrs hover at the edge (within "
                 f"{EDGE[0]:g}-{EDGE[1]:g})" + (f"; at lr {', '.join(f'{x:g}' for x in below)} "
                                                "the sharpness has not reached 2/lr yet "
                                                "(progressive sharpening still under way)"
                                                if below else "") + ".")
    out.append(sent)
    gap = max(s["late_top2_gap_median"].values())
    out.append(f"The top two eigenvalues differ by at most {gap:.1%} late in training (Lanczos "
               f"separates them; power iteration would mix them); the largest Lanczos residual "
               f"bounds every value to {s['max_rel_residual']:.1e} relative.")
    return out


def readme(record: dict) -> str:
    """The README block: the recorded command and what it shows."""
    return f"`{record['command']}`: " + " ".join(shows(record["summary"])) + "\n"
