"""The interactive figures of the run pages that belong to one experiment (lr_sweep's lr
slider, depth_sweep's depth slider and init selector, the optimizers' paths, sharpness vs 2/lr,
landscape's surfaces), each drawn from that run's stored Dataset and summary alone.
``BUILDERS`` maps an experiment to its builder; others get bpexp.pagefigs' generic figures.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np

from bpexp.pagefigs import (
    Fig,
    MAX_LINES,
    MAX_POINTS,
    MAX_STEPS,
    MAX_VALUES,
    Sub,
    _coord,
    _f32,
    _go,
    _is_numeric,
    _is_steplike,
    _layout,
    _log_axis,
    _num,
    _vline,
    _xs,
    heatmap,
)


def _grid_runs(da, keep=("lr",)):
    """``da`` with every grid dim except ``keep`` and the step-like ones stacked into "run"."""
    other = [d for d in da.dims if d not in keep and not _is_steplike(d)]
    if not other:
        return da.expand_dims(run=[0]), []
    return da.stack(run=other).transpose(*keep, "run", ...), other


def _run_label(stacked, j, other) -> str:
    if not other:
        return ""
    vals = stacked["run"].values[j]
    vals = vals if isinstance(vals, tuple) else (vals,)
    return ", ".join(f"{d} {_num(v)}" for d, v in zip(other, vals))




def _start_lr(lrs, theory) -> int:
    """The slider starts at the largest lr below the theory threshold (the good one)."""
    below = np.flatnonzero(lrs < theory) if theory else np.array([], dtype=int)
    return int(below[-1]) if below.size else 0


def lr_sweep(ds, summary: dict) -> list[Fig]:
    go = _go()
    figs: list[Fig] = []
    theory = summary.get("threshold_theory")
    measured = summary.get("threshold_refined") or summary.get("threshold_measured")
    kind = summary.get("theory_kind", "exact")
    lrs = np.asarray(ds["lr"].values, dtype=np.float64)
    final = ds["final_loss"].load() if "final_loss" in ds else None
    first = ds["first_nonfinite"].load() if "first_nonfinite" in ds else None
    # 1. loss curves with a slider over the learning rates
    if "loss" in ds:
        loss, other = _grid_runs(ds["loss"])
        sub = Sub()
        n_st = loss.sizes["step"]
        si = np.arange(0, n_st, -(-n_st // MAX_STEPS))
        if si.size < n_st:
            sub.cut["steps"] = (si.size, n_st)
        ri = sub.pick("runs per lr" if other != ["seed"] else "seeds", loss.sizes["run"],
                      MAX_LINES)
        li = sub.pick("learning rates", loss.sizes["lr"],
                      max(2, MAX_VALUES // (si.size * ri.size)))
        part = loss.isel(lr=li, run=ri, step=si)
        arr = np.asarray(part.values, dtype=np.float64)          # (lr, run, step)
        steps = np.asarray(part["step"].values)
        fin = arr[np.isfinite(arr) & (arr > 0)]
        lo = fin.min() if fin.size else 1e-3
        start = np.nanmedian(np.where(np.isfinite(arr[..., 0]), arr[..., 0], np.nan)) \
            if np.isfinite(arr[..., 0]).any() else (fin.max() if fin.size else 1.0)
        hi = min(fin.max(), start * 1e4) if fin.size else 10.0
        # a run's hover label: its seed (or, over several axes, its index in the stack)
        run_name = other[0] if len(other) == 1 else "run"
        run_ids = (np.asarray(part[other[0]].values, dtype=np.float64) if len(other) == 1
                   and _is_numeric(part[other[0]].values) else np.arange(len(ri), dtype=float))
        div_all = (np.asarray(_grid_runs(ds["diverged"])[0].values, dtype=bool)
                   if "diverged" in ds else None)
        fig = go.Figure()
        keys, notes = [], {}
        for i, k in enumerate(li):
            lr = lrs[k]
            for j in range(len(ri)):   # one trace per run: y only when the steps are even
                fig.add_trace(go.Scatter(
                    **_xs(steps), y=_f32(arr[i, j]), mode="lines", visible=i == 0,
                    name=f"lr {_num(lr)}", line=dict(width=1.5, color=COLORS[j % 10]),
                    hovertemplate=f"lr {_num(lr)}<br>{run_name} {_num(run_ids[j])}<br>"
                                  "step %{x}<br>loss %{y:.5g}<extra></extra>"))
                keys.append([i])
            n_div = int(div_all[k].sum()) if div_all is not None else None
            n_all = int(loss.sizes["run"])
            txt = f"lr = {_num(lr)}"
            if theory:
                rel = lr / theory
                side = "below" if rel < 1 else "above"
                expect = "" if kind != "exact" else (
                    ": expected to converge" if rel < 1 else ": expected to diverge")
                txt += (f" is {side} the theory threshold {_num(theory)} "
                        f"({'2/lambda_max' if kind == 'exact' else 'estimate, a lower bound'}; "
                        f"x{rel:.3g}){expect}")
            if n_div is not None:
                txt += f". Diverged: {n_div} of {n_all} runs."
            notes[str(i)] = txt
        fig.add_hline(y=start, line=dict(dash="dot", color="#999", width=1))
        # on a log axis an annotation's y is log10 (add_hline's own label lands elsewhere)
        fig.add_annotation(x=1, xref="paper", y=math.log10(start) if start > 0 else 0,
                           text="initial loss (median)", showarrow=False, xanchor="right",
                           yanchor="bottom", font=dict(size=11, color="#666"))
        _layout(fig, "step", "loss (log)", logy=True, showlegend=False)
        fig.update_yaxes(range=[math.log10(lo) - 0.1, math.log10(hi) + 0.3])
        fig.update_xaxes(range=[float(steps.min()), float(steps.max())])
        figs.append(Fig(
            "Loss curves, one learning rate at a time", fig,
            "Drag the slider (or press play): every run of that learning rate, on a fixed log "
            "axis; curves that leave the top have diverged. " + sub.note(),
            controls=[{"name": "learning rate", "kind": "slider", "play": True,
                       "labels": [_num(lrs[k]) for k in li],
                       "initial": _start_lr(lrs[li], theory)}],
            keys=keys, notes=notes, fid="lr-curves", height=440))
    # 2. final loss vs lr, every run, with hover
    if final is not None:
        fl, other = _grid_runs(final)
        fn = _grid_runs(first)[0] if first is not None else None
        sub = Sub()
        per = max(1, MAX_POINTS // fl.sizes["lr"])
        ri = sub.pick("runs per lr", fl.sizes["run"], per)
        li = sub.pick("learning rates", fl.sizes["lr"], MAX_POINTS)
        f = np.asarray(fl.isel(lr=li, run=ri).values, dtype=np.float64)
        nf = np.asarray(fn.isel(lr=li, run=ri).values) if fn is not None else None
        sub_fl = fl.isel(lr=li, run=ri)
        labels = [_run_label(sub_fl, b, other) for b in range(len(ri))]
        ok = np.isfinite(f)
        cap = (np.nanmax(f[ok]) * 10) if ok.any() else 1.0
        fig = go.Figure()
        for finite, name, sym, col in ((True, "finite final loss", "circle", "#1f77b4"),
                                       (False, "non-finite (plotted at the top)", "x",
                                        "#d62728")):
            xs, ys, text = [], [], []
            for a, k in enumerate(li):
                for b in range(len(ri)):
                    if ok[a, b] != finite:
                        continue
                    xs.append(lrs[k])
                    ys.append(f[a, b] if finite else cap)
                    step = "none" if nf is None or nf[a, b] < 0 else str(int(nf[a, b]))
                    text.append(f"lr {_num(lrs[k])}<br>{labels[b]}"
                                f"<br>final loss {_num(float(f[a, b]))}"
                                f"<br>first non-finite step {step}")
            if xs:
                fig.add_trace(go.Scatter(x=_f32(xs), y=_f32(ys), mode="markers", name=name,
                                         marker=dict(symbol=sym, color=col, size=7,
                                                     opacity=0.75),
                                         text=text, hovertemplate="%{text}<extra></extra>"))
        _vline(fig, theory, "theory " + _num(theory) if theory else "")
        _vline(fig, measured, "measured " + _num(measured) if measured else "", dash="dot",
               color="#2ca02c", pos="bottom right")
        _layout(fig, "learning rate", "final loss", logx=True, logy=_log_axis(f[ok]))
        figs.append(Fig("Final loss vs learning rate (every run; hover for its numbers)", fig,
                        sub.note(), fid="lr-final", height=420))
    # 3. diverged fraction
    if "diverged" in ds:
        dv = _grid_runs(ds["diverged"])[0]
        frac = np.asarray(dv.values, dtype=np.float64).mean(axis=1)
        fig = go.Figure(go.Scatter(
            x=_f32(lrs), y=_f32(frac), mode="lines+markers", name="diverged fraction",
            hovertemplate="lr %{x:.4g}<br>diverged %{y:.3f}<extra></extra>"))
        _vline(fig, theory, "theory")
        _vline(fig, measured, "measured", dash="dot", color="#2ca02c", pos="bottom right")
        _layout(fig, "learning rate", "fraction of runs diverged", logx=True)
        fig.update_yaxes(range=[-0.05, 1.05])
        figs.append(Fig("Diverged fraction per learning rate", fig, fid="lr-diverged",
                        height=340))
    if final is not None:
        h = heatmap(final, "Final loss over two grid axes", "final loss", fid="lr-heat")
        if h is not None:
            figs.append(h)
    return figs


def depth_sweep(ds, summary: dict) -> list[Fig]:
    """Per-layer gradient norms at init and after training: a depth slider, an init selector
    (and a width selector when several widths were run)."""
    go = _go()
    if "grad_norm_init" not in ds:
        return []
    widths, depths, inits = (_coord(ds, d) for d in ("width", "depth", "init"))
    seeds = _coord(ds, "seed")
    layers = _coord(ds, "layer")
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
                            x=_f32(x), y=_f32(g[w, d, i, j, :n_l]), mode="lines+markers",
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
                        x=_f32(x), y=_f32(med), mode="lines+markers", name=f"median, {when}",
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
                    f"{_num(float(ratio))} (median of {len(si)} seeds); "
                    f"0.25^D = {_num(0.25 ** float(depths[d]))}")
    g_all = np.concatenate([a[np.isfinite(a) & (a > 0)] for a in (g0, g1) if a is not None])
    _layout(fig, "layer l (1 = input side)", "||dL/dW_l||", logy=True)
    if g_all.size:
        fig.update_yaxes(range=[math.log10(g_all.min()) - 0.2, math.log10(g_all.max()) + 0.2])
    fig.update_xaxes(range=[0.5, float(layers.max()) + 0.5], dtick=1)
    controls = [{"name": "depth", "kind": "slider", "labels": [_num(v) for v in depths],
                 "initial": len(depths) - 1, "play": True},
                {"name": "init", "kind": "select", "labels": [str(v) for v in inits],
                 "initial": 0},
                {"name": "width", "kind": "select" if len(widths) > 1 else "hidden",
                 "labels": [_num(v) for v in widths], "initial": 0}]
    figs = [Fig("Gradient norm per layer (solid: at initialization, dotted: after training)",
                fig, "Thin lines: seeds; thick: their median. " + sub.note(),
                controls=controls, keys=keys, notes=notes, fid="depth-grads", height=460)]
    if "loss" in ds:
        final = ds["loss"].isel(step=-1)
        h = heatmap(final, "Final loss over two grid axes", "final loss", fid="depth-heat")
        if h is not None:
            figs.append(h)
    return figs


def _contours(H, paths, pad=0.15, n=120):
    """Grid and 0.5 w^T H w over the box holding every finite point of ``paths``."""
    pts = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in paths] + [np.zeros((1, 2))])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    g1, g2 = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    W1, W2 = np.meshgrid(g1, g2)
    Z = 0.5 * (H[0, 0] * W1 ** 2 + (H[0, 1] + H[1, 0]) * W1 * W2 + H[1, 1] * W2 ** 2)
    return g1, g2, Z


def _path_series(fig, paths, names, colors, hover_extra=None):
    """A line trace (prefix) and a marker trace (head) per path; returns the series spec."""
    go = _go()
    series = []
    for p, name, col in zip(paths, names, colors):
        p = np.asarray(p, dtype=np.float64)
        xs = [None if not np.isfinite(v) else round(float(v), 6) for v in p[:, 0]]
        ys = [None if not np.isfinite(v) else round(float(v), 6) for v in p[:, 1]]
        fig.add_trace(go.Scatter(x=xs[:1], y=ys[:1], mode="lines+markers", name=name,
                                 line=dict(color=col, width=2), marker=dict(size=4),
                                 hovertemplate=f"{name}<br>w1 %{{x:.4g}}<br>w2 %{{y:.4g}}"
                                               "<extra></extra>"))
        series.append({"trace": len(fig.data) - 1, "x": xs, "y": ys, "mode": "prefix"})
        fig.add_trace(go.Scatter(x=xs[:1], y=ys[:1], mode="markers", showlegend=False,
                                 marker=dict(size=11, color=col, line=dict(color="white",
                                                                           width=1.5)),
                                 hoverinfo="skip"))
        series.append({"trace": len(fig.data) - 1, "x": xs, "y": ys, "mode": "head"})
    return series


COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]


def optimizers(ds, summary: dict) -> list[Fig]:
    """Every optimizer's path at its best lr on the quadratic's contours, a step slider and
    play; the network's loss curves at each optimizer's best lr."""
    go = _go()
    figs: list[Fig] = []
    opts = [str(o) for o in _coord(ds, "optimizer")]
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
            names.append(f"{name} (lr {_num(qlr[o, j])})")
            lrs.append(qlr[o, j])
        sub = Sub()
        n_steps = paths[0].shape[0]
        si = sub.pick("steps", n_steps, 400)
        paths = [p[si] for p in paths]
        g1, g2, Z = _contours(H, paths)
        fig = go.Figure(go.Contour(x=_f32(g1), y=_f32(g2), z=_f32(np.log10(Z + 1e-12)),
                                   colorscale="Greys", reversescale=True, showscale=False,
                                   contours=dict(coloring="lines"), ncontours=25,
                                   hovertemplate="w1 %{x:.3g}<br>w2 %{y:.3g}<br>log10 f "
                                                 "%{z:.3g}<extra></extra>"))
        series = _path_series(fig, paths, names, COLORS)
        _layout(fig, "w1", "w2")
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
        fig.update_xaxes(range=[float(g1[0]), float(g1[-1])])
        fig.update_yaxes(range=[float(g2[0]), float(g2[-1])])
        steps = np.asarray(_coord(ds, "quad_step"))[si]
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
        steps = _coord(ds, "step")
        for o, name in enumerate(opts):
            best = ((next(iter(v for k, v in probs.items() if "quad" not in k), {})
                     .get(name) or {}).get("best_lr"))
            for j in range(nl.shape[1]):
                for s in range(nl.shape[2]):
                    fig.add_trace(go.Scatter(
                        x=_f32(steps), y=_f32(nl[o, j, s]), mode="lines",
                        name=f"{name} lr {_num(lr[o, j])}",
                        legendgroup=name, visible=True if best is None or
                        abs(lr[o, j] - best) <= 1e-9 * abs(best) else "legendonly",
                        line=dict(color=COLORS[o % len(COLORS)], width=2),
                        hovertemplate=f"{name}, lr {_num(lr[o, j])}<br>step %{{x}}<br>"
                                      "loss %{y:.4g}<extra></extra>"))
        _layout(fig, "step", "loss", logy=_log_axis(nl))
        figs.append(Fig("Network loss per optimizer (best lr shown; click the legend for the "
                        "others)", fig, fid="opt-net", height=420))
    return figs


def sharpness(ds, summary: dict) -> list[Fig]:
    """Sharpness vs step with each lr's 2/lr line, every seed, hover; the loss beside it."""
    go = _go()
    figs: list[Fig] = []
    if "sharpness" not in ds:
        return figs
    lrs = np.asarray(_coord(ds, "lr"), dtype=np.float64)
    seeds = _coord(ds, "seed")
    mstep = np.asarray(_coord(ds, "measurement_step"))
    sh = np.asarray(ds["sharpness"].values, dtype=np.float64)
    sec = np.asarray(ds["second"].values, dtype=np.float64) if "second" in ds else None
    fig = go.Figure()
    for i, lr in enumerate(lrs):
        col = COLORS[i % len(COLORS)]
        for j, s in enumerate(seeds):
            fig.add_trace(go.Scatter(
                x=_f32(mstep), y=_f32(sh[i, j]), mode="lines+markers", legendgroup=str(i),
                name=f"lr {_num(lr)}", showlegend=j == 0, line=dict(color=col, width=1.5),
                marker=dict(size=4),
                customdata=(_f32(sec[i, j]) if sec is not None else None),
                hovertemplate=(f"lr {_num(lr)}, seed {s}<br>step %{{x}}<br>sharpness "
                               f"%{{y:.4g}}<br>2/lr {_num(2 / lr)}"
                               + ("<br>2nd eigenvalue %{customdata:.4g}" if sec is not None
                                  else "") + "<extra></extra>")))
        fig.add_hline(y=2 / lr, line=dict(dash="dash", color=col, width=1.5),
                      annotation_text=f"2/lr = {_num(2 / lr)}",
                      annotation_position="top left")
    _layout(fig, "step", "sharpness (top Hessian eigenvalue)")
    figs.append(Fig("Sharpness vs step, with 2/lr per learning rate", fig,
                    "Edge of stability: the sharpness rises to 2/lr and hovers there. Click a "
                    "legend entry to hide that learning rate.", fid="sharp", height=460))
    if "loss" in ds:
        sub = Sub()
        si = sub.pick("steps", ds.sizes["step"], MAX_STEPS * 2)
        loss = np.asarray(ds["loss"].isel(step=si).values, dtype=np.float64)
        steps = _coord(ds, "step")[si]
        fig = go.Figure()
        for i, lr in enumerate(lrs):
            for j, s in enumerate(seeds):
                fig.add_trace(go.Scatter(
                    x=_f32(steps), y=_f32(loss[i, j]), mode="lines", legendgroup=str(i),
                    name=f"lr {_num(lr)}", showlegend=j == 0,
                    line=dict(color=COLORS[i % len(COLORS)], width=1),
                    hovertemplate=f"lr {_num(lr)}, seed {s}<br>step %{{x}}<br>loss %{{y:.4g}}"
                                  "<extra></extra>"))
        _layout(fig, "step", "loss", logy=_log_axis(loss))
        figs.append(Fig("Loss vs step", fig, sub.note(), fid="sharp-loss", height=380))
    return figs


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


