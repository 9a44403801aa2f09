"""Group options on the command line are checked before Hydra, with one-line errors."""

import pytest

from bpexp.cli import check_argv
from helpers import build_cfg


@pytest.mark.parametrize("argv", [
    ["+experiment=lr_sweep", "model=mlp", "data=digits", "optimizer=adam"],
    ["-m", "+experiment=lr_sweep", "model=multivariate,two_layer_sigmoid"],
    ["-m", "+experiment=glob(*)"],
    ["-m", "+experiment=glob([w*,gradc*])"],
    ["-m", "+experiment=glob(*,exclude=[bench])"],
    ["+experiment=gradcheck", "model.name=whatever"],   # values are checked later by config.build
    ["+experiment=lr_sweep", "sweep.lr.start=0.01", "+sweep.hparams.beta=[0,0.9]", "seed=3",
     "experiment.lanczos_iters=5", "hydra.run.dir=x", "data.features=[2]"],
])
def test_good_argv_passes(argv):
    check_argv(argv)


@pytest.mark.parametrize("argv,needle", [
    (["+experiment=nope"], "experiment='nope'"),
    (["+experiment=lr_sweep", "model=nope"],
     "model='nope' is not a model; choose one of logistic, mlp"),
    (["-m", "+experiment=lr_sweep", "data=digits,nope"], "data='nope'"),
    (["-m", "+experiment=glob(zz*)"], "matches no experiment"),
    (["+experiment=lr_sweep", "model.foo=1"], "model.foo is not a known key; allowed: model.name"),
    (["+experiment=lr_sweep", "foo=1"], "foo is not a known key"),
    (["+experiment=lr_sweep", "experiment.bogus=1"],
     "experiment.bogus is not a key of this experiment"),
])
def test_bad_argv_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        check_argv(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_every_schema_key_is_overridable(tmp_path):
    """Group YAMLs start from the dataclass defaults, so any schema key composes (no Hydra
    'not in struct'), e.g. a momentum hyperparameter under optimizer=gd."""
    import dataclasses

    from hydra import compose, initialize_config_dir

    from bpexp import config

    config.register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(config.CONF_DIR)):
        for group, cls in (("model", config.ModelCfg), ("data", config.DataCfg),
                           ("optimizer", config.OptimizerCfg), ("sweep", config.SweepCfg)):
            for option in config.group_options(group):
                cfg = compose("config", overrides=[f"{group}={option}", "+experiment=lr_sweep"])
                assert set(cfg[group]) == {f.name for f in dataclasses.fields(cls)}, (group, option)
        cfg = compose("config", overrides=["+experiment=lr_sweep", "optimizer=gd",
                                           "optimizer.beta=0.5", "data.features=[2]",
                                           "model=univariate"])
        built = build_cfg(__import__("omegaconf").OmegaConf.to_container(cfg, resolve=True))
        assert (built.optimizer.beta == 0.5 and built.data.features == [2]
                and built.model.name == "univariate")
