"""One module per experiment: ``run(cfg, run) -> summary dict``."""
