"""How do gradients shrink with depth in a sigmoid MLP, and does the initialization matter?

Question: For MLPs of 1..10 hidden sigmoid layers on digits (softmax + cross-entropy), how does
||dL/dW_l|| fall from the output layer down to the input layer, at init and after full-batch
GD, for the standard, Xavier (Glorot normalized) and N(0, 1) initializations?
Theory: delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l). Since sigma' <= 1/4, the back-propagated
signal obeys ||delta_1|| <= 0.25^D prod_{k>=2} ||W_k||_2 ||delta_L|| (D hidden layers;
0.25^10 ~ 9.5e-7); tanh and relu have f' <= 1, so for them only the ||W|| product remains.
Glorot & Bengio (2010): per layer the gradient variance changes by n Var(W) E[f'(z)^2], so the
norms by sqrt(n Var(W) E[f'(z)^2]) (n = fan-out of W_{l+1}); standard init U[+-1/sqrt(n)]
has n Var(W) = 1/3, Xavier 1, N(0, 1) n = 32 (saturating sigmoids then make E[f'^2] small).
Expected: at init the norms fall geometrically towards the input, by about x0.13 per layer
for the standard init and x0.23 for Xavier (E[f'^2] ~ 0.055); the measured ratios match the
Glorot prediction within 10-20% between hidden layers and a factor ~2 at the ends; the bound
holds (loosely); deep standard/Xavier nets barely move in 100 GD steps (loss stays at the
class-frequency entropy 2.295, just under ln 10) while
shallow ones train, and N(0, 1) keeps the largest gradients in the deep nets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker
import numpy as np
from jax import lax

from bpexp import make, models, plots, primitives, report, theory, train
from bpexp.errors import UserError
from bpexp.experiments._common import command, load_data, question
from bpexp.plots import plt

USES = ("model", "data", "optimizer", "train", "sweep")  # make.check builds them first


@dataclass
class Params:
    name: str = "depth_sweep"
    depths: list = field(default_factory=lambda: list(range(1, 11)))  # hidden layers D
    widths: list = field(default_factory=lambda: [32])  # hidden width; the first is the headline
    inits: list = field(default_factory=lambda: ["standard", "xavier", "normal"])
    normal_scale: float = 1.0    # the "normal" scheme is N(0, normal_scale^2)


def validate(cfg):
    P = cfg.experiment
    if cfg.model.name != "mlp":
        raise UserError(f"model.name={cfg.model.name!r} is not supported by depth_sweep; "
                        "allowed: mlp")
    if cfg.optimizer.name != "gd":
        raise UserError(f"optimizer.name={cfg.optimizer.name!r} is not supported by depth_sweep; "
                        "allowed: gd (full-batch)")
    if cfg.train.batch_size not in (0, None) and (cfg.data.m == 0
                                                  or cfg.train.batch_size < cfg.data.m):
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not supported by "
                        "depth_sweep; allowed: 0 (full batch)")
    for key, vals in (("depths", P.depths), ("widths", P.widths)):
        if not (vals and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                             for v in vals)):
            raise UserError(f"experiment.{key}={vals!r} is not allowed; "
                            "allowed: a non-empty list of ints >= 1")
    if not (P.inits and all(i in models.INITS for i in P.inits)
            and len(set(P.inits)) == len(P.inits)):
        raise UserError(f"experiment.inits={P.inits!r} is not allowed; allowed: a non-empty "
                        f"list of distinct ones of {', '.join(models.INITS)}")
    # inf would make every weight of the normal runs inf: nothing left to measure
    if not (math.isfinite(P.normal_scale) and P.normal_scale > 0):
        raise UserError(f"experiment.normal_scale={P.normal_scale!r} is not allowed; "
                        "allowed: a finite number > 0")


# ---------------------------------------------------------------- padded deep MLP
# This experiment's own training engine (make_train says why it is not the library's).
# p = {W_in (h, n), b_in (h, 1), W_h (S, h, h), b_h (S, h, 1), W_out (d_out, h),
# b_out (d_out, 1)} with S = max(Dmax - 1, 1) stacked hidden-to-hidden layers. The net of depth
# D uses W_in, the first D - 1 of W_h and W_out: it is the library's mlp with W1 = W_in,
# W_l = W_h[l-2] (l = 2..D), W_{D+1} = W_out (checked against models.get("mlp").grad in the
# tests).

def stack_to_mlp(p, D):
    """The library's mlp params ``W1..W_{D+1}, b1..`` of the depth-D net inside ``p``."""
    q = {"W1": p["W_in"], "b1": p["b_in"]}
    for l in range(2, D + 1):
        q[f"W{l}"], q[f"b{l}"] = p["W_h"][l - 2], p["b_h"][l - 2]
    q[f"W{D + 1}"], q[f"b{D + 1}"] = p["W_out"], p["b_out"]
    return q


