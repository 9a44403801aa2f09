"""The adaptive_eos run page's own interactive figures, drawn from the run's stored Dataset and
summary alone (bpexp.pages calls :func:`page`)."""

from __future__ import annotations

import numpy as np

from bpexp.figs import COLORS, Fig, as_f32, coord_values, fmt_num, plotly_go, style_axes


def _lines(go, fig, steps, values, runs, seeds, hover):
    """One line per run and seed (``values`` [run, seed, step]), a legend entry per run."""
    for i, run in enumerate(runs):
        for j, s in enumerate(seeds):
            fig.add_trace(go.Scatter(
                x=as_f32(steps), y=as_f32(values[i, j]), mode="lines", legendgroup=str(i),
                name=str(run), showlegend=j == 0,
                line=dict(color=COLORS[i % len(COLORS)], width=1.5 if j == 0 else 1),
                hovertemplate=f"{run}, seed {s}<br>step %{{x}}<br>{hover} %{{y:.4g}}"
                              "<extra></extra>"))


def page(ds, summary: dict) -> list[Fig]:
    """Measured sharpness / threshold vs step (every run and seed, theory 1); the raw sharpness
    x lr / 2 (1 = GD's 2/lr); the loss."""
    go = plotly_go()
    if "precond_sharpness" not in ds:
        return []
    runs = [str(r) for r in coord_values(ds, "run")]
    seeds = coord_values(ds, "seed")
    steps = np.asarray(coord_values(ds, "measurement_step"))
    opt = [str(o) for o in np.asarray(ds["optimizer"].values)]
    thr = np.asarray(ds["threshold"].values, np.float64)[:, None, None]
    lr = np.asarray(ds["lr"].values, np.float64)[:, None, None]
    pre = np.asarray(ds["precond_sharpness"].values, np.float64)
    raw = np.asarray(ds["raw_sharpness"].values, np.float64)
    measured = np.where(np.asarray([o == "momentum" for o in opt])[:, None, None], raw, pre)
    figs = []
    fig = go.Figure()
    _lines(go, fig, steps, measured / thr, runs, seeds, "measured / threshold")
    fig.add_hline(y=1.0, line=dict(dash="dash", color="black", width=2),
                  annotation_text="theory: 1", annotation_position="top left")
    style_axes(fig, "step", "measured sharpness / threshold")
    fig.update_yaxes(range=[0, 2.5])
    figs.append(Fig("Measured sharpness / its threshold vs step", fig,
                    "Adam: lambda_max(P^-1 H) / ((2 + 2 b1)/((1 - b1) lr)); RMSprop: / (2/lr); "
                    "momentum: lambda_max(H) / ((2 + 2 b)/((1 - b) lr)). Clipped at 2.5 (the "
                    "adaptive runs start far above: their first P is tiny).", fid="aeos-ratio",
                    height=460))
    fig = go.Figure()
    _lines(go, fig, steps, raw * lr / 2, runs, seeds, "raw sharpness x lr / 2")
    fig.add_hline(y=1.0, line=dict(dash="dash", color="black", width=2),
                  annotation_text="GD's edge 2/lr", annotation_position="top left")
    style_axes(fig, "step", "raw sharpness x lr / 2", logy=True)
    figs.append(Fig("Raw sharpness x lr / 2 vs step", fig,
                    f"The adaptive runs' raw sharpness stays at most "
                    f"{fmt_num(summary.get('adaptive_raw_ratio_max'))} x 2/lr late in training.",
                    fid="aeos-raw", height=420))
    if "loss" in ds:
        loss = np.asarray(ds["loss"].values, np.float64)[..., steps]
        fig = go.Figure()
        _lines(go, fig, steps, loss, runs, seeds, "loss")
        style_axes(fig, "step", "training loss", logy=True)
        figs.append(Fig("Loss vs step (at the measurement steps)", fig, "", fid="aeos-loss",
                        height=380))
    return figs
