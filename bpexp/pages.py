"""Pages: ``report.html`` in every run folder and ``<root>/index.html`` over all runs.

Drawn from the run folder alone (summary.json, config.yaml, env.json, metrics.zarr, report.md),
never from a JAX call, so ``python -m bpexp.pages RUN_DIR`` gives old runs pages too.

Why plotly: one well-kept library (plotly.py builds the figures in Python from the stored
arrays; plotly.js draws them) that covers everything the pages need with no server: hover
labels, log axes, heatmaps, contours, rotatable 3-D surfaces, and a stable JavaScript API
(``Plotly.restyle``) for the sliders and selectors written here. plotly.py writes numpy arrays
as base64 typed arrays, so a page embeds ~5 bytes per number. (Vega-Lite/altair would need
three scripts and has no 3-D surfaces.)

Offline: plotly.js (~4.6 MB) is written once to ``<root>/.assets/plotly-<version>.min.js`` and
every page references it relatively (``../../.assets/...``), so a page costs only its data
(tens to hundreds of kB). ``standalone=True`` (``python -m bpexp.pages --standalone``) inlines
it instead, for a page that travels without the outputs folder. A page with no plotly.js says
so instead of failing silently.

Each figure embeds at most ``MAX_VALUES`` numbers; bigger grids are subsampled (evenly over each
axis, the ends kept) and the page says which axes were cut and how far.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from bpexp import outputs

MAX_VALUES = 256_000   # numbers per figure
MAX_LINES = 12         # lines of one trace group (seeds, ...) before subsampling
MAX_STEPS = 250        # points along a step axis
MAX_POINTS = 5000      # points of one scatter
MAX_HEAT = 100         # cells along each heatmap axis
MAX_TRACES = 200       # traces of one generic figure
PAGE_VALUES = 200_000  # numbers of all the generic figures of one page together
ASSETS = ".assets"
SKIP_VARS = ("chunk_done",)


# ---------------------------------------------------------------- small helpers
def _pick(n: int, k: int) -> np.ndarray:
    """At most k indices of range(n), evenly spread, first and last kept."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(k, 2))).astype(int))


def _num(v) -> str:
    """A number for a label: 4 significant digits, nan/inf spelled out."""
    from bpexp.report import fmt

    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (np.floating, float)):
        return fmt(float(v))
    return str(v)


def _is_numeric(coord) -> bool:
    return coord is not None and np.issubdtype(np.asarray(coord).dtype, np.number)


def _is_steplike(name: str) -> bool:
    return "step" in name


