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
