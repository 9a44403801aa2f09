"""Matplotlib (Agg) figures drawn from saved arrays and numbers only, never from JAX calls,
in one style made for slides.

The slide style (every experiment's figures use it):
- a 16:9 canvas (:func:`slide`, 12.8 x 7.2 in) with at most four panels; a wider grid is split
  into a headline figure and an appendix figure. :func:`save` refuses a PNG wider than
  ``MAX_ASPECT`` (2.2:1), so no experiment can draw a strip;
- fonts readable on a projector (16 pt text, 18 pt titles);
- a colour-blind-safe palette (Okabe & Ito 2008, ``PALETTE``) paired with dash styles
  (``DASHES``), so curves differ in grey-scale too (:func:`style`);
- theory drawn above the measurement (:func:`theory_line`: black, dashed, on top, labelled);
- legends outside the data (:func:`legend_outside`);
- clipped or non-finite data always marked (:func:`mark_offscale`, :func:`positive`).
Every function takes plain numpy arrays / floats and a path, and writes one PNG atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bpexp.outputs import _atomic_bytes

SLIDE = (12.8, 7.2)      # inches: 16:9, 1280 x 720 px at DPI
DPI = 100
MAX_ASPECT = 2.2         # width : height of a saved PNG, at most
MAX_PANELS = 4
STRICT = True            # refuse a PNG wider than MAX_ASPECT (every experiment draws slides)
# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
# deficiency; black is kept for theory
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
DASHES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)))
THEORY = dict(color="black", linestyle=(0, (4, 2)), linewidth=2.2, zorder=10)

plt.rcParams.update({
    "figure.dpi": DPI, "savefig.dpi": DPI, "figure.figsize": SLIDE,
    "font.size": 16, "axes.titlesize": 18, "axes.labelsize": 16, "figure.titlesize": 20,
    "xtick.labelsize": 14, "ytick.labelsize": 14, "legend.fontsize": 14,
    "legend.title_fontsize": 14, "axes.titlepad": 16, "lines.linewidth": 2.2, "lines.markersize": 7,
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE[:4] * 2,
                                         linestyle=["-", "--", "-.", ":"] * 2),
})


def style(i: int) -> dict:
    """Colour and dash of series ``i`` (``ax.plot(x, y, **style(i))``): no two of the first
    seven share either."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": DASHES[i % len(DASHES)]}


def slide(nrows: int = 1, ncols: int = 1, **kw):
    """(fig, axes) on a 16:9 canvas; at most MAX_PANELS panels (split bigger grids into a
    headline and an appendix figure). ``kw`` goes to plt.subplots (``figsize`` too)."""
    if nrows * ncols > MAX_PANELS:
        raise ValueError(f"{nrows} x {ncols} panels: a slide holds at most {MAX_PANELS}")
    kw.setdefault("figsize", SLIDE)
    kw.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, **kw)


def theory_line(ax, x=None, y=None, label=None, **kw):
    """A theory value as a horizontal (``y``) or vertical (``x``) line, or a curve (both),
    in the theory style: black, dashed, above every measurement."""
    st = {**THEORY, **kw}
    if x is not None and y is not None:
        return ax.plot(x, y, label=label, **st)[0]
    if y is not None:
        return ax.axhline(y, label=label, **st)
    return ax.axvline(x, label=label, **st)


def legend_outside(ax, where: str = "right", **kw):
    """The legend beside the axes (``right``) or under them (``below``), never over the data."""
    if where == "below":
        kw = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.14), "ncol": 3, **kw}
    else:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), **kw}
    return ax.legend(frameon=False, **kw)


def mark_offscale(ax, x, y, top, label="diverged (off scale)", color="#D55E00"):
    """Points whose ``y`` is non-finite or above ``top`` drawn as labelled arrows at the top
    edge instead of at an invented height; returns how many were marked."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    off = ~np.isfinite(y) | (y > top)
    if off.any():
        ax.plot(x[off], np.full(off.sum(), top), linestyle="none", marker=r"$\uparrow$",
                markersize=14, color=color, label=label, clip_on=False, zorder=11)
    return int(off.sum())


def wrap(text: str, width: int = 90) -> str:
    """A title's lines wrapped at ``width`` characters: a long computed takeaway stays on the
    slide instead of widening the saved PNG."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) or line for line in text.split("\n"))


