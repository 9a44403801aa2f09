"""Pages: ``report.html`` in every run folder and ``<root>/index.html`` over all runs.

Drawn from the run folder alone (summary.json, config.yaml, env.json, metrics.zarr, report.md),
never from a JAX call, so ``python -m bpexp.pages RUN_DIR`` gives old runs pages too.

Why plotly: one well-kept library (plotly.py builds the figures in Python from the stored
arrays; plotly.js draws them) that covers everything the pages need with no server: hover
labels, log axes, heatmaps, contours, rotatable 3-D surfaces, and a stable JavaScript API
(``Plotly.restyle``) for the sliders and selectors written here. plotly.py writes numpy arrays
as base64 typed arrays, so a page embeds ~5 bytes per number. (Vega-Lite/altair would need
three scripts and has no 3-D surfaces.)

Offline: plotly.js (~4.6 MB) is written once to ``<root>/.assets/plotly-<version>.min.js`` and
every page references it relatively (``../../.assets/...``), so a page costs only its data
(tens to hundreds of kB). ``standalone=True`` (``python -m bpexp.pages --standalone``) inlines
it instead, for a page that travels without the outputs folder. A page with no plotly.js says
so instead of failing silently.

The figures are bpexp.figs (generic) and each experiment's own ``page(ds, summary)``. Each figure
embeds at most ``pagefigs.MAX_VALUES`` numbers; bigger grids are subsampled (evenly over each
axis, the ends kept) and the page says which axes were cut and how far.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
from pathlib import Path

from bpexp import outputs
from bpexp.figs import ASSETS, PAGE_VALUES, Fig, fmt_num, generic_all, summary_figs


# ---------------------------------------------------------------- the page
STATIC = Path(__file__).resolve().parent / "static"   # the pages' CSS and JS (package data)


def static(name: str) -> str:
    """The text of a file of bpexp/static (page.css, page.js, index.css, index.js)."""
    return (STATIC / name).read_text()




def _json_script(obj, **attrs) -> str:
    a = "".join(f' {k.replace("_", "-") if k != "cls" else "class"}="{html.escape(str(v))}"'
                for k, v in attrs.items())
    # non-finite numbers outside typed arrays become null (JSON has no NaN)
    text = json.dumps(outputs._clean(obj), separators=(",", ":"), allow_nan=False)
    text = text.replace("</", "<\\/")
    return f'<script type="application/json"{a}>{text}</script>'


def _fig_html(f: Fig, n: int) -> str:
    spec = f.spec()
    fid = f.fid or f"fig-{n}"
    return (f'<section class="fig" id="{html.escape(fid)}"><h3>{html.escape(f.title)}</h3>'
            f'<div class="controls"></div><div class="state-note"></div>'
            f'<div class="plot"></div>'
            + (f'<p class="note">{html.escape(f.note)}</p>' if f.note else "")
            + _json_script(spec, cls="fig-spec") + "</section>\n")


def _markdown(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _split_report(md: str) -> tuple[str, str, str]:
    """report.md as (title + "What this run shows" + question + command, the sections, the
    figures section): the page opens with the takeaways, then the curated figures."""
    from bpexp.report import SHOWS

    parts = re.split(r"(?m)^(?=## )", md)
    head, rest = parts[0], parts[1:]
    shows = [p for p in rest if p.startswith(f"## {SHOWS}")]
    figs = [p for p in rest if p.startswith("## Figures")]
    body = [p for p in rest if not p.startswith(("## Figures", f"## {SHOWS}"))]
    if shows:   # report.md puts the takeaways right after the title
        title, _, tail = head.partition("\n")
        head = title + "\n\n" + "".join(shows) + tail
    return head, "".join(body), "".join(figs)


def plotly_asset(root: Path) -> Path:
    """``<root>/.assets/plotly-<version>.min.js``, written once (atomically)."""
    import plotly
    from plotly.offline import get_plotlyjs

    path = Path(root) / ASSETS / f"plotly-{plotly.__version__}.min.js"
    if not path.exists():
        outputs.write_text(path, get_plotlyjs())
    return path


def _template() -> dict:
    import plotly.io as pio

    return pio.templates["plotly_white"].to_plotly_json()


def warm() -> None:
    """Import what :func:`prepare_run` needs (xarray and zarr, markdown, the experiments'
    discovery) and load plotly's template, reading no run: the figure helper (bpexp.helper)
    does it while the run computes, so the page is then prepared from warm imports."""
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    from bpexp import experiments, report, store   # noqa: F401

    _markdown("")
    _template()


def _read(path: Path, kind: str):
    import yaml

    if not path.exists():
        return None
    try:
        text = path.read_text()
        return json.loads(text) if kind == "json" else yaml.safe_load(text) \
            if kind == "yaml" else text
    except Exception:
        return None


def _page_builder(experiment: str):
    """The experiment's own ``page(ds, summary)`` (bpexp.experiments contract), or None."""
    from bpexp import experiments

    try:
        return getattr(experiments.get(experiment), "page", None)
    except Exception:   # an unknown or unimportable experiment still gets the generic page
        return None


