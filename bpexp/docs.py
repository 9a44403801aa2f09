"""Numbers in the README come from runs: recorded results and the blocks generated from them.

A block of README.md between

    <!-- generated: NAME -->
    ...
    <!-- end generated: NAME -->

is the text that experiment NAME's ``readme(record)`` writes from ``docs/results/NAME.json``, a
record of one real run: its summary.json, the config and the machine it ran on (env.json).
Nothing between the markers is typed by hand: ``python -m bpexp.docs render`` rewrites the
blocks, ``python -m bpexp.docs check`` (run by the tests) fails when README.md and the records
disagree, and ``python -m bpexp.docs record RUN_DIR`` stores a new run's record (then render).
Numbers that depend on the machine (timings) are written through :func:`machine`, which names
the machine they were measured on; the tests rerun each record's command and require the block
it renders to equal the recorded one with those numbers masked (``MASK``): every other number
in a block is reproduced by a fresh run. A record of timings only, whose every number is
masked, can be stored ``--timings-only "why"``: the tests then check its block against the
record and its structure (not a rerun that could only compare masks).

    python -m bpexp +experiment=minibatch
    python -m bpexp.docs record outputs/minibatch/latest && python -m bpexp.docs render
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

from bpexp import outputs

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "docs/results"
BLOCK = re.compile(r"(?ms)^<!-- generated: (?P<name>[\w.-]+) -->\n(?P<body>.*?)"
                   r"^<!-- end generated: (?P=name) -->\n")
ENV_KEYS = ("platform", "python", "jax", "backend", "devices", "cpu_count", "git_commit", "start")


MASK = False     # True: machine-dependent numbers render as "(machine-dependent)" (the tests)


def machine(text: str, rec: dict) -> str:
    """A machine-dependent number (a wall time, a speed ratio) as the README shows it:
    ``text`` followed by the machine it was measured on."""
    if MASK:
        return "(machine-dependent)"
    m = rec.get("machine") or {}
    cores = f"{m['cpu_count']}-core " if m.get("cpu_count") else ""
    backend = str(m.get("backend") or "unrecorded").upper()
    where = f"a {cores}{backend} machine" if backend == "CPU" else f"{backend} ({cores}host)"
    return f"{text} (machine-dependent: measured on {where})"


def _as_typed(argv: list[str]) -> list[str]:
    """The overrides as a user types them: the entry point's replace form of a whole value
    (``~key`` then ``+key=value``) back to ``key=value``."""
    out = []
    for a in argv:
        if out and a.startswith("+") and "=" in a and out[-1] == "~" + a[1:].split("=")[0]:
            out[-1] = a[1:]
        else:
            out.append(a)
    return out


def measured(text: str) -> str:
    """A machine-dependent number inside a table whose header names the machine (machine())."""
    return "(machine-dependent)" if MASK else text


def record(run_dir, name: str | None = None) -> dict:
    """The record of a finished run folder: experiment, command, summary, config, machine."""
    import yaml

    run_dir = Path(run_dir).resolve()
    env = json.loads((run_dir / "env.json").read_text())
    if env.get("status") != "finished":
        raise ValueError(f"{run_dir} has status {env.get('status')!r}; record a finished run")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    exp = (cfg.get("experiment") or {}).get("name") or run_dir.parent.name
    return {"experiment": exp, "name": name or exp,
            "command": outputs.command(_as_typed(env.get("argv", [])[1:]),
                                       drop=("outputs.", "run_id", "sweep.progress")),
            "summary": json.loads((run_dir / "summary.json").read_text()), "config": cfg,
            "machine": {k: env.get(k) for k in ENV_KEYS}}


def load_record(name: str, root: Path = ROOT) -> dict:
    return json.loads((Path(root) / RESULTS / f"{name}.json").read_text())


def block_text(name: str, root: Path = ROOT) -> str:
    """What the block NAME holds: the experiment's ``readme(record)`` of its stored record."""
    from bpexp import experiments

    rec = load_record(name, root)
    module = experiments.get(rec["experiment"])
    text = module.readme(rec).strip("\n") + "\n"
    return text


def render(text: str, root: Path = ROOT) -> str:
    """``text`` (README.md) with every generated block rewritten from its record."""
    def sub(m):
        name = m["name"]
        return (f"<!-- generated: {name} -->\n{block_text(name, root)}"
                f"<!-- end generated: {name} -->\n")

    return BLOCK.sub(sub, text)


def blocks(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bpexp.docs", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="store a finished run's record in docs/results/")
    r.add_argument("run_dir")
    r.add_argument("--as", dest="name", default=None, help="record name (default: experiment)")
    r.add_argument("--timings-only", dest="why", default=None,
                   help="every number of the block is machine-dependent: not rerun by the "
                        "tests; says why")
    sub.add_parser("render", help="rewrite README.md's generated blocks from docs/results/")
    sub.add_parser("check", help="exit 1 if README.md's generated blocks are out of date")
    a = ap.parse_args(argv)
    readme = ROOT / "README.md"
    if a.cmd == "record":
        rec = record(a.run_dir, a.name)
        if a.why:
            rec["timings_only"] = a.why
        path = ROOT / RESULTS / f"{rec['name']}.json"
        outputs.write_json(path, rec)
        print(f"recorded {rec['name']}: {path}")
        return 0
    old = readme.read_text()
    new = render(old)
    if a.cmd == "render":
        if new != old:
            outputs.write_text(readme, new)
        print(f"README.md: {len(blocks(new))} generated blocks" + (" rewritten" if new != old
                                                                     else ", up to date"))
        return 0
    if new != old:
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), "README.md",
                                    "generated", lineterm="", n=1)
        print("\n".join(list(diff)[:60]))
        print("README.md's generated blocks differ from docs/results: run "
              "python -m bpexp.docs render", file=sys.stderr)
        return 1
    print(f"README.md: {len(blocks(new))} generated blocks, up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