def uniform_draws(key, n, h, d_out, dmax, dtype):
    """One draw u ~ U(-1, 1) per weight of the padded net (primitives.uniforms: one threefry
    call), laid out for the padded stack. Every scheme is built from the same u (common random
    numbers across schemes and, because the layers are nested, across depths)."""
    return primitives.uniforms(key, [(h, n), (max(dmax - 1, 1), h, h), (d_out, h)], dtype)


weight_from_uniform = primitives.weight_from_uniform  # the library's scheme map from U(-1, 1)


def init_stack(draws, scheme, scale):
    """Padded params of one (seed, scheme) from ``uniform_draws``; biases 0 (as
    models.mlp_init)."""
    u_in, u_h, u_out = draws
    (h, n), (S, _, _), (d_out, _) = u_in.shape, u_h.shape, u_out.shape
    return {"W_in": weight_from_uniform(u_in, scheme, n, h, scale),
            "b_in": jnp.zeros((h, 1), u_in.dtype),
            "W_h": weight_from_uniform(u_h, scheme, h, h, scale),
            "b_h": jnp.zeros((S, h, 1), u_in.dtype),
            "W_out": weight_from_uniform(u_out, scheme, h, d_out, scale),
            "b_out": jnp.zeros((d_out, 1), u_in.dtype)}


def _norm(A):
    """||A||_F, scaled by max |A| first so that float32 squares of tiny deep-net gradients do
    not underflow to 0."""
    s = jnp.max(jnp.abs(A))
    s = jnp.where(s > 0, s, 1.0)
    return s * jnp.sqrt(jnp.sum(jnp.square(A / s)))


def forward_backward(p, X, Y, D, activation, output):
    """Loss, gradient (same pytree as p; unused padded layers get 0) and per-layer statistics of
    the depth-D net, 1 <= D <= S + 1. ``D`` may be traced: both passes are loops with a
    data-dependent bound, so one compile serves every depth.

    Layer index t = 0..D (0-based; layer t+1 of the notes, t = D is the output layer):
      gW[t] = ||dL/dW_{t+1}||_F, dn[t] = ||delta_{t+1}||_F, fp2[t] = mean f'(z_{t+1})^2 (t < D),
      an[t] = ||a_t||_F (a_0 = X). Entries beyond the net are NaN."""
    S, h, m = p["W_h"].shape[0], p["W_in"].shape[0], X.shape[1]
    Lmax = S + 2
    nan = jnp.full((Lmax,), jnp.nan, X.dtype)
    # forward: a_1 = f(W_in X + b_in); a_{j+1} = f(W_h[j-1] a_j + b_h[j-1]), j = 1..D-1
    z = p["W_in"] @ X + p["b_in"]
    a = primitives.activate(activation, z)
    A = jnp.zeros((S + 1, h, m), X.dtype).at[0].set(a)             # A[j] = a_{j+1}
    F = jnp.zeros((S + 1, h, m), X.dtype).at[0].set(primitives.activation_prime(activation, z, a))

    def fwd(j, c):
        a, A, F = c
        z = p["W_h"][j - 1] @ a + p["b_h"][j - 1]                 # z_{j+1} = W_{j+1} a_j + b_{j+1}
        a = primitives.activate(activation, z)                         # a_{j+1} = f(z_{j+1})
        return a, A.at[j].set(a), F.at[j].set(primitives.activation_prime(activation, z, a))

    a, A, F = lax.fori_loop(1, D, fwd, (a, A, F))
    zL = p["W_out"] @ a + p["b_out"]                               # z_L, L = D + 1
    loss = primitives.output(output).loss(zL, Y)
    # backward (Lecture 5): delta_L from the loss; delta_l = (W_{l+1}^T delta_{l+1}) * f'(z_l)
    dL = primitives.output(output).delta(zL, Y)
    g_out = dL @ a.T                                               # dW_L = delta_L a_D^T
    delta = (p["W_out"].T @ dL) * F[D - 1]                         # delta_D
    gWn = nan.at[D].set(_norm(g_out))
    dn = nan.at[D].set(_norm(dL)).at[D - 1].set(_norm(delta))

    def bwd(i, c):
        delta, gW_h, gb_h, gWn, dn = c                             # delta = delta_{j+1}
        j = D - 1 - i
        gw = delta @ A[j - 1].T                                    # dW_{j+1} = delta_{j+1} a_j^T
        gW_h = gW_h.at[j - 1].set(gw)
        gb_h = gb_h.at[j - 1].set(jnp.sum(delta, axis=1, keepdims=True))
        delta = (p["W_h"][j - 1].T @ delta) * F[j - 1]             # delta_j
        return delta, gW_h, gb_h, gWn.at[j].set(_norm(gw)), dn.at[j - 1].set(_norm(delta))

    delta, gW_h, gb_h, gWn, dn = lax.fori_loop(
        0, D - 1, bwd, (delta, jnp.zeros_like(p["W_h"]), jnp.zeros_like(p["b_h"]), gWn, dn))
    g_in = delta @ X.T                                             # dW_1 = delta_1 X^T
    g = {"W_in": g_in, "b_in": jnp.sum(delta, axis=1, keepdims=True), "W_h": gW_h, "b_h": gb_h,
         "W_out": g_out, "b_out": jnp.sum(dL, axis=1, keepdims=True)}
    t = jnp.arange(Lmax)
    hidden = t[: S + 1] < D
    fp2 = jnp.where(hidden, jnp.mean(F * F, axis=(1, 2)), jnp.nan)
    an = jnp.concatenate([_norm(X)[None], jnp.where(hidden, jax.vmap(_norm)(A), jnp.nan)])
    stats = {"grad_norm": gWn.at[0].set(_norm(g_in)), "delta_norm": dn, "fprime_sq": fp2,
             "act_norm": an, "loss": loss}
    return loss, g, stats


