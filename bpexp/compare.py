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
    ap.add_argument("--status", default=None, choices=outputs.STATUSES,
                    help="only runs with this status")
    ap.add_argument("--last", type=int, default=0, help="only the last N matching runs")
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
    header, body = table(rows)
    report.print_table(
        f"runs in {a.root}/index.jsonl" + (f" ({a.experiment})" if a.experiment else ""),
        header, body)
    return 0


class MultirunTable(Callback):
    """Hydra callback: after a multirun, the jobs' headline numbers side by side."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(sweep_dir.glob("*/job.json"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
        if not jobs:
            return
        infos = [json.loads(p.read_text()) for p in jobs]
        # the column shows what the jobs do not share (the swept values), not the whole command
        shared = set.intersection(*(set(i["overrides"]) for i in infos)) if len(infos) > 1 \
            else set()
        for i in infos:
            i["overrides"] = [o for o in i["overrides"] if o not in shared]
        by_id = {Path(i["run_dir"]).name: i for i in infos}
        root = Path(config.outputs.root)
        rows = [r for r in latest(outputs.read_index(root)) if r["id"] in by_id]
        header, body = table(rows, {k: v["overrides"] for k, v in by_id.items()})
        report.print_table(f"multirun {sweep_dir}", header, body)
        outputs.write_text(sweep_dir / "comparison.md",
                           f"# Multirun {sweep_dir.name}\n\n" + report.markdown_table(header, body))
        print(f"comparison: {sweep_dir / 'comparison.md'}")


if __name__ == "__main__":
    sys.exit(main())
