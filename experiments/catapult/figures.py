"""The catapult experiment's slides: the phase diagram (width x lr in units of 2/lambda0,
coloured by regime, theory edges as dashed lines) and one run per regime (loss and sharpness
against 2/lr). Drawn from the Result and the summary only."""

from __future__ import annotations

import numpy as np

from bpexp import plots
from bpexp.experiments.catapult import theory as th

COLORS = {"lazy": plots.PALETTE[0], "catapult": plots.PALETTE[1], "divergent": plots.PALETTE[3]}
MARKERS = {"lazy": "o", "catapult": "s", "divergent": "X"}


def _name(summary, setting):
    return "one sample" if setting == "toy" else summary["settings"]["data"]["name"]


def phase_diagram(res, summary, path):
    """One panel per model x setting (at most 4): every run at (c, width), seeds side by side,
    coloured by its regime; the theory's lazy edge (c = 1) and eta_max (c = edge / 2) dashed;
    the measured edge per width as a black bar."""
    keys = [(c.model, c.setting) for c in res.cells]
    keys = list(dict.fromkeys(keys))[:plots.MAX_PANELS]
    nc = 2 if len(keys) > 1 else 1
    fig, axes = plots.slide((len(keys) + 1) // 2, nc, squeeze=False)
    for ax, (mdl, s) in zip(axes.ravel(), keys):
        cells = [c for c in res.cells if (c.model, c.setting) == (mdl, s)]
        ws = [c.width for c in cells]
        for k, c in enumerate(cells):
            S = c.regime.shape[0]
            for i in range(S):
                y = k + (i - (S - 1) / 2) * 0.18
                for reg in COLORS:
                    sel = c.regime[i] == reg
                    ax.scatter(c.cs[sel], np.full(sel.sum(), y), color=COLORS[reg],
                               marker=MARKERS[reg], s=55, zorder=3,
                               label=reg if (k, i) == (0, 0) else None)
            e = summary["cells"][mdl][s][str(c.width)]["eta_max_lambda0"]
            if e is not None:
                ax.plot([e / 2] * 2, [k - 0.4, k + 0.4], color="black", lw=3, zorder=4,
                        label="measured edge" if k == 0 else None)
        plots.theory_line(ax, x=th.LAZY_EDGE / 2, label="theory: 2/lambda0, eta_max")
        plots.theory_line(ax, x=th.EDGE[mdl] / 2)
        ax.set_xscale("log")
        ticks = [t for t in (0.5, 1, 2, 3, 4, 6, 8, 12, 16) if cells[0].cs[0] <= t
                 <= max(cells[0].cs[-1], th.EDGE[mdl] / 2)]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_yticks(range(len(ws)), [str(w) for w in ws])
        ax.set_ylim(-0.6, len(ws) - 0.4)
        ax.set_xlabel("c = lr / (2/lambda0)")
        ax.set_ylabel("width")
        widest = summary["cells"][mdl][s][str(ws[-1])]["eta_max_lambda0"]
        edge = (f"none diverge up to {2 * cells[0].cs[-1]:g}" if widest is None
                else f"eta_max lambda0 = {widest:.2f}")
        ax.set_title(f"{mdl}, {_name(summary, s)}: {edge} (theory {th.EDGE[mdl]:g})",
                     fontsize=15)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    h, lab = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=len(lab), frameon=False)
    fig.suptitle(takeaway(summary))
    return plots.save(fig, path)


def takeaway(summary) -> str:
    """The phase diagram's headline, from the summary's widest uv and ReLU edges."""
    parts = []
    for mdl in summary["cells"]:
        vals = [v for k, v in summary.items() if k.startswith(f"{mdl}_")
                and k.endswith("_eta_max_lambda0") and v is not None]
        if vals:
            rng = f"{min(vals):.2f}" if max(vals) - min(vals) < 0.005 else (
                f"{min(vals):.2f}-{max(vals):.2f}")
            parts.append(f"{mdl} diverges past eta lambda0 = {rng} (theory {th.EDGE[mdl]:g})")
    return "; ".join(parts) if parts else "no edge inside the grid"


