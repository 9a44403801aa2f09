"""The experiments: one module or package per experiment, each with a YAML in conf/experiment/.

Installed as ``bpexp.experiments`` (the repository keeps them in the top-level experiments/
folder). :func:`names` and :func:`get` are the one discovery: the entry point, the config
checks, the pages and the tests find experiments through them, and no library module names
one.

The contract. A module ``NAME.py`` (or a package ``NAME/``) with ``conf/experiment/NAME.yaml``
exports:

    Params                       dataclass of the ``experiment.*`` keys, ``name`` first. Typed
                                 fields are checked by type; a list or dict field by the kind
                                 of its default (a list of numbers stays a list of numbers).
    USES                         the config sections it reads, a subset of
                                 ("model", "data", "optimizer", "train", "sweep"): the
                                 validation phase builds each of them (make.check) first.
    PRECISION = "float64"        optional: always run with jax_enable_x64.
    validate(cfg) -> None        every rule of its own, raising errors.UserError with one line
                                 (key, value, what is allowed); computes nothing.
    STREAMS = True               optional: its grid streams into the run's metrics.zarr
                                 (run.grid_store + sweep.run_grid(store=...)), so the run can
                                 be resumed chunk by chunk and sharded (sweep.shard).
    compute(cfg, run) -> Result  the numbers: JAX and numpy work, no files but data.npz (and
                                 the streamed store).
    save(cfg, run, res) -> dict  arrays to metrics.zarr (run.save_metrics(xarray.Dataset) with
                                 named dims and coordinates); returns the summary
                                 (summary.json, schema in the README).
    present(cfg, run, res, summary) -> None
                                 the terminal table, figures/*.png and report.md, drawn from
                                 ``res`` and ``summary`` alone.
    HEADLINE = ("key", ...)      optional: the summary numbers a comparison table shows
                                 (python -m bpexp.compare, a multirun's table); default:
                                 its first four numeric summary keys.
    page(ds, summary) -> [Fig]   optional: the run page's own interactive figures
                                 (bpexp.figs.Fig), drawn from the stored Dataset
                                 (metrics.zarr) and summary.json alone, so that
                                 ``python -m bpexp.pages`` redraws old runs; without it the page
                                 shows the generic figures of every stored array.

Experiments outside the package: every folder listed in the environment variable
``BPEXP_EXPERIMENTS`` (separated like PATH) may hold experiment packages ``NAME/`` that carry
their YAML inside (``NAME/NAME.yaml``, the same content as conf/experiment/NAME.yaml). They are
found, validated and run exactly like the built-in ones, with no edit to the library.

The module docstring states the question, the theory and the expected outcome. An experiment
bigger than one room (~400 lines) is a package: ``__init__`` holds the contract, beside it
``run.py`` (the computation), ``theory.py``, ``figures.py`` (matplotlib) and ``page.py``.
Drawing helpers that several experiments share live in bpexp/plots.py (PNG) and bpexp/figs.py
(pages); shared experiment helpers in ``_common``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
import types
from pathlib import Path

from bpexp import conf_dir

ENV = "BPEXP_EXPERIMENTS"   # folders of experiment packages outside bpexp (like PATH)


def external() -> dict[str, Path]:
    """Experiment packages found in the folders of ``BPEXP_EXPERIMENTS``: name -> folder (the
    first folder wins; a built-in name is never shadowed)."""
    out: dict[str, Path] = {}
    for root in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        for sub in sorted(Path(root).glob("*/")):
            if (sub / "__init__.py").is_file() and (sub / f"{sub.name}.yaml").is_file():
                out.setdefault(sub.name, sub)
    return out


def yaml_path(name: str) -> Path | None:
    """The experiment's YAML: conf/experiment/NAME.yaml, or NAME/NAME.yaml of an external one."""
    builtin = conf_dir() / "experiment" / f"{name}.yaml"
    if builtin.is_file():
        return builtin
    ext = external().get(name)
    return ext / f"{name}.yaml" if ext else None


def _builtin() -> set[str]:
    here = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return here & {p.stem for p in (conf_dir() / "experiment").glob("*.yaml")}


def names() -> tuple[str, ...]:
    """Every experiment: a module (or package) here with a YAML in conf/experiment, and the
    external packages of ``BPEXP_EXPERIMENTS``."""
    builtin = _builtin()
    return tuple(sorted(builtin | (set(external()) - builtin)))


def get(name: str) -> types.ModuleType:
    """The experiment module ``name``; a one-line UserError listing the known ones otherwise.
    An external package is imported as ``bpexp.experiments.NAME``, so its own modules import
    each other the same way the built-in ones do."""
    known = names()
    if name not in known:
        from bpexp.config import ConfigError   # JAX's stack: only on this path (pages and the
        # figure helper import experiments without it)

        raise ConfigError(f"experiment={name!r} is not an experiment; choose one of "
                          f"{', '.join(known)}")
    full = f"{__name__}.{name}"
    if name in _builtin() or full in sys.modules:
        return importlib.import_module(full)
    folder = external()[name]
    spec = importlib.util.spec_from_file_location(full, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module
