"""``python -m bpexp +experiment=NAME [overrides]``: compose -> validate once -> run -> write.

Thin on purpose (flax's examples/mnist/main.py): Hydra composes conf/, bpexp.cli validates the
result once (bad input: one line, exit 2, no folder), bpexp.launch runs the experiment's
contract in its run folder and writes its pages. Experiments are found by
bpexp.experiments.get, never imported by name.
"""

from __future__ import annotations

if __name__ == "__main__":   # Ctrl-C before a run folder exists: one line, exit 130
    import signal

    from bpexp.errors import quiet_interrupt

    signal.signal(signal.SIGINT, quiet_interrupt)

    import sys

    from bpexp import render

    render.prestart(sys.argv[1:])   # the figure helper imports matplotlib while we import JAX

import hydra  # after the Ctrl-C handler: these imports take a second

from bpexp import cli, config, launch


@hydra.main(version_base="1.3", config_path=str(config.CONF_DIR), config_name="config")
def main(dcfg) -> None:
    module, cfg, config_yaml = cli.configure(dcfg)
    launch.execute(module, cfg, config_yaml, cli.overrides())


if __name__ == "__main__":
    cli.run(main)
    cli.leave()
