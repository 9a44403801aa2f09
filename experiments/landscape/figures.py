"""The landscape's figures."""

from __future__ import annotations

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker

from bpexp import plots, theory
from bpexp.experiments.landscape.run import Plane
from bpexp.plots import plt

KIND_STYLE = {"minimum": ("o", "tab:green"), "saddle": ("X", "tab:orange"),
              "maximum": ("^", "tab:red"), "degenerate": ("s", "0.4")}


def _mark(ax, pts, three_d=False, zlift=0.0):
    seen = set()
    for p in pts:
        m, c = KIND_STYLE[p["kind"]]
        label = p["kind"] if p["kind"] not in seen else None
        seen.add(p["kind"])
        if three_d:
            ax.scatter([p["w"][0]], [p["w"][1]], [p["value"] + zlift], marker=m, color=c, s=60,
                       edgecolor="k", depthshade=False, zorder=10, label=label)
        else:
            ax.plot(*p["w"], m, color=c, ms=9, mec="k", label=label, zorder=5)


def _log_levels(L, num=25):
    """``num`` log-spaced contour levels over the finite positive values of L; a slice flat to
    float precision gets a thin band around its value, as contourf needs increasing levels."""
    v = plots.positive(L)
    levels = np.unique(np.geomspace(np.nanmin(v), np.nanmax(v), num))
    return levels if levels.size > 1 else levels[0] * np.array([1 - 1e-9, 1 + 1e-9])


def fig_surfaces_3d(grids, crit, formulas, plane: Plane, title_slice, path):
    fig = plt.figure(figsize=(17, 5.6))
    for i, k in enumerate(("convex", "nonconvex")):
        A, B, Z = grids[k]
        ax = fig.add_subplot(1, 3, i + 1, projection="3d", computed_zorder=False)
        ax.plot_surface(A, B, Z, cmap="viridis", alpha=0.75, rstride=2, cstride=2, lw=0.2,
                        edgecolor="0.3")
        _mark(ax, crit[k], three_d=True, zlift=0.05 * (Z.max() - Z.min()))
        ax.set_title(f"{'convex' if k == 'convex' else 'non-convex'}: {formulas[k]}", fontsize=9)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_zlabel("f(w)")
        if crit[k]:  # none found: nothing to label
            ax.legend(fontsize=8, loc="upper left")
    a, b, L = plane.a, plane.b, plane.loss
    A, B = np.meshgrid(a, b, indexing="ij")
    ax = fig.add_subplot(1, 3, 3, projection="3d", computed_zorder=False)
    ax.plot_surface(A, B, np.log10(plots.positive(L)), cmap="viridis", alpha=0.8, lw=0.2,
                    edgecolor="0.3")
    mid = len(a) // 2
    ax.scatter([0], [0], [np.log10(L[mid, mid])], color="tab:red", s=60, edgecolor="k",
               depthshade=False, zorder=10, label=f"trained weights theta*, L = {L[mid, mid]:.4g}")
    ax.set_title(title_slice + "\n(d1, d2 random, filter-normalized)", fontsize=9)
    ax.set_xlabel("a (units of d1)")
    ax.set_ylabel("b (units of d2)")
    ax.set_xticks(np.linspace(a[0], a[-1], 5))
    ax.set_yticks(np.linspace(b[0], b[-1], 5))
    ax.set_zlabel("log10 training loss")
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Loss surfaces; critical points found numerically (Newton + Hessian eigenvalue "
                 "signs)", fontsize=11)
    return plots.save(fig, path)


def fig_critical_points(grids, crit, formulas, path):
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.8))
    for ax, k in zip(axes, ("convex", "nonconvex")):
        A, B, Z = grids[k]
        cs = ax.contourf(A, B, Z, levels=30, cmap="viridis")
        ax.contour(A, B, Z, levels=30, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="f(w)")
        _mark(ax, crit[k])
        for p in crit[k]:
            right, up = p["w"][0] >= 0, p["w"][1] >= 0  # label away from the centre
            eig = p["hessian_eigs"]
            ax.annotate(f"f={p['value']:.3f}\neig ({eig[0]:.2g}, {eig[1]:.2g})", p["w"],
                        xytext=(7 if right else -7, 7 if up else -7), textcoords="offset points",
                        ha="left" if right else "right", va="bottom" if up else "top",
                        fontsize=7, color="w", zorder=4,
                        bbox=dict(boxstyle="round,pad=0.2", fc="0.15", alpha=0.5, lw=0))
        ax.set_title(formulas[k], fontsize=9)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.set_aspect("equal")
        if crit[k]:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.suptitle("Critical points (grad f = 0) and their Hessian eigenvalues", fontsize=11)
    return plots.save(fig, path)


