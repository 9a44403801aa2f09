"""The remedies' sentences, written from the summary alone: report.md's "What this run shows",
the figure titles and the README block (``readme(record)``). Every number here is read from
the summary, so a rerun that measures something else says something else."""

from __future__ import annotations

import math

from bpexp.report import fmt


def _at(s, name, D):
    return s["remedies"][name]["depths"][str(D)]


def loss_text(s, d) -> str:
    """A median final loss, or how many seeds diverged when the median is not finite."""
    v = d["final_loss"]
    if v is not None and math.isfinite(v):
        return f"{v:.3g}"
    return f"diverged ({d['diverged']} of {len(s['seeds'])} seeds)"


def diverged_text(s) -> str:
    """Where runs diverged, every remedy and depth: '' when none did."""
    parts = []
    n = len(s["seeds"])
    for name, e in s["remedies"].items():
        ds = [(int(D), d["diverged"]) for D, d in e["depths"].items() if d["diverged"]]
        if ds:
            where = ", ".join(f"{k} of {n} seeds at depth {D}" for D, k in sorted(ds))
            parts.append(f"{e['label']} diverged in {where}")
    return "; ".join(parts)


def width_rows(s):
    """[(h, theory per-layer factor, measured, its 2-SE, mean-field 1, measured mean of R,
    batch factor)] of the ReLU + He width study, or []."""
    rw = s.get("relu_width")
    if not rw:
        return []
    out = []
    for h, e in rw["widths"].items():
        t, m = e["theory"], e["measured"]
        se = m["factor_per_example"] * 2 * m["log_factor_se"]
        out.append((int(h), t["factor_per_example"], m["factor_per_example"], se, 1.0,
                    m["mean_sq_ratio"], m["factor_batch"]))
    return out


def width_max_dev(s) -> float:
    """Largest |measured / predicted - 1| of the per-example factor over the widths."""
    return max(abs(m / t - 1) for _, t, m, *_ in width_rows(s))


def width_title(s) -> str:
    rows = width_rows(s)
    (h0, _, m0, *_), (h1, _, m1, *_) = rows[0], rows[-1]
    return (f"ReLU + He, depth {s['relu_width']['depth']}: the per-layer factor grows from "
            f"{m0:.3f} (width {h0}) to {m1:.3f} (width {h1}); finite-width theory within "
            f"{width_max_dev(s):.1%}")


def bn_compound(s) -> float:
    """How far the batch-norm independence estimate overshoots over the deepest net's hidden
    pairs: (measured / predicted per layer)^-(D-1)."""
    b = s["bn_parts"]
    return b["measured_over_predicted"] ** -b["pairs"]


def shows(s) -> list[str]:
    """3-5 sentences: what this run shows, from its summary."""
    Dm, R = s["depths"][-1], s["remedies"]
    out = []
    if "sigmoid" in R:
        d = _at(s, "sigmoid", Dm)
        others = [f"{R[k]['label']} {fmt(_at(s, k, Dm)['dz_ratio_first_last'], 2)}"
                  for k in R if k not in ("sigmoid", "xavier")]
        out.append(f"At depth {Dm} the plain sigmoid net's dL/dz at the first layer is "
                   f"{fmt(d['dz_ratio_first_last'], 2)} of the last layer's (its Glorot "
                   f"prediction: {fmt(d['dz_ratio_first_last_predicted'], 2)})"
                   + (f"; with a remedy: {', '.join(others)}" if others else "")
                   + (f"; Xavier only slows the decay "
                      f"({fmt(_at(s, 'xavier', Dm)['dz_ratio_first_last'], 2)})"
                      if "xavier" in R else "") + ".")
    if width_rows(s):
        rows = width_rows(s)
        mid = min(rows, key=lambda r: abs(r[0] - s["width"]))
        out.append(f"ReLU + He: the theory's per-layer factor 1 is the mean of the squared "
                   f"ratio (measured {mid[5]:.3f} at width {mid[0]}); a run's geometric-mean "
                   f"factor per example is {mid[2]:.3f}, which the finite-width law "
                   f"exp(E[log R]/2) predicts ({mid[1]:.3f}); over widths "
                   f"{', '.join(str(r[0]) for r in rows)} it holds within "
                   f"{width_max_dev(s):.1%}.")
    if s.get("bn_parts"):
        b = s["bn_parts"]
        over = 1 / b["measured_over_predicted"]
        out.append(f"Batch norm's per-layer estimate overshoots by x{over:.3f} per layer "
                   f"(x{bn_compound(s):.0f} over {b['pairs']} layers) because the "
                   f"back-propagated dL/dz is tied to W by batch norm's scale invariance: "
                   f"||W^T dz|| is x{b['transfer']:.3f} of the independence value, "
                   f"x{b['transfer_independent']:.3f} with independent weights.")
    losses = ", ".join(f"{R[k]['label']} {loss_text(s, _at(s, k, Dm))}" for k in R)
    div = diverged_text(s)
    out.append(f"After {s['steps']} full-batch GD steps at lr {s['lr']:g}, final losses at "
               f"depth {Dm}: {losses} (class entropy {s['class_entropy']:.3f})."
               + (f" Runs that diverged: {div}." if div else " No run diverged."))
    return out


def readme(record) -> str:
    """The README block: the command, the table at the deepest depth, the width study and the
    sentences of :func:`shows`."""
    s = record["summary"]
    Dm, D0 = s["depths"][-1], s["depths"][0]
    mid = s["depths"][len(s["depths"]) // 2]
    lines = [f"`{record['command']}` ({len(s['seeds'])} seeds, width {s['width']}; no "
             "machine-dependent number here):", "",
             f"| remedy | per-layer factor, theory | measured | RMS dz_1 / dz_L, theory | "
             f"measured | dW_1 / dW_L | final loss D = {D0} | D = {mid} | D = {Dm} |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, e in s["remedies"].items():
        d = e["depths"][str(Dm)]
        cells = [loss_text(s, e["depths"][str(D)]) for D in (D0, mid, Dm)]
        lines.append(f"| {e['label']} | {d['factor_predicted_dz']:.4g} | "
                     f"{d['factor_measured_dz']:.4g} | {fmt(d['dz_ratio_first_last_predicted'], 2)}"
                     f" | {fmt(d['dz_ratio_first_last'], 2)} | {fmt(d['ratio_first_last'], 2)} | "
                     + " | ".join(cells) + " |")
    rows = width_rows(s)
    if rows:
        rw = s["relu_width"]
        lines += ["", f"ReLU + He at depth {rw['depth']}, {len(rw['seeds'])} seeds, per-layer "
                  "factor of dL/dz per example (geometric mean over hidden layers, examples "
                  "and seeds):", "",
                  "| width | finite-width theory exp(E[log R]/2) | measured (2 SE) | mean-field "
                  "| measured mean of R | batch (Frobenius) factor |", "|---|---|---|---|---|---|"]
        lines += [f"| {h} | {t:.4f} | {mm:.4f} (+-{se:.4f}) | {mf:g} | {r:.4f} | {b:.4f} |"
                  for h, t, mm, se, mf, r, b in rows]
    lines += ["", " ".join(shows(s))]
    return "\n".join(lines)
