"""Tables for the terminal (rich) and for report.md (markdown), from the same rows; and the
command that rebuilds a run's web pages from its folder alone:

    python -m bpexp.report RUN_DIR [RUN_DIR ...] [--standalone] [--index ROOT]

writes ``RUN_DIR/report.html`` (see bpexp.pages) and the outputs root's ``index.html`` (the
root above each RUN_DIR, or ``--index ROOT`` alone)."""

from __future__ import annotations

import math
import sys


def fmt(v, digits: int = 4) -> str:
    """Compact number formatting: scientific for tiny/huge values, 'nan' kept visible."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    widths = [max([len(h)] + [len(fmt(r[i])) for r in rows]) for i, h in enumerate(header)]
    Console(width=max(80, sum(w + 3 for w in widths) + 4)).print(t)


def _cell(v) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")  # a | would split the cell


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def report(title: str, question: str, command: str, sections: list[tuple[str, str]],
           figures: list[str]) -> str:
    """report.md: question, command, then (heading, markdown) sections and embedded figures."""
    question = question.strip().removeprefix("Question:").strip()
    out = [f"# {title}\n", f"**Question.** {question}\n", f"```\n{command}\n```\n"]
    for head, body in sections:
        out.append(f"## {head}\n\n{body}\n")
    if figures:
        out.append("## Figures\n")
        out += [f"![{f}](figures/{f})\n" for f in figures]
    return "\n".join(out)


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    from bpexp import pages

    ap = argparse.ArgumentParser(prog="python -m bpexp.report",
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
        print(f"report: {pages.write_run(d, standalone=a.standalone)}")
        root = d.resolve().parent.parent
        if (root / "index.jsonl").exists() and root not in roots:
            roots.append(root)
    if a.index is not None:
        root = Path(a.index)
        if not (root / "index.jsonl").exists():
            print(f"error: --index {root} has no index.jsonl; run an experiment first",
                  file=sys.stderr)
            return 2
        roots = [root]
    for root in roots:
        print(f"index: {pages.write_index(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