def fig_toy_gd(paths, losses, lrs, factors, bound, path):
    n = len(lrs)
    fig, axes = plt.subplots(1, n + 1, figsize=(4.2 * (n + 1), 4.4))
    fig.subplots_adjust(wspace=0.35)
    for ax, pth, lr, fa in zip(axes, paths, lrs, factors):
        lim = max(3.0, 1.1 * np.max(np.abs(pth[np.isfinite(pth)])))
        g = np.linspace(-lim, lim, 121)
        A, B = np.meshgrid(g, g, indexing="ij")
        Z = theory.toy_quadratic(np.stack([A, B]))  # the drawn background, not a result
        ax.contour(A, B, Z, levels=np.geomspace(0.05, Z.max(), 14), cmap="viridis",
                   linewidths=0.8)
        c = "tab:red" if lr > bound else "tab:blue"
        ax.plot(pth[:, 0], pth[:, 1], "o-", color=c, ms=3, lw=1)
        ax.plot(*pth[0], "s", color="k", ms=6, label="start (%.3g, %.3g)" % tuple(pth[0]))
        ax.plot(*pth[-1], "*", color=c, ms=12, mec="k",
                label="step %d (%.2g, %.2g)" % (len(pth) - 1, *pth[-1]))
        ax.plot(0, 0, "+", color="k", ms=10)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        state = "diverges" if lr > bound else "converges"
        ax.set_title(f"lr = {lr:g}: factors 1-lr*h = ({fa[0]:.2f}, {fa[1]:.2f})\n"
                     f"theory: {state} (bound 2/4 = {bound:g})", fontsize=9, color=c)
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[-1]
    cmap = plt.get_cmap("coolwarm")
    for i, (f, lr) in enumerate(zip(losses, lrs)):
        ax.semilogy(np.arange(len(f)), plots.positive(f), "o-", ms=3,
                    color=cmap(i / max(1, n - 1)), label=f"lr = {lr:g}")
    ax.set_xlabel("step t")
    ax.set_ylabel("f(w_t) = 0.5 w1^2 + 2 w2^2 (log)")
    ax.set_title("loss per step", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle("GD on 0.5 w1^2 + 2 w2^2 (Hessian diag(1, 4)): w_t = (1 - lr h)^t w_0, "
                 "diverges iff lr > 2/4", fontsize=11)
    return plots.save(fig, path)


def fig_slice(steps, train_loss, final_loss, planes, title, path):
    """``planes``: (Plane, short name, title, x label, y label) per plane."""
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.6))
    fig.subplots_adjust(wspace=0.4)
    for ax, (pl, _, name, xl, yl) in zip(axes, planes):
        A, B = np.meshgrid(pl.a, pl.b, indexing="ij")
        L, c = plots.positive(pl.loss), pl.coeffs
        levels = _log_levels(L)
        cs = ax.contourf(A, B, L, levels=levels, norm=mcolors.LogNorm(), cmap="viridis")
        ax.contour(A, B, L, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
        fig.colorbar(cs, ax=ax, label="training loss (log colour)", format="%.3g")
        ax.plot(c[:, 0], c[:, 1], ".-", color="tab:red", ms=4, lw=1.2,
                label="GD trajectory (projected)")
        ax.plot(*c[0], "s", color="w", mec="k", ms=7, label="init (projected)")
        ax.plot(0, 0, "*", color="tab:red", mec="k", ms=14,
                label=f"trained theta*, L = {final_loss:.4g}")
        ax.set_title(f"{name}\nprojection keeps {pl.captured:.1%} of |theta_0 - theta*|",
                     fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=7, loc="upper right")
    ax = axes[2]
    ax.semilogy(np.arange(len(train_loss)), plots.positive(train_loss), color="k", lw=1.5,
                label="training loss (full batch)")
    for (pl, short, *_), col in zip(planes, ("tab:blue", "tab:orange")):
        ax.semilogy(steps, plots.positive(pl.traj_loss), "o", ms=3, color=col,
                    label=f"loss at the projection onto the {short}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log)")
    ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%.2g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_title("training loss vs loss at the trajectory's projection onto each plane",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=11)
    return plots.save(fig, path)
