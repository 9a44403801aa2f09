"""The minibatch experiment's words, computed from the summary alone: the figure titles, the
report's "What this run shows" and the README block (``readme(record)``). Nothing here is a
hand-typed expectation: every number and every comparison word comes from summary.json."""

from __future__ import annotations

from bpexp import docs, report

NAMES = {"with_replacement": "with replacement (phi = 1)",
         "without_replacement": "without replacement (phi = (m - B)/(m - 1))"}


def _pb(s, b, key):
    return s["per_batch"][str(b)][key]


def _ends(s):
    """(smallest B, full batch m) and their median steps and epochs (None where missing)."""
    b0, bm = s["batch_sizes"][0], s["batch_sizes"][-1]
    return b0, bm, [(_pb(s, b, "steps_to_target"), _pb(s, b, "epochs_to_target"))
                    for b in (b0, bm)]


def steps_title(s) -> str:
    b0, bm, ((s0, e0), (sm, em)) = _ends(s)
    if None in (s0, sm):
        return f"Steps to loss {s['target']:g}: not every batch size reached it"
    return (f"B = {bm} needs x{s0 / sm:.0f} fewer steps than B = {b0} "
            f"but x{em / e0:.0f} more epochs")


def fit_title(s) -> str:
    f = s["fit"]
    e = [f[n]["max_rel_error"] for n in ("without_replacement", "with_replacement")]
    if None in e:
        return "S_min (1 + B_crit phi(B)/B): too few batch sizes reached the target to fit"
    if f["better"] is None:
        return f"Fits with and without (m-B)/(m-1) coincide: max error {max(e):.1%}"
    return f"Max fit error {e[0]:.1%} with (m-B)/(m-1), {e[1]:.1%} without"


def lr_title(s) -> str:
    g = s["best_lr_growth"]
    if g is None:
        return "Best lr vs batch size: too few batch sizes reached the target"
    r = g["x4_ratios"].get(str(g["b_from"]))
    grow = (f"x{r:.1f} for x4 from B = {g['b_from']}" if r is not None
            else f"slope {g['slope']:.2f} in log-log")
    tail = (f", flat at {g['lr_sat']:.3g} from B = {g['b_sat']}" if g["flat_after_sat"]
            else f", largest at B = {g['b_sat']}")
    if g["shape"] == "flat":
        return f"Best lr does not grow with B: largest already at B = {g['b_from']}"
    return f"Best lr grows {g['shape']}ly with B ({grow}){tail}"


def curves_title(s) -> str:
    b0, bm = s["batch_sizes"][0], s["batch_sizes"][-1]
    sp = [_pb(s, b, "final_loss_spread") for b in (b0, bm)]
    if None in sp:
        return "Loss curves at each batch size's best lr"
    wide = "wider" if sp[0] > sp[1] else "narrower"
    return (f"Seed spread of the final loss: {sp[0]:.0%} at B = {b0}, {wide} than "
            f"{sp[1]:.0%} at B = {bm}")


def noise_title(s) -> str:
    bn = s["b_noise"]
    return (f"B_noise grows x{bn['at_target'] / bn['init']:.0f} from init ({bn['init']:.2g}) "
            f"to the target ({bn['at_target']:.3g}, step {bn['at_target_step']}), seed "
            f"{bn['seed']}")


def _fit_sentence(s):
    f = s["fit"]
    wo, w = f["without_replacement"], f["with_replacement"]
    if None in (wo["b_crit"], w["b_crit"]):
        return None
    out = (f"S(B) = S_min (1 + B_crit phi(B)/B) fitted to the measured steps: without "
           f"replacement (phi = (m - B)/(m - 1), the sweep's sampler) B_crit = "
           f"{wo['b_crit']:.3g}, S_min = {wo['s_min']:.4g}, within {wo['max_rel_error']:.1%} "
           f"at every B; with replacement (phi = 1) B_crit = {w['b_crit']:.3g}, S_min = "
           f"{w['s_min']:.4g}, within {w['max_rel_error']:.1%}.")
    ew, ewo = w["rms_log_error"], wo["rms_log_error"]
    if f["better"] is None:
        out += (f" Fitted, the two cannot be told apart (rms log error {ewo:.6f} vs {ew:.6f}, "
                f"curves within {f['curves_max_rel_difference']:.1%} of each other): both are "
                "S = a + c/B, and phi only changes what S_min and B_crit mean (S_min = S(m) "
                "without replacement, S at B -> infinity with)")
    else:
        out += (f" By rms log error ({ewo:.6f} without vs {ew:.6f} with) the model "
                f"{f['better'].replace('_', ' ')} fits better")
    return out + "."