def figures_for(run_dir: Path, experiment: str, summary: dict) -> tuple[list, list, str]:
    """(main figures, stored-array figures, problems) for a run folder."""
    from bpexp import store

    if not (run_dir / store.STORE).is_dir():
        figs = summary_figs(summary)
        return figs, [], "" if figs else "no metrics.zarr in this folder: nothing to draw."
    ds = store.load(run_dir)
    problems = ""
    main: list[Fig] = []
    build = _page_builder(experiment)
    if build is not None:
        try:
            main = build(ds, summary or {})
        except Exception as e:
            problems = f"the {experiment} figures could not be drawn ({type(e).__name__}: {e})."
    rest = generic_all(ds, budget=PAGE_VALUES // 2 if main else PAGE_VALUES)  # extras: lighter
    return main, rest, problems


def prepare_run(run_dir) -> dict:
    """The slow part of a run's page, which does not depend on how the run ended: its figures
    from the stored arrays and report.md, as HTML. ``write_run(run_dir, prepared=...)``
    finishes the page; a run has it prepared beside its PNGs, by the figure helper when that
    holds the page's imports (bpexp.launch, bpexp.render.ask)."""
    run_dir = Path(run_dir)
    env = _read(run_dir / "env.json", "json") or {}
    cfg = _read(run_dir / "config.yaml", "yaml") or {}
    summary = _read(run_dir / "summary.json", "json") or {}
    md = _read(run_dir / "report.md", "text") or ""
    experiment = (env.get("experiment") or (cfg.get("experiment") or {}).get("name")
                  or run_dir.parent.name)
    main, rest, problem = figures_for(run_dir, experiment, summary)
    if not main and rest:
        main, rest = rest, []
    head, body, figsec = _split_report(md)
    if not md:
        head = f"# {experiment}\n\n(no report.md: the run has not finished)\n"
    figsec = _markdown(figsec.replace("## Figures", "", 1)) if figsec else ""
    # the report's HTML and plotly's template too: only the header waits for the run's end
    return {"experiment": experiment, "problem": problem,
            "head": _markdown(head), "body": _markdown(body), "figsec": figsec,
            "template": _json_script(_template(), id="plotly-template"),
            "main": [_fig_html(f, n) for n, f in enumerate(main)],
            "rest": [_fig_html(f, len(main) + n) for n, f in enumerate(rest)]}


def write_run(run_dir, standalone: bool = False, prepared: dict | None = None) -> Path:
    """``<run_dir>/report.html`` from the folder alone; returns its path. ``prepared``: the
    folder's :func:`prepare_run`, made earlier (figures and report); the header is read now.
    Long because it writes the page's HTML parts in reading order (header, figures, report, static
    figures, footer); each part is a few lines."""
    import plotly

    run_dir = Path(run_dir)
    env = _read(run_dir / "env.json", "json") or {}
    p = prepared or prepare_run(run_dir)
    experiment, problem, figsec = p["experiment"], p["problem"], p["figsec"]
    if standalone:
        from plotly.offline import get_plotlyjs

        script = f"<script>{get_plotlyjs()}</script>"
        src = "inline"
    else:
        asset = plotly_asset(outputs.root_of(run_dir))
        src = os.path.relpath(asset, run_dir)
        script = f'<script src="{html.escape(src)}"></script>'
    meta = " · ".join(html.escape(str(x)) for x in (
        experiment, env.get("run_id") or run_dir.name, f"status {env.get('status', '?')}",
        f"started {env.get('start', '?')}",
        f"{env['seconds']:.1f} s" if isinstance(env.get("seconds"), (int, float)) else ""))
    links = " · ".join(f'<a href="{n}">{n}</a>' for n in (
        "report.md", "summary.json", "config.yaml", "env.json") if (run_dir / n).exists())
    index_link = os.path.relpath(outputs.root_of(run_dir) / "index.html", run_dir)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(experiment)} {html.escape(run_dir.name)}</title>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<style>{static('page.css')}</style>", script, "</head><body>",
        f'<header class="run"><div class="meta">{meta}</div><div class="meta">{links} · '
        f'<a href="{html.escape(index_link)}">all runs</a></div></header><main>',
        f'<p id="no-plotly" class="warn" hidden>plotly.js did not load from '
        f'<code>{html.escape(src)}</code> (the outputs folder\'s .assets): the figures need '
        "it; the static figures are shown instead. Rebuild a page that carries it with "
        f"<code>python -m bpexp.pages --standalone {html.escape(str(run_dir))}</code>.</p>",
        p["head"],
    ]
    if problem:
        out.append(f'<p class="warn">{html.escape(problem)}</p>')
    out.append('<div id="figures">')
    out += p["main"]
    out.append("</div>")
    if figsec:   # shown instead of the interactive figures when plotly.js cannot load
        out.append(f'<div id="png-fallback" hidden>{figsec}</div>')
    out.append(p["body"])
    if p["rest"]:
        out.append('<details class="lazy"><summary>Every stored array of metrics.zarr '
                   f"({len(p['rest'])} plots)</summary>")
        out += p["rest"]
        out.append("</details>")
    if figsec:
        out.append('<details class="static"><summary>Static figures (figures/*.png)</summary>'
                   + figsec + "</details>")
    out.append(f'<p class="note">Drawn from this folder\'s stored data by bpexp.pages '
               f"(plotly {plotly.__version__}); rebuild with <code>python -m bpexp.pages "
               f"{html.escape(str(run_dir))}</code>.</p></main>")
    out.append(p["template"])
    out.append(f"<script>{static('page.js')}</script></body></html>\n")
    path = run_dir / "report.html"
    outputs.write_text(path, "\n".join(out))
    return path


