"""Interactive figures from stored arrays, for the run pages (bpexp.pages): the ``Fig`` a page
embeds, the shared plotly helpers, size limits, and the generic figures any experiment gets:
every array of metrics.zarr drawn from its dims, a heatmap over two numeric grid axes, and the
records of summary.json as bars. The per-experiment figures are in bpexp.pagebuilders.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

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
def pick_even(n: int, k: int) -> np.ndarray:
    """At most k indices of range(n), evenly spread, first and last kept."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max(k, 2))).astype(int))


def fmt_num(v) -> str:
    """A number for a label: 4 significant digits, nan/inf spelled out."""
    from bpexp.report import fmt

    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (np.floating, float)):
        return fmt(float(v))
    return str(v)


def is_numeric(coord) -> bool:
    return coord is not None and np.issubdtype(np.asarray(coord).dtype, np.number)


def is_steplike(name: str) -> bool:
    return "step" in name


def log_axis(values) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and (v > 0).all() and v.max() / v.min() > 50


def as_f32(a) -> np.ndarray:
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
        idx = pick_even(n, k)
        if idx.size < n:
            self.cut[name] = (idx.size, n)
        return idx

    def note(self) -> str:
        if not self.cut:
            return ""
        parts = [f"{k} {a} of {n}" for k, (a, n) in self.cut.items()]
        return "Subsampled for the page (evenly, ends kept): " + ", ".join(parts) + "."


def coord_values(ds, dim):
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
        if getattr(self.fig, "lite", False):       # bpexp.plotlite: already plain data
            fig = self.fig.to_plotly_json()
        else:
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


def plotly_go():
    """The figure builder of the pages: bpexp.plotlite (plotly's graph_objects API, as plain
    dicts: no per-property validation)."""
    from bpexp import plotlite

    return plotlite


def style_axes(fig, x=None, y=None, logx=False, logy=False, **kw):
    fig.update_layout(margin=dict(l=60, r=20, t=30, b=50), hovermode="closest",
                      legend=dict(font=dict(size=11)), **kw)
    if x is not None:
        fig.update_xaxes(title_text=x, type="log" if logx else "linear")
    if y is not None:
        fig.update_yaxes(title_text=y, type="log" if logy else "linear")
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")   # not SI prefixes: 1e-15, not "1f"
    return fig


def vline(fig, x, text, dash="dash", color="#444", pos="top left"):
    if x is None or not np.isfinite(x):
        return
    fig.add_vline(x=x, line=dict(dash=dash, color=color, width=1.5),
                  annotation_text=text, annotation_position=pos)


def heat_z(a):
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
    return [d for d in da.dims if da.sizes[d] >= 2 and not is_steplike(d)
            and (d not in da.coords or is_numeric(da[d].values))]