def _noise_sentence(s):
    bn, f, p = s["b_noise"], s["fit"], s["prediction"]
    out = (f"B_noise = tr(Sigma)/|G|^2 along full-batch GD (seed {bn['seed']}, lr "
           f"{bn['lr']:.3g}) rises from {bn['init']:.3g} at init to {bn['at_target']:.3g} where "
           f"the loss reaches {s['target']:g} (step {bn['at_target_step']}) and "
           f"{bn['values'][-1]:.3g} at step {bn['steps'][-1]}")
    if f["b_crit"] is not None:
        where = "between" if f["b_crit_between_init_and_target"] else "outside"
        out += f"; the fitted B_crit {f['b_crit']:.3g} lies {where} the first two"
    if p is not None:
        d = {n: p[n] for n in ("without_replacement", "with_replacement")}
        out += (f". With B_noise measured instead of fitted (its geometric mean on the way, "
                f"{p['b_noise']:.3g}; S_min from the full batch) the steps are off by up to "
                + " and ".join(f"{v['max_rel_error']:.0%} {n.replace('_', ' ')} (rms log error "
                               f"{v['rms_log_error']:.3f})" for n, v in d.items()))
        if p["better"] is not None:
            out += f": the model {p['better'].replace('_', ' ')} predicts better"
        if f["b_crit"] is not None:
            ratio = p["b_noise"] / f["b_crit"]
            out += (f"; that mean is x{ratio:.2g} the fitted B_crit, so both "
                    f"{'over' if ratio > 1 else 'under'}estimate the small-batch steps")
            lo = min(d, key=lambda n: d[n]["s_min"])
            if ratio > 1 and p["better"] == lo:
                out += (f"; the model {lo.replace('_', ' ')} has the lower S_min "
                        f"({d[lo]['s_min']:.3g} vs "
                        + " ".join(f"{v['s_min']:.3g}" for n, v in d.items() if n != lo)
                        + "), which offsets part of that")
    return out + "."


def _lr_sentence(s):
    g = s["best_lr_growth"]
    if g is None:
        return None
    rat = ", ".join(f"x{v:.2g} from B = {b} to {4 * int(b)}" for b, v in g["x4_ratios"].items()
                    if int(b) < g["b_sat"])
    grows = "does not grow" if g["shape"] == "flat" else f"grows {g['shape']}ly"
    out = (f"The best lr {grows} with B ({rat + '; ' if rat else ''}linear scaling "
           f"would be x4; log-log slope {g['slope']:.2f} from B = {g['b_from']} to "
           f"{g['b_sat']})")
    if g["flat_after_sat"]:
        out += f" and stays at {g['lr_sat']:.3g} from B = {g['b_sat']} on"
        if g["next_lr_diverged"]:
            out += (f" (the next grid lr, {g['next_lr']:.3g}, diverged for B = "
                    f"{', '.join(str(b) for b in g['next_lr_diverged'])})")
    th = g["theory"]
    if th is not None:
        r = [v for b, v in th["measured_over_theory"].items() if int(b) < s["m"]]
        if r:
            where = ("below the measured best lr at every smaller batch"
                     if th["below_every_smaller_batch"] else "not below it at every smaller B")
            out += (f". The one-step optimum eps_max/(1 + B_crit phi(B)/B) through the full "
                    f"batch's best lr is {where} (measured / optimum = {min(r):.3g}.."
                    f"{max(r):.3g})")
        imp = th["implied_b_noise"]
        if imp:
            lo, hi = sorted((th["b_noise_init"], th["b_noise"]))
            inside = all(lo <= v <= hi for v in imp.values())
            out += ("; the measured best lr implies B_noise = "
                    + ", ".join(f"{v:.3g} at B = {b}" for b, v in imp.items())
                    + (f", between its value at init ({th['b_noise_init']:.3g}) and B_crit"
                       if inside else f", not all between B_noise at init "
                       f"({th['b_noise_init']:.3g}) and B_crit")
                    + f" ({th['b_noise']:.3g})")
    return out + "."


def _data_sentence(s):
    b0, bm, ((s0, e0), (sm, em)) = _ends(s)
    sp = [_pb(s, b, "final_loss_spread") for b in (b0, bm)]
    if None in (s0, sm) or None in sp:
        return None
    return (f"Steps to loss {s['target']:g} fall from {s0:.4g} at B = {b0} to {sm:.4g} at the "
            f"full batch while epochs grow from {e0:.3g} to {em:.3g}: small batches use the "
            f"data best. The final loss varies by {sp[0]:.0%} of its median over the seeds at "
            f"B = {b0} and {sp[1]:.0%} at B = {bm}.")