# ---------------------------------------------------------------- outputs/index.html


HEADLINE = 6   # summary scalars shown per run


def _run_link(root: Path, row: dict) -> tuple[str | None, str]:
    """(href relative to the index, label) of a run's best page."""
    d = outputs.run_dir(root, str(row.get("experiment", "")), str(row.get("id", "")))
    if not d.is_dir() and row.get("dir"):
        d = Path(row["dir"])
    for name in ("report.html", "report.md", "env.json"):
        if (d / name).exists():
            return os.path.relpath(d / name, root), name
    return None, "(folder gone)"


def _options(vals) -> str:
    return '<option value="">all</option>' + "".join(
        f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in vals)


def write_index(root) -> Path:
    """``<root>/index.html``: every run of ``<root>/index.jsonl`` once (its latest status),
    with filters by experiment and status and sortable columns; written atomically."""
    from bpexp.compare import runs

    root = Path(root)
    rows = runs(root)
    exps = sorted({str(r.get("experiment")) for r in rows})
    stats = sorted({str(r.get("status")) for r in rows})
    body = []
    for r in reversed(rows):   # newest first
        href, label = _run_link(root, r)
        summ = r.get("summary") or {}
        head = "; ".join(f"{k} {fmt_num(v)}" for k, v in list(summ.items())[:HEADLINE])
        secs = r.get("seconds")
        e, st = html.escape(str(r.get("experiment"))), html.escape(str(r.get("status")))
        link = (f'<a href="{html.escape(href)}">{html.escape(label)}</a>' if href
                else html.escape(label))
        body.append(
            f'<tr data-experiment="{e}" data-status="{st}"><td>{e}</td>'
            f'<td>{html.escape(str(r.get("id")))}</td><td class="status-{st}">{st}</td>'
            f'<td>{html.escape(str(r.get("start") or ""))}</td>'
            f'<td data-sort="{secs if isinstance(secs, (int, float)) else ""}">'
            f'{fmt_num(secs) if secs is not None else ""}</td>'
            f'<td class="headline">{html.escape(head)}</td><td>{link}</td></tr>')
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<title>bpexp runs</title><meta name=viewport content="width=device-width,initial-scale=1">
<style>{static('page.css')}{static('index.css')}</style></head><body>
<header class="run"><b>bpexp runs</b> · {html.escape(str(root))}/index.jsonl</header><main>
<div class="filters">
<label>experiment <select id="f-experiment">{_options(exps)}</select></label>
<label>status <select id="f-status">{_options(stats)}</select></label>
<span id="count"></span></div>
<table id="runs"><thead><tr><th>experiment</th><th>run</th><th>status</th><th>start</th>
<th>seconds</th><th>headline numbers</th><th>page</th></tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<p class="note">Click a column to sort. One row per run folder with its latest status (a run
continued or sharded over several processes has several lines in index.jsonl).</p>
</main><script>{static('index.js')}</script></body></html>
"""
    path = root / "index.html"
    outputs.write_text(path, page)
    return path


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m bpexp.pages",
                                 description="Rebuild run pages (report.html) and the index "
                                             "(index.html) from run folders alone.")
    ap.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run folders")
    ap.add_argument("--index", metavar="ROOT", default=None,
                    help="rebuild ROOT/index.html (default: the root of each RUN_DIR)")
    ap.add_argument("--standalone", action="store_true",
                    help="inline plotly.js (~4.6 MB) so the page works outside outputs/")
    a = ap.parse_args(argv)
    if not a.run_dirs and a.index is None:
        ap.error("give RUN_DIR(s) and/or --index ROOT")
    roots = []
    for d in map(Path, a.run_dirs):
        if not (d / "env.json").exists() and not (d / "config.yaml").exists():
            print(f"error: {d} is not a run folder (no env.json or config.yaml)",
                  file=sys.stderr)
            return 2
        print(f"report: {write_run(d, standalone=a.standalone)}")
        root = outputs.root_of(d)
        if (root / outputs.INDEX).exists() and root not in roots:
            roots.append(root)
    if a.index is not None:
        root = Path(a.index)
        if not (root / "index.jsonl").exists():
            print(f"error: --index {root} has no index.jsonl; run an experiment first",
                  file=sys.stderr)
            return 2
        roots = [root]
    for root in roots:
        print(f"index: {write_index(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
