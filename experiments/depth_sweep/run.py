"""The depth sweep's computation: every width x depth x init x seed through the padded
engine, and the per-layer theory beside it."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from bpexp import make
from bpexp.experiments._common import load_data
from bpexp.experiments.depth_sweep.engine import make_train
from bpexp.experiments.depth_sweep.theory import attenuation_bound, geomean, predicted_ratios


LAYER_METRICS = ("grad_norm_init", "grad_norm_final", "delta_norm_init", "delta_norm_final",
                 "act_norm_init", "fprime_sq_init", "fprime_sq_final", "spec_norm_init")


RATIO_METRICS = ("ratio_measured", "ratio_measured_final", "ratio_measured_dz",
                 "ratio_predicted", "ratio_predicted_weight")


METRICS = LAYER_METRICS + RATIO_METRICS + ("loss", "bound", "delta_attenuation")


@dataclass
class Result:
    """Per run = (width, depth, init, seed). The layer axis holds l = 1..L at index l - 1
    (L = D + 1 weight matrices; Dmax + 1 entries, NaN beyond the depth-D net); the pair axis
    holds the layer pair (l, l + 1) at index l - 1, l = 1..D (Dmax entries). dz_l = dL/dz_l
    (the back-propagated delta_l)."""
    n: int                              # input features
    m: int                              # examples (full batch)
    d_out: int                          # outputs (classes)
    depths: list                        # [depth] distinct D, ascending
    widths: list                        # [width] distinct h as given; the first is the headline
    inits: list                         # [init] scheme names
    seeds: np.ndarray                   # [seed]
    scale: dict                         # init -> scale of its weights
    grad_norm_init: np.ndarray          # [width, depth, init, seed, layer] ||dW_l||_F at init
    grad_norm_final: np.ndarray         # [width, depth, init, seed, layer] after training
    delta_norm_init: np.ndarray         # [width, depth, init, seed, layer] ||dz_l||_F at init
    delta_norm_final: np.ndarray        # [width, depth, init, seed, layer] after training
    act_norm_init: np.ndarray           # [width, depth, init, seed, layer] ||a_{l-1}||_F, a_0 = X
    fprime_sq_init: np.ndarray          # [width, depth, init, seed, layer] mean f'(z_l)^2, l <= D
    fprime_sq_final: np.ndarray         # [width, depth, init, seed, layer] after training
    spec_norm_init: np.ndarray          # [width, depth, init, seed, layer] ||W_l||_2, l >= 2
    ratio_measured: np.ndarray          # [width, depth, init, seed, pair] ||dW_l|| / ||dW_l+1||
    ratio_measured_final: np.ndarray    # [width, depth, init, seed, pair] after training
    ratio_measured_dz: np.ndarray       # [width, depth, init, seed, pair] RMS dz_l / RMS dz_l+1
    ratio_predicted: np.ndarray         # [width, depth, init, seed, pair] Glorot factor
    ratio_predicted_weight: np.ndarray  # [width, depth, init, seed, pair] predicted dW ratio
    loss: np.ndarray                    # [width, depth, init, seed, step] loss entering step t
    bound: np.ndarray                   # [width, depth, init, seed] fmax^D prod ||W_l||_2
    delta_attenuation: np.ndarray       # [width, depth, init, seed] ||dz_1|| / ||dz_L|| at init
    class_entropy: float = float("nan")  # -sum_c p_c ln p_c of the labels (the prior's loss)

    def metrics(self) -> dict:
        """The per-run arrays by name, in metrics.zarr order."""
        return {k: getattr(self, k) for k in METRICS}


def compute(cfg, run) -> Result:
    """Long because it runs the experiment's parts one after another (each a few lines) sharing
    their inputs."""
    P = cfg.experiment
    act, out = cfg.model.activation, cfg.model.output
    ds = load_data(cfg, run)
    dtype = make.dtype(cfg)
    X, Y = jnp.asarray(ds.X), jnp.asarray(ds.Y)
    seeds = make.seed_values(cfg.sweep.seeds, cfg.seed)
    depths, widths, inits = sorted(set(P.depths)), list(dict.fromkeys(P.widths)), list(P.inits)
    dmax, steps, lr = max(depths), cfg.train.steps, cfg.optimizer.lr
    nI, nS, Lmax = len(inits), len(seeds), dmax + 1
    scale = {i: (P.normal_scale if i == "normal" else cfg.model.init_scale) for i in inits}
    shp = (len(widths), len(depths), nI, nS)
    M = {k: np.full(shp + (Lmax,), np.nan) for k in LAYER_METRICS}
    M.update({k: np.full(shp + (dmax,), np.nan) for k in RATIO_METRICS})
    M["loss"] = np.full(shp + (steps + 1,), np.nan)
    M["bound"], M["delta_attenuation"] = np.full(shp, np.nan), np.full(shp, np.nan)

    def per(a):  # [run, ...] -> [init, seed, ...]: runs are scheme-major
        return np.asarray(a, np.float64).reshape(nI, nS, *a.shape[1:])

    seeds_arr = jnp.asarray(seeds, jnp.int32)
    scales = jnp.asarray([scale[i] for i in inits], dtype)
    # a diverged run (NaN/inf norms) is data: its ratios become NaN without warnings
    with np.errstate(divide="ignore", invalid="ignore"):
        for wi, h in enumerate(widths):
            train_fn = make_train(act, out, steps, tuple(inits), h, dmax, dtype)
            for di, D in enumerate(depths):
                name = f"width{h}_compile_and_depth{D}" if di == 0 else f"width{h}_depth{D}"
                with run.timed(name):
                    p0, hist = jax.device_get(train_fn(seeds_arr, scales, X, Y, D, lr))
                if di == 0:  # ||W_l||_2 (float64) of every candidate W_2..W_L: stack, output
                    W_h = np.asarray(p0["W_h"], np.float64).reshape(nI, nS, -1, h, h)
                    sn_h = np.linalg.norm(W_h, ord=2, axis=(-2, -1))  # [init, seed, S]
                    sn_out = np.linalg.norm(np.asarray(p0["W_out"], np.float64), ord=2,
                                            axis=(-2, -1)).reshape(nI, nS)
                ix, L = (wi, di), D + 1
                for k, t in (("init", 0), ("final", -1)):
                    M[f"grad_norm_{k}"][ix] = per(hist["grad_norm"][:, t])[..., :Lmax]
                    M[f"delta_norm_{k}"][ix] = per(hist["delta_norm"][:, t])[..., :Lmax]
                    M[f"fprime_sq_{k}"][ix][..., :D] = per(hist["fprime_sq"][:, t])[..., :D]
                M["act_norm_init"][ix][..., :L] = per(hist["act_norm"][:, 0])[..., :L]
                M["loss"][ix] = per(hist["loss"])
                spec = np.concatenate([sn_h[..., : D - 1], sn_out[..., None]], axis=-1)
                M["spec_norm_init"][ix][..., 1:L] = spec  # W_2..W_L
                for k, g in (("ratio_measured", M["grad_norm_init"][ix]),
                             ("ratio_measured_final", M["grad_norm_final"][ix])):
                    M[k][ix][..., :D] = g[..., :D] / g[..., 1:L]
                width = np.array([h] * D + [ds.d_out], np.float64)             # rows of delta_l
                dn = M["delta_norm_init"][ix]
                rms = dn[..., :L] / np.sqrt(width)                 # per-unit RMS (x sqrt m)
                M["ratio_measured_dz"][ix][..., :D] = rms[..., :D] / rms[..., 1:L]
                M["delta_attenuation"][ix] = dn[..., 0] / dn[..., D]
                for ii, scheme in enumerate(inits):
                    for si in range(nS):
                        gl, pw = predicted_ratios(D, h, ds.d_out, scheme, scale[scheme],
                                                  M["fprime_sq_init"][ix][ii, si],
                                                  M["act_norm_init"][ix][ii, si])
                        M["ratio_predicted"][ix][ii, si, :D] = gl
                        M["ratio_predicted_weight"][ix][ii, si, :D] = pw
                        M["bound"][ix][ii, si] = attenuation_bound(act, D, spec[ii, si])
    freq = np.asarray(ds.Y, np.float64).mean(axis=1)
    freq = freq[freq > 0]
    return Result(n=ds.n, m=ds.m, d_out=ds.d_out, depths=depths, widths=widths, inits=inits,
                  seeds=seeds, scale=scale, class_entropy=float(-freq @ np.log(freq)), **M)


def dataset(res: Result, steps: int):
    """The Result as an xarray.Dataset: dims (width, depth, init, seed) and then ``layer``
    (l = 1..Dmax + 1), ``pair`` (the layer pair (l, l + 1), l = 1..Dmax) or ``step``."""
    import xarray as xr

    dims = ("width", "depth", "init", "seed")
    Lmax = max(res.depths) + 1
    tail = {**{k: ("layer",) for k in LAYER_METRICS}, **{k: ("pair",) for k in RATIO_METRICS},
            "loss": ("step",), "bound": (), "delta_attenuation": ()}
    return xr.Dataset({k: (dims + tail[k], v) for k, v in res.metrics().items()},
                      coords={"width": list(res.widths), "depth": list(res.depths),
                              "init": list(res.inits), "seed": np.asarray(res.seeds),
                              "layer": np.arange(1, Lmax + 1), "pair": np.arange(1, Lmax),
                              "step": np.arange(steps + 1)})


def _factor(ratios, D):
    """Median over seeds of the geometric-mean ratio of the D layer pairs; ``ratios``
    [seed, pair]."""
    return float(np.median([geomean(r[:D]) for r in ratios]))
