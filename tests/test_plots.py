"""The slide style: 16:9, at most four panels, no strip, colours that differ in grey too."""

import matplotlib.colors
import numpy as np
import pytest

from bpexp import plots


def _png_size(path):
    b = path.read_bytes()
    return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")


def test_a_slide_is_16_by_9_and_refuses_a_fifth_panel(tmp_path):
    fig, ax = plots.slide()
    ax.plot([0, 1], [0, 1])
    w, h = _png_size(plots.save(fig, tmp_path / "a.png"))
    assert 1.5 < w / h < 2.0            # 16:9 = 1.78 before bbox_inches="tight" trims margins
    with pytest.raises(ValueError, match="at most 4"):
        plots.slide(1, 5)


def test_save_refuses_a_strip_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "STRICT", True)
    fig, ax = plots.plt.subplots(figsize=(16, 4))
    ax.plot([0, 1], [0, 1])
    with pytest.raises(plots.AspectError, match="wider than 2.2:1"):
        plots.save(fig, tmp_path / "strip.png")
    assert not (tmp_path / "strip.png").exists()


def test_series_styles_differ_in_colour_and_in_dash():
    styles = [plots.style(i) for i in range(7)]
    assert len({s["color"] for s in styles}) == 7
    assert len({str(s["linestyle"]) for s in styles}) == 7
    # no palette colour is the theory black, and none is near-white
    lum = [np.dot(matplotlib.colors.to_rgb(c), [0.299, 0.587, 0.114]) for c in plots.PALETTE]
    assert all(0.1 < v < 0.85 for v in lum), lum


def test_offscale_points_are_marked_not_drawn_at_an_invented_height():
    fig, ax = plots.slide()
    n = plots.mark_offscale(ax, [1, 2, 3, 4], [1.0, np.nan, np.inf, 50.0], top=10)
    assert n == 3
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), [2, 3, 4])
    np.testing.assert_array_equal(line.get_ydata(), [10, 10, 10])
    plots.plt.close(fig)


def test_theory_is_drawn_above_the_measurement():
    fig, ax = plots.slide()
    meas = ax.plot([0, 1], [0, 1])[0]
    th = plots.theory_line(ax, y=0.5, label="2/lambda")
    assert th.get_zorder() > meas.get_zorder()
    plots.plt.close(fig)


def test_log_axis_labels_are_plain_text_with_the_same_values(tmp_path):
    """plots.save writes matplotlib's log-axis labels as plain text (10⁻³, 2×10⁻¹): the same
    numbers as its mathtext labels, at the same ticks; custom formatters are left alone."""
    import re

    import matplotlib.ticker as ticker

    math, plain = ticker.LogFormatterSciNotation(), plots.PlainLogFormatter()
    sup = dict(zip("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789"))
    for x in [1e-3, 0.2, 1.0, 10.0, 3e5, -1e-2, 0.05, 7e-9]:
        text = plain(x)
        assert "$" not in text and "mathdefault" not in text
        m = re.fullmatch(r"(−?)(?:(\d+)×)?10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)", text)
        assert m, text
        value = (-1 if m[1] else 1) * float(m[2] or 1) * 10.0 ** int(
            "".join(sup[c] for c in m[3]))
        assert value == pytest.approx(x, rel=1e-12), (x, text, math(x))
    fig, ax = plots.slide()
    ax.plot([1e-3, 1e2], [1e-4, 1e3])
    ax.set_xscale("log")
    ax.set_yscale("log")
    custom = ticker.FuncFormatter(lambda v, pos: "custom")
    ax.yaxis.set_major_formatter(custom)
    ticks = list(ax.get_xticks())
    plots.plain_log_labels(fig)
    assert isinstance(ax.xaxis.get_major_formatter(), plots.PlainLogFormatter)
    assert ax.yaxis.get_major_formatter() is custom
    assert list(ax.get_xticks()) == ticks
    plots.plt.close(fig)


def test_thin_log_minor_ticks_keep_every_label_and_a_subset_of_the_ticks(tmp_path):
    """plots.save thins matplotlib's minor log ticks to 2 and 5 per decade only where
    matplotlib labels no minor tick (an axis holding several powers): the drawn labels are
    unchanged; where minor ticks carry labels every tick and label stays."""
    import matplotlib.ticker as ticker

    outcomes = []
    for lo, hi in [(1e-3, 1e1), (0.3, 2e3), (0.45, 0.58), (0.16, 0.37), (2e-1, 3.5)]:
        fig, ax = plots.slide()
        ax.plot([lo, hi], [lo, hi])
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        fig.canvas.draw()
        before = ax.xaxis.get_minorticklocs()
        labels = [t.get_text() for t in ax.xaxis.get_minorticklabels()]
        plots.thin_log_minor_ticks(fig)
        assert isinstance(ax.xaxis.get_minor_locator(), plots.ThinLogLocator)
        fig.canvas.draw()
        after = ax.xaxis.get_minorticklocs()
        kept = [t.get_text() for t in ax.xaxis.get_minorticklabels()]
        thinned = not any(labels)
        outcomes.append(thinned)
        if thinned:
            assert set(np.round(after, 12)) <= set(np.round(before, 12))
            assert not any(kept)
            mant = after / 10.0 ** np.floor(np.log10(after) + 1e-9)
            assert np.all(np.isclose(mant, 2) | np.isclose(mant, 5)), mant
            inside = after[(after >= lo) & (after <= hi)]
            assert len(inside) >= 2 * int(np.log10(hi / lo)) - 1
            assert len(after) < len(before)
        else:
            np.testing.assert_array_equal(after, before)
            assert kept == labels
        plots.plt.close(fig)
    assert outcomes == [True, True, False, False, False]
    fig, ax = plots.slide()   # a custom minor locator is left alone
    ax.set_yscale("log")
    mine = ticker.LogLocator(subs=(3.0,))
    ax.yaxis.set_minor_locator(mine)
    plots.thin_log_minor_ticks(fig)
    assert ax.yaxis.get_minor_locator() is mine
    plots.plt.close(fig)
