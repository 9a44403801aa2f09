"""The sharpness run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import re

import numpy as np

from bpexp.figs import (
    COLORS,
    Fig,
    MAX_STEPS,
    Sub,
    as_f32,
    coord_values,
    fmt_num,
    log_axis,
    plotly_go,
    style_axes,
)


def page(ds, summary: dict) -> list[Fig]:
    """Sharpness vs step with each lr's 2/lr line, every seed, hover; the loss beside it."""
    go = plotly_go()
    figs: list[Fig] = []
    if "sharpness" not in ds:
        return figs
    lrs = np.asarray(coord_values(ds, "lr"), dtype=np.float64)
    seeds = coord_values(ds, "seed")
    mstep = np.asarray(coord_values(ds, "measurement_step"))
    sh = np.asarray(ds["sharpness"].values, dtype=np.float64)
    sec = np.asarray(ds["second"].values, dtype=np.float64) if "second" in ds else None
    fig = go.Figure()
    for i, lr in enumerate(lrs):
        col = COLORS[i % len(COLORS)]
        for j, s in enumerate(seeds):
            fig.add_trace(go.Scatter(
                x=as_f32(mstep), y=as_f32(sh[i, j]), mode="lines+markers", legendgroup=str(i),
                name=f"lr {fmt_num(lr)}", showlegend=j == 0, line=dict(color=col, width=1.5),
                marker=dict(size=4),
                customdata=(as_f32(sec[i, j]) if sec is not None else None),
                hovertemplate=(f"lr {fmt_num(lr)}, seed {s}<br>step %{{x}}<br>sharpness "
                               f"%{{y:.4g}}<br>2/lr {fmt_num(2 / lr)}"
                               + ("<br>2nd eigenvalue %{customdata:.4g}" if sec is not None
                                  else "") + "<extra></extra>")))
        fig.add_hline(y=2 / lr, line=dict(dash="dash", color=col, width=1.5),
                      annotation_text=f"2/lr = {fmt_num(2 / lr)}",
                      annotation_position="top left")
    style_axes(fig, "step", "sharpness (top Hessian eigenvalue)")
    figs.append(Fig("Sharpness vs step, with 2/lr per learning rate", fig,
                    "Edge of stability: the sharpness rises to 2/lr and hovers there. Click a "
                    "legend entry to hide that learning rate.", fid="sharp", height=460))
    if "loss" in ds:
        sub = Sub()
        si = sub.pick("steps", ds.sizes["step"], MAX_STEPS * 2)
        loss = np.asarray(ds["loss"].isel(step=si).values, dtype=np.float64)
        steps = coord_values(ds, "step")[si]
        fig = go.Figure()
        for i, lr in enumerate(lrs):
            for j, s in enumerate(seeds):
                fig.add_trace(go.Scatter(
                    x=as_f32(steps), y=as_f32(loss[i, j]), mode="lines", legendgroup=str(i),
                    name=f"lr {fmt_num(lr)}", showlegend=j == 0,
                    line=dict(color=COLORS[i % len(COLORS)], width=1),
                    hovertemplate=f"lr {fmt_num(lr)}, seed {s}<br>step %{{x}}<br>loss %{{y:.4g}}"
                                  "<extra></extra>"))
        style_axes(fig, "step", "loss", logy=log_axis(loss))
        figs.append(Fig("Loss vs step", fig, sub.note(), fid="sharp-loss", height=380))
    return figs


_FORMULA = re.compile(r"^[w12\s.+\-*^()0-9]+$")
