"""The house grows by adding, not by editing: an experiment is one folder, a model one row of
models.MODELS plus one YAML. Both run through ``python -m bpexp`` with no other change to the
library.
"""

import json
import os
import subprocess
import sys
import textwrap

from test_registries import run_python

TOY_INIT = '''
"""How far does full-batch GD get on diabetes in a few steps, against the least-squares optimum?

Question: after ``steps`` steps of GD at each lr, how far is the loss of a linear model above
the least-squares minimum?
Theory: the minimum of the MSE of a linear model is the least-squares solution (numpy lstsq).
Expected: the gap shrinks as the lr grows towards 2/lambda_max.
"""

from dataclasses import dataclass

import numpy as np

from bpexp import make, report, sweep
from bpexp.experiments._common import load_data
from bpexp.experiments.toy.theory import least_squares_loss

USES = ("model", "data", "optimizer", "train", "sweep")


@dataclass
class Params:
    name: str = "toy"


def validate(cfg):
    pass


def compute(cfg, run):
    ds = load_data(cfg, run)
    grid, fixed = make.grid(cfg)
    res = sweep.run_grid(make.spec(cfg, ds), ds.X, ds.Y, grid, fixed, progress=False)
    return ds, grid, res.metrics["final_loss"]


def save(cfg, run, res):
    ds, grid, final = res
    best = least_squares_loss(np.asarray(ds.X, np.float64), np.asarray(ds.Y, np.float64))
    return {"lrs": grid.axes["lr"], "final_loss": np.median(final, axis=1), "optimum": best}


def present(cfg, run, res, summary):
    rows = [[lr, f, f - summary["optimum"]] for lr, f in zip(summary["lrs"],
                                                              summary["final_loss"])]
    run.save_report(report.report("Toy", __doc__.split("Question:")[1].split("Theory:")[0],
                                  run.reproduce(),
                                  [("Gap", report.markdown_table(["lr", "loss", "gap"], rows))],
                                  []))
'''

TOY_THEORY = '''
import numpy as np


def least_squares_loss(X, Y):
    """(1/m) ||w X + b - Y||^2 at the least-squares (w, b)."""
    Xt = np.vstack([X, np.ones((1, X.shape[1]))])
    sol, *_ = np.linalg.lstsq(Xt.T, Y.T, rcond=None)
    return float(np.sum((sol.T @ Xt - Y) ** 2) / X.shape[1])
'''

TOY_YAML = '''# @package _global_
# python -m bpexp +experiment=toy (with BPEXP_EXPERIMENTS naming the folder that holds toy/)
defaults:
  - override /model: multivariate
  - override /data: diabetes

train:
  steps: 50
sweep:
  lr: [0.01, 0.1]
  seeds: 2
experiment:
  name: toy
'''


