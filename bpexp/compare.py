"""Compare runs' headline numbers.

    python -m bpexp.compare [--experiment NAME] [--root outputs] [--last 10] [--status finished]

reads ``<root>/index.jsonl`` and prints one row per run (a run continued or sharded over
several processes has several lines: its latest status is shown) with the scalar entries of
its summary. After a Hydra multirun (``python -m bpexp -m ...``) the same table is printed and
written to ``<sweep dir>/comparison.md`` by :class:`MultirunTable`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bpexp import outputs, report, resume

try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object


def table(rows: list[dict], extra: dict | None = None) -> tuple[list[str], list[list]]:
    """(header, rows) from index lines: id, experiment, status, seconds, then every scalar
    summary key that any run has (in first-seen order)."""
    keys: list[str] = []
    for r in rows:
        for k in r.get("summary", {}):
            if k not in keys:
                keys.append(k)
    extra = extra or {}
    header = ["run", "experiment", "status", "seconds"] + (["overrides"] if extra else []) + keys
    out = []
    for r in rows:
        line = [r["id"], r["experiment"], r["status"], r.get("seconds")]
        if extra:
            line.append(" ".join(extra.get(r["id"], [])))
        out.append(line + [r.get("summary", {}).get(k) for k in keys])
    return header, out


def latest(rows: list[dict]) -> list[dict]:
    """One row per run folder (``dir``, else ``id``): its last line, in order of first
    appearance; a finished line is never replaced by a later failure of a late process."""
    out: dict = {}
    for r in rows:
        key = r.get("dir") or r["id"]
        if out.get(key, {}).get("status") == "finished" and r["status"] != "finished":
            continue
        out[key] = r
    return list(out.values())


def runs(root, experiment: str | None = None) -> list[dict]:
    """Every run under ``root`` once with its latest status: index.jsonl's lines, and the run
    folders still marked running (a process killed without a word shows ``interrupted``)."""
    rows = outputs.read_index(Path(root), experiment)
    rows += [r for r in resume.unclosed(root) if experiment in (None, r["experiment"])]
    return latest(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpexp.compare",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="outputs", help="outputs root holding index.jsonl")
    ap.add_argument("--experiment", default=None, help="only runs of this experiment")
    ap.add_argument("--status", default=None, choices=(*outputs.STATUSES, "share done"),
                    help="only runs with this status")
    ap.add_argument("--last", type=int, default=0, help="only the last N matching runs")
    ap.add_argument("--width", type=int, default=None, help="table width (default 120)")
    ap.add_argument("--csv", default=None, help="also write every summary number to this CSV")
    a = ap.parse_args(argv)
    if not (Path(a.root) / "index.jsonl").exists():
        print(f"error: --root={a.root!r} has no index.jsonl; run an experiment first",
              file=sys.stderr)
        return 2
    rows = [r for r in runs(a.root, a.experiment)
            if a.status in (None, r["status"])]
    if a.last > 0:
        rows = rows[-a.last:]
    if not rows:
        print(f"no runs{' of ' + a.experiment if a.experiment else ''} in {a.root}/index.jsonl")
        return 0
    heads = headline(rows)
    header = ["run", "experiment", "status", "seconds"] + heads
    body = [[r["id"], r["experiment"], r["status"], r.get("seconds")]
            + [(r.get("summary") or {}).get(k) for k in heads] for r in rows]
    report.print_table(
        f"runs in {a.root}/index.jsonl" + (f" ({a.experiment})" if a.experiment else ""),
        header, body, width=WIDTH if a.width is None else a.width)
    if a.csv:
        outputs.write_text(Path(a.csv), report.csv_table(*table(rows)))
        print(f"every summary number: {a.csv}")
    return 0


WIDTH = 120   # the multirun table fits a terminal this wide (or the terminal, if narrower)


def headline(rows: list[dict], k: int = 4) -> list[str]:
    """The summary keys a table shows: each experiment's own ``HEADLINE`` (the contract's
    optional attribute), else its first ``k`` numeric keys."""
    from bpexp import experiments

    keys: list[str] = []
    for exp in dict.fromkeys(r["experiment"] for r in rows):
        try:
            chosen = list(getattr(experiments.get(exp), "HEADLINE", ()))
        except Exception:     # an experiment no longer installed: its numbers are still shown
            chosen = []
        if not chosen:
            first = next((r for r in rows if r["experiment"] == exp), {})
            chosen = [key for key, v in (first.get("summary") or {}).items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)][:k]
        keys += [key for key in chosen if key not in keys]
    return keys


def differing(overrides: dict) -> tuple[list[str], dict]:
    """(keys, {run: {key: value}}) of the ``key=value`` overrides whose value is not the same
    in every job (what the multirun swept)."""
    parsed = {run: dict(o.lstrip("+~").split("=", 1) if "=" in o else (o, "")
                        for o in ovs) for run, ovs in overrides.items()}
    keys = list(dict.fromkeys(key for p in parsed.values() for key in p))
    keys = [key for key in keys if len({p.get(key) for p in parsed.values()}) > 1]
    return keys, {run: {key: p.get(key, "") for key in keys} for run, p in parsed.items()}


class MultirunTable(Callback):
    """Hydra callback: after a multirun, the jobs side by side: the overrides that differ
    between them and each experiment's headline numbers, fitted to the terminal (at most
    WIDTH columns); the full table (every override and summary key) goes to
    ``<sweep dir>/comparison.csv`` and ``comparison.md``."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(sweep_dir.glob("*/job.json"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        if not jobs:
            return
        infos = [json.loads(p.read_text()) for p in jobs]
        by_run: dict = {}
        for i in infos:                       # the jobs of a sharded run share one folder
            by_run.setdefault(Path(i["run_dir"]).name, []).extend(i["overrides"])
        keys, swept = differing({r: list(dict.fromkeys(o)) for r, o in by_run.items()})
        root = Path(config.outputs.root)
        rows = [r for r in latest(outputs.read_index(root)) if r["id"] in by_run]
        full_header, full_body = table(rows, {k: v for k, v in by_run.items()})
        outputs.write_text(sweep_dir / "comparison.csv", report.csv_table(full_header,
                                                                           full_body))
        outputs.write_text(sweep_dir / "comparison.md", f"# Multirun {sweep_dir.name}\n\n"
                           + report.markdown_table(full_header, full_body))
        heads = headline(rows)
        header = ["run", "status"] + keys + heads
        body = [[r["id"], r["status"]] + [swept.get(r["id"], {}).get(k, "") for k in keys]
                + [(r.get("summary") or {}).get(k) for k in heads] for r in rows]
        report.print_table(f"multirun {sweep_dir.name}: {len(jobs)} jobs", header, body,
                           width=WIDTH)
        print(f"comparison: {sweep_dir / 'comparison.csv'} (every override and number)")


if __name__ == "__main__":
    sys.exit(main())