def note(ax, text: str, loc: str = "lower left"):
    """A short remark inside the axes (what was clipped, which seed is shown)."""
    xy = {"lower left": (0.01, 0.02, "left", "bottom"), "upper left": (0.01, 0.98, "left", "top"),
          "lower right": (0.99, 0.02, "right", "bottom"),
          "upper right": (0.99, 0.98, "right", "top")}[loc]
    return ax.text(xy[0], xy[1], text, transform=ax.transAxes, ha=xy[2], va=xy[3], fontsize=13,
                   color="0.25", bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.8",
                                           alpha=0.85), zorder=12)


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075"
                                            "\u2076\u2077\u2078\u2079")


class PlainLogFormatter(matplotlib.ticker.LogFormatterSciNotation):
    """matplotlib's log-axis labels (10^-3, 2 x 10^-1) written as plain text, 10⁻³ and
    2×10⁻¹, instead of mathtext: the same labels, laid out without mathtext's parser, which is
    about a quarter of rendering a figure with log axes."""

    def __call__(self, x, pos=None):
        import re

        label = super().__call__(x, pos)
        m = re.fullmatch(r"\$\\mathdefault\{(.*)\}\$", label)
        if not m:
            return label
        text = re.sub(r"\^\{(-?\d+)\}", lambda e: e[1].translate(_SUPERSCRIPT), m[1])
        text = text.replace("\\times", "\u00d7")
        return "\u2212" + text[1:] if text.startswith("-") else text


