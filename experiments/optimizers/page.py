"""The optimizers run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import numpy as np

from bpexp.figs import (
    COLORS,
    Fig,
    Sub,
    as_f32,
    contours,
    coord_values,
    fmt_num,
    log_axis,
    path_series,
    plotly_go,
    style_axes,
)


def page(ds, summary: dict) -> list[Fig]:
    """Every optimizer's path at its best lr on the quadratic's contours, a step slider and
    play; the network's loss curves at each optimizer's best lr.
    Long because it builds the page's figures one after another, each a few lines of plotly
    traces."""
    go = plotly_go()
    figs: list[Fig] = []
    opts = [str(o) for o in coord_values(ds, "optimizer")]
    probs = summary.get("problems") or {}
    if "quad_path" in ds and "quad_H" in ds:
        H = np.asarray(ds["quad_H"].values, dtype=np.float64)
        impl = 0
        quad = next((v for k, v in probs.items() if "quad" in k), {})
        paths, names, lrs = [], [], []
        qloss = np.asarray(ds["quad_loss"].isel(impl=impl).values, dtype=np.float64)
        qlr = np.asarray(ds["quad_lr"].values, dtype=np.float64)
        for o, name in enumerate(opts):
            best = (quad.get(name) or {}).get("best_lr")
            if best is not None:
                j = int(np.argmin(np.abs(qlr[o] - best)))
            else:
                last = np.where(np.isfinite(qloss[o, :, -1]), qloss[o, :, -1], np.inf)
                j = int(np.argmin(last))
            paths.append(np.asarray(ds["quad_path"].isel(optimizer=o, impl=impl,
                                                         quad_lr_index=j).values))
            names.append(f"{name} (lr {fmt_num(qlr[o, j])})")
            lrs.append(qlr[o, j])
        sub = Sub()
        n_steps = paths[0].shape[0]
        si = sub.pick("steps", n_steps, 400)
        paths = [p[si] for p in paths]
        g1, g2, Z = contours(H, paths)
        fig = go.Figure(go.Contour(x=as_f32(g1), y=as_f32(g2), z=as_f32(np.log10(Z + 1e-12)),
                                   colorscale="Greys", reversescale=True, showscale=False,
                                   contours=dict(coloring="lines"), ncontours=25,
                                   hovertemplate="w1 %{x:.3g}<br>w2 %{y:.3g}<br>log10 f "
                                                 "%{z:.3g}<extra></extra>"))
        series = path_series(fig, paths, names, COLORS)
        style_axes(fig, "w1", "w2")
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
        fig.update_xaxes(range=[float(g1[0]), float(g1[-1])])
        fig.update_yaxes(range=[float(g2[0]), float(g2[-1])])
        steps = np.asarray(coord_values(ds, "quad_step"))[si]
        figs.append(Fig(
            "Trajectories on the quadratic's contours (each optimizer at its best lr)", fig,
            "Press play or drag the step slider. f(w) = 0.5 w^T H w; contours of log10 f. "
            + sub.note(),
            controls=[{"name": "step", "kind": "slider", "play": True,
                       "labels": [str(int(s)) for s in steps], "initial": 0}],
            series=series, fid="opt-paths", height=520))
    if "net_loss" in ds:
        fig = go.Figure()
        nl = np.asarray(ds["net_loss"].isel(impl=0).values, dtype=np.float64)  # o, lr, seed, step
        lr = np.asarray(ds["lr"].values, dtype=np.float64)
        steps = coord_values(ds, "step")
        for o, name in enumerate(opts):
            best = ((next(iter(v for k, v in probs.items() if "quad" not in k), {})
                     .get(name) or {}).get("best_lr"))
            for j in range(nl.shape[1]):
                for s in range(nl.shape[2]):
                    fig.add_trace(go.Scatter(
                        x=as_f32(steps), y=as_f32(nl[o, j, s]), mode="lines",
                        name=f"{name} lr {fmt_num(lr[o, j])}",
                        legendgroup=name, visible=True if best is None or
                        abs(lr[o, j] - best) <= 1e-9 * abs(best) else "legendonly",
                        line=dict(color=COLORS[o % len(COLORS)], width=2),
                        hovertemplate=f"{name}, lr {fmt_num(lr[o, j])}<br>step %{{x}}<br>"
                                      "loss %{y:.4g}<extra></extra>"))
        style_axes(fig, "step", "loss", logy=log_axis(nl))
        figs.append(Fig("Network loss per optimizer (best lr shown; click the legend for the "
                        "others)", fig, fid="opt-net", height=420))
    return figs
