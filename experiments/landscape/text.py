"""What a landscape run shows: the figures' titles and report.md's opening sentences, computed
from the summary alone (critical points: Hessian eigenvalue signs; toy GD: the bound
lr < 2 / lambda_max = 2/4; the slice: Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets", s.7)."""

from __future__ import annotations

THEORY_COUNTS = (4, 4, 1)   # minima / saddles / maxima of the double well for small c and t
FEW = 0.5                   # a plane keeping less than this share of the path: "a small part"


def _n(k: int, one: str, many: str) -> str:
    return f"{k} {one if k == 1 else many}"


def counts(s: dict) -> tuple[int, int, int]:
    """(minima, saddles, maxima) found on the double well."""
    nc = s["nonconvex"]
    return len(nc["minima"]), len(nc["saddles"]), len(nc["maxima"])


def _points(s: dict) -> str:
    m, sd, x = counts(s)
    return (f"{_n(m, 'minimum', 'minima')}, {_n(sd, 'saddle', 'saddles')}, "
            f"{_n(x, 'maximum', 'maxima')}")


def _grad_max(s: dict) -> float | None:
    g = [p["grad_norm"] for k in ("minima", "saddles", "maxima", "degenerate")
         for p in s["nonconvex"][k]]
    return max(g) if g else None


def surfaces_title(s: dict) -> str:
    n, sl = len(s["convex"]["minima"]), s["slice"]
    drop = (sl["center_loss"] - sl["min_loss"]) / sl["center_loss"]
    return (f"Convex bowl: {_n(n, 'minimum', 'minima')}; double well: {_points(s)}; "
            f"trained net: theta* within {drop:.2%} of its slice's lowest loss")


def critical_title(s: dict) -> str:
    g, mins = _grad_max(s), s["nonconvex"]["minima"]
    out = f"Double well: {_points(s)}"
    if g is not None:
        out += f" (|grad f| <= {g:.0e})"
    if mins:
        out += f"; global min f = {mins[0]['value']:.3f}"
    return out


def _lr_groups(s: dict) -> list[tuple[list[str], str, str]]:
    """(lrs, '<' or '>' 2/4, measured 'converge(s)'/'diverge(s)') in the summary's lr order."""
    toy, groups = s["toy_gd"], {}
    for key, rec in toy["lr"].items():
        rel = ">" if rec["theory_diverges"] else "<"
        groups.setdefault((rel, rec["diverged"]), []).append(key)
    out = []
    for (rel, div), lrs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        verb = ("diverge" if div else "converge") + ("s" if len(lrs) == 1 else "")
        out.append((lrs, rel, verb))
    return out


def toy_title(s: dict) -> str:
    """e.g. 'lr 0.15, 0.4, 0.49 < 2/4 converge; lr 0.52 > 2/4 diverges'."""
    return "GD on 0.5 w1^2 + 2 w2^2: " + "; ".join(
        f"lr {', '.join(lrs)} {rel} 2/4 {verb}" for lrs, rel, verb in _lr_groups(s))


def toy_agrees(s: dict) -> bool:
    return all(r["diverged"] == r["theory_diverges"] for r in s["toy_gd"]["lr"].values())


def slice_title(s: dict) -> str:
    sl = s["slice"]
    return (f"The loss around the trained weights: GD's path seen in a random plane (keeps "
            f"{sl['captured_fraction']:.0%} of it) and in its PCA plane (keeps "
            f"{sl['pca']['captured_fraction']:.0%})")


def shows(s: dict) -> list[str]:
    """4-5 sentences for report.md's "What this run shows"."""
    out = []
    found, g = counts(s), _grad_max(s)
    sent = (f"Newton's method from a grid of starts finds {_points(s)} of the tilted double "
            f"well" + (f" (largest |grad f| {g:.1e})" if g is not None else ""))
    sent += ("; that is the 4 / 4 / 1 the theory gives for a small coupling and tilt, and the "
             "convex bowl has " if found == THEORY_COUNTS else
             "; the theory for a small coupling and tilt gives 4 / 4 / 1, so this surface is "
             "outside that regime (or the search box misses points); the convex bowl has ")
    sent += _n(len(s["convex"]["minima"]), "minimum.", "minima.")
    out.append(sent)
    toy = s["toy_gd"]
    groups = "; ".join(f"lr {', '.join(lrs)} {rel} 2/4 {verb}" for lrs, rel, verb in _lr_groups(s))
    out.append(f"Toy GD from w0 = ({toy['w0'][0]:g}, {toy['w0'][1]:g}) for {toy['steps']} steps: "
               f"{groups}" + (", exactly as the bound lr < 2 / lambda_max = "
                              f"{toy['divergence_bound']:g} predicts." if toy_agrees(s) else
                              f", which contradicts the bound lr < {toy['divergence_bound']:g} "
                              f"at some lr."))
    conv = {k: r for k, r in toy["lr"].items() if not r["diverged"]}
    if conv:
        k, r = max(conv.items(), key=lambda kv: max(map(abs, kv[1]["factors"])))
        out.append(f"The slowest converging run (lr {k}, max |1 - lr h| = "
                   f"{max(map(abs, r['factors'])):.2f}) goes from f = {r['loss_initial']:.3g} "
                   f"to {r['loss_final']:.3g}.")
    sl, pca = s["slice"], s["slice"]["pca"]
    drop = (sl["center_loss"] - sl["min_loss"]) / sl["center_loss"]
    pdrop = (pca["center_loss"] - pca["min_loss"]) / pca["center_loss"]
    out.append(f"The slice's centre has loss {sl['center_loss']:.6g}, the trained loss "
               f"{sl['trained_loss']:.6g} (|diff| "
               f"{abs(sl['center_loss'] - sl['trained_loss']):.1e}); the lowest grid point is "
               f"{drop:.2%} below it in the random plane and {pdrop:.2%} below it in the PCA "
               f"plane" + (", so along its own path GD has not reached a minimum."
                           if pdrop > 1e-6 else "."))
    r, p = sl["captured_fraction"], pca["captured_fraction"]
    agree = r < FEW <= p
    out.append(f"The random plane keeps {r:.1%} of |theta_0 - theta*| and the PCA plane "
               f"{p:.1%} (explained variance {pca['explained_variance'][0]:.0%} + "
               f"{pca['explained_variance'][1]:.0%})" +
               (": random directions miss the training path, as Li et al. (2018, s.7) report."
                if agree else ", unlike the small random share Li et al. (2018, s.7) report."))
    return out