def make_train(activation, output, steps, schemes, h, dmax, dtype):
    """The experiment's training engine: one compiled function for every depth of one width.

    Why not the sweep engine with the library's mlp: there the depth is part of the params'
    structure, so each depth would compile anew; here it is a traced loop bound over the padded
    stack (forward_backward), so one compile serves every depth (the default sweep compiles
    once). The depth-D net is the library's mlp: the tests check loss, gradient, deltas and
    the GD step against models.get("mlp") and grads.mlp.

    Draws the initial params of every (scheme, seed) run and runs ``steps`` full-batch GD steps
    w -= lr g, measuring the net before every step and after the last.
    (seeds [seed], scales [scheme], X, Y, D, lr) -> (p0, hist), hist[name]: [run, steps + 1, ...]
    as in forward_backward; runs = (scheme, seed) scheme-major. Keys as in the sweep engine:
    k_init, k_batch = split(PRNGKey(seed))."""
    def one(p, X, Y, D, lr):
        def step(p, _):  # statistics of the params entering the step, then w -= lr g
            _, g, stats = forward_backward(p, X, Y, D, activation, output)
            return jax.tree.map(lambda w, d: w - lr * d, p, g), stats

        # steps + 1 passes: the last one only measures the trained net (its update is dropped)
        _, hist = lax.scan(step, p, None, length=steps + 1)
        return hist

    def all_runs(seeds, scales, X, Y, D, lr):
        n, d_out = X.shape[0], Y.shape[0]
        keys = jax.vmap(lambda s: train.run_keys(s)[0])(seeds)
        draws = jax.vmap(lambda k: uniform_draws(k, n, h, d_out, dmax, dtype))(keys)
        ps = [jax.vmap(lambda u: init_stack(u, s, scales[i]))(draws)
              for i, s in enumerate(schemes)]
        p0 = jax.tree.map(lambda *a: jnp.concatenate(a), *ps)
        return p0, jax.vmap(one, in_axes=(0, None, None, None, None))(p0, X, Y, D, lr)

    return jax.jit(all_runs)


