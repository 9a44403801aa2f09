"""One table per registry: a new metric or a new optimizer is one edit of one file.

Each test edits the source of one library module (as a developer would: one row, plus the
function it names), loads the edited module in a fresh interpreter before anything imports
it, and checks that the whole house picks the change up: the config group, the validation,
the sweep engine's arrays and dims.
"""

import json
import os
import subprocess
import sys
import textwrap

LOAD_EDITED = '''
import importlib.util, sys
def load_edited(name, anchor, before="", after=""):
    spec = importlib.util.find_spec(name)
    src = open(spec.origin).read()
    assert src.count(anchor) == 1, anchor
    src = src.replace(anchor, before + anchor + after)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(src, spec.origin, "exec"), mod.__dict__)
    return mod
'''


def run_python(code: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    p = subprocess.run([sys.executable, "-c", LOAD_EDITED + textwrap.dedent(code)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_new_metric_is_one_row(tmp_path):
    out = run_python('''
        load_edited("bpexp.train", "    \\"param_norm\\": Metric(",
                    before="    \\"grad_max\\": Metric((\\"step\\",), lambda s: jnp.max(jnp.stack("
                           "[jnp.max(jnp.abs(g)) for g in '''
        '''jax.tree_util.tree_leaves(s.grads)]))),\\n")
        import json
        import jax, numpy as np
        from bpexp import data, models, sweep, train
        ds = data.load("diabetes", m=50)
        spec = train.TrainSpec(model="multivariate", n=ds.n, d_out=1, m=ds.m, steps=6,'''
        ''' record_every=2)
        grid = sweep.Grid({"lr": np.array([0.01, 0.1]), "seed": np.array([0, 1, 2])})
        res = sweep.run_grid(spec, ds.X, ds.Y, grid, progress=False)
        # independent: the hand gradient at each run's initial parameters (step 0)
        m = models.get("multivariate")
        ref = [[float(max(np.max(np.abs(g)) for g in jax.tree_util.tree_leaves(
                m.grad(m.init(train.run_keys(s)[0], ds.n, 1), ds.X, ds.Y))))'''
        ''' for s in (0, 1, 2)]] * 2
        print(json.dumps({"dims": list(res.dims["grad_max"]),'''
        ''' "shape": list(res.metrics["grad_max"].shape),
                          "step0": res.metrics["grad_max"][..., 0].tolist(), "ref": ref,
                          "steps": res.coords["step"].tolist()}))
    ''', tmp_path)
    assert out["dims"] == ["lr", "seed", "step"] and out["shape"] == [2, 3, 3]
    assert out["steps"] == [0, 2, 4]
    for got, ref in zip(sum(out["step0"], []), sum(out["ref"], [])):
        assert abs(got - ref) <= 1e-6 * ref


def test_a_new_optimizer_is_one_row(tmp_path):
    out = run_python('''
        load_edited("bpexp.optim", "OPTIMIZERS: dict[str, Optimizer] = {",
                    before="def heavy_ball(lr, beta=0.5):\\n"
                           "    def update(g, s, params=None):\\n"
                           "        v = jax.tree.map(lambda v_, g_:'''
        ''' _like(beta, g_) * v_ + g_, s.v, g)\\n"
                           "        return jax.tree.map(lambda v_: -_like(lr, v_) * v_, v),'''
        ''' MomentumState(v=v)\\n"
                           "    return optax.GradientTransformation(\\n"
                           "        lambda p:'''
        ''' MomentumState(v=jax.tree.map(jnp.zeros_like, p)), update)\\n\\n\\n",
                    after="\\n    \\"heavy_ball\\": Optimizer(heavy_ball,'''
        ''' lambda hp: optax.sgd(hp[\\"lr\\"], "
                          "momentum=hp[\\"beta\\"]), 0.05, {\\"beta\\": 0.5},'''
        ''' \\"v = beta v + g ; w -= lr v\\"),")
        import json
        import numpy as np
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf
        from bpexp import config, make, sweep
        from bpexp.experiments import get as experiment_module
        from bpexp.errors import UserError
        config.register_schemas()
        with initialize_config_dir(version_base="1.3", config_dir=str(config.CONF_DIR)):
            tree = OmegaConf.to_container(compose("config", overrides=[
                "+experiment=lr_sweep", "optimizer=heavy_ball", "train.steps=20",'''
        ''' "train.record_every=5",
                "sweep.seeds=2", "sweep.lr.stop=0.1", "sweep.lr.num=4"]), resolve=True)
        cfg = config.build(tree, experiment_module("lr_sweep"))
        ds = make.dataset(cfg)
        grid, fixed = make.grid(cfg)
        final = {impl: sweep.run_grid(make.spec(cfg, ds, impl=impl), ds.X, ds.Y, grid, fixed,
                                      progress=False).metrics["final_loss"]'''
        ''' for impl in ("manual", "optax")}
        tree["optimizer"]["beta"] = 1.5
        try:
            config.build(tree, experiment_module("lr_sweep"))
            rejected = None
        except UserError as e:
            rejected = str(e)
        print(json.dumps({"options": config.group_options("optimizer"), "beta": cfg.optimizer.beta,
                          "lr": cfg.optimizer.lr, "grid": list(grid.axes), "fixed": fixed,
                          "manual": final["manual"].tolist(), "optax": final["optax"].tolist(),
                          "rejected": rejected}))
    ''', tmp_path)
    assert "heavy_ball" in out["options"]
    assert out["beta"] == 0.5 and out["lr"] == 0.05 and out["fixed"]["beta"] == 0.5
    np_manual, np_optax = sum(out["manual"], []), sum(out["optax"], [])
    assert all(abs(a - b) <= 1e-5 * abs(b) for a, b in zip(np_manual, np_optax))
    assert out["rejected"] == "optimizer.beta=1.5 must be in [0, 1)"


def test_a_new_optimizer_row_joins_the_optimizers_experiment(tmp_path):
    """One row (with its stability bound and lr ranges) and the optimizers experiment runs it
    beside the others, through the command line, on the network and on the quadratic."""
    out = run_python('''
        load_edited("bpexp.optim", "OPTIMIZERS: dict[str, Optimizer] = {",
                    before="def heavy_ball(lr, beta=0.5):\\n"
                           "    def update(g, s, params=None):\\n"
                           "        v = jax.tree.map(lambda v_, g_:'''
        ''' _like(beta, g_) * v_ + g_, s.v, g)\\n"
                           "        return jax.tree.map(lambda v_: -_like(lr, v_) * v_, v),'''
        ''' MomentumState(v=v)\\n"
                           "    return optax.GradientTransformation(\\n"
                           "        lambda p:'''
        ''' MomentumState(v=jax.tree.map(jnp.zeros_like, p)), update)\\n\\n\\n",
                    after="\\n    \\"heavy_ball\\": Optimizer(heavy_ball,'''
        ''' lambda hp: optax.sgd(hp[\\"lr\\"], "
                          "momentum=hp[\\"beta\\"]), 0.05, {\\"beta\\": 0.5},'''
        ''' \\"v = beta v + g ; w -= lr v\\", "
                          "lambda lam, hp: 2 * (1 + hp[\\"beta\\"]) / lam, \\"\\","'''
        ''' " (0.01, 1.0), (0.002, 0.1)),")
        import json, sys
        from pathlib import Path
        from bpexp.__main__ import main
        from bpexp.cli import run
        sys.argv = ["bpexp", "+experiment=optimizers", "outputs.root=out", "train.steps=20",
                    "experiment.lr_num=3", "experiment.quad_lr_num=4", "experiment.quad_steps=40",
                    "experiment.path_steps=10", "data.m=100", "sweep.seeds=1",'''
        ''' "sweep.progress=false"]
        try:
            run(main)
        except SystemExit as e:
            assert not e.code, e.code
        s = json.loads(next(Path("out/optimizers").glob("2*/summary.json")).read_text())
        q = s["problems"]["quadratic"]
        print(json.dumps({"net": sorted(s["problems"]["digits"]), "quad": sorted(q),
                          "hb": q["heavy_ball"], "kappa": s["quadratic"]["kappa"]}))
    ''', tmp_path)
    assert "heavy_ball" in out["net"] and "heavy_ball" in out["quad"]
    hb = out["hb"]
    assert len(hb["lrs"]) == 4 and abs(hb["lrs"][0] - 0.002) < 1e-12
    assert abs(hb["lrs"][-1] - 0.1) < 1e-12
    # its own bound: heavy ball diverges past 2 (1 + beta) / lambda_max = 3 / kappa on the quadratic
    bound = 3.0 / out["kappa"]
    assert abs(hb["stability_bound"] - bound) < 1e-12 * bound
    for lr, div in zip(hb["lrs"], hb["diverged"]):
        if lr < 0.9 * bound:
            assert not div, lr