def plain_log_labels(fig) -> None:
    """Every default log-axis formatter of ``fig`` (colour bars included) as
    :class:`PlainLogFormatter`; custom formatters are left alone."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None)):
            if axis is None:
                continue
            for get, put in ((axis.get_major_formatter, axis.set_major_formatter),
                             (axis.get_minor_formatter, axis.set_minor_formatter)):
                f = get()
                if type(f) is matplotlib.ticker.LogFormatterSciNotation:
                    put(PlainLogFormatter(base=f._base, labelOnlyBase=f.labelOnlyBase,
                                          minor_thresholds=f.minor_thresholds,
                                          linthresh=f._linthresh))


class ThinLogLocator(matplotlib.ticker.LogLocator):
    """matplotlib's minor log ticks (``subs='auto'``: 2, 3, ..., 9 times each power), kept at
    2 and 5 only where the axis's minor formatter labels none of them (it labels the powers
    alone once the axis holds enough of them): the labels are the same, with a third of the
    tick objects (each one is laid out in every pass of constrained layout; on log axes they
    were half of a figure's drawing). Where minor ticks carry labels, every one stays."""

    def tick_values(self, vmin, vmax):
        ticks = super().tick_values(vmin, vmax)
        if not (vmin > 0 and vmax > 0 and len(ticks)) or not self._unlabelled():
            return ticks
        mantissa = ticks / self._base ** np.floor(self._log_b(ticks) + 1e-9)
        return ticks[np.isclose(mantissa, 2) | np.isclose(mantissa, 5)]

    def _unlabelled(self) -> bool:
        """Whether the minor formatter would label no minor tick: matplotlib's own rule, asked
        of the formatter itself (LogFormatter.set_locs), so it holds across its versions."""
        fmt = None if self.axis is None else self.axis.get_minor_formatter()
        if isinstance(fmt, matplotlib.ticker.NullFormatter):
            return True
        if not isinstance(fmt, matplotlib.ticker.LogFormatter):
            return False
        try:
            fmt.set_locs()
        except Exception:
            return False
        return fmt._sublabels == {1}


def thin_log_minor_ticks(fig) -> None:
    """Every default minor locator of ``fig``'s log axes as :class:`ThinLogLocator`."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None)):
            loc = None if axis is None else axis.get_minor_locator()
            if type(loc) is matplotlib.ticker.LogLocator and isinstance(loc._subs, str) \
                    and loc._subs == "auto":
                axis.set_minor_locator(ThinLogLocator(loc._base, "auto",
                                                      numticks=loc.numticks))


class AspectError(ValueError):
    """A figure wider than MAX_ASPECT: it would not fit a slide."""


def save(fig, path) -> Path:
    """PNG to a temporary name, then renamed; closes the figure. Refuses (AspectError) a
    figure whose saved PNG is wider than MAX_ASPECT : 1. With a figure helper running
    (bpexp.render), the figure is handed to it and the PNG exists after render.drain()."""
    from bpexp import outputs

    if not outputs.FIGURES:   # outputs.figures=false: drawn, not rendered nor written
        plt.close(fig)
        return Path(path)
    import time

    t = time.perf_counter()
    if fig._suptitle is not None:        # a long computed takeaway wraps, never widens the PNG
        fig._suptitle.set_text(wrap(fig._suptitle.get_text(), 100))
    if outputs.OFFLOAD is not None and outputs.OFFLOAD(fig, path):   # bpexp.render's helper
        # draws it; render.drain() waits for the PNG
        plt.close(fig)
        return Path(path)
    plain_log_labels(fig)
    thin_log_minor_ticks(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # IHDR
    if w > MAX_ASPECT * h and STRICT:
        raise AspectError(f"{Path(path).name}: {w} x {h} px is wider than {MAX_ASPECT}:1")
    _atomic_bytes(Path(path), data)
    outputs.FIGURE_S[Path(path).name] = round(time.perf_counter() - t, 4)
    return Path(path)


def backprop_flow(nodes, edges, path, title="Backprop flow", *, height=1.6,
                  backward_label="backward dL/d(node)", title_size=18):
    """Computation graph left to right. ``nodes``: list of (label, forward_text, backward_text);
    ``edges``: list of (i, j, label) drawn as arrows i -> j. Forward values above each node,
    dL/d(node) below, from a real pass. ``height`` is the half-height of the drawing: raise it
    for multi-line (vector) node texts."""
    xs = np.arange(len(nodes)) * 2.6
    span = xs[-1] - xs[0] + 2.6
    height = max(height, span / (2 * 2.0))   # a slide, not a strip: at most 2:1
    fig, ax = plt.subplots(figsize=(SLIDE[0], SLIDE[0] * 2 * height / span + 0.6))
    for x, (label, fwd, bwd) in zip(xs, nodes):
        ax.add_patch(plt.Circle((x, 0), 0.42, color="#dbe9f6", ec=PALETTE[0], lw=2, zorder=2))
        ax.text(x, 0, label, ha="center", va="center", fontsize=18, zorder=3)
        ax.text(x, 0.62, fwd, ha="center", va="bottom", fontsize=13, color=PALETTE[0])
        ax.text(x, -0.62, bwd, ha="center", va="top", fontsize=13, color=PALETTE[3])
    for i, j, label in edges:
        ax.annotate("", xy=(xs[j] - 0.45, 0), xytext=(xs[i] + 0.45, 0),
                    arrowprops=dict(arrowstyle="->", lw=1.8, color="0.3"))
        ax.text((xs[i] + xs[j]) / 2, 0.1, label, ha="center", va="bottom", fontsize=12,
                color="0.25")
    ax.text(xs[0] - 1.2, height - 0.1, "forward", color=PALETTE[0], fontsize=14, ha="left",
            va="top")
    ax.text(xs[0] - 1.2, -height + 0.1, backward_label, color=PALETTE[3], fontsize=14,
            ha="left", va="bottom")
    ax.set_xlim(xs[0] - 1.3, xs[-1] + 1.3)
    ax.set_ylim(-height, height)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=title_size)
    return save(fig, path)


def positive(a):
    """Non-finite or non-positive values masked so log axes draw what is defined."""
    a = np.asarray(a, np.float64)
    return np.where(np.isfinite(a) & (a > 0), a, np.nan)
