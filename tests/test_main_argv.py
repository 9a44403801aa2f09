"""Group options on the command line are checked before Hydra, with one-line errors."""

import pytest

from bpexp.__main__ import check_argv


@pytest.mark.parametrize("argv", [
    ["+experiment=lr_sweep", "model=mlp", "data=digits", "optimizer=adam"],
    ["-m", "+experiment=lr_sweep", "model=multivariate,two_layer_sigmoid"],
    ["-m", "+experiment=glob(*)"],
    ["-m", "+experiment=glob([w*,gradc*])"],
    ["-m", "+experiment=glob(*,exclude=[bench])"],
    ["+experiment=gradcheck", "model.name=whatever"],   # keys are checked later by config.build
])
def test_good_argv_passes(argv):
    check_argv(argv)


@pytest.mark.parametrize("argv,needle", [
    (["+experiment=nope"], "experiment='nope'"),
    (["+experiment=lr_sweep", "model=nope"], "model='nope' is not a model; choose one of logistic, mlp"),
    (["-m", "+experiment=lr_sweep", "data=digits,nope"], "data='nope'"),
    (["-m", "+experiment=glob(zz*)"], "matches no experiment"),
])
def test_bad_argv_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        check_argv(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