def _log_axis(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and (v > 0).all() and v.max() / v.min() > 50


def _f32(a) -> np.ndarray:
    """float32 for the page (half the bytes); non-finite values stay NaN/inf."""
    a = np.asarray(a)
    if a.dtype == bool:
        return a.astype(np.float32)
    return a.astype(np.float32) if np.issubdtype(a.dtype, np.number) else a


class Sub:
    """Which axes a figure subsampled (for the note under it)."""

    def __init__(self):
        self.cut: dict[str, tuple[int, int]] = {}

    def pick(self, name: str, n: int, k: int) -> np.ndarray:
        idx = _pick(n, k)
        if idx.size < n:
            self.cut[name] = (idx.size, n)
        return idx

    def note(self) -> str:
        if not self.cut:
            return ""
        parts = [f"{k} {a} of {n}" for k, (a, n) in self.cut.items()]
        return "Subsampled for the page (evenly, ends kept): " + ", ".join(parts) + "."


def _coord(ds, dim):
    return ds[dim].values if dim in ds.coords else np.arange(ds.sizes[dim])


# ---------------------------------------------------------------- a figure and its controls
class Fig:
    """One plotly figure plus the page's own controls.

    ``controls``: [{"name", "labels", "kind": "slider" | "select", "initial", "play"}];
    ``keys``: per trace None (always shown) or a list aligned with controls (None = any value):
    a trace is visible when every non-None entry equals its control's position;
    ``series``: traces whose points follow a control (``mode`` "prefix": points 0..k,
    "head": point k only); ``notes``: text per control state ("i,j" -> str)."""

    def __init__(self, title: str, fig, note: str = "", controls=None, keys=None, series=None,
                 series_control: int = 0, notes=None, fid: str | None = None, height=None):
        self.title, self.fig, self.note = title, fig, note
        self.controls, self.keys = controls or [], keys
        self.series, self.series_control = series, series_control
        self.notes, self.fid = notes, fid
        if height:
            fig.update_layout(height=height)

    def spec(self) -> dict:
        import plotly.io as pio

        fig = json.loads(pio.to_json(self.fig, validate=False, pretty=False))
        fig.get("layout", {}).pop("template", None)   # one shared template per page
        out = {"figure": fig, "controls": self.controls}
        if self.keys is not None:
            out["keys"] = self.keys
        if self.series:
            out["series"], out["series_control"] = self.series, self.series_control
        if self.notes:
            out["notes"] = self.notes
        return out


def _go():
    import plotly.graph_objects as go

    return go


def _layout(fig, x=None, y=None, logx=False, logy=False, **kw):
    fig.update_layout(margin=dict(l=60, r=20, t=30, b=50), hovermode="closest",
                      legend=dict(font=dict(size=11)), **kw)
    if x is not None:
        fig.update_xaxes(title_text=x, type="log" if logx else "linear")
    if y is not None:
        fig.update_yaxes(title_text=y, type="log" if logy else "linear")
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")   # not SI prefixes: 1e-15, not "1f"
    return fig


def _vline(fig, x, text, dash="dash", color="#444", pos="top left"):
    if x is None or not np.isfinite(x):
        return
    fig.add_vline(x=x, line=dict(dash=dash, color=color, width=1.5),
                  annotation_text=text, annotation_position=pos)


def _heat_z(a):
    """(z for the colour, whether it is log10): log10 when positive over > 2 decades."""
    a = np.asarray(a, dtype=np.float64)
    fin = a[np.isfinite(a)]
    if fin.size and (fin > 0).all() and fin.max() / fin.min() > 100:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(a), np.log10(a), np.nan), True
    return np.where(np.isfinite(a), a, np.nan), False


# ---------------------------------------------------------------- generic figures
def numeric_grid_dims(da) -> list[str]:
    """Dims of ``da`` with a numeric coordinate (or none) and 2+ values, step-like ones out."""
    return [d for d in da.dims if da.sizes[d] >= 2 and not _is_steplike(d)
            and (d not in da.coords or _is_numeric(da[d].values))]


def heatmap(da, title: str, label: str, fid: str | None = None) -> Fig | None:
    """``da`` over its numeric grid axes: a heatmap over two chosen axes (a selector when
    there are more pairs), the other axes reduced by their median."""
    go = _go()
    dims = numeric_grid_dims(da)
    if len(dims) < 2:
        return None
    pairs = [(a, b) for i, a in enumerate(dims) for b in dims[i + 1:]][:10]
    sub = Sub()
    idx = {d: sub.pick(d, da.sizes[d], MAX_HEAT) for d in dims}
    fig = go.Figure()
    keys = []
    for j, (a, b) in enumerate(pairs):
        part = da.isel({d: idx[d] for d in (a, b)})
        other = [d for d in part.dims if d not in (a, b)]
        arr = np.asarray(part.transpose(b, a, *other).values, dtype=np.float64)
        if other:
            arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fin = np.where(np.isfinite(arr), arr, np.nan)
                arr = np.nanmedian(fin, axis=2) if np.isfinite(fin).any() else fin[..., 0]
        z, logz = _heat_z(arr)
        xs, ys = _coord(part, a), _coord(part, b)
        logx, logy = _log_axis(xs), _log_axis(ys)
        # categorical positions keep log-spaced grids evenly sized; the labels carry the value
        fig.add_trace(go.Heatmap(
            z=_f32(z), x=[_num(v) for v in xs], y=[_num(v) for v in ys],
            colorscale="Viridis", visible=j == 0, hoverongaps=False,
            colorbar=dict(title=("log10 " if logz else "") + label[:18]),
            customdata=_f32(arr) if logz else None,
            hovertemplate=(f"{a} %{{x}}<br>{b} %{{y}}<br>{label} "
                           + ("%{customdata:.4g}" if logz else "%{z:.4g}")
                           + (f"<br>(median over {', '.join(other)})" if other else "")
                           + "<extra></extra>")))
        keys.append([j])
        del logx, logy
    _layout(fig, None, None)
    fig.update_xaxes(type="category", title_text=pairs[0][0])
    fig.update_yaxes(type="category", title_text=pairs[0][1])
    controls = [{"name": "axes", "kind": "select", "labels": [f"{a} × {b}" for a, b in pairs],
                 "initial": 0, "axis_titles": [[a, b] for a, b in pairs]}]
    note = ("Blank cells: non-finite (diverged). " if not np.isfinite(
        np.asarray(da.values, dtype=float)).all() else "") + sub.note()
    if any(da.sizes[d] > 1 for d in da.dims if d not in pairs[0]):
        note = "Axes not shown are reduced by their median. " + note
    return Fig(title, fig, note, controls=controls if len(pairs) > 1 else [], keys=keys
               if len(pairs) > 1 else None, fid=fid, height=420)