# ---------------------------------------------------------------- theory from the measurements
def predicted_ratios(D, h, d_out, scheme, scale, fprime_sq, act_norm):
    """Per layer l = 1..D (numpy float64): the Glorot ratio and the predicted weight-gradient
    ratio ||dW_l|| / ||dW_{l+1}||.

    delta_l = f'(z_l) * (W_{l+1}^T delta_{l+1}) sums n = fan-out(W_{l+1}) terms (n = h inside,
    d_out below the output), so per unit
      Var(delta_l) = n Var(W_{l+1}) E[f'(z_l)^2] Var(delta_{l+1}):
      glorot[l] = sqrt(n Var(W_{l+1}) E[f'(z_l)^2])                    (theory.glorot_ratio)
    is the ratio of the per-unit RMS of dL/dz_l and dL/dz_{l+1}. Frobenius norms add the widths
    and dW_l = delta_l a_{l-1}^T the activations (treated as independent of delta):
      ||dW_l|| / ||dW_{l+1}|| ~ glorot[l] sqrt(h / n) ||a_{l-1}|| / ||a_l||,
    which is glorot[l] itself between two hidden layers of sigmoids (a ~ 0.5 everywhere).
    ``fprime_sq``: [>= D] E[f'(z_l)^2], l = 1..D; ``act_norm``: [>= D + 1] ||a_0 = X||..||a_D||.
    Returns (glorot [D], weight-gradient ratio [D])."""
    fan_out = np.array([h] * (D - 1) + [d_out], np.float64)
    var = np.array([theory.init_variance(scheme, h, int(n), scale) for n in fan_out])
    glorot = theory.glorot_ratio(fan_out, var, np.asarray(fprime_sq[:D], np.float64))
    a = np.asarray(act_norm[: D + 1], np.float64)
    return glorot, glorot * np.sqrt(h / fan_out) * a[:-1] / a[1:]


def fprime_max(activation):
    """max_z f'(z): 1/4 for the sigmoid (theory.sigmoid_prime_max), 1 for tanh and relu."""
    return theory.sigmoid_prime_max() if activation == "sigmoid" else 1.0


def attenuation_bound(activation, D, spec_norms):
    """||delta_1|| / ||delta_L|| <= fmax^D prod_{l=2..L} ||W_l||_2 (rigorous: ||(W^T d) * f'||
    <= fmax ||W||_2 ||d||); ``spec_norms`` = ||W_2||_2 .. ||W_L||_2. The sigmoid's fmax^D is
    theory.sigmoid_bound(D) = 0.25^D."""
    fm = theory.sigmoid_bound(D) if activation == "sigmoid" else fprime_max(activation) ** D
    return float(fm * np.prod(np.asarray(spec_norms, np.float64)))


def geomean(a):
    """Geometric mean of positive numbers (NaN if any is not)."""
    a = np.asarray(a, np.float64)
    return float(np.exp(np.mean(np.log(a)))) if a.size and np.all(a > 0) else float("nan")


# ---------------------------------------------------------------- the experiment
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

    def metrics(self) -> dict:
        """The per-run arrays by name, in metrics.npz order."""
        return {k: getattr(self, k) for k in METRICS}


def compute(cfg, run) -> Result:
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
    return Result(n=ds.n, m=ds.m, d_out=ds.d_out, depths=depths, widths=widths, inits=inits,
                  seeds=seeds, scale=scale, **M)


def _factor(ratios, D):
    """Median over seeds of the geometric-mean ratio of the D layer pairs; ``ratios``
    [seed, pair]."""
    return float(np.median([geomean(r[:D]) for r in ratios]))


