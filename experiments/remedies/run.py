"""The remedies' computation: every remedy x depth x seed through the padded engine."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import make
from bpexp.experiments._common import load_data
from bpexp.experiments.depth_sweep import engine
from bpexp.experiments.depth_sweep.engine import make_train
from bpexp.experiments.depth_sweep.theory import attenuation_bound
from bpexp.experiments.remedies import bn
from bpexp.experiments.remedies import width as finite_width
from bpexp.experiments.remedies.theory import REMEDIES, remedy_predicted_dz


@dataclass
class RemedyResult:
    """Per run = (remedy, depth, seed); ``layer`` holds l = 1..L at index l - 1 (NaN beyond
    the depth-D net), ``pair`` the pair (l, l + 1) at index l - 1. dz_l = dL/dz_l; its per-unit
    RMS is ||dz_l||_F / sqrt(width_l) (the sqrt(m) is common to all layers)."""
    n: int
    m: int
    d_out: int
    width: int
    lr: float
    remedies: list                      # [remedy] names of REMEDIES
    depths: list                        # [depth]
    seeds: np.ndarray                   # [seed]
    grad_norm_init: np.ndarray          # [remedy, depth, seed, layer] ||dW_l||_F at init
    grad_norm_final: np.ndarray         # [remedy, depth, seed, layer] after training
    dz_rms_init: np.ndarray             # [remedy, depth, seed, layer] per-unit RMS of dz_l
    fprime_sq_init: np.ndarray          # [remedy, depth, seed, layer] mean f'(y_l)^2, l <= D
    z_std_init: np.ndarray              # [remedy, depth, seed, layer] batch std of z_l (BN)
    bn_gain_sq_init: np.ndarray         # [remedy, depth, seed, layer] E[(f'/sigma_B)^2] (BN)
    ratio_measured_dz: np.ndarray       # [remedy, depth, seed, pair] RMS dz_l / RMS dz_l+1
    ratio_predicted_dz: np.ndarray      # [remedy, depth, seed, pair] remedy_predicted_dz
    ratio_first_last: np.ndarray        # [remedy, depth, seed] ||dW_1|| / ||dW_L|| at init
    dz_first_last: np.ndarray           # [remedy, depth, seed] RMS dz_1 / RMS dz_L at init
    dz_first_last_predicted: np.ndarray  # [remedy, depth, seed] product of the predictions
    bound: np.ndarray                   # [remedy, depth, seed] fmax^D prod ||W_l||_2 (plain)
    loss: np.ndarray                    # [remedy, depth, seed, step]
    class_entropy: float = float("nan")  # -sum_c p_c ln p_c of the labels (the loss of the prior)
    relu_width: dict | None = None      # width.study: ReLU + He at finite width (summary form)
    relu_width_sq: np.ndarray | None = None  # [width, width_seed, layer, example] ||dz_l||^2
    bn_parts: dict | None = None        # bn.decompose: the batch-norm factor in three parts

    def dataset(self):
        import xarray as xr

        L = max(self.depths) + 1
        run = ("remedy", "depth", "seed")
        data = {}
        for k, v in vars(self).items():
            if isinstance(v, np.ndarray) and v.ndim >= 3 and k != "relu_width_sq":
                tail = {L: ("layer",), L - 1: ("pair",)}.get(v.shape[-1]) if v.ndim == 4 else ()
                data[k] = (run + (("step",) if k == "loss" else tail), v)
        coords = {"remedy": list(self.remedies), "depth": list(self.depths),
                  "seed": np.asarray(self.seeds), "layer": np.arange(1, L + 1),
                  "pair": np.arange(1, L), "step": np.arange(self.loss.shape[-1])}
        if self.relu_width_sq is not None:
            data["relu_width_sq_norms"] = (("width", "width_seed", "layer", "example"),
                                           self.relu_width_sq)
            coords.update(width=[int(w) for w in self.relu_width["widths"]],
                          width_seed=self.relu_width["seeds"],
                          example=np.arange(self.relu_width_sq.shape[-1]))
        return xr.Dataset(data, coords=coords)


def compute_remedies(cfg, run) -> RemedyResult:
    """Every remedy x depth x seed: one compile per (activation, residual, norm), shared by the
    remedies that differ only in the init (the depth is traced)."""
    P = cfg.experiment
    ds = load_data(cfg, run)
    dtype = make.dtype(cfg)
    X, Y = jnp.asarray(ds.X), jnp.asarray(ds.Y)
    seeds = make.seed_values(cfg.sweep.seeds, cfg.seed)
    depths, names = sorted(set(P.depths)), list(P.remedies)
    dmax, steps, lr, h = max(depths), cfg.train.steps, cfg.optimizer.lr, P.width
    out, L = cfg.model.output, dmax + 1
    shp = (len(names), len(depths), len(seeds))
    M = {k: np.full(shp + (L,), np.nan) for k in ("grad_norm_init", "grad_norm_final",
                                                  "dz_rms_init", "fprime_sq_init", "z_std_init",
                                                  "bn_gain_sq_init")}
    M.update({k: np.full(shp + (dmax,), np.nan) for k in ("ratio_measured_dz",
                                                          "ratio_predicted_dz")})
    M.update({k: np.full(shp, np.nan) for k in ("ratio_first_last", "dz_first_last",
                                                 "dz_first_last_predicted", "bound")})
    M["loss"] = np.full(shp + (steps + 1,), np.nan)
    scale, S = cfg.model.init_scale, len(seeds)
    # every remedy starts from the same uniform draws (drawn once); remedies that differ only
    # in the init share one compiled engine and one call per depth (runs = (init, seed))
    draws = engine.draws_fn(ds.n, h, ds.d_out, dmax, jnp.dtype(dtype))(
        jnp.asarray(seeds, jnp.int32))
    groups = {}
    for ri, name in enumerate(names):
        r = REMEDIES[name]
        groups.setdefault((r.activation, r.residual, r.norm), []).append(ri)

    def chain(key, ris):
        """One engine group: its compile (with the first depth), then every depth."""
        act, residual, norm = key
        inits = tuple(REMEDIES[names[ri]].init for ri in ris)
        fn = make_train(act, out, steps, inits, h, dmax, dtype, residual, norm,
                        from_draws=True)
        label = "+".join(names[ri] for ri in ris)
        for di, D in enumerate(depths):
            with run.timed(f"remedy_{label}_depth{D}" + ("_and_compile" if di == 0 else "")):
                p0_all, hist_all = jax.device_get(fn(
                    draws, jnp.asarray([scale] * len(ris), dtype), X, Y, D, lr))
            with np.errstate(divide="ignore", invalid="ignore"):
                for k, ri in enumerate(ris):
                    p0, hist = jax.tree.map(lambda a: a[k * S:(k + 1) * S], (p0_all, hist_all))
                    _measure(M, (ri, di), REMEDIES[names[ri]], D, h, ds.d_out, scale, p0, hist)

    # the engine groups (each fills its own remedies' slices of M) and the two studies are
    # independent: they run in threads (XLA compiles and runs outside the GIL), the largest
    # first; the same programs and numbers, in about half the wall time on two cores
    jobs = [functools.partial(chain, key, ris) for key, ris in
            sorted(groups.items(), key=lambda kv: -len(kv[1]) - (kv[0][2] != "none"))]
    res = RemedyResult(n=ds.n, m=ds.m, d_out=ds.d_out, width=h, lr=lr, remedies=names,
                       depths=depths, seeds=seeds, **M)
    jobs += _studies(cfg, run, res, X, Y, dtype, draws)
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        for f in [pool.submit(j) for j in jobs]:
            f.result()
    freq = np.asarray(ds.Y, np.float64).mean(axis=1)
    freq = freq[freq > 0]
    res.class_entropy = float(-freq @ np.log(freq))
    return res


def _measure(M, ix, r, D, h, d_out, scale, p0, hist):
    """Fill run (remedy, depth) ``ix`` of the arrays ``M`` from one engine call's initial
    params ``p0`` and history ``hist`` of that remedy's seeds."""
    Ld = D + 1
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    M["grad_norm_init"][ix][..., :Ld] = f64(hist["grad_norm"][:, 0, :Ld])
    M["grad_norm_final"][ix][..., :Ld] = f64(hist["grad_norm"][:, -1, :Ld])
    width = np.array([h] * D + [d_out], np.float64)
    rms = f64(hist["delta_norm"][:, 0, :Ld]) / np.sqrt(width)
    M["dz_rms_init"][ix][..., :Ld] = rms
    M["fprime_sq_init"][ix][..., :D] = f64(hist["fprime_sq"][:, 0, :D])
    M["z_std_init"][ix][..., :D] = f64(hist["z_std"][:, 0, :D])
    M["bn_gain_sq_init"][ix][..., :D] = f64(hist["bn_gain_sq"][:, 0, :D])
    M["ratio_measured_dz"][ix][..., :D] = rms[:, :D] / rms[:, 1:Ld]
    g0 = M["grad_norm_init"][ix]
    M["ratio_first_last"][ix] = g0[:, 0] / g0[:, D]
    M["dz_first_last"][ix] = rms[:, 0] / rms[:, D]
    M["loss"][ix] = f64(hist["loss"])
    for si in range(len(p0["W_h"])):
        pr = remedy_predicted_dz(r, D, h, d_out,
                                 M["fprime_sq_init"][ix][si],
                                 M["bn_gain_sq_init"][ix][si], scale)
        M["ratio_predicted_dz"][ix][si, :D] = pr
        M["dz_first_last_predicted"][ix][si] = np.prod(pr)
    if not r.residual and r.norm == "none":   # the rigorous bound (plain nets)
        W_h = f64(p0["W_h"])[:, : D - 1]
        spec = np.concatenate([np.linalg.norm(W_h, ord=2, axis=(-2, -1)),
                               np.linalg.norm(f64(p0["W_out"]), ord=2,
                                              axis=(-2, -1))[:, None]], axis=1)
        M["bound"][ix] = [attenuation_bound(r.activation, D, sp) for sp in spec]


def _studies(cfg, run, res, X, Y, dtype, draws=None) -> list:
    """The two studies at the deepest depth, as jobs that fill ``res``: ReLU + He over widths
    (finding 5) and the batch-norm factor in three parts."""
    P, dmax, out = cfg.experiment, max(res.depths), cfg.model.output
    jobs = []
    if P.widths and dmax >= 2:    # the law needs two hidden layers (one hidden pair)
        wseeds = make.seed_values(P.width_seeds, cfg.seed)

        def widths():
            with run.timed("relu_width_study"):
                res.relu_width, res.relu_width_sq = finite_width.study(
                    X, Y, dmax, list(P.widths), wseeds, dtype, out)
        jobs.append(widths)
    if "batchnorm" in res.remedies and dmax >= 2:
        def batchnorm():
            with run.timed("batchnorm_decomposition"):
                res.bn_parts = bn.decompose(X, Y, dmax, res.width, res.seeds, dtype, out,
                                            draws)
        jobs.append(batchnorm)
    return jobs


def _med(a):
    return float(np.median(a))