def landscape(ds, summary: dict) -> list[Fig]:
    go = _go()
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
        surfs.append((label, _coord(ds, a), _coord(ds, b), Z, [], path))
    if surfs:
        fig = go.Figure()
        keys = []
        for i, (label, x, y, Z, pts, path) in enumerate(surfs):
            fig.add_trace(go.Surface(x=_f32(x), y=_f32(y), z=_f32(Z), colorscale="Viridis",
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
                fig.add_trace(go.Scatter3d(x=_f32(path[0]), y=_f32(path[1]), z=_f32(path[2]),
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
        lrs = np.asarray(_coord(ds, "toy_lr"), dtype=np.float64)
        h = np.array([1.0, 4.0])
        for k, v in (toy.get("lr") or {}).items():
            if v.get("factors"):
                h = (1 - np.asarray(v["factors"], dtype=np.float64)) / float(k)
                break
        paths = [np.asarray(ds["toy_paths"].isel(toy_lr=i).values, dtype=np.float64)
                 for i in range(len(lrs))]
        far = 3 * max(float(np.nanmax(np.abs(p[0]))) for p in paths)   # beyond: diverged
        clip = [np.where(np.abs(p) > far, np.nan, p) for p in paths]
        g1, g2, Z = _contours(np.diag(h), clip)
        fig = go.Figure(go.Contour(x=_f32(g1), y=_f32(g2), z=_f32(Z), colorscale="Greys",
                                   reversescale=True, showscale=False, ncontours=20,
                                   contours=dict(coloring="lines"),
                                   hovertemplate="w1 %{x:.3g}<br>w2 %{y:.3g}<br>f %{z:.3g}"
                                                 "<extra></extra>"))
        bound = toy.get("divergence_bound")
        names = [f"lr {_num(lr)}" + (" (> 2/h_max: diverges)" if bound and lr > bound else "")
                 for lr in lrs]
        series = _path_series(fig, clip, names, COLORS)
        _layout(fig, "w1", "w2")
        fig.update_yaxes(scaleanchor="x", scaleratio=1, range=[float(g2[0]), float(g2[-1])])
        fig.update_xaxes(range=[float(g1[0]), float(g1[-1])])
        steps = _coord(ds, "toy_step")
        figs.append(Fig(
            f"GD on f = 0.5 ({_num(h[0])} w1^2 + {_num(h[1])} w2^2) from "
            f"{tuple(toy.get('w0') or [])}", fig,
            "Press play or drag the step slider; per-direction factors 1 - lr h decide "
            "convergence" + (f" (diverges past 2/h_max = {_num(bound)})." if bound else "."),
            controls=[{"name": "step", "kind": "slider", "play": True,
                       "labels": [str(int(s)) for s in steps], "initial": 0}],
            series=series, fid="land-toy", height=500))
    if "slice_loss" in ds and "slice_traj_coeffs" in ds:
        Z = np.asarray(ds["slice_loss"].transpose("slice_b", "slice_a").values, np.float64)
        c = np.asarray(ds["slice_traj_coeffs"].values, dtype=np.float64)
        fig = go.Figure(go.Contour(x=_f32(_coord(ds, "slice_a")), y=_f32(_coord(ds, "slice_b")),
                                   z=_f32(Z), colorscale="Viridis", ncontours=25,
                                   hovertemplate="a %{x:.3g}<br>b %{y:.3g}<br>loss %{z:.4g}"
                                                 "<extra></extra>"))
        series = _path_series(fig, [c], ["GD trajectory (projected)"], ["#d62728"])
        _layout(fig, "direction 1", "direction 2")
        figs.append(Fig("The real model's loss slice with its GD path", fig,
                        "Press play or drag the slider over the recorded trajectory steps.",
                        controls=[{"name": "step", "kind": "slider", "play": True,
                                   "labels": [str(int(s)) for s in _coord(ds, "trajectory_step")],
                                   "initial": 0}], series=series, fid="land-slice",
                        height=480))
    return figs


BUILDERS = {"lr_sweep": lr_sweep, "depth_sweep": depth_sweep, "optimizers": optimizers,
            "sharpness": sharpness, "landscape": landscape}


