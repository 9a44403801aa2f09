"""The landscape run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import re

import numpy as np

from bpexp.figs import (
    COLORS,
    Fig,
    as_f32,
    contours,
    coord_values,
    fmt_num,
    path_series,
    plotly_go,
    style_axes,
)

_FORMULA = re.compile(r"^[w12\s.+\-*^()0-9]+$")


def _formula_surface(formula: str, lo=-2.0, hi=2.0, n=61):
    """z over a grid for a stored polynomial in w1, w2 (digits, + - * ^ and brackets only;
    anything else -> None). The formula text comes from summary.json."""
    if not formula or not _FORMULA.match(formula):
        return None
    expr = re.sub(r"(\d)\s+(w[12])", r"\1*\2", formula.replace("^", "**"))
    expr = re.sub(r"(w[12])\s+(w[12])", r"\1*\2", expr)
    g = np.linspace(lo, hi, n)
    W1, W2 = np.meshgrid(g, g)
    try:
        Z = eval(compile(expr, "<formula>", "eval"), {"__builtins__": {}}, {"w1": W1, "w2": W2})
    except Exception:
        return None
    return g, g, np.broadcast_to(np.asarray(Z, dtype=np.float64), W1.shape)


def page(ds, summary: dict) -> list[Fig]:
    """Long because it builds the page's figures one after another, each a few lines of plotly
    traces."""
    go = plotly_go()
    figs: list[Fig] = []
    surfs = []   # (label, x, y, Z, points [(x, y, z, text)], path (x, y, z) | None)
    for part in ("convex", "nonconvex"):
        info = summary.get(part) or {}
        s = _formula_surface(info.get("formula", ""))
        if s is None:
            continue
        pts = []
        for kind in ("minima", "saddles", "maxima", "degenerate"):
            for p in info.get(kind) or []:
                pts.append((p["w"][0], p["w"][1], p["value"], f"{p.get('kind', kind)}"))
        surfs.append((f"{part}: {info.get('formula')}", *s, pts, None))
    for part, a, b in (("slice", "slice_a", "slice_b"), ("pca", "pca_a", "pca_b")):
        if f"{part}_loss" not in ds:
            continue
        Z = np.asarray(ds[f"{part}_loss"].transpose(b, a).values, dtype=np.float64)
        path = None
        if f"{part}_traj_coeffs" in ds and f"{part}_traj_loss" in ds:
            c = np.asarray(ds[f"{part}_traj_coeffs"].values, dtype=np.float64)
            path = (c[:, 0], c[:, 1], np.asarray(ds[f"{part}_traj_loss"].values, np.float64))
        label = ("a real model's loss along two filter-normalized random directions"
                 if part == "slice" else "the PCA plane of the GD trajectory")
        surfs.append((label, coord_values(ds, a), coord_values(ds, b), Z, [], path))
    if surfs:
        fig = go.Figure()
        keys = []
        for i, (label, x, y, Z, pts, path) in enumerate(surfs):
            fig.add_trace(go.Surface(x=as_f32(x), y=as_f32(y), z=as_f32(Z), colorscale="Viridis",
                                     showscale=False, opacity=0.92, name=label,
                                     hovertemplate="a %{x:.3g}<br>b %{y:.3g}<br>loss %{z:.4g}"
                                                   "<extra></extra>"))
            keys.append([i])
            if pts:
                fig.add_trace(go.Scatter3d(
                    x=[p[0] for p in pts], y=[p[1] for p in pts], z=[p[2] for p in pts],
                    mode="markers", marker=dict(size=5, color="red"),
                    text=[p[3] for p in pts], name="critical points",
                    hovertemplate="%{text}<br>w (%{x:.4g}, %{y:.4g})<br>f %{z:.4g}"
                                  "<extra></extra>"))
                keys.append([i])
            if path is not None:
                fig.add_trace(go.Scatter3d(x=as_f32(path[0]), y=as_f32(path[1]), z=as_f32(path[2]),
                                           mode="lines+markers", name="GD trajectory",
                                           line=dict(color="red", width=5),
                                           marker=dict(size=3, color="red")))
                keys.append([i])
        fig.update_layout(scene=dict(xaxis_title="w1 / a", yaxis_title="w2 / b",
                                     zaxis_title="loss"), margin=dict(l=0, r=0, t=10, b=0))
        figs.append(Fig("Loss surfaces in 3-D (drag to rotate, scroll to zoom)", fig,
                        "Choose a surface; red points are the critical points found "
                        "numerically, the red line the trajectory projected on the plane.",
                        controls=[{"name": "surface", "kind": "select",
                                   "labels": [s[0] for s in surfs], "initial": 0}],
                        keys=keys, fid="land-3d", height=560))
    if "toy_paths" in ds:
        toy = summary.get("toy_gd") or {}
        lrs = np.asarray(coord_values(ds, "toy_lr"), dtype=np.float64)
        h = np.array([1.0, 4.0])
        for k, v in (toy.get("lr") or {}).items():
            if v.get("factors"):
                h = (1 - np.asarray(v["factors"], dtype=np.float64)) / float(k)
                break
        paths = [np.asarray(ds["toy_paths"].isel(toy_lr=i).values, dtype=np.float64)
                 for i in range(len(lrs))]
        far = 3 * max(float(np.nanmax(np.abs(p[0]))) for p in paths)   # beyond: diverged
        clip = [np.where(np.abs(p) > far, np.nan, p) for p in paths]
        g1, g2, Z = contours(np.diag(h), clip)
        fig = go.Figure(go.Contour(x=as_f32(g1), y=as_f32(g2), z=as_f32(Z), colorscale="Greys",
                                   reversescale=True, showscale=False, ncontours=20,
                                   contours=dict(coloring="lines"),
                                   hovertemplate="w1 %{x:.3g}<br>w2 %{y:.3g}<br>f %{z:.3g}"
                                                 "<extra></extra>"))
        bound = toy.get("divergence_bound")
        names = [f"lr {fmt_num(lr)}" + (" (> 2/h_max: diverges)" if bound and lr > bound else "")
                 for lr in lrs]
        series = path_series(fig, clip, names, COLORS)
        style_axes(fig, "w1", "w2")
        fig.update_yaxes(scaleanchor="x", scaleratio=1, range=[float(g2[0]), float(g2[-1])])
        fig.update_xaxes(range=[float(g1[0]), float(g1[-1])])
        steps = coord_values(ds, "toy_step")
        figs.append(Fig(
            f"GD on f = 0.5 ({fmt_num(h[0])} w1^2 + {fmt_num(h[1])} w2^2) from "
            f"{tuple(toy.get('w0') or [])}", fig,
            "Press play or drag the step slider; per-direction factors 1 - lr h decide "
            "convergence" + (f" (diverges past 2/h_max = {fmt_num(bound)})." if bound else "."),
            controls=[{"name": "step", "kind": "slider", "play": True,
                       "labels": [str(int(s)) for s in steps], "initial": 0}],
            series=series, fid="land-toy", height=500))
    if "slice_loss" in ds and "slice_traj_coeffs" in ds:
        Z = np.asarray(ds["slice_loss"].transpose("slice_b", "slice_a").values, np.float64)
        c = np.asarray(ds["slice_traj_coeffs"].values, dtype=np.float64)
        fig = go.Figure(go.Contour(x=as_f32(coord_values(ds, "slice_a")),
                                   y=as_f32(coord_values(ds, "slice_b")),
                                   z=as_f32(Z), colorscale="Viridis", ncontours=25,
                                   hovertemplate="a %{x:.3g}<br>b %{y:.3g}<br>loss %{z:.4g}"
                                                 "<extra></extra>"))
        series = path_series(fig, [c], ["GD trajectory (projected)"], ["#d62728"])
        style_axes(fig, "direction 1", "direction 2")
        figs.append(Fig("The real model's loss slice with its GD path", fig,
                        "Press play or drag the slider over the recorded trajectory steps.",
                        controls=[{"name": "step", "kind": "slider", "play": True,
                                   "labels": [str(int(s)) for s in
                                              coord_values(ds, "trajectory_step")],
                                   "initial": 0}], series=series, fid="land-slice",
                        height=480))
    return figs