def generic(name: str, da, budget: int = MAX_VALUES) -> list[Fig]:
    """Any stored array as an interactive plot: scalars as text, 1-D as a line over its axis,
    with a step-like (or the last) axis as x, lines over the next axis and a slider over the
    ones before; plus a heatmap when it has 2+ numeric grid axes."""
    go = _go()
    figs: list[Fig] = []
    if da.dtype.kind not in "biuf":
        return figs
    dims = list(da.dims)
    if not dims:
        return figs
    xdim = next((d for d in reversed(dims) if _is_steplike(d)), dims[-1])
    rest = [d for d in dims if d != xdim]
    sub = Sub()
    xi = sub.pick(xdim, da.sizes[xdim], MAX_STEPS if _is_steplike(xdim) else 400)
    line_dim = rest[-1] if rest else None
    ctl_dims = rest[:-1]
    li = sub.pick(line_dim, da.sizes[line_dim], MAX_LINES) if line_dim else np.arange(1)
    states = max(1, min(budget // max(1, xi.size * li.size), MAX_TRACES // li.size))
    ci = {}
    for d in ctl_dims:   # every control axis gets an equal share of the states
        ci[d] = sub.pick(d, da.sizes[d], max(1, min(64, int(states ** (1 / len(ctl_dims))))))
    sel = {xdim: xi, **({line_dim: li} if line_dim else {}), **ci}
    part = da.isel(sel)
    arr = np.asarray(part.transpose(*ctl_dims, *([line_dim] if line_dim else []), xdim).values)
    arr = arr.astype(np.float64)
    xs = _coord(part, xdim)
    x_num = _is_numeric(xs)
    fig = go.Figure()
    keys = []
    shape_c = [len(ci[d]) for d in ctl_dims]
    for pos in np.ndindex(*shape_c) if ctl_dims else [()]:
        for j in range(len(li)):
            y = arr[pos + ((j,) if line_dim else ())]
            lab = f"{line_dim} {_num(_coord(part, line_dim)[j])}" if line_dim else name
            where = "".join(f"<br>{d} {_num(_coord(part, d)[p])}" for d, p in zip(ctl_dims, pos))
            fig.add_trace(go.Scatter(
                **(_xs(xs) if x_num else {"x": [str(v) for v in xs]}), y=_f32(y), name=lab,
                mode="lines+markers" if xs.size <= 30 else "lines", visible=True,
                hovertemplate=f"{xdim} %{{x}}<br>{name} %{{y:.4g}}<br>{lab}{where}"
                              "<extra></extra>"))
            keys.append(list(pos) if ctl_dims else None)
    logy = _log_axis(arr)
    _layout(fig, xdim, name, logx=x_num and _log_axis(xs), logy=logy)
    controls = [{"name": d, "kind": "slider" if _is_numeric(_coord(part, d)) else "select",
                 "labels": [_num(v) for v in _coord(part, d)], "initial": 0} for d in ctl_dims]
    if len(li) > 8 or not line_dim:
        fig.update_layout(showlegend=False)
    figs.append(Fig(f"{name} over {' × '.join(dims)}", fig, sub.note(), controls=controls,
                    keys=keys if ctl_dims else None, height=380))
    if len(numeric_grid_dims(da)) >= 2 and not line_dim == xdim:
        final = da.isel({xdim: -1}) if _is_steplike(xdim) else da
        h = heatmap(final, f"{name}{' (last ' + xdim + ')' if _is_steplike(xdim) else ''}"
                    " over two axes", name)
        if h is not None:
            figs.append(h)
    return figs


def generic_all(ds, skip=(), budget: int = PAGE_VALUES) -> list[Fig]:
    """Every stored array (``budget`` numbers shared among them)."""
    figs = []
    names = [n for n in sorted(ds.data_vars) if n not in SKIP_VARS and n not in skip]
    budget = max(2000, budget // max(1, len(names)))
    for name in names:
        try:
            figs += generic(name, ds[name], budget)
        except Exception as e:   # one odd array must not cost the page
            figs.append(Fig(name, _go().Figure(), f"not drawn: {type(e).__name__}: {e}"))
    return figs


def summary_figs(summary: dict) -> list[Fig]:
    """Tables of summary.json drawn as grouped bars with hover: every entry that maps names
    to records of numbers (e.g. gradcheck's models -> relative errors)."""
    go = _go()
    figs = []
    for key, val in (summary or {}).items():
        if not (isinstance(val, dict) and val and all(isinstance(v, dict) for v in val.values())):
            continue
        names = list(val)[:200]
        fields = [f for f in val[names[0]] if all(
            isinstance(val[n].get(f), (int, float)) and not isinstance(val[n].get(f), bool)
            for n in names)]
        if not fields:
            continue
        for f in fields[:8]:
            ys = np.array([float(val[n][f]) for n in names])
            pos = ys[ys > 0]
            logy = (ys >= 0).all() and pos.size > 1 and pos.max() / pos.min() > 50
            fig = go.Figure(go.Bar(x=names, y=ys, name=f,
                                   hovertemplate=f"%{{x}}<br>{f} %{{y:.4g}}<extra></extra>"))
            _layout(fig, None, f, logy=bool(logy))
            fig.update_xaxes(type="category", title_text=key)
            figs.append(Fig(f"summary.json: {key} / {f}", fig,
                            "Zero values do not show on a log axis." if logy and pos.size <
                            ys.size else "", height=380))
    return figs


# ---------------------------------------------------------------- per experiment
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


def _xs(steps) -> dict:
    """x of a line: ``x0``/``dx`` for evenly spaced steps (no array in the page)."""
    steps = np.asarray(steps)
    d = np.diff(steps)
    if steps.size > 1 and np.issubdtype(steps.dtype, np.number) and (d == d[0]).all():
        return {"x0": steps[0].item(), "dx": d[0].item()}
    return {"x": _f32(steps)}


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


# ---------------------------------------------------------------- the page
CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:12px 20px 40px}
header.run{background:#243447;color:#fff;padding:10px 20px}
header.run a{color:#cde}
header.run .meta{font-size:13px;opacity:.9}
section.fig{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;
margin:14px 0}
section.fig h3{margin:2px 0 6px;font-size:16px}
.controls{display:flex;flex-wrap:wrap;gap:8px 22px;align-items:center;margin:4px 0}
.controls label{display:flex;gap:6px;align-items:center}
.controls input[type=range]{width:320px}
.controls .val{font-family:monospace;min-width:5em}
.state-note{font-size:14px;color:#333;margin:4px 0;min-height:1.2em}
.note{font-size:13px;color:#666}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:8px 12px;border-radius:6px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eef}
pre{background:#f0f0f0;padding:8px;overflow-x:auto}
img{max-width:100%}
details{margin:12px 0}
summary{cursor:pointer;font-weight:600}
"""

JS = r"""
(function () {
  const T = JSON.parse(document.getElementById('plotly-template').textContent);
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setup(script) {
    const spec = JSON.parse(script.textContent);
    const sec = script.parentElement;
    const div = sec.querySelector('.plot'), ctl = sec.querySelector('.controls');
    const note = sec.querySelector('.state-note');
    const data = spec.figure.data || [], layout = spec.figure.layout || {};
    layout.template = T;
    const state = spec.controls.map(c => c.initial || 0);
    let timer = null;
    const vis = () => spec.keys.map(k => !k || k.every((v, c) => v === null || v === state[c]));
    function seriesArgs(k) {
      const xs = [], ys = [], idx = [];
      for (const s of spec.series) {
        const j = Math.min(k, s.x.length - 1);
        if (s.mode === 'head') { xs.push([s.x[j]]); ys.push([s.y[j]]); }
        else { xs.push(s.x.slice(0, j + 1)); ys.push(s.y.slice(0, j + 1)); }
        idx.push(s.trace);
      }
      return [{x: xs, y: ys}, idx];
    }
    function update() {
      if (spec.keys) Plotly.restyle(div, {visible: vis()});
      if (spec.series) Plotly.restyle(div, ...seriesArgs(state[spec.series_control || 0]));
      spec.controls.forEach((c, i) => {
        if (c.axis_titles) Plotly.relayout(div, {'xaxis.title.text': c.axis_titles[state[i]][0],
                                                'yaxis.title.text': c.axis_titles[state[i]][1]});
      });
      if (spec.notes && note) note.textContent = spec.notes[state.join(',')] || '';
      div.dataset.state = state.join(',');
    }
    if (spec.keys) { const v = vis(); data.forEach((t, i) => { t.visible = v[i]; }); }
    if (spec.series) {
      const [a, idx] = seriesArgs(state[spec.series_control || 0]);
      idx.forEach((t, n) => { data[t].x = a.x[n]; data[t].y = a.y[n]; });
    }
    spec.controls.forEach((c, i) => {
      if (c.kind === 'hidden') return;
      const wrap = el('label', {'class': 'ctl'});
      wrap.append(c.name);
      if (c.kind === 'slider') {
        const n = c.labels.length;
        const inp = el('input', {type: 'range', min: 0, max: n - 1, step: 1,
                                 value: state[i], 'data-control': c.name});
        const val = el('span', {'class': 'val'}, c.labels[state[i]]);
        inp.addEventListener('input', () => {
          state[i] = +inp.value; val.textContent = c.labels[state[i]]; update();
        });
        wrap.append(inp, val);
        if (c.play) {
          const b = el('button', {type: 'button', 'class': 'play'}, '\u25B6 play');
          const stop = () => { clearInterval(timer); timer = null; b.textContent = '\u25B6 play'; };
          b.addEventListener('click', () => {
            if (timer) { stop(); return; }
            if (+inp.value >= n - 1) { inp.value = 0; inp.dispatchEvent(new Event('input')); }
            b.textContent = '\u275A\u275A pause';
            timer = setInterval(() => {
              if (+inp.value >= n - 1) { stop(); return; }
              inp.value = +inp.value + 1; inp.dispatchEvent(new Event('input'));
            }, Math.max(60, Math.min(400, 6000 / n)));
          });
          wrap.append(b);
        }
      } else {
        const sel = el('select', {'data-control': c.name});
        c.labels.forEach((l, j) => { const o = el('option', {value: j}, l); sel.append(o); });
        sel.value = state[i];
        sel.addEventListener('change', () => { state[i] = +sel.value; update(); });
        wrap.append(sel);
      }
      ctl.append(wrap);
    });
    Plotly.newPlot(div, data, layout, {responsive: true, displaylogo: false}).then(() => {
      if (spec.notes && note) note.textContent = spec.notes[state.join(',')] || '';
      div.dataset.state = state.join(',');
      div.dataset.ready = '1';
    });
  }
  function render(box) {
    box.querySelectorAll('script.fig-spec').forEach(s => {
      if (s.dataset.done) return;
      s.dataset.done = '1';
      try { setup(s); } catch (e) {
        s.parentElement.querySelector('.plot').textContent = 'not drawn: ' + e;
        console.error(e);
      }
    });
  }
  if (typeof Plotly === 'undefined') {
    const w = document.getElementById('no-plotly');
    if (w) w.hidden = false;
    return;
  }
  render(document.getElementById('figures'));
  document.querySelectorAll('details.lazy').forEach(d => d.addEventListener('toggle', () => {
    if (d.open) render(d);
  }));
})();
"""


def _json_script(obj, **attrs) -> str:
    a = "".join(f' {k.replace("_", "-") if k != "cls" else "class"}="{html.escape(str(v))}"'
                for k, v in attrs.items())
    # non-finite numbers outside typed arrays become null (JSON has no NaN)
    text = json.dumps(outputs._clean(obj), separators=(",", ":"), allow_nan=False)
    text = text.replace("</", "<\\/")
    return f'<script type="application/json"{a}>{text}</script>'


def _fig_html(f: Fig, n: int) -> str:
    spec = f.spec()
    fid = f.fid or f"fig-{n}"
    return (f'<section class="fig" id="{html.escape(fid)}"><h3>{html.escape(f.title)}</h3>'
            f'<div class="controls"></div><div class="state-note"></div>'
            f'<div class="plot"></div>'
            + (f'<p class="note">{html.escape(f.note)}</p>' if f.note else "")
            + _json_script(spec, cls="fig-spec") + "</section>\n")


def _markdown(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _split_report(md: str) -> tuple[str, str, str]:
    """report.md as (title + question + command, the sections, the figures section)."""
    parts = re.split(r"(?m)^(?=## )", md)
    head, rest = parts[0], parts[1:]
    figs = [p for p in rest if p.startswith("## Figures")]
    body = [p for p in rest if not p.startswith("## Figures")]
    return head, "".join(body), "".join(figs)


def plotly_asset(root: Path) -> Path:
    """``<root>/.assets/plotly-<version>.min.js``, written once (atomically)."""
    import plotly
    from plotly.offline import get_plotlyjs

    path = Path(root) / ASSETS / f"plotly-{plotly.__version__}.min.js"
    if not path.exists():
        outputs.write_text(path, get_plotlyjs())
    return path


def _template() -> dict:
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def _read(path: Path, kind: str):
    import yaml

    if not path.exists():
        return None
    try:
        text = path.read_text()
        return json.loads(text) if kind == "json" else yaml.safe_load(text) \
            if kind == "yaml" else text
    except Exception:
        return None


def figures_for(run_dir: Path, experiment: str, summary: dict) -> tuple[list, list, str]:
    """(main figures, stored-array figures, problems) for a run folder."""
    from bpexp import store

    if not (run_dir / store.STORE).is_dir():
        figs = summary_figs(summary)
        return figs, [], "" if figs else "no metrics.zarr in this folder: nothing to draw."
    ds = store.load(run_dir)
    problems = ""
    main: list[Fig] = []
    build = BUILDERS.get(experiment)
    if build is not None:
        try:
            main = build(ds, summary or {})
        except Exception as e:
            problems = f"the {experiment} figures could not be drawn ({type(e).__name__}: {e})."
    rest = generic_all(ds, budget=PAGE_VALUES // 2 if main else PAGE_VALUES)  # extras: lighter
    return main, rest, problems


def write_run(run_dir, standalone: bool = False) -> Path:
    """``<run_dir>/report.html`` from the folder alone; returns its path."""
    import plotly

    run_dir = Path(run_dir)
    env = _read(run_dir / "env.json", "json") or {}
    cfg = _read(run_dir / "config.yaml", "yaml") or {}
    summary = _read(run_dir / "summary.json", "json") or {}
    md = _read(run_dir / "report.md", "text") or ""
    experiment = (env.get("experiment") or (cfg.get("experiment") or {}).get("name")
                  or run_dir.parent.name)
    main, rest, problem = figures_for(run_dir, experiment, summary)
    if not main and rest:
        main, rest = rest, []
    head, body, figsec = _split_report(md)
    if not md:
        head = f"# {experiment}\n\n(no report.md: the run has not finished)\n"
    if standalone:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
        src = "inline"
    else:
        asset = plotly_asset(run_dir.parent.parent)
        src = os.path.relpath(asset, run_dir)
        script = f'<script src="{html.escape(src)}"></script>'
    meta = " · ".join(html.escape(str(x)) for x in (
        experiment, env.get("run_id") or run_dir.name, f"status {env.get('status', '?')}",
        f"started {env.get('start', '?')}",
        f"{env['seconds']:.1f} s" if isinstance(env.get("seconds"), (int, float)) else ""))
    links = " · ".join(f'<a href="{n}">{n}</a>' for n in (
        "report.md", "summary.json", "config.yaml", "env.json") if (run_dir / n).exists())
    index_link = os.path.relpath(run_dir.parent.parent / "index.html", run_dir)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(experiment)} {html.escape(run_dir.name)}</title>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<style>{CSS}</style>", script, "</head><body>",
        f'<header class="run"><div class="meta">{meta}</div><div class="meta">{links} · '
        f'<a href="{html.escape(index_link)}">all runs</a></div></header><main>',
        f'<p id="no-plotly" class="warn" hidden>plotly.js did not load from '
        f'<code>{html.escape(src)}</code> (the outputs folder\'s .assets): the figures need '
        "it. Rebuild a page that carries it with <code>python -m bpexp.pages --standalone "
        f"{html.escape(str(run_dir))}</code>.</p>",
        _markdown(head),
    ]
    if problem:
        out.append(f'<p class="warn">{html.escape(problem)}</p>')
    out.append('<div id="figures">')
    out += [_fig_html(f, n) for n, f in enumerate(main)]
    out.append("</div>")
    out.append(_markdown(body))
    if rest:
        out.append('<details class="lazy"><summary>Every stored array of metrics.zarr '
                   f"({len(rest)} plots)</summary>")
        out += [_fig_html(f, len(main) + n) for n, f in enumerate(rest)]
        out.append("</details>")
    if figsec:
        out.append("<details><summary>Static figures (figures/*.png)</summary>"
                   + _markdown(figsec.replace("## Figures", "", 1)) + "</details>")
    out.append(f'<p class="note">Drawn from this folder\'s stored data by bpexp.pages '
               f"(plotly {plotly.__version__}); rebuild with <code>python -m bpexp.pages "
               f"{html.escape(str(run_dir))}</code>.</p></main>")
    out.append(_json_script(_template(), id="plotly-template"))
    out.append(f"<script>{JS}</script></body></html>\n")
    path = run_dir / "report.html"
    outputs.write_text(path, "\n".join(out))
    return path


# ---------------------------------------------------------------- outputs/index.html
INDEX_JS = r"""
(function () {
  const tbody = document.querySelector('#runs tbody');
  const rows = Array.from(tbody.rows);
  const fe = document.getElementById('f-experiment'), fs = document.getElementById('f-status');
  const count = document.getElementById('count');
  function filter() {
    let n = 0;
    for (const r of rows) {
      const ok = (!fe.value || r.dataset.experiment === fe.value) &&
                 (!fs.value || r.dataset.status === fs.value);
      r.hidden = !ok; n += ok;
    }
    count.textContent = n + ' of ' + rows.length + ' runs shown';
  }
  fe.addEventListener('change', filter); fs.addEventListener('change', filter);
  document.querySelectorAll('#runs th').forEach((th, i) => th.addEventListener('click', () => {
    const asc = th.dataset.dir !== 'asc';
    document.querySelectorAll('#runs th').forEach(h => { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    const key = r => r.cells[i].dataset.sort ?? r.cells[i].textContent;
    rows.sort((a, b) => {
      const x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(r => tbody.append(r));
  }));
  filter();
})();
"""

INDEX_CSS = CSS + """
#runs th{cursor:pointer;user-select:none;white-space:nowrap}
#runs th[data-dir=asc]::after{content:' \\25B2'}
#runs th[data-dir=desc]::after{content:' \\25BC'}
#runs td.headline{font-size:12px;color:#333;max-width:520px}
.status-finished{color:#1a7f37}.status-failed{color:#cf222e}.status-interrupted{color:#9a6700}
.filters{display:flex;gap:18px;align-items:center;margin:10px 0}
"""

HEADLINE = 6   # summary scalars shown per run


def _run_link(root: Path, row: dict) -> tuple[str | None, str]:
    """(href relative to the index, label) of a run's best page."""
    d = root / str(row.get("experiment", "")) / str(row.get("id", ""))
    if not d.is_dir() and row.get("dir"):
        d = Path(row["dir"])
    for name in ("report.html", "report.md", "env.json"):
        if (d / name).exists():
            return os.path.relpath(d / name, root), name
    return None, "(folder gone)"


def _options(vals) -> str:
    return '<option value="">all</option>' + "".join(
        f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in vals)


def write_index(root) -> Path:
    """``<root>/index.html``: every run of ``<root>/index.jsonl`` once (its latest status),
    with filters by experiment and status and sortable columns; written atomically."""
    from bpexp.compare import latest

    root = Path(root)
    rows = latest(outputs.read_index(root))
    exps = sorted({str(r.get("experiment")) for r in rows})
    stats = sorted({str(r.get("status")) for r in rows})
    body = []
    for r in reversed(rows):   # newest first
        href, label = _run_link(root, r)
        summ = r.get("summary") or {}
        head = "; ".join(f"{k} {_num(v)}" for k, v in list(summ.items())[:HEADLINE])
        secs = r.get("seconds")
        e, st = html.escape(str(r.get("experiment"))), html.escape(str(r.get("status")))
        link = (f'<a href="{html.escape(href)}">{html.escape(label)}</a>' if href
                else html.escape(label))
        body.append(
            f'<tr data-experiment="{e}" data-status="{st}"><td>{e}</td>'
            f'<td>{html.escape(str(r.get("id")))}</td><td class="status-{st}">{st}</td>'
            f'<td>{html.escape(str(r.get("start") or ""))}</td>'
            f'<td data-sort="{secs if isinstance(secs, (int, float)) else ""}">'
            f'{_num(secs) if secs is not None else ""}</td>'
            f'<td class="headline">{html.escape(head)}</td><td>{link}</td></tr>')
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>bpexp runs</title><meta name=viewport content="width=device-width,initial-scale=1">
<style>{INDEX_CSS}</style></head><body>
<header class="run"><b>bpexp runs</b> · {html.escape(str(root))}/index.jsonl</header><main>
<div class="filters">
<label>experiment <select id="f-experiment">{_options(exps)}</select></label>
<label>status <select id="f-status">{_options(stats)}</select></label>
<span id="count"></span></div>
<table id="runs"><thead><tr><th>experiment</th><th>run</th><th>status</th><th>start</th>
<th>seconds</th><th>headline numbers</th><th>page</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p class="note">Click a column to sort. One row per run folder with its latest status (a run
continued or sharded over several processes has several lines in index.jsonl).</p>
</main><script>{INDEX_JS}</script></body></html>
"""
    path = root / "index.html"
    outputs.write_text(path, page)
    return path


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m bpexp.pages",
                                 description="Rebuild run pages (report.html) and the index "
                                             "(index.html) from run folders alone.")
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders")
    ap.add_argument("--index", metavar="ROOT", default=None,
                    help="rebuild ROOT/index.html (default: the root of each RUN_DIR)")
    ap.add_argument("--standalone", action="store_true",
                    help="inline plotly.js (~4.6 MB) so the page works outside outputs/")
    a = ap.parse_args(argv)
    if not a.run_dirs and a.index is None:
        ap.error("give RUN_DIR(s) and/or --index ROOT")
    roots = []
    for d in map(Path, a.run_dirs):
        if not (d / "env.json").exists() and not (d / "config.yaml").exists():
            print(f"error: {d} is not a run folder (no env.json or config.yaml)",
                  file=sys.stderr)
            return 2
        print(f"report: {write_run(d, standalone=a.standalone)}")
        root = d.resolve().parent.parent
        if (root / "index.jsonl").exists() and root not in roots:
            roots.append(root)
    if a.index is not None:
        root = Path(a.index)
        if not (root / "index.jsonl").exists():
            print(f"error: --index {root} has no index.jsonl; run an experiment first",
                  file=sys.stderr)
            return 2
        roots = [root]
    for root in roots:
        print(f"index: {write_index(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
