"""The catapult run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import numpy as np

from bpexp.figs import COLORS, Fig, as_f32, fmt_num, plotly_go, style_axes

REGIME_COLOR = {"lazy": COLORS[0], "catapult": COLORS[1], "divergent": COLORS[3]}


def page(ds, summary: dict) -> list[Fig]:
    """The phase diagram (every run at its c and width, coloured by regime, hover: seed and
    peak loss) and, per model x setting at its widest width, the loss curves of every c."""
    go = plotly_go()
    figs: list[Fig] = []
    for mdl, per in summary.get("cells", {}).items():
        fig = go.Figure()
        for s, widths in per.items():
            for w, c in widths.items():
                for i, regs in enumerate(c["regimes"]):
                    for reg in REGIME_COLOR:
                        j = [k for k, r in enumerate(regs) if r == reg]
                        fig.add_trace(go.Scatter(
                            x=[summary["c"][mdl][k] for k in j], y=[f"{s} w{w}"] * len(j),
                            mode="markers", name=reg, legendgroup=reg,
                            marker=dict(color=REGIME_COLOR[reg], size=9),
                            showlegend=False,
                            hovertemplate=f"{reg}, seed {i}<br>c %{{x}}<extra></extra>"))
        edge = summary["theory"]["eta_max_lambda0"][mdl] / 2
        lines = ((1.0, "2/lambda0"), (edge, f"theory eta_max = {fmt_num(2 * edge)}/lambda0"))
        for x, text in lines:
            fig.add_vline(x=x, line=dict(dash="dash", color="black"), annotation_text=text)
        style_axes(fig, "c = lr / (2/lambda0)", "setting, width", logx=True)
        figs.append(Fig(f"{mdl}: regime of every run", fig, "blue lazy, orange catapult, red "
                        "divergent; one row per data setting and width, seeds overlaid.",
                        fid=f"phase_{mdl}", height=420))
        for s, widths in per.items():
            w = max(widths, key=int)
            name = f"{mdl}_{s}_w{w}_loss"
            if name not in ds:
                continue
            loss = np.asarray(ds[name].values[0], np.float64)           # seed 0: [c, step]
            loss = np.where(np.isfinite(loss) & (loss < 1e30), loss, np.nan)
            fig = go.Figure()
            for j, cc in enumerate(summary["c"][mdl]):
                reg = widths[w]["regimes"][0][j]
                fig.add_trace(go.Scatter(y=as_f32(loss[j]), mode="lines", name=f"c {cc:g} {reg}",
                                         line=dict(color=REGIME_COLOR[reg], width=1.5)))
            style_axes(fig, "step", "loss", logy=True)
            figs.append(Fig(f"{mdl}, {s}, width {w}: loss curves (seed 0)", fig,
                            "Colour = regime; diverged runs end where the loss overflows.",
                            fid=f"loss_{mdl}_{s}", height=420))
    return figs