def pick_runs(cell):
    """(regime, seed index, c index) of one run per regime in ``cell`` (first seed that has
    one): the largest lazy c, the middle catapult c, the smallest divergent c."""
    out = []
    for reg, choose in (("lazy", lambda j: j[-1]), ("catapult", lambda j: j[len(j) // 2]),
                        ("divergent", lambda j: j[0])):
        for i in range(cell.regime.shape[0]):
            j = np.nonzero(cell.regime[i] == reg)[0]
            if j.size:
                out.append((reg, i, int(choose(j))))
                break
    return out


def catapult_caption(summary, mdl, setting, width):
    """The curves figure's headline for one model: the catapult run it draws (pick_runs' choice,
    from the summary's regimes), its loss spike and final sharpness, from the summary."""
    c = summary["cells"][mdl][setting][str(width)]
    reg = np.array(c["regimes"])
    for i in range(reg.shape[0]):
        j = np.nonzero(reg[i] == "catapult")[0]
        if j.size:
            j = int(j[len(j) // 2])
            return (f"{mdl}: loss x{c['peak_over_initial'][i][j]:.0f} up at c = "
                    f"{summary['c'][mdl][j]:g}, sharpness ends at "
                    f"{c['sharpness_end_lr_over_2'][i][j]:.2f} x 2/lr")
    return None


def curves(res, summary, path):
    """Loss (log) and sharpness x lr / 2 (1 = the stability edge 2/lr) of one run per regime,
    for each model at its widest width on the data set (or on one sample)."""
    models = list(dict.fromkeys(c.model for c in res.cells))[:2]
    fig, axes = plots.slide(2, len(models), squeeze=False, sharex=True)
    head = []
    for col, mdl in enumerate(models):
        cells = [c for c in res.cells if c.model == mdl]
        data = [c for c in cells if c.setting == "data"] or cells
        cell = max(data, key=lambda c: c.width)
        a1, a2 = axes[0, col], axes[1, col]
        steps = np.arange(cell.loss.shape[-1]) + 1
        runs = pick_runs(cell)
        fin = [cell.loss[i, j] for reg, i, j in runs if reg != "divergent"]
        top = 10 * np.nanmax(fin) if fin else 1e6
        for k, (reg, i, j) in enumerate(runs):
            st = {"color": COLORS[reg], "linestyle": plots.DASHES[k]}
            lab = f"{reg}, c = {cell.cs[j]:g}"
            loss = cell.loss[i, j]
            a1.plot(steps, np.where(loss <= top, plots.positive(loss), np.nan), label=lab, **st)
            off = ~np.isfinite(loss) | (loss > top)
            if off.any():
                plots.mark_offscale(a1, [steps[np.argmax(off)]], [np.inf], top)
            a2.plot(res.s_steps + 1, cell.sharpness[i, j] * cell.lr[i, j] / 2, **st)
            if reg == "divergent":
                plots.note(a2, f"divergent (c = {cell.cs[j]:g}): sharpness leaves the axis",
                           loc="upper right")
        plots.theory_line(a2, y=1.0, label="2/lr (stability edge)")
        a2.legend(fontsize=12, loc="center right", frameon=False)
        line = catapult_caption(summary, mdl, cell.setting, cell.width)
        if line:
            head.append(line)
        a1.set_yscale("log")
        a1.set_xscale("log")
        a1.set_ylim(top=top * 3)
        a1.set_title(f"{mdl}, {_name(summary, cell.setting)}, width {cell.width}, seed "
                     f"{int(res.seeds[0])}", fontsize=15)
        a1.set_ylabel("loss (log)")
        a2.set_ylabel("sharpness x lr / 2")
        a2.set_xlabel("step + 1 (full-batch GD, log)")
        top = np.nanmax(np.where(np.isfinite(cell.sharpness * cell.lr[..., None] / 2),
                                 cell.sharpness * cell.lr[..., None] / 2, np.nan))
        a2.set_ylim(0, min(max(2.2, 1.1 * top), 6.0))
        a1.legend(fontsize=12, loc="upper right", frameon=True, framealpha=0.9)
    fig.suptitle(" | ".join(head) if head else "no catapult run in the grid", fontsize=17)
    return plots.save(fig, path)