def details(s) -> list[str]:
    """The long findings (README block, the report's "Theory vs measurement")."""
    return [x for x in (_data_sentence(s), _fit_sentence(s), _noise_sentence(s),
                        _lr_sentence(s)) if x]


def shows(s) -> list[str]:
    """'What this run shows': four sentences from the summary (details() has the rest)."""
    b0, bm, ((s0, e0), (sm, em)) = _ends(s)
    out = []
    if None not in (s0, sm):
        out.append(f"Going from B = {b0} to the full batch ({bm}) cuts the steps to loss "
                   f"{s['target']:g} x{s0 / sm:.0f} ({s0:.4g} to {sm:.4g}) but costs "
                   f"x{em / e0:.0f} more epochs.")
    f = s["fit"]
    wo, w = f["without_replacement"], f["with_replacement"]
    if None not in (wo["b_crit"], w["b_crit"]):
        same = ("the same curve (both are a + c/B)" if f["better"] is None
                else f"the model {f['better'].replace('_', ' ')} fits better")
        out.append(f"Fitted, S_min (1 + B_crit phi(B)/B) is within {wo['max_rel_error']:.1%} "
                   f"at every B with the sampler's phi = (m - B)/(m - 1) (B_crit "
                   f"{wo['b_crit']:.3g}, S_min {wo['s_min']:.4g}) and {w['max_rel_error']:.1%} "
                   f"with phi = 1 (B_crit {w['b_crit']:.3g}, S_min {w['s_min']:.4g}): {same}.")
    bn, p = s["b_noise"], s["prediction"]
    out.append(f"B_noise = tr(Sigma)/|G|^2 rises from {bn['init']:.3g} at init to "
               f"{bn['at_target']:.3g} at the target (step {bn['at_target_step']}, seed "
               f"{bn['seed']})" + ("" if p is None else
                                   f"; predicted from its geometric mean ({p['b_noise']:.3g}) "
                                   f"with no fit, the steps are off by up to "
                                   f"{p['without_replacement']['max_rel_error']:.0%} without "
                                   f"replacement and {p['with_replacement']['max_rel_error']:.0%}"
                                   " with") + ".")
    g = s["best_lr_growth"]
    if g is not None:
        r = g["x4_ratios"].get(str(g["b_from"]))
        grows = ("does not grow with B (" if g["shape"] == "flat"
                 else f"grows {g['shape']}ly with B (")
        t = (f"The best lr {grows}"
             + (f"x{r:.1f} for x4 from B = {g['b_from']}; " if r is not None else "")
             + f"log-log slope {g['slope']:.2f} up to B = {g['b_sat']})")
        if g["flat_after_sat"] and g["next_lr_diverged"]:
            t += (f", then stays at {g['lr_sat']:.3g}, the largest grid lr below one that "
                  "diverged")
        th = g["theory"]
        if th is not None and th["below_every_smaller_batch"]:
            r = [v for k, v in th["measured_over_theory"].items() if int(k) < s["m"]]
            t += (f"; the one-step optimum for B_crit lies below it at every B < m "
                  f"(x{min(r):.3g}..x{max(r):.3g})")
        out.append(t + ".")
    return out


def table(s):
    """(header, rows): measured steps beside both models, fitted and predicted."""
    t = s["target"]
    header = ["batch B", "best lr", f"steps to loss {t:g} (median)", "seed range",
              "fit, (m-B)/(m-1)", "fit, with replacement", "from B_noise, (m-B)/(m-1)",
              "from B_noise, with replacement", "epochs", "final loss"]
    f, p = s["fit"], s["prediction"] or {}
    rows = []
    for b in s["batch_sizes"]:
        d = s["per_batch"][str(b)]

        def at(model):
            return None if model is None or model.get("steps") is None else \
                model["steps"][str(b)]
        rows.append([b, d["best_lr"], d["steps_to_target"], d["steps_spread"],
                     at(f["without_replacement"]), at(f["with_replacement"]),
                     at(p.get("without_replacement")), at(p.get("with_replacement")),
                     d["epochs_to_target"], d["final_loss_median"]])
    return header, rows


def readme(record) -> str:
    """The README block: the recorded command, the table, the takeaways, the wall time with the
    machine it was measured on."""
    s = record["summary"]
    header, rows = table(s)
    t = s["compile_s"] + s["run_s"]
    return "\n".join([
        f"Recorded run: `{record['command']}` ({len(s['seeds'])} seeds; seed range = (max - min)"
        " / median of the steps; the model columns are steps).", "",
        report.markdown_table(header, rows), *details(s), "",
        "The sweep took " + docs.machine(f"{t:.0f} s ({s['compile_s']:.0f} s compiling)",
                                         record) + "."])