def heatmap(da, title: str, label: str, fid: str | None = None) -> Fig | None:
    """``da`` over its numeric grid axes: a heatmap over two chosen axes (a selector when
    there are more pairs), the other axes reduced by their median."""
    go = plotly_go()
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
        z, logz = heat_z(arr)
        xs, ys = coord_values(part, a), coord_values(part, b)
        logx, logy = log_axis(xs), log_axis(ys)
        # categorical positions keep log-spaced grids evenly sized; the labels carry the value
        fig.add_trace(go.Heatmap(
            z=as_f32(z), x=[fmt_num(v) for v in xs], y=[fmt_num(v) for v in ys],
            colorscale="Viridis", visible=j == 0, hoverongaps=False,
            colorbar=dict(title=("log10 " if logz else "") + label[:18]),
            customdata=as_f32(arr) if logz else None,
            hovertemplate=(f"{a} %{{x}}<br>{b} %{{y}}<br>{label} "
                           + ("%{customdata:.4g}" if logz else "%{z:.4g}")
                           + (f"<br>(median over {', '.join(other)})" if other else "")
                           + "<extra></extra>")))
        keys.append([j])
        del logx, logy
    style_axes(fig, None, None)
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
    go = plotly_go()
    figs: list[Fig] = []
    if da.dtype.kind not in "biuf":
        return figs
    dims = list(da.dims)
    if not dims:
        return figs
    xdim = next((d for d in reversed(dims) if is_steplike(d)), dims[-1])
    rest = [d for d in dims if d != xdim]
    sub = Sub()
    xi = sub.pick(xdim, da.sizes[xdim], MAX_STEPS if is_steplike(xdim) else 400)
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
    xs = coord_values(part, xdim)
    x_num = is_numeric(xs)
    fig = go.Figure()
    keys = []
    shape_c = [len(ci[d]) for d in ctl_dims]
    for pos in np.ndindex(*shape_c) if ctl_dims else [()]:
        for j in range(len(li)):
            y = arr[pos + ((j,) if line_dim else ())]
            lab = f"{line_dim} {fmt_num(coord_values(part, line_dim)[j])}" if line_dim else name
            where = "".join(f"<br>{d} {fmt_num(coord_values(part, d)[p])}"
                            for d, p in zip(ctl_dims, pos))
            fig.add_trace(go.Scatter(
                **(step_xs(xs) if x_num else {"x": [str(v) for v in xs]}), y=as_f32(y), name=lab,
                mode="lines+markers" if xs.size <= 30 else "lines", visible=True,
                hovertemplate=f"{xdim} %{{x}}<br>{name} %{{y:.4g}}<br>{lab}{where}"
                              "<extra></extra>"))
            keys.append(list(pos) if ctl_dims else None)
    logy = log_axis(arr)
    style_axes(fig, xdim, name, logx=x_num and log_axis(xs), logy=logy)
    controls = [{"name": d, "kind": "slider" if is_numeric(coord_values(part, d)) else "select",
                 "labels": [fmt_num(v) for v in coord_values(part, d)], "initial": 0}
                for d in ctl_dims]
    if len(li) > 8 or not line_dim:
        fig.update_layout(showlegend=False)
    figs.append(Fig(f"{name} over {' × '.join(dims)}", fig, sub.note(), controls=controls,
                    keys=keys if ctl_dims else None, height=380))
    if len(numeric_grid_dims(da)) >= 2 and not line_dim == xdim:
        final = da.isel({xdim: -1}) if is_steplike(xdim) else da
        h = heatmap(final, f"{name}{' (last ' + xdim + ')' if is_steplike(xdim) else ''}"
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
            figs.append(Fig(name, plotly_go().Figure(), f"not drawn: {type(e).__name__}: {e}"))
    return figs


def summary_figs(summary: dict) -> list[Fig]:
    """Tables of summary.json drawn as grouped bars with hover: every entry that maps names
    to records of numbers (e.g. gradcheck's models -> relative errors)."""
    go = plotly_go()
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
            style_axes(fig, None, f, logy=bool(logy))
            fig.update_xaxes(type="category", title_text=key)
            figs.append(Fig(f"summary.json: {key} / {f}", fig,
                            "Zero values do not show on a log axis." if logy and pos.size <
                            ys.size else "", height=380))
    return figs

def step_xs(steps) -> dict:
    """x of a line: ``x0``/``dx`` for evenly spaced steps (no array in the page)."""
    steps = np.asarray(steps)
    d = np.diff(steps)
    if steps.size > 1 and np.issubdtype(steps.dtype, np.number) and (d == d[0]).all():
        return {"x0": steps[0].item(), "dx": d[0].item()}
    return {"x": as_f32(steps)}


# ---------------------------------------------------------------- helpers of experiments' pages
def grid_runs(da, keep=("lr",)):
    """``da`` with every grid dim except ``keep`` and the step-like ones stacked into "run"."""
    other = [d for d in da.dims if d not in keep and not is_steplike(d)]
    if not other:
        return da.expand_dims(run=[0]), []
    return da.stack(run=other).transpose(*keep, "run", ...), other


def run_label(stacked, j, other) -> str:
    if not other:
        return ""
    vals = stacked["run"].values[j]
    vals = vals if isinstance(vals, tuple) else (vals,)
    return ", ".join(f"{d} {fmt_num(v)}" for d, v in zip(other, vals))





def contours(H, paths, pad=0.15, n=120):
    """Grid and 0.5 w^T H w over the box holding every finite point of ``paths``."""
    pts = np.concatenate([p[np.isfinite(p).all(axis=1)] for p in paths] + [np.zeros((1, 2))])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    g1, g2 = np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n)
    W1, W2 = np.meshgrid(g1, g2)
    Z = 0.5 * (H[0, 0] * W1 ** 2 + (H[0, 1] + H[1, 0]) * W1 * W2 + H[1, 1] * W2 ** 2)
    return g1, g2, Z


def path_series(fig, paths, names, colors, hover_extra=None):
    """A line trace (prefix) and a marker trace (head) per path; returns the series spec."""
    go = plotly_go()
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
