"""Plotly figures as plain dicts: the subset of ``plotly.graph_objects`` the run pages use,
without plotly.py's per-property validation (building a page's thousand traces as graph objects
cost seconds; as dicts, milliseconds). The JSON is what plotly.js reads, the same as
``plotly.io.to_json`` of the equivalent graph objects for the properties used here.

``go = plotlite`` then ``go.Figure()``, ``go.Scatter(...)``, ``fig.add_trace``,
``fig.update_layout``, ``fig.update_xaxes`` / ``update_yaxes``, ``fig.add_hline`` /
``add_vline`` (with ``annotation_text`` / ``annotation_position``), ``fig.add_annotation``.
Keyword names with underscores are plotly's "magic underscore" paths (``title_text`` ->
``title.text``), as in plotly.py.
"""

from __future__ import annotations

import math
import re

import numpy as np

REAL_UNDERSCORE = {"error_x", "error_y", "error_z"}   # property names that contain one


def _path(d: dict) -> dict:
    """``{"title_text": v}`` -> ``{"title": {"text": v}}``, recursively."""
    out: dict = {}
    for k, v in d.items():
        v = _path(v) if isinstance(v, dict) else v
        parts = [k] if k in REAL_UNDERSCORE or "_" not in k else k.split("_")
        cur = out
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        if isinstance(v, dict) and isinstance(cur.get(parts[-1]), dict):
            _merge(cur[parts[-1]], v)
        else:
            cur[parts[-1]] = v
    return out


def _merge(a: dict, b: dict) -> dict:
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = v
    return a


def _trace(kind: str):
    def make(**kw) -> dict:
        return {"type": kind, **_path(kw)}

    make.__name__ = kind.capitalize()
    return make


Scatter, Scatter3d, Surface = _trace("scatter"), _trace("scatter3d"), _trace("surface")
Contour, Heatmap, Bar = _trace("contour"), _trace("heatmap"), _trace("bar")

# annotation_position -> (anchor along the line, xanchor, yanchor) as plotly.py places them
_POS = {"top left": (1, "right", "top"), "top right": (1, "left", "top"),
        "bottom left": (0, "right", "bottom"), "bottom right": (0, "left", "bottom"),
        "top": (1, "center", "bottom"), "bottom": (0, "center", "top"),
        "left": (0.5, "right", "middle"), "right": (0.5, "left", "middle")}


class Figure:
    """A plotly figure as ``{"data": [...], "layout": {...}}``."""

    lite = True

    def __init__(self, data=None, layout=None):
        self.data: list[dict] = [data] if isinstance(data, dict) else list(data or [])
        self.layout: dict = _path(layout or {})

    def add_trace(self, trace: dict):
        self.data.append(trace)
        return self

    def update_layout(self, **kw):
        _merge(self.layout, _path(kw))
        return self

    def _axes(self, letter: str, kw: dict):
        keys = [k for k in self.layout if re.fullmatch(rf"{letter}axis\d*", k)] or [f"{letter}axis"]
        for k in keys:
            _merge(self.layout.setdefault(k, {}), _path(kw))
        return self

    def update_xaxes(self, **kw):
        return self._axes("x", kw)

    def update_yaxes(self, **kw):
        return self._axes("y", kw)

    def add_annotation(self, **kw):
        self.layout.setdefault("annotations", []).append(_path(kw))
        return self

    def _line(self, vertical: bool, at: float, line=None, annotation_text=None,
              annotation_position="top right", **kw):
        a, b = ("x", "y") if vertical else ("y", "x")
        shape = {"type": "line", f"{a}0": at, f"{a}1": at, f"{a}ref": a, f"{b}0": 0,
                 f"{b}1": 1, f"{b}ref": f"{b} domain", **_path(kw)}
        if line:
            shape["line"] = _path(line)
        self.layout.setdefault("shapes", []).append(shape)
        if annotation_text is not None:
            along, xa, ya = _POS.get(annotation_position, _POS["top right"])
            if not vertical:   # on a horizontal line "top right" is the line's right end
                xa, ya = {"right": "right", "left": "left"}.get(
                    annotation_position.split()[-1], "center"), \
                    "bottom" if "top" in annotation_position else "top"
                along = 1 if "right" in annotation_position else 0
            self.add_annotation(**{a: at, f"{a}ref": a, b: along, f"{b}ref": f"{b} domain",
                                   "text": annotation_text, "showarrow": False,
                                   "xanchor": xa, "yanchor": ya})
        return self

    def add_vline(self, x, **kw):
        return self._line(True, x, **kw)

    def add_hline(self, y, **kw):
        return self._line(False, y, **kw)

    def to_plotly_json(self) -> dict:
        return {"data": jsonable(self.data), "layout": jsonable(self.layout)}


TYPED = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "u1": np.uint8, "i2": np.int16,
         "u2": np.uint16, "i4": np.int32, "u4": np.uint32}


def typed_array(a: np.ndarray) -> dict:
    """plotly.js's typed-array spec ``{"dtype", "bdata"(, "shape")}``: the little-endian bytes
    in base64 (64-bit integers as int32 or float64, which plotly.js reads)."""
    import base64

    code = f"{a.dtype.kind}{a.dtype.itemsize}"
    if code not in TYPED:
        fits = a.dtype.kind in "iu" and (a.size == 0 or (a.min() >= -2**31 and a.max() < 2**31))
        code = "i4" if fits else "f8"
    b = np.ascontiguousarray(a, dtype=np.dtype(TYPED[code]).newbyteorder("<"))
    out = {"dtype": code, "bdata": base64.b64encode(b.tobytes()).decode("ascii")}
    if a.ndim > 1:
        out["shape"] = ", ".join(map(str, a.shape))
    return out


def jsonable(obj):
    """Numeric numpy arrays as plotly's typed-array specs (base64, as plotly.py writes them;
    NaN stays NaN: a gap), other arrays and numpy scalars as lists and numbers, non-finite
    Python floats as null."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "fiu" and obj.dtype != np.float16:
            return typed_array(obj)
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
