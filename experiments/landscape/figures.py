"""The landscape's figures, slide style (bpexp.plots): each title is a computed takeaway
(experiments/landscape/text.py) passed in by ``present``."""

from __future__ import annotations

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker

from bpexp import plots
from bpexp.experiments.landscape.run import Plane
from bpexp.plots import plt

# marker, colour (Okabe-Ito) per kind of critical point
KIND_STYLE = {"minimum": ("o", plots.PALETTE[2]), "saddle": ("X", plots.PALETTE[1]),
              "maximum": ("^", plots.PALETTE[3]), "degenerate": ("s", "0.4")}
NICE = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)   # mantissas of the colour-bar ticks


def _mark(ax, pts, lift=None, numbers=False):
    """Critical points as markers above everything else; in 3-D (``lift``: the height above the
    surface) each on a leader line from its point on the surface, so the surface cannot hide it."""
    seen = set()
    for i, p in enumerate(pts):
        m, c = KIND_STYLE[p["kind"]]
        label = p["kind"] if p["kind"] not in seen else None
        seen.add(p["kind"])
        (x, y), z = p["w"], p["value"]
        if lift is not None:
            ax.plot([x, x], [y, y], [z, z + lift], color="k", lw=1.2, zorder=20)
            ax.scatter([x], [y], [z + lift], marker=m, color=c, s=90, edgecolor="k",
                       depthshade=False, zorder=21, label=label)
            continue
        ax.plot(x, y, m, color=c, ms=12, mec="k", label=label, zorder=5)
        if numbers:  # the number toward the centre of the axes: it stays inside them
            ox, oy = (-12 if x > 0 else 12), (-12 if y > 0 else 12)
            ax.annotate(str(i + 1), (x, y), xytext=(ox, oy), textcoords="offset points",
                        ha="center", va="center", fontsize=13, fontweight="bold", zorder=6,
                        annotation_clip=True,
                        bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec="0.3", lw=0.8))


def _log_levels(L, num=25):
    """``num`` log-spaced contour levels over the finite positive values of L; a slice flat to
    float precision gets a thin band around its value, as contourf needs increasing levels."""
    v = plots.positive(L)
    levels = np.unique(np.geomspace(np.nanmin(v), np.nanmax(v), num))
    return levels if levels.size > 1 else levels[0] * np.array([1 - 1e-9, 1 + 1e-9])


def nice_ticks(lo, hi, most=6):
    """Round values m x 10^k (m in NICE) inside [lo, hi], thinned to at most ``most``; the ends
    when none is inside."""
    k = np.arange(np.floor(np.log10(lo)) - 1, np.ceil(np.log10(hi)) + 1)
    t = np.sort([m * 10.0 ** e for e in k for m in NICE])
    t = t[(t >= lo * (1 - 1e-12)) & (t <= hi * (1 + 1e-12))]
    if t.size < 2:
        return np.array([lo, hi])
    return t[::int(np.ceil(t.size / most))]


def fig_surfaces_3d(grids, crit, formulas, plane: Plane, slice_name, title, path):
    fig = plt.figure(figsize=plots.SLIDE, constrained_layout=True)
    for i, k in enumerate(("convex", "nonconvex")):
        A, B, Z = grids[k]
        ax = fig.add_subplot(2, 2, i + 1, projection="3d", computed_zorder=False)
        ax.plot_surface(A, B, Z, cmap="viridis", alpha=0.6, rstride=3, cstride=3, lw=0.2,
                        edgecolor="0.4", zorder=1)
        _mark(ax, crit[k], lift=0.12 * (Z.max() - Z.min()))
        ax.set_box_aspect(None, zoom=1.3)
        ax.set_title(f"{'convex' if k == 'convex' else 'non-convex'}: {formulas[k]}",
                     fontsize=12)
        for set_label, t in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel),
                                ("w1", "w2", "f(w)")):
            set_label(t, fontsize=12, labelpad=2)
        ax.tick_params(labelsize=10)
    A, B, Z = grids["nonconvex"]
    ax = fig.add_subplot(2, 2, 3)
    ax.contourf(A, B, Z, levels=30, cmap="viridis", alpha=0.85)
    _mark(ax, crit["nonconvex"])
    ax.set_title("non-convex, seen from above", fontsize=14)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_aspect("equal")
    if crit["nonconvex"]:
        plots.legend_outside(ax, fontsize=13, title="critical point")
    a, b, L = plane.a, plane.b, plane.loss
    A, B = np.meshgrid(a, b, indexing="ij")
    ax = fig.add_subplot(2, 2, 4, projection="3d", computed_zorder=False)
    ax.plot_surface(A, B, np.log10(plots.positive(L)), cmap="viridis", alpha=0.6, lw=0.2,
                    edgecolor="0.4", zorder=1)
    ax.set_box_aspect(None, zoom=1.3)
    mid = len(a) // 2
    ax.scatter([0], [0], [np.log10(L[mid, mid])], color=plots.PALETTE[3], s=110, edgecolor="k",
               depthshade=False, zorder=21)
    ax.set_title(f"{slice_name}: log10 L(theta* + a d1 + b d2);\n"
                 f"red: theta*, L = {L[mid, mid]:.4g}", fontsize=12)
    ax.set_xlabel("a (d1)", fontsize=12)
    ax.set_ylabel("b (d2)", fontsize=12)
    ax.set_xticks(np.linspace(a[0], a[-1], 3))
    ax.set_yticks(np.linspace(b[0], b[-1], 3))
    ax.tick_params(labelsize=10)
    fig.suptitle(title, fontsize=16)
    return plots.save(fig, path)


