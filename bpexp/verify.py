"""Is a run folder intact? ``python -m bpexp.verify RUN_DIR [RUN_DIR ...]``.

Every streamed chunk of metrics.zarr carries a checksum written with its completion marker,
and a Dataset written whole carries one per variable (bpexp.store). This lists what no longer
matches (a chunk file deleted, truncated or altered; a metadata file damaged) and checks the
folder's own files. A damaged streamed chunk is recomputed by rerunning the run's command
(the store drops its marker on opening); ``bpexp.load`` warns about damage in one line.
Exit 0 intact, 1 damaged, 2 not a run folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bpexp import store


def damage(path, ds=None) -> list[str]:
    """What no longer matches its checksum in a store: ``chunk i`` of a streamed grid (whose
    marker says complete), or ``variable NAME`` of a Dataset written whole. [] if intact;
    stores written before checksums existed are taken as they are."""
    import zarr

    path = Path(path)
    layout = dict(zarr.open_group(path, mode="r").attrs).get("bpexp_layout")
    if isinstance(layout, dict):                       # a streamed grid
        st = store.GridStore(path, store.Layout.from_description(layout))
        return [f"chunk {i}" for i in st.verify()]
    if ds is None:
        import xarray as xr

        ds = xr.open_zarr(path)
    out = []
    for k, h in (ds.attrs.get("bpexp_hashes") or {}).items():
        try:
            ok = k in ds and store.data_hash(ds[k].values) == int(h)
        except Exception:      # an undecodable chunk file
            ok = False
        if not ok:
            out.append(f"variable {k}")
    return out


def problems(run_dir) -> list[str]:
    """Everything damaged in a run folder: its files (config.yaml, env.json, summary.json of a
    finished run) and its metrics.zarr."""
    run_dir = Path(run_dir)
    out = []
    env = None
    for name in ("config.yaml", "env.json"):
        try:
            text = (run_dir / name).read_text()
            env = json.loads(text) if name == "env.json" else env
        except (OSError, ValueError):
            out.append(f"{name} missing or unreadable")
    if isinstance(env, dict) and env.get("status") == "finished":
        try:
            json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            out.append("summary.json missing or unreadable")
    if (run_dir / store.STORE).is_dir():
        try:
            out += [f"{store.STORE}: {d}" for d in damage(run_dir / store.STORE)]
        except Exception as e:      # metadata the reader cannot parse at all
            out.append(f"{store.STORE}: unreadable ({type(e).__name__}: {e})")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m bpexp.verify RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    code = 0
    for d in map(Path, argv):
        if not (d / "env.json").exists() and not (d / store.STORE).exists():
            print(f"error: {d} is not a run folder (no env.json or {store.STORE})",
                  file=sys.stderr)
            return 2
        found = problems(d)
        print(f"{d}: " + ("intact" if not found else "damaged: " + "; ".join(found)))
        code = max(code, 1 if found else 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
