"""The experiments: one module per experiment, each with a YAML in conf/experiment/.

Installed as ``bpexp.experiments`` (the repository keeps them in the top-level experiments/
folder). Only the entry point (``bpexp.__main__``) discovers them; the library never imports
them.

The contract. A module ``NAME.py`` with ``conf/experiment/NAME.yaml`` exports:

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

The module docstring states the question, the theory and the expected outcome. Figures that
only one experiment draws live at the bottom of its module; drawing helpers that several share
live in bpexp/plots.py. Shared experiment helpers live in ``_common``.
"""