def fig_critical_points(grids, crit, formulas, title, path):
    fig, (ax, tab) = plots.slide(1, 2, gridspec_kw={"width_ratios": [1, 1.15]})
    A, B, Z = grids["nonconvex"]
    cs = ax.contourf(A, B, Z, levels=30, cmap="viridis")
    ax.contour(A, B, Z, levels=30, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label="f(w)", location="left", shrink=0.8)
    _mark(ax, crit["nonconvex"], numbers=True)
    ax.set_title(formulas["nonconvex"], fontsize=12)
    ax.set_xlabel("w1")
    ax.set_ylabel("w2")
    ax.set_aspect("equal")
    if crit["nonconvex"]:
        plots.legend_outside(ax, "below", fontsize=13)
    rows = [[str(i + 1), p["kind"], "(%.3f, %.3f)" % tuple(p["w"]), f"{p['value']:.3f}",
             "(%.3g, %.3g)" % tuple(p["hessian_eigs"])] for i, p in enumerate(crit["nonconvex"])]
    rows += [["bowl", p["kind"], "(%.3f, %.3f)" % tuple(p["w"]), f"{p['value']:.3f}",
              "(%.3g, %.3g)" % tuple(p["hessian_eigs"])] for p in crit["convex"]]
    tab.axis("off")
    if rows:
        t = tab.table(cellText=rows, colLabels=["#", "kind", "w", "f(w)", "Hessian eig."],
                      cellLoc="center", bbox=[0, 0.04, 1, 0.9],
                      colWidths=[0.09, 0.2, 0.31, 0.13, 0.27])
        t.auto_set_font_size(False)
        t.set_fontsize(12)
    tab.set_title(f"signs of the Hessian eigenvalues: + + min, + - saddle, - - max;\n"
                  f"bowl: {formulas['convex']}", fontsize=13)
    fig.suptitle(title, fontsize=17)
    return plots.save(fig, path)


def _offscale_path(ax, pth, lim, color):
    """Iterates outside [-lim, lim]^2 drawn clipped to the edge as open diamonds; returns a
    line saying where the path leaves the window and how far it goes ('' when it stays)."""
    off = np.max(np.abs(pth), axis=1) > lim
    if not off.any():
        return ""
    clipped = np.clip(pth[off], -lim, lim)
    ax.plot(clipped[:, 0], clipped[:, 1], "D", mfc="none", mec=color, ms=10, mew=2,
            clip_on=False, zorder=7)
    return (f"\noff the window from step {int(np.argmax(off))}; "
            f"|w| up to {np.max(np.abs(pth)):.3g}")


def _group_title(lrs, diverged, bound):
    """e.g. 'lr 0.15, 0.4 < 2/4: converge' (lrs sharing the side of the bound and the outcome)."""
    parts = {}
    for lr, div in zip(lrs, diverged):
        parts.setdefault((">" if lr > bound else "<", bool(div)), []).append(f"{lr:g}")
    return "; ".join(f"lr {', '.join(v)} {rel} 2/4: {'diverge' if div else 'converge'}"
                     f"{'s' if len(v) == 1 else ''}" for (rel, div), v in parts.items())


