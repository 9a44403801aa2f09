"""The lr_sweep run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import math

import numpy as np

from bpexp.figs import (
    COLORS,
    MAX_LINES,
    MAX_POINTS,
    MAX_STEPS,
    MAX_VALUES,
    Fig,
    Sub,
    as_f32,
    fmt_num,
    grid_runs,
    heatmap,
    is_numeric,
    log_axis,
    plotly_go,
    run_label,
    step_xs,
    style_axes,
    vline,
)


def _start_lr(lrs, theory) -> int:
    """The slider starts at the largest lr below the theory threshold (the good one)."""
    below = np.flatnonzero(lrs < theory) if theory else np.array([], dtype=int)
    return int(below[-1]) if below.size else 0


def _context(ds, summary):
    """(theory threshold, measured threshold, theory kind, lrs) of a run."""
    return (summary.get("threshold_theory"),
            summary.get("threshold_refined") or summary.get("threshold_measured"),
            summary.get("theory_kind", "exact"), np.asarray(ds["lr"].values, dtype=np.float64))


def _lr_note(lr, theory, kind, n_div, n_all) -> str:
    """What the page says under the curves of one lr: where it lies against the theory."""
    txt = f"lr = {fmt_num(lr)}"
    if theory:
        rel = lr / theory
        side = "below" if rel < 1 else "above"
        expect = "" if kind != "exact" else (
            ": expected to converge" if rel < 1 else ": expected to diverge")
        txt += (f" is {side} the theory threshold {fmt_num(theory)} "
                f"({'2/lambda_max' if kind == 'exact' else 'estimate, a lower bound'}; "
                f"x{rel:.3g}){expect}")
    if n_div is not None:
        txt += f". Diverged: {n_div} of {n_all} runs."
    return txt


def _curves(ds, summary) -> Fig | None:
    """Loss curves with a slider over the learning rates, every run of one lr at a time."""
    if "loss" not in ds:
        return None
    go = plotly_go()
    theory, measured, kind, lrs = _context(ds, summary)
    loss, other = grid_runs(ds["loss"])
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
               and is_numeric(part[other[0]].values) else np.arange(len(ri), dtype=float))
    div_all = (np.asarray(grid_runs(ds["diverged"])[0].values, dtype=bool)
               if "diverged" in ds else None)
    fig = go.Figure()
    keys, notes = [], {}
    for i, k in enumerate(li):
        lr = lrs[k]
        for j in range(len(ri)):   # one trace per run: y only when the steps are even
            fig.add_trace(go.Scatter(
                **step_xs(steps), y=as_f32(arr[i, j]), mode="lines", visible=i == 0,
                name=f"lr {fmt_num(lr)}", line=dict(width=1.5, color=COLORS[j % 10]),
                hovertemplate=f"lr {fmt_num(lr)}<br>{run_name} {fmt_num(run_ids[j])}<br>"
                              "step %{x}<br>loss %{y:.5g}<extra></extra>"))
            keys.append([i])
        n_div = int(div_all[k].sum()) if div_all is not None else None
        notes[str(i)] = _lr_note(lr, theory, kind, n_div, int(loss.sizes["run"]))
    fig.add_hline(y=start, line=dict(dash="dot", color="#999", width=1))
    # on a log axis an annotation's y is log10 (add_hline's own label lands elsewhere)
    fig.add_annotation(x=1, xref="paper", y=math.log10(start) if start > 0 else 0,
                       text="initial loss (median)", showarrow=False, xanchor="right",
                       yanchor="bottom", font=dict(size=11, color="#666"))
    style_axes(fig, "step", "loss (log)", logy=True, showlegend=False)
    fig.update_yaxes(range=[math.log10(lo) - 0.1, math.log10(hi) + 0.3])
    fig.update_xaxes(range=[float(steps.min()), float(steps.max())])
    return Fig(
        "Loss curves, one learning rate at a time", fig,
        "Drag the slider (or press play): every run of that learning rate, on a fixed log "
        "axis; curves that leave the top have diverged. " + sub.note(),
        controls=[{"name": "learning rate", "kind": "slider", "play": True,
                   "labels": [fmt_num(lrs[k]) for k in li],
                   "initial": _start_lr(lrs[li], theory)}],
        keys=keys, notes=notes, fid="lr-curves", height=440)


def _final(ds, summary) -> Fig | None:
    """Final loss vs lr, every run, with hover."""
    if "final_loss" not in ds:
        return None
    go = plotly_go()
    theory, measured, kind, lrs = _context(ds, summary)
    final = ds["final_loss"].load()
    first = ds["first_nonfinite"].load() if "first_nonfinite" in ds else None
    fl, other = grid_runs(final)
    fn = grid_runs(first)[0] if first is not None else None
    sub = Sub()
    per = max(1, MAX_POINTS // fl.sizes["lr"])
    ri = sub.pick("runs per lr", fl.sizes["run"], per)
    li = sub.pick("learning rates", fl.sizes["lr"], MAX_POINTS)
    f = np.asarray(fl.isel(lr=li, run=ri).values, dtype=np.float64)
    nf = np.asarray(fn.isel(lr=li, run=ri).values) if fn is not None else None
    sub_fl = fl.isel(lr=li, run=ri)
    labels = [run_label(sub_fl, b, other) for b in range(len(ri))]
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
                text.append(f"lr {fmt_num(lrs[k])}<br>{labels[b]}"
                            f"<br>final loss {fmt_num(float(f[a, b]))}"
                            f"<br>first non-finite step {step}")
        if xs:
            fig.add_trace(go.Scatter(x=as_f32(xs), y=as_f32(ys), mode="markers", name=name,
                                     marker=dict(symbol=sym, color=col, size=7,
                                                 opacity=0.75),
                                     text=text, hovertemplate="%{text}<extra></extra>"))
    vline(fig, theory, "theory " + fmt_num(theory) if theory else "")
    vline(fig, measured, "measured " + fmt_num(measured) if measured else "", dash="dot",
           color="#2ca02c", pos="bottom right")
    style_axes(fig, "learning rate", "final loss", logx=True, logy=log_axis(f[ok]))
    return Fig("Final loss vs learning rate (every run; hover for its numbers)", fig,
               sub.note(), fid="lr-final", height=420)


def _diverged(ds, summary) -> Fig | None:
    """The fraction of runs diverged per lr, with the thresholds."""
    if "diverged" not in ds:
        return None
    go = plotly_go()
    theory, measured, kind, lrs = _context(ds, summary)
    dv = grid_runs(ds["diverged"])[0]
    frac = np.asarray(dv.values, dtype=np.float64).mean(axis=1)
    fig = go.Figure(go.Scatter(
        x=as_f32(lrs), y=as_f32(frac), mode="lines+markers", name="diverged fraction",
        hovertemplate="lr %{x:.4g}<br>diverged %{y:.3f}<extra></extra>"))
    vline(fig, theory, "theory")
    vline(fig, measured, "measured", dash="dot", color="#2ca02c", pos="bottom right")
    style_axes(fig, "learning rate", "fraction of runs diverged", logx=True)
    fig.update_yaxes(range=[-0.05, 1.05])
    return Fig("Diverged fraction per learning rate", fig, fid="lr-diverged", height=340)


def page(ds, summary: dict) -> list[Fig]:
    """The loss curves (lr slider), the final loss of every run, the diverged fraction and a
    heatmap over two grid axes."""
    figs = [f(ds, summary or {}) for f in (_curves, _final, _diverged)]
    if "final_loss" in ds:
        figs.append(heatmap(ds["final_loss"].load(), "Final loss over two grid axes",
                            "final loss", fid="lr-heat"))
    return [f for f in figs if f is not None]
