"""The depth_sweep run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from bpexp.figs import (
    Fig,
    MAX_LINES,
    Sub,
    as_f32,
    coord_values,
    fmt_num,
    heatmap,
    plotly_go,
    style_axes,
)


def page(ds, summary: dict) -> list[Fig]:
    """Per-layer gradient norms at init and after training: a depth slider, an init selector
    (and a width selector when several widths were run).
    Long because it builds the page's figures one after another, each a few lines of plotly
    traces."""
    go = plotly_go()
    if "grad_norm_init" not in ds:
        return []
    widths, depths, inits = (coord_values(ds, d) for d in ("width", "depth", "init"))
    seeds = coord_values(ds, "seed")
    layers = coord_values(ds, "layer")
    sub = Sub()
    si = sub.pick("seeds", len(seeds), MAX_LINES)
    g0 = np.asarray(ds["grad_norm_init"].isel(seed=si).values, dtype=np.float64)
    g1 = (np.asarray(ds["grad_norm_final"].isel(seed=si).values, dtype=np.float64)
          if "grad_norm_final" in ds else None)
    fig = go.Figure()
    keys, notes = [], {}
    for w in range(len(widths)):
        for d in range(len(depths)):
            for i in range(len(inits)):
                n_l = int(np.isfinite(g0[w, d, i]).any(axis=0).sum())
                x = layers[:n_l]
                for when, g, dash in (("init", g0, "solid"), ("after training", g1, "dot")):
                    if g is None:
                        continue
                    for j, s in enumerate(seeds[si]):
                        fig.add_trace(go.Scatter(
                            x=as_f32(x), y=as_f32(g[w, d, i, j, :n_l]), mode="lines+markers",
                            line=dict(width=1, dash=dash, color="#1f77b4" if when == "init"
                                      else "#ff7f0e"), opacity=0.45, showlegend=False,
                            marker=dict(size=4),
                            hovertemplate=(f"layer %{{x}}<br>||dL/dW|| %{{y:.4g}}<br>{when}"
                                           f"<br>seed {s}<br>depth {depths[d]}, init "
                                           f"{inits[i]}, width {widths[w]}<extra></extra>")))
                        keys.append([d, i, w])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        med = np.nanmedian(g[w, d, i, :, :n_l], axis=0)
                    fig.add_trace(go.Scatter(
                        x=as_f32(x), y=as_f32(med), mode="lines+markers", name=f"median, {when}",
                        line=dict(width=3, dash=dash, color="#1f77b4" if when == "init"
                                  else "#ff7f0e"),
                        hovertemplate=(f"layer %{{x}}<br>median ||dL/dW|| %{{y:.4g}}<br>{when}"
                                       f"<br>depth {depths[d]}, init {inits[i]}<extra></extra>")))
                    keys.append([d, i, w])
                med0 = np.nanmedian(g0[w, d, i, :, :n_l], axis=0)
                ratio = (med0[0] / med0[-1]) if n_l > 1 and med0[-1] > 0 else float("nan")
                notes[f"{d},{i},{w}"] = (
                    f"depth {depths[d]} (hidden layers), init {inits[i]}, width {widths[w]}: "
                    f"{n_l} weight matrices; at init ||dL/dW_1|| / ||dL/dW_L|| = "
                    f"{fmt_num(float(ratio))} (median of {len(si)} seeds); "
                    f"0.25^D = {fmt_num(0.25 ** float(depths[d]))}")
    g_all = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in (g0, g1) if a is not None])
    style_axes(fig, "layer l (1 = input side)", "||dL/dW_l||", logy=True)
    if g_all.size:
        fig.update_yaxes(range=[math.log10(g_all.min()) - 0.2, math.log10(g_all.max()) + 0.2])
    fig.update_xaxes(range=[0.5, float(layers.max()) + 0.5], dtick=1)
    controls = [{"name": "depth", "kind": "slider", "labels": [fmt_num(v) for v in depths],
                 "initial": len(depths) - 1, "play": True},
                {"name": "init", "kind": "select", "labels": [str(v) for v in inits],
                 "initial": 0},
                {"name": "width", "kind": "select" if len(widths) > 1 else "hidden",
                 "labels": [fmt_num(v) for v in widths], "initial": 0}]
    figs = [Fig("Gradient norm per layer (solid: at initialization, dotted: after training)",
                fig, "Thin lines: seeds; thick: their median. " + sub.note(),
                controls=controls, keys=keys, notes=notes, fid="depth-grads", height=460)]
    if "loss" in ds:
        final = ds["loss"].isel(step=-1)
        h = heatmap(final, "Final loss over two grid axes", "final loss", fid="depth-heat")
        if h is not None:
            figs.append(h)
    return figs