def save(cfg, run, res: Result) -> dict:
    """metrics.npz: every Result array with its dims and axes. The summary: per width, init
    and depth, medians over seeds."""
    M, depths, widths, inits, scale = res.metrics(), res.depths, res.widths, res.inits, res.scale
    dims = ("width", "depth", "init", "seed")
    arrays = {}
    for k, v in M.items():
        arrays[k], arrays[k + "__dims"] = v, np.array(
            dims + (("step",) if k == "loss" else ("layer",) if v.ndim == 5 else ()))
    run.save_metrics(**arrays, axis__width=np.array(widths), axis__depth=np.array(depths),
                     axis__init=np.array(inits), axis__seed=np.asarray(res.seeds),
                     axis__step=np.arange(cfg.train.steps + 1))

    fmax = fprime_max(cfg.model.activation)

    def med(a):
        return np.median(a, axis=0)

    per_width = {}
    for wi, h in enumerate(widths):
        inits_out = {}
        for ii, scheme in enumerate(inits):
            deps = {}
            for di, D in enumerate(depths):
                ix, L = (wi, di, ii), D + 1
                deps[str(D)] = {
                    "grad_norms_init": med(M["grad_norm_init"][ix])[:L],
                    "grad_norms_final": med(M["grad_norm_final"][ix])[:L],
                    "dz_norms_init": med(M["delta_norm_init"][ix])[:L],
                    "dz_norms_final": med(M["delta_norm_final"][ix])[:L],
                    "ratio_measured": med(M["ratio_measured"][ix])[:D],
                    "ratio_predicted": med(M["ratio_predicted"][ix])[:D],
                    "ratio_measured_dz": med(M["ratio_measured_dz"][ix])[:D],
                    "ratio_predicted_weight": med(M["ratio_predicted_weight"][ix])[:D],
                    "ratio_measured_final": med(M["ratio_measured_final"][ix])[:D],
                    "fprime_sq_init": med(M["fprime_sq_init"][ix])[:D],
                    "factor_measured": _factor(M["ratio_measured"][ix], D),
                    "factor_predicted": _factor(M["ratio_predicted"][ix], D),
                    "factor_measured_dz": _factor(M["ratio_measured_dz"][ix], D),
                    "factor_predicted_weight": _factor(M["ratio_predicted_weight"][ix], D),
                    "delta_attenuation": float(np.median(M["delta_attenuation"][ix])),
                    "bound_with_weight_norms": float(np.median(M["bound"][ix])),
                    "bound_holds": bool(np.all(M["delta_attenuation"][ix] <= M["bound"][ix])),
                    "fprime_max_pow_depth": fmax ** D,
                    "initial_loss": float(np.median(M["loss"][ix][:, 0])),
                    "final_loss": float(np.median(M["loss"][ix][:, -1])),
                    "final_loss_iqr": [float(q) for q in np.percentile(M["loss"][ix][:, -1],
                                                                       [25, 75])],
                    "final_loss_seeds": M["loss"][ix][:, -1]}
            fin = M["fprime_sq_init"][wi, :, ii]
            inits_out[scheme] = {
                "init_scale": scale[scheme],
                "n_var_w_hidden": h * theory.init_variance(scheme, h, h, scale[scheme]),
                "mean_fprime_sq_init": float(np.nanmean(fin)),
                "depths": deps}
        per_width[str(h)] = {"inits": inits_out}
    return {"activation": cfg.model.activation, "output": cfg.model.output,
            "data": cfg.data.name, "m": res.m, "n": res.n, "d_out": res.d_out,
            "widths": widths, "depths": depths, "seeds": res.seeds, "steps": cfg.train.steps,
            "lr": cfg.optimizer.lr, "width": widths[0],
            "inits": per_width[str(widths[0])]["inits"], "by_width": per_width,
            "bound": {"activation": cfg.model.activation, "fprime_max": fmax,
                      "fprime_max_pow_depth": {str(D): fmax ** D for D in depths},
                      "formula": ("||dL/dz_1|| / ||dL/dz_L|| <= fprime_max^D "
                                  "prod_{l=2..D+1} ||W_l||_2"),
                      "note": ("fprime_max = 0.25 for sigmoid; 1 for tanh and relu, whose bound is "
                               "the ||W|| product alone"),
                      "holds_everywhere": bool(np.all(M["delta_attenuation"] <= M["bound"]))}}


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    act, out = cfg.model.activation, cfg.model.output
    steps, lr = cfg.train.steps, cfg.optimizer.lr
    depths, widths, inits, seeds = res.depths, res.widths, res.inits, res.seeds
    # the figures show the headline width
    figs = ["activation.png", "grad_norms_vs_layer.png", "final_loss_vs_depth.png",
            "ratio_measured_vs_predicted.png"]
    plot_activation(act, run.figure(figs[0]))
    plot_grad_norms(depths, inits, res.grad_norm_init[0], res.grad_norm_final[0],
                    res.ratio_predicted_weight[0], act, steps, widths[0], run.figure(figs[1]))
    plot_final_loss(depths, inits, res.loss[0][..., 0], res.loss[0][..., -1], out, steps, lr,
                    widths[0], run.figure(figs[2]))
    plot_ratios(inits, res.ratio_measured_dz[0], res.ratio_predicted[0], res.ratio_measured[0],
                res.ratio_predicted_weight[0], act, widths[0], run.figure(figs[3]))

    Dm, fmax = depths[-1], fprime_max(act)
    header = ["init", "n Var(W)", "E f'(z)^2", "Glorot", "dz ratio", "dW pred.", "dW ratio",
              "|dz_1|/|dz_L|", f"bound {fmax:g}^D*prod|W|", f"loss D={depths[0]}",
              f"loss D={Dm}"]
    rows = []
    for scheme in inits:
        e = summary["inits"][scheme]
        d = e["depths"][str(Dm)]
        rows.append([scheme, e["n_var_w_hidden"], e["mean_fprime_sq_init"],
                     d["factor_predicted"], d["factor_measured_dz"],
                     d["factor_predicted_weight"], d["factor_measured"],
                     d["delta_attenuation"], d["bound_with_weight_norms"],
                     e["depths"][str(depths[0])]["final_loss"], d["final_loss"]])
    title = (f"depth_sweep: {act} MLP width {widths[0]}, D={Dm}, per-layer factors at init "
             f"(geometric means; medians over {len(seeds)} seeds); "
             f"{fmax:g}^{Dm} = {fmax ** Dm:.3g}")
    report.print_table(title, header, rows)
    print("Glorot = sqrt(n Var(W) E[f'(z)^2]) | dz ratio = measured RMS(dL/dz_l)/RMS(dL/dz_l+1) "
          "| dW pred./ratio = predicted/measured ||dW_l||/||dW_l+1||")
    print(f"bound ||dz_1||/||dz_L|| <= {fmax:g}^D prod ||W_l||_2 holds in every run: "
          f"{summary['bound']['holds_everywhere']}")
    per_depth = []
    for scheme in inits:
        for D in depths:
            d = summary["inits"][scheme]["depths"][str(D)]
            per_depth.append([scheme, D, d["grad_norms_init"][0], d["grad_norms_init"][-1],
                              d["factor_predicted"], d["factor_measured_dz"],
                              d["factor_predicted_weight"], d["factor_measured"],
                              d["delta_attenuation"], d["bound_with_weight_norms"],
                              d["initial_loss"], d["final_loss"]])
    after = [[sc, Dm, *(float(np.median(v)) for v in _end_ratios(res, 0, depths.index(Dm), i, Dm)),
              summary["inits"][sc]["depths"][str(Dm)]["final_loss"]]
             for i, sc in enumerate(inits)]
    note = ("f'max = 0.25 for the sigmoid (theory.sigmoid_bound)." if act == "sigmoid" else
            f"Activation {act}: f'max = 1, not 0.25, so the 0.25^D bound does not apply; the "
            "bound column is the ||W||_2 product alone.")
    run.save_report(report.report(
        "Depth sweep: vanishing gradients", question(__doc__),
        command(cfg),
        [("Setup", f"mlp, {act} hidden layers, output `{out}`, data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, d_out={res.d_out}), depths {depths} (D hidden "
                   f"layers, L = D + 1 weight matrices), widths {widths}, inits {inits} (normal = "
                   f"N(0, {P.normal_scale:g}^2)), seeds {[int(s) for s in seeds]}, full-batch GD "
                   f"lr {lr:g} for {steps} steps, {cfg.precision}. dz_l = dL/dz_l (the "
                   "back-propagated delta_l).\n\n"
                   "Per layer pair (l, l+1) at init: *Glorot* = sqrt(n Var(W_{l+1}) "
                   "E[f'(z_l)^2]) (theory.glorot_ratio, theory.init_variance, E[f'^2] measured "
                   "on the pre-activations); *dL/dz ratio measured* = per-unit RMS of dz_l over "
                   "that of dz_{l+1}, the quantity Glorot's factor predicts; *dW ratio measured* "
                   "= ||dL/dW_l||_F / ||dL/dW_{l+1}||_F; *dW ratio predicted* = Glorot x "
                   "sqrt(h/n) x ||a_{l-1}|| / ||a_l|| (width change below the output, input X vs "
                   "sigmoid activations at the first layer; equal to Glorot between hidden "
                   "layers). Table columns are geometric means over the layers of the deepest "
                   "net. Bound: ||dz_1|| / ||dz_L|| <= f'max^D prod_{l>=2} ||W_l||_2 "
                   "(rigorous). " + note),
         (f"Theory vs measurement (D={Dm}, width {widths[0]})",
          report.markdown_table(header, rows)),
         ("Per depth", report.markdown_table(
             ["init", "D", "||dW_1|| init", "||dW_L|| init", "Glorot", "dz ratio meas.",
              "dW ratio pred.", "dW ratio meas.", "|dz_1|/|dz_L|", "bound", "initial loss",
              "final loss"], per_depth)),
         ("After training", "Bottom row of grad_norms_vs_layer.png; deepest net, medians over "
          "seeds. The back-propagated dL/dz still falls towards the input as at init, but the "
          "weight-gradient norms of the nets that stopped learning become nearly flat across "
          "layers. Since dW_l = delta_l a_{l-1}^T, the activations make up the difference; a "
          "plausible reading is that once the output bias fits the class frequencies only the "
          "input-dependent part of a_{l-1} contributes, and that part shrinks layer by layer in "
          "the forward pass (not measured here).\n\n" + report.markdown_table(
              ["init", "D", "|dW_1|/|dW_L| init", "|dW_1|/|dW_L| final", "|dz_1|/|dz_L| init",
               "|dz_1|/|dz_L| final", "final loss"], after))],
        figs))


