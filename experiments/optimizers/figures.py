"""The optimizers experiment's figures (bpexp.plots' slide style), each titled with its takeaway
from :func:`takeaways` (computed from the summary alone, so a test can check every claim)."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D

from bpexp import optim, plots


def _st(n) -> dict:
    """The same colour and dash for an optimizer in every figure."""
    return plots.style(list(optim.NAMES).index(n) if n in optim.NAMES else len(optim.NAMES))


def _num(v):
    return v is not None and np.isfinite(v)


def takeaways(summary: dict, data: str) -> dict:
    """Figure name -> its title, each a claim computed from ``summary`` (summary.json)."""
    net, quad, tw = summary["problems"][data], summary["problems"]["quadratic"], \
        summary["manual_vs_optax"]
    reached = {n: v["steps_to_tol"] for n, v in quad.items() if v["steps_to_tol"] is not None}
    fast = min(reached, key=reached.get) if reached else None
    lowest = min((n for n in net if _num(net[n]["final_loss"])),
                 key=lambda n: net[n]["final_loss"], default=None)
    out = {}
    q = (f"quadratic: {fast} reaches 1e-6 first ({reached[fast]} steps"
         + (f", GD {reached['gd']}" if "gd" in reached and fast != "gd" else "") + ")"
         if fast else "quadratic: no optimizer reaches 1e-6")
    d = (f"{data}: {lowest} ends lowest ({net[lowest]['final_loss']:.3g})" if lowest
         else f"{data}: every lr diverged")
    out["loss_at_best_lr"] = f"{q}; {d}"
    gd = quad.get("gd", {})
    best = [v["best_lr"] for v in net.values() if _num(v["best_lr"])]
    t = (f"best lrs on {data} span {max(best) / min(best):.0f}x across optimizers" if best
         else f"no lr converges on {data}")
    if _num(gd.get("best_lr")) and _num(gd.get("stability_bound")):
        t = (f"GD's best lr is {gd['best_lr'] / gd['stability_bound']:.2f} x its stability bound "
             f"2/kappa; {t}")
    out["final_loss_vs_lr"] = t[:1].upper() + t[1:]
    steps = ", ".join(f"{n} {'not reached' if v['steps_to_tol'] is None else v['steps_to_tol']}"
                      for n, v in quad.items())
    out["quadratic_paths"] = f"Steps to f <= 1e-6 from the same start: {steps}"
    if tw["calm_max_abs"] is None:
        out["manual_vs_optax"] = "manual vs optax: no run to compare"
    else:
        s = (f"manual = optax to {tw['calm_max_abs']:.1e} where the loss stays < "
             f"{tw['loss_growth_limit']:g}x its start")
        w = tw["worst"]
        out["manual_vs_optax"] = s + ("" if w is None else (
            f";\nspikes to {w['loss_growth']:.0e}x amplify rounding up to "
            f"{w['max_abs_diff']:.2g} ({w['optimizer']}, lr {w['lr']:.3g})"))
    return out


def fig_best_curves(names, steps, net, tol, quad, qtol, f0, title_net, title_q, title, path):
    """Left: network loss at each optimizer's best lr (median over seeds, min-max band);
    right: quadratic loss at each best lr with the linear-rate theory f0 rho^(2t) of GD and
    momentum on top; dotted: the tolerances."""
    fig, (a1, a2) = plots.slide(1, 2)
    for n in names:
        if net[n].curve is None:
            continue
        c = plots.positive(net[n].curve)
        a1.plot(steps, np.nanmedian(c, axis=0), **_st(n), label=f"{n}, lr {net[n].best_lr:.3g}")
        a1.fill_between(steps, np.nanmin(c, axis=0), np.nanmax(c, axis=0),
                        color=_st(n)["color"], alpha=0.12)
    a1.axhline(tol, color="0.45", ls=":", lw=1.6, label=f"tolerance {tol:.3g}")
    a1.set_ylabel("training loss, MSE (log)")
    a1.set_title(f"{title_net} (band: min-max over seeds)", fontsize=14)
    theory = False
    for n in names:
        if quad[n].curve is None:
            continue
        t = np.arange(len(quad[n].curve))
        a2.plot(t, plots.positive(quad[n].curve), **_st(n), label=f"{n}, lr {quad[n].best_lr:.3g}")
        if 0 < quad[n].rate_theory < 1:
            plots.theory_line(a2, t, f0 * quad[n].rate_theory ** (2 * t), linewidth=1.8,
                              label=None if theory else "theory f0 rho^2t (gd, momentum)")
            theory = True
    a2.axhline(qtol, color="0.45", ls=":", lw=1.6, label=f"tolerance {qtol:g}")
    a2.set_ylabel("f(w) = 0.5 w^T H w (log)")
    a2.set_title(title_q, fontsize=14)
    for ax in (a1, a2):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        plots.legend_outside(ax, "below", ncol=2)
    fig.suptitle(title)
    return plots.save(fig, path)


def fig_final_vs_lr(names, net, quad, title_net, title_q, bounds, title, path):
    """Final loss vs lr per optimizer, log-log: diverged lrs as arrows off the top, the best lr
    as a star; on the quadratic each optimizer's stability bound (its row's) as theory."""
    fig, axes = plots.slide(1, 2)
    for ax, fits, sub in ((axes[0], net, title_net), (axes[1], quad, title_q)):
        fin_all = np.concatenate([plots.positive(np.where(f.diverged, np.nan, f.final))
                                  for f in fits.values()])
        top = np.nanmax(fin_all) * 3 if np.isfinite(fin_all).any() else 1.0
        marked = 0
        for n in names:
            f = fits[n]
            ax.plot(f.lrs, plots.positive(np.where(f.diverged, np.nan, f.final)), marker="o",
                    ms=5, **_st(n), label=n)
            marked += plots.mark_offscale(ax, f.lrs, np.where(f.diverged, np.inf, 0.0), top,
                                          label=None, color=_st(n)["color"])
            if f.best is not None:
                ax.plot(f.lrs[f.best], f.final[f.best], "*", ms=16, color=_st(n)["color"],
                        mec="k", mew=0.8, zorder=12)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate (log)")
        ax.set_title(f"{sub}\n({marked} diverged lrs: arrows at the top)" if marked else sub,
                     fontsize=14)
    axes[0].set_ylabel("final training loss (median over seeds)")
    axes[1].set_ylabel("final f(w)")
    first = True
    for n in names:
        if bounds.get(n):
            plots.theory_line(axes[1], x=bounds[n], linewidth=1.8,
                              label="stability bound (theory)" if first else None)
            axes[1].annotate(f"{n} bound", (bounds[n], 1.0), xycoords=("data", "axes fraction"),
                             rotation=90, ha="right", va="top", fontsize=12)
            first = False
    h, lab = axes[1].get_legend_handles_labels()
    h += [Line2D([], [], ls="", marker=r"$\uparrow$", ms=12, color="0.3"),
          Line2D([], [], ls="", marker="*", ms=14, color="0.3", mec="k")]
    lab += ["diverged (off scale)", "best lr"]
    plots.legend_outside(axes[1], "right", handles=h, labels=lab)
    fig.suptitle(title)
    return plots.save(fig, path)


def fig_paths(names, H, w0, quad, n_path, title, path):
    """Up to four panels, one per optimizer: contours of 0.5 w^T H w, the first ``n_path``
    steps at its best lr from w0, the end point marked, and an inset zoomed on the end."""
    paths = {n: None if quad[n].path is None else quad[n].path[: n_path + 1] for n in names}
    cols = 2       # a lone panel beside an empty one: a slide, not a 3:1 strip
    rows = -(-len(names) // cols)
    fig, axes = plots.slide(rows, cols, squeeze=False)
    r = 1.25 * float(np.max(np.abs(w0)))
    reach = [np.nanmax(np.abs(p[np.isfinite(p).all(axis=1)])) for p in paths.values()
             if p is not None]
    r = min(max([r, *(1.05 * x for x in reach)]), 3 * r)   # show early overshoots, not blow-ups
    W1, W2 = np.meshgrid(np.linspace(-3 * r, 3 * r, 481), np.linspace(-r, r, 161))
    F = 0.5 * (H[0, 0] * W1 ** 2 + 2 * H[0, 1] * W1 * W2 + H[1, 1] * W2 ** 2)
    levels = 0.5 * w0 @ H @ w0 * np.geomspace(1e-3, 1, 9)
    for ax, n in zip(axes.ravel(), names):
        ax.contour(W1, W2, F, levels=levels, colors="0.7", linewidths=0.8)
        p = paths[n]
        if p is not None:
            p = np.where(np.abs(p) > 10 * r, np.nan, p)
            ax.plot(p[:, 0], p[:, 1], marker="o", ms=3, lw=1.4, color=_st(n)["color"])
            ax.plot(*p[-1], "D", ms=10, color="#D55E00", mec="k", zorder=11)
            _inset(ax, p, _st(n)["color"])
        ax.plot(*w0, "ks", ms=8)
        ax.plot(0, 0, "k*", ms=13)
        lr = "none converged" if quad[n].best is None else f"lr {quad[n].best_lr:.3g}"
        st = "" if quad[n].steps_to_tol is None else f", 1e-6 at step {quad[n].steps_to_tol}"
        ax.set_title(f"{n}: {lr}{st}", fontsize=14)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("w1")
        ax.set_ylabel("w2")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    handles = [Line2D([], [], ls="", marker="s", ms=8, color="k"),
               Line2D([], [], ls="", marker="*", ms=13, color="k"),
               Line2D([], [], ls="", marker="D", ms=10, color="#D55E00", mec="k"),
               Line2D([], [], color="0.7")]
    fig.legend(handles, [f"start ({w0[0]:g}, {w0[1]:g})", "minimum (0, 0)",
                         f"end (step {n_path})", "contours of f"],
               loc="outside lower center", ncol=4, frameon=False)
    fig.suptitle(plots.wrap(title))
    return plots.save(fig, path)


def _inset(ax, p, color):
    """The path's second half, zoomed (its own scale), in the upper left corner."""
    tail = p[len(p) // 2:]
    tail = tail[np.isfinite(tail).all(axis=1)]
    if len(tail) < 2:
        return
    z = 1.3 * float(np.max(np.abs(tail))) or 1e-12
    ins = ax.inset_axes([0.02, 0.55, 0.3, 0.43])
    ins.plot(tail[:, 0], tail[:, 1], marker="o", ms=2.5, lw=1, color=color)
    ins.plot(*tail[-1], "D", ms=7, color="#D55E00", mec="k", zorder=11)
    ins.plot(0, 0, "k*", ms=9)
    ins.set_ylim(-z, z)
    ins.set_aspect("equal", adjustable="datalim")
    ins.set_xticks([])
    ins.set_yticks([])
    ins.grid(False)
    for side in ins.spines.values():
        side.set_visible(True)
    ins.set_title(f"steps {len(p) // 2}+, zoom +-{z:.1g}", fontsize=11, pad=2)


def fig_twins(names, data, net, quad, limit, title, path):
    """Left: max |manual - optax| per lr on the network (over seeds; GD is exactly equal, drawn
    as a note); right: the same against the largest loss growth max_t loss_t / loss_0 of the
    run, both problems: the difference grows with the growth (rounding amplified)."""
    fig, (a1, a2) = plots.slide(1, 2)
    zero = []
    for n in names:
        f = net[n]
        d = plots.positive(f.diff_lr)
        if np.all(f.diff_lr[np.isfinite(f.diff_lr)] == 0):
            zero.append(n)
        a1.plot(f.lrs, d, marker="o", ms=6, **_st(n), label=n)
        top = np.nanmax([np.nanmax(plots.positive(x.diff_lr)) for x in net.values()] + [1e-6])
        plots.mark_offscale(a1, f.lrs, np.where(np.isfinite(f.diff_lr), 0.0, np.inf), top * 3,
                            label=None, color=_st(n)["color"])
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("learning rate (log)")
    a1.set_ylabel("max |manual - optax| of the loss curve")
    a1.set_title(f"{data}: per lr (max over seeds)", fontsize=14)
    notes = ["arrows: every seed diverged (left out)"]
    if zero:
        notes.append(f"{', '.join(zero)}: exactly 0 at every lr")
    plots.note(a1, "\n".join(notes), "lower right")
    for n in names:
        for fits, mk, lab in ((net, "o", data), (quad, "^", "quadratic")):
            f = fits[n]
            a2.plot(f.growth_lr, plots.positive(f.diff_lr), ls="", marker=mk, ms=8,
                    color=_st(n)["color"], mfc="none" if mk == "^" else _st(n)["color"])
    plots.theory_line(a2, x=limit, linewidth=1.8, label=f"loss growth {limit:g}x")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("largest loss_t / loss_0 of the run (log)")
    a2.set_ylabel("max |manual - optax|")
    a2.set_title("against the loss growth", fontsize=14)
    h = [Line2D([], [], marker="o", ms=7, **_st(n)) for n in names]
    h += [Line2D([], [], ls="", marker="o", color="0.3"),
          Line2D([], [], ls="", marker="^", color="0.3", mfc="none"),
          Line2D([], [], **{k: plots.THEORY[k] for k in ("color", "linestyle")})]
    plots.legend_outside(a2, "right", handles=h,
                         labels=list(names) + [data, "quadratic (w)", f"growth {limit:g}x"])
    fig.suptitle(title)
    return plots.save(fig, path)