def test_an_experiment_is_one_folder(tmp_path):
    """A toy experiment package (module, theory, YAML) in a folder of its own runs through the
    command line: validated, run, stored and paged like the built-in ones."""
    pkg = tmp_path / "mine" / "toy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(TOY_INIT))
    (pkg / "theory.py").write_text(textwrap.dedent(TOY_THEORY))
    (pkg / "toy.yaml").write_text(TOY_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["BPEXP_EXPERIMENTS"] = str(tmp_path / "mine")
    root = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=toy", f"outputs.root={root}",
                        "sweep.seeds=3"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    run_dir = p.stdout.strip().splitlines()[-1].removeprefix("run dir: ")
    assert run_dir.startswith(str(root / "toy"))
    s = json.loads(open(f"{run_dir}/summary.json").read())
    assert s["lrs"] == [0.01, 0.1] and len(s["final_loss"]) == 2
    # independent: the least-squares loss of the arrays trained on (data.npz), recomputed here;
    # GD stays above it, and gets closer at the larger lr
    import numpy as np
    Xy = np.load(f"{run_dir}/data.npz")
    X, Y = Xy["X"].astype(np.float64), Xy["Y"].astype(np.float64)
    Xt = np.vstack([X, np.ones((1, X.shape[1]))])
    sol, *_ = np.linalg.lstsq(Xt.T, Y.T, rcond=None)
    best = float(np.sum((sol.T @ Xt - Y) ** 2) / X.shape[1])
    assert abs(s["optimum"] - best) <= 1e-9 * best
    assert s["final_loss"][0] > s["final_loss"][1] > best * (1 - 1e-5)
    cfg = open(f"{run_dir}/config.yaml").read()
    assert "seeds: 3" in cfg and "name: multivariate" in cfg
    assert "## Gap" in open(f"{run_dir}/report.md").read()
    assert os.path.getsize(f"{run_dir}/report.html") > 1000
    # bad input still gets one line before any folder
    bad = subprocess.run([sys.executable, "-m", "bpexp", "+experiment=toy",
                          f"outputs.root={root}", "experiment.nope=1"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "experiment.nope is not a key of this experiment" in bad.stderr


def test_a_model_is_one_row_and_one_yaml(tmp_path):
    """One row in models.MODELS (a two-layer tanh net, hand gradient included) and its YAML:
    the config group, validation, the command line and the sweep engine pick it up, and the
    hand gradient equals jax.grad."""
    (tmp_path / "two_layer_tanh.yaml").write_text(
        "defaults:\n  - schema\n  - _self_\n\nname: two_layer_tanh\nhidden: 8\n")
    out = run_python('''
        row = (
            '    "two_layer_tanh": Row(two_layer_init,\\n'
            '        lambda p, X: p["W2"] @ jnp.tanh(p["W1"] @ X + p["b1"]) + p["b2"],\\n'
            '        lambda p, X, Y: (lambda A, d: {"W2": d @ A.T, "b2": d.sum(1, keepdims=True),'
            ' "W1": ((p["W2"].T @ d) * (1 - A ** 2)) @ X.T,'
            ' "b1": ((p["W2"].T @ d) * (1 - A ** 2)).sum(1, keepdims=True)})('
            'jnp.tanh(p["W1"] @ X + p["b1"]),'
            ' (2.0 / Y.shape[-1]) * (p["W2"] @ jnp.tanh(p["W1"] @ X + p["b1"]) + p["b2"] - Y)),\\n'
            '        "identity_mse", "A = tanh(W1 X + b1); yhat = W2 A + b2",'
            ' hparams={"hidden": 32}),\\n')
        load_edited("bpexp.models", '    "mlp": Row(mlp_init,', before=row)
        import glob, json, sys
        import jax, numpy as np, yaml
        from hydra.core.config_store import ConfigStore
        from bpexp import config, models
        config.register_schemas()
        ConfigStore.instance().store(group="model", name="two_layer_tanh", node=yaml.safe_load(
            open("two_layer_tanh.yaml").read()))   # what conf/model/two_layer_tanh.yaml holds
        m = models.get("two_layer_tanh")
        X = np.random.default_rng(0).normal(size=(4, 7))
        Y = np.random.default_rng(1).normal(size=(2, 7))
        with jax.enable_x64(True):
            p = m.init(jax.random.PRNGKey(0), 4, 2, hidden=3, dtype=np.float64)
            g, ga = m.grad(p, X, Y), jax.grad(m.loss)(p, X, Y)
            err = max(float(np.max(np.abs(g[k] - ga[k]))) for k in g)
        from bpexp.__main__ import main
        from bpexp.cli import run
        sys.argv = ["bpexp", "+experiment=lr_sweep", "model=two_layer_tanh", "outputs.root=out",
                    "data=diabetes", "train.steps=20", "sweep.lr=[0.01,0.1]", "sweep.seeds=2",
                    "sweep.progress=false", "experiment.refine_rounds=0"]
        try:
            run(main)
        except SystemExit as e:
            assert not e.code, e.code
        d = sorted(glob.glob("out/lr_sweep/2*"))[-1]
        cfg = yaml.safe_load(open(d + "/config.yaml"))
        s = json.load(open(d + "/summary.json"))
        print(json.dumps({"options": config.group_options("model"), "err": err,
                          "model": cfg["model"], "lrs": s["lrs"]}))
    ''', tmp_path)
    assert "two_layer_tanh" in out["options"]
    assert out["err"] < 1e-12
    assert out["model"]["name"] == "two_layer_tanh" and out["model"]["hidden"] == 8
    assert out["lrs"] == [0.01, 0.1]
