"""Tables for the terminal (rich) and for report.md (markdown), from the same rows. The web
pages (report.html, index.html) are bpexp.pages."""

from __future__ import annotations

import math


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


def print_table(title: str, header: list[str], rows: list[list], width: int | None = None
                ) -> None:
    """A table on the terminal. With ``width``: at most that many columns (or, printed to a
    terminal, the terminal's own width if narrower), cells cut with an ellipsis rather than
    wrapped; else as wide as its contents. Printed to a pipe or a file, ``COLUMNS`` is ignored:
    a log keeps the whole table."""
    import shutil
    import sys

    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, overflow="ellipsis" if width else "fold", no_wrap=bool(width))
    for r in rows:
        t.add_row(*[fmt(v) for v in r])
    widths = [max([len(h)] + [len(fmt(r[i])) for r in rows]) for i, h in enumerate(header)]
    natural = max(80, sum(w + 3 for w in widths) + 4)
    if width:
        natural = min(natural, width)
        if sys.stdout.isatty():
            natural = min(natural, shutil.get_terminal_size((width, 24)).columns)
    Console(width=natural).print(t)


def csv_table(header: list[str], rows: list[list]) -> str:
    """The rows as CSV text, numbers in full precision."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def _cell(v) -> str:
    return fmt(v).replace("|", "\\|").replace("\n", " ")  # a | would split the cell


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


SHOWS = "What this run shows"


def report(title: str, question: str, command: str, sections: list[tuple[str, str]],
           figures: list[str], shows: list[str] | None = None) -> str:
    """report.md: the takeaways (``shows``: sentences generated from the summary, opening the
    report under "What this run shows"), the question, the command, then (heading, markdown)
    sections and embedded figures."""
    question = question.strip().removeprefix("Question:").strip()
    out = [f"# {title}\n"]
    if shows:
        out.append(f"## {SHOWS}\n\n" + " ".join(s.strip() for s in shows) + "\n")
    out += [f"**Question.** {question}\n", f"```\n{command}\n```\n"]
    for head, body in sections:
        out.append(f"## {head}\n\n{body}\n")
    from bpexp import outputs

    if figures and not outputs.FIGURES:
        out.append("## Figures\n\nNot drawn: this run had `outputs.figures=false`.\n")
    elif figures:
        out.append("## Figures\n")
        out += [f"![{f}](figures/{f})\n" for f in figures]
    return "\n".join(out)