def _end_ratios(res, wi, di, ii, D):
    """Per seed [seed]: ||dW_1||/||dW_L|| and ||dz_1||/||dz_L|| at init and after training."""
    ix = (wi, di, ii)
    g0, gT = res.grad_norm_init[ix], res.grad_norm_final[ix]
    d0, dT = res.delta_norm_init[ix], res.delta_norm_final[ix]
    return g0[:, 0] / g0[:, D], gT[:, 0] / gT[:, D], d0[:, 0] / d0[:, D], dT[:, 0] / dT[:, D]


def _subplots(rows, cols, **kw):
    return plt.subplots(rows, cols, squeeze=False, **kw)


def _log_ticks(axis):
    """Decade ticks only: minor log ticks on many decades make the figures slow to lay out."""
    axis.set_major_locator(matplotlib.ticker.LogLocator(numticks=8))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def plot_activation(activation, path):
    """sigma and sigma' (max 1/4 marked); the chosen activation beside it when it is not the
    sigmoid (its f' max is 1)."""
    z = np.linspace(-8, 8, 801)
    sig = 1 / (1 + np.exp(-z))
    curves = [("sigmoid", sig, sig * (1 - sig), 0.25)]
    if activation == "tanh":
        curves.append(("tanh", np.tanh(z), 1 - np.tanh(z) ** 2, 1.0))
    elif activation == "relu":
        curves.append(("relu", np.maximum(z, 0), (z > 0).astype(float), 1.0))
    fig, axes = _subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8))
    for ax, (name, f, fp, mx) in zip(axes[0], curves):
        ax.plot(z, f, color="tab:blue", label=f"{name}(z)")
        ax.plot(z, fp, color="tab:red", label=f"{name}'(z)")
        ax.axhline(mx, color="tab:red", ls="--", lw=1, label=f"max {name}' = {mx:g}")
        ax.plot([0 if name != "relu" else 0.2], [mx], "o", color="tab:red")
        if name == "relu":
            ax.set_ylim(-0.3, 4)
        ax.set_xlabel("pre-activation z")
        ax.set_ylabel("value")
        ax.set_title(f"{name} and its derivative (max {mx:g} at z = 0)" if name != "relu"
                     else "relu and its derivative (1 for z > 0)", fontsize=10)
        ax.legend(fontsize=8, loc="center right" if name == "tanh" else "upper left")
    return plots.save(fig, path)