def fig_toy_gd(paths, losses, lrs, factors, bound, title, path):
    """Up to three path panels (the lrs in increasing order, split into three groups) on one
    shared window around w0, and the loss per step with the closed form on top."""
    fig, axes = plots.slide(2, 2)
    axes = axes.ravel()
    lim = 1.15 * float(np.max(np.abs(paths[:, 0])))   # |w_t| <= |w_0| while GD converges
    g = np.linspace(-lim, lim, 121)
    A, B = np.meshgrid(g, g, indexing="ij")
    Z = 0.5 * A ** 2 + 2 * B ** 2       # the drawn background, not a result
    diverged = losses[:, -1] > losses[:, 0]
    order = np.argsort(lrs)
    groups = [grp for grp in np.array_split(order, min(3, len(lrs))) if grp.size]
    for ax, grp in zip(axes, groups):
        ax.contour(A, B, Z, levels=np.geomspace(0.05, Z.max(), 10), colors="0.6",
                   linewidths=0.8)
        off = ""
        for i in grp:
            st = plots.style(int(i))
            ax.plot(paths[i, :, 0], paths[i, :, 1], "o-", color=st["color"], ms=5, lw=1.5,
                    label=f"lr {lrs[i]:g}")
            off += _offscale_path(ax, paths[i], lim, st["color"])
        ax.plot(*paths[0, 0], "s", color="k", ms=9, zorder=8)
        ax.plot(0, 0, "+", color="k", ms=14, mew=2)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(_group_title(lrs[grp], diverged[grp], bound) + off, fontsize=14)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
    for ax in axes[len(groups):-1]:
        ax.axis("off")
    ax = axes[-1]
    t = np.arange(losses.shape[1])
    for i in order:
        ax.semilogy(t, plots.positive(losses[i]), "o", color=plots.style(int(i))["color"],
                    ms=5, label=f"lr {lrs[i]:g}: factors ({factors[i, 0]:.2f}, "
                                f"{factors[i, 1]:.2f})")
        w0 = paths[i, 0]
        closed = 0.5 * (factors[i, 0] ** (2 * t)) * w0[0] ** 2 + 2 * (
            factors[i, 1] ** (2 * t)) * w0[1] ** 2
        plots.theory_line(ax, t, closed, label="theory f(w0 (1 - lr h)^t)" if i == order[-1]
                          else None, linewidth=1.5)
    ax.plot([], [], "s", color="k", ms=9, label="start w0 (all panels)")
    ax.plot([], [], "D", mfc="none", mec="k", ms=10, mew=2, label="off scale, drawn at the edge")
    ax.set_xlabel("step t")
    ax.set_ylabel("f(w_t) (log)")
    ax.set_title("loss per step: measured vs closed form", fontsize=13)
    plots.legend_outside(ax, fontsize=12)
    fig.suptitle(title, fontsize=17)
    return plots.save(fig, path)


def fig_slice(steps, train_loss, final_loss, planes, title, path):
    """``planes``: (Plane, short name, title, x label, y label) per plane; the fourth panel
    holds the legend, outside the data."""
    fig, axes = plots.slide(2, 2)
    (ax_r, ax_p), (ax_l, ax_leg) = axes
    handles = {}
    for ax, (pl, _, name, xl, yl) in zip((ax_r, ax_p), planes):
        A, B = np.meshgrid(pl.a, pl.b, indexing="ij")
        L, c = plots.positive(pl.loss), pl.coeffs
        levels = _log_levels(L)
        cs = ax.contourf(A, B, L, levels=levels, norm=mcolors.LogNorm(), cmap="viridis")
        ax.contour(A, B, L, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        cb = fig.colorbar(cs, ax=ax, label="training loss")
        cb.set_ticks(nice_ticks(levels[0], levels[-1]))
        cb.set_ticklabels([f"{v:.3g}" for v in cb.get_ticks()])
        cb.minorticks_off()
        h = [ax.plot(c[:, 0], c[:, 1], ".-", color=plots.PALETTE[3], ms=6, lw=1.5,
                     label="GD trajectory (projected)")[0],
             ax.plot(*c[0], "s", color="w", mec="k", ms=9, label="init (projected)")[0],
             ax.plot(0, 0, "*", color=plots.PALETTE[3], mec="k", ms=18,
                     label=f"trained theta*, L = {final_loss:.4g}")[0]]
        handles.update({x.get_label(): x for x in h})
        ax.set_title(f"{name}:\nkeeps {pl.captured:.1%} of the path", fontsize=13)
        ax.set_xlabel(xl, fontsize=13)
        ax.set_ylabel(yl, fontsize=13)
    ax_l.semilogy(np.arange(len(train_loss)), plots.positive(train_loss), color="k", lw=2,
                  label="training loss (full batch)")
    for (pl, short, *_), i in zip(planes, (0, 1)):
        ax_l.semilogy(steps, plots.positive(pl.traj_loss), "o", ms=6,
                      color=plots.style(i)["color"], label=f"loss at the path's point in the "
                                                           f"{short}")
    lo, hi = np.nanmin(plots.positive(train_loss)), np.nanmax(plots.positive(train_loss))
    ax_l.yaxis.set_major_locator(ticker.FixedLocator(nice_ticks(lo, hi, 5)))
    ax_l.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    ax_l.yaxis.set_minor_locator(ticker.NullLocator())
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("training loss (log)")
    ax_l.set_title("loss along the path vs along its projections", fontsize=13)
    handles.update({x.get_label(): x for x in ax_l.get_lines()})
    ax_leg.axis("off")
    ax_leg.legend(handles.values(), handles.keys(), loc="center", frameon=False, fontsize=13)
    fig.suptitle(title, fontsize=16)
    return plots.save(fig, path)