def plot_grad_norms(depths, inits, g0, gT, pred_w, activation, steps, width, path):
    """``g0, gT[depth, init, seed, layer]``: median ||dL/dW_l|| over seeds against k = layers
    below the output (log y), one curve per depth, one column per init; top row at init with
    fmax^k (dashed) and the Glorot prediction for the deepest net (dotted), bottom row after
    training."""
    fmax = fprime_max(activation)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(vmin=min(depths), vmax=max(depths))
    fig, axes = _subplots(2, len(inits), figsize=(4.4 * len(inits) + 1, 7.6), sharey="row")
    kk = np.arange(max(depths) + 1)
    for row, (G, when) in enumerate(((g0, "at init"), (gT, f"after {steps} GD steps"))):
        for c, scheme in enumerate(inits):
            ax, tops = axes[row, c], []
            for di, D in enumerate(depths):
                g = np.median(G[di, c], axis=0)[: D + 1]            # layers 1..L
                ax.plot(np.arange(D + 1)[::-1], np.where(g > 0, g, np.nan), "o-", ms=3, lw=1.2,
                        color=cmap(norm(D)))
                tops.append(g[-1])
            if row == 0:
                D = depths[-1]
                anchor = float(np.median(tops))
                ax.plot(kk, anchor * fmax ** kk, "--", color="0.25", lw=1.2,
                        label=f"{fmax:g}^k x median ||dW_L|| (f'max only)")
                r = np.median(pred_w[-1, c], axis=0)[:D]            # ratio (l, l+1), l = 1..D
                cum = tops[-1] * np.concatenate([[1.0], np.cumprod(r[::-1])])
                ax.plot(np.arange(D + 1), cum, ":", color="tab:red", lw=2,
                        label=f"Glorot prediction (D={D})")
                ax.legend(fontsize=7, loc="lower left")
            else:
                ax.set_xlabel("k = layers below the output")
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.set_xticks(kk)
            if c == 0:
                ax.set_ylabel(f"||dL/dW_l||_F {when} (log)")
            ax.set_title(f"init = {scheme}, {when}", fontsize=10)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
                 label="depth D (hidden layers)", shrink=0.8)
    fig.suptitle(f"Per-layer weight-gradient norms, {activation} MLP width {width}: one curve per "
                 "depth D, median over seeds\nk = 0 is the output layer W_L, k = D the input layer "
                 f"W_1; dashed: {fmax:g}^k (the rigorous bound is on dL/dz and includes "
                 "prod ||W_l||_2)",
                 fontsize=11)
    return plots.save(fig, path)


def plot_final_loss(depths, inits, loss0, lossT, output, steps, lr, width, path):
    """``loss0, lossT[depth, init, seed]``: final loss vs depth per init (median, min-max band),
    initial loss dotted, ln 10 for softmax_ce."""
    fig, ax = plt.subplots(figsize=(7, 4.4))
    colors = plt.get_cmap("tab10")
    d = np.asarray(depths)
    for c, scheme in enumerate(inits):
        fin = np.where(np.isfinite(lossT[:, c]), lossT[:, c], np.inf)   # diverged = worst
        lo, hi, med = (np.where(np.isfinite(v), v, np.nan) for v in
                       (fin.min(1), fin.max(1), np.median(fin, 1)))
        ax.fill_between(d, lo, hi, color=colors(c), alpha=0.15)
        ax.plot(d, med, "o-", color=colors(c), label=f"{scheme}: after {steps} steps")
        bad = ~np.all(np.isfinite(lossT[:, c]), axis=1)
        if bad.any():
            ax.plot(d[bad], np.full(bad.sum(), np.log(10) * 3), "x", color=colors(c), ms=9,
                    label=f"{scheme}: some runs diverged")
        ax.plot(d, np.nanmedian(loss0[:, c], 1), ":", color=colors(c), lw=1,
                label=f"{scheme}: at init")
    if output == "softmax_ce":
        ax.axhline(np.log(10), color="k", lw=0.8, ls="--", label="ln 10 (uniform prediction)")
    ax.set_yscale("log")
    ax.set_xticks(d)
    ax.set_xlabel("depth D (hidden layers)")
    ax.set_ylabel(f"training loss ({output}, log)")
    ax.set_title(f"Final loss vs depth, full-batch GD lr {lr:g}, width {width} "
                 "(median, band = min-max over seeds)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return plots.save(fig, path)


def plot_ratios(inits, meas_dz, glorot, meas_w, pred_w, activation, width, path):
    """Measured vs predicted per-layer ratios at init, every depth, layer pair and seed
    (``[depth, init, seed, pair]``), log-log with y = x and a factor-2 band: left the per-unit
    RMS of dL/dz against sqrt(n Var(W) E[f'^2]), right ||dW_l|| / ||dW_{l+1}|| against the
    weight-gradient prediction."""
    fig, axes = _subplots(1, 2, figsize=(11, 5))
    colors = plt.get_cmap("tab10")
    panels = [(meas_dz, glorot, "dL/dz: RMS(dz_l) / RMS(dz_{l+1})", "sqrt(n Var(W) E[f'(z)^2])"),
              (meas_w, pred_w, "dL/dW: ||dW_l|| / ||dW_{l+1}||",
               "sqrt(n Var(W) E[f'^2]) x sqrt(h/n) ||a_{l-1}||/||a_l||")]
    for ax, (meas, pred, what, xl) in zip(axes[0], panels):
        vals = []
        for c, scheme in enumerate(inits):
            x, y = pred[:, c].ravel(), meas[:, c].ravel()
            ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
            ax.loglog(x[ok], y[ok], ".", ms=4, alpha=0.6, color=colors(c), label=scheme)
            vals += [x[ok], y[ok]]
        v = np.concatenate(vals)
        if not v.size:  # no finite positive ratio (e.g. all units dead): a default frame
            v = np.array([0.1, 1.0])
        lo, hi = v.min() / 2, v.max() * 2
        t = np.geomspace(lo, hi, 10)
        ax.plot(t, t, "k-", lw=1, label="measured = predicted")
        ax.fill_between(t, t / 2, t * 2, color="0.5", alpha=0.15, label="within a factor 2")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        _log_ticks(ax.xaxis)
        _log_ticks(ax.yaxis)
        ax.set_xlabel(f"predicted: {xl}", fontsize=8)
        ax.set_ylabel(f"measured {what}", fontsize=8)
        ax.set_title(what, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Per-layer gradient ratios at init, {activation} width {width}: every depth, "
                 "layer pair and seed", fontsize=10)
    return plots.save(fig, path)
