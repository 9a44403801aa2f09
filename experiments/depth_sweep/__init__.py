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

With experiment.remedies=true: Lecture 5 section 10's remedies side by side at depths up to 30
(REMEDIES: plain sigmoid with the standard init, ReLU + He, sigmoid + Xavier, sigmoid + skip
connections, sigmoid + batch norm), each with its theory per layer (REMEDY_THEORY): the
Glorot factor for the inits (x0.14 per layer plain, x0.23 Xavier, 1 for ReLU + He), the
Jacobian I + W^T diag f' for skip connections (dL/da never shrinks through the identity path),
and for batch norm a factor free of the scale of W (about 1). Expected: at depth 30 the plain
sigmoid's ||dL/dW_1|| / ||dL/dW_L|| is ~1e-25 while the residual and batch-normalized nets keep
it within a few decades of 1, and only they still train at depth 30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.cm
import matplotlib.colors
import matplotlib.ticker
import numpy as np
from jax import lax

from bpexp import grads, make, models, plots, primitives, report, theory, train
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
    remedies: bool = False       # true: Lecture 5's four remedies side by side instead
    remedy_depths: list = field(default_factory=lambda: [1, 2, 5, 10, 15, 20, 30])
    remedy_list: list = field(default_factory=lambda: list(REMEDIES))


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
    if not (P.remedy_depths and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                    for v in P.remedy_depths)):
        raise UserError(f"experiment.remedy_depths={P.remedy_depths!r} is not allowed; "
                        "allowed: a non-empty list of ints >= 1")
    if not (P.remedy_list and all(r in REMEDIES for r in P.remedy_list)
            and len(set(P.remedy_list)) == len(P.remedy_list)):
        raise UserError(f"experiment.remedy_list={P.remedy_list!r} is not allowed; allowed: a "
                        f"non-empty list of distinct ones of {', '.join(REMEDIES)}")
    # inf would make every weight of the normal runs inf: nothing left to measure
    if not (math.isfinite(P.normal_scale) and P.normal_scale > 0):
        raise UserError(f"experiment.normal_scale={P.normal_scale!r} is not allowed; "
                        "allowed: a finite number > 0")


# ---------------------------------------------------------------- padded deep MLP
# This experiment's own training engine (make_train says why it is not the library's).
# p = {W_in (h, n), b_in (h, 1), W_h (S, h, h), b_h (S, h, 1), W_out (d_out, h),
# b_out (d_out, 1)} with S = max(Dmax - 1, 1) stacked hidden-to-hidden layers, and with
# norm="batch" also g_in, be_in (h, 1), g_h, be_h (S, h, 1) (gamma, beta of each hidden layer).
# The net of depth D uses W_in, the first D - 1 of W_h and W_out: it is the library's mlp with
# W1 = W_in, W_l = W_h[l-2] (l = 2..D), W_{D+1} = W_out (checked against
# models.get("mlp").grad in the tests, residual and batch-normalized variants too).

def stack_to_mlp(p, D):
    """The library's mlp params ``W1..W_{D+1}, b1.. (gamma_l, beta_l)`` of the depth-D net
    inside ``p``."""
    q = {"W1": p["W_in"], "b1": p["b_in"]}
    if "g_in" in p:
        q["gamma1"], q["beta1"] = p["g_in"], p["be_in"]
    for l in range(2, D + 1):
        q[f"W{l}"], q[f"b{l}"] = p["W_h"][l - 2], p["b_h"][l - 2]
        if "g_h" in p:
            q[f"gamma{l}"], q[f"beta{l}"] = p["g_h"][l - 2], p["be_h"][l - 2]
    q[f"W{D + 1}"], q[f"b{D + 1}"] = p["W_out"], p["b_out"]
    return q


def uniform_draws(key, n, h, d_out, dmax, dtype):
    """One draw u ~ U(-1, 1) per weight of the padded net (primitives.uniforms: one threefry
    call), laid out for the padded stack. Every scheme is built from the same u (common random
    numbers across schemes and, because the layers are nested, across depths)."""
    return primitives.uniforms(key, [(h, n), (max(dmax - 1, 1), h, h), (d_out, h)], dtype)


weight_from_uniform = primitives.weight_from_uniform  # the library's scheme map from U(-1, 1)


def init_stack(draws, scheme, scale, norm="none"):
    """Padded params of one (seed, scheme) from ``uniform_draws``; biases 0, gamma 1, beta 0
    (as models.mlp_init)."""
    u_in, u_h, u_out = draws
    (h, n), (S, _, _), (d_out, _) = u_in.shape, u_h.shape, u_out.shape
    p = {"W_in": weight_from_uniform(u_in, scheme, n, h, scale),
         "b_in": jnp.zeros((h, 1), u_in.dtype),
         "W_h": weight_from_uniform(u_h, scheme, h, h, scale),
         "b_h": jnp.zeros((S, h, 1), u_in.dtype),
         "W_out": weight_from_uniform(u_out, scheme, h, d_out, scale),
         "b_out": jnp.zeros((d_out, 1), u_in.dtype)}
    if norm == "batch":
        p.update(g_in=jnp.ones((h, 1), u_in.dtype), be_in=jnp.zeros((h, 1), u_in.dtype),
                 g_h=jnp.ones((S, h, 1), u_in.dtype), be_h=jnp.zeros((S, h, 1), u_in.dtype))
    return p


def _norm(A):
    """||A||_F, scaled by max |A| first so that float32 squares of tiny deep-net gradients do
    not underflow to 0."""
    s = jnp.max(jnp.abs(A))
    s = jnp.where(s > 0, s, 1.0)
    return s * jnp.sqrt(jnp.sum(jnp.square(A / s)))


def forward_backward(p, X, Y, D, activation, output, residual=False, norm="none"):
    """Loss, gradient (same pytree as p; unused padded layers get 0) and per-layer statistics of
    the depth-D net, 1 <= D <= S + 1. ``D`` may be traced: both passes are loops with a
    data-dependent bound, so one compile serves every depth. ``residual``: the hidden-to-hidden
    layers (and the first one if n == h) add their input, a_l = a_{l-1} + f(y_l); ``norm``
    "batch": y_l = gamma_l zhat_l + beta_l (batch norm of z_l over the m columns), else y_l = z_l.

    Layer index t = 0..D (0-based; layer t+1 of the notes, t = D is the output layer):
      gW[t] = ||dL/dW_{t+1}||_F, dn[t] = ||delta_{t+1}||_F (delta = dL/dz), fp2[t] = mean
      f'(y_{t+1})^2 (t < D), an[t] = ||a_t||_F (a_0 = X); batch norm only (t < D): zstd[t] =
      RMS over units of the batch std sqrt(var + eps) of z_{t+1}, bn_gain_sq[t] = mean of
      (f'(y) / sqrt(var + eps))^2 over units and examples. Entries beyond the net are NaN."""
    S, h = p["W_h"].shape[0], p["W_in"].shape[0]
    Lmax, bn = S + 2, norm == "batch"
    res_in = primitives.is_residual(residual, X.shape[0], h)
    nan = jnp.full((Lmax,), jnp.nan, X.dtype)
    zero = jnp.zeros((h, 1), X.dtype)

    def layer(z, gamma, beta):   # y = BN(z) or z; a = f(y); f'(y); zhat, inv_std for backward
        y, zhat, inv_std = (primitives.batch_norm(z, gamma, beta) if bn     # small placeholders
                            else (z, jnp.zeros((h, 1), X.dtype), jnp.ones((h, 1), X.dtype)))
        a = primitives.activate(activation, y)
        return a, primitives.activation_prime(activation, y, a), zhat, inv_std

    # forward: a_1 = f(y_1(W_in X + b_in)); a_{j+1} = [a_j +] f(y_{j+1}), j = 1..D-1
    a, fp, zh, ist = layer(p["W_in"] @ X + p["b_in"], p.get("g_in", zero), p.get("be_in", zero))
    a = X + a if res_in else a
    buf = lambda v: jnp.zeros((S + 1,) + v.shape, X.dtype).at[0].set(v)  # noqa: E731
    A, F, ZH, IS = buf(a), buf(fp), buf(zh), buf(ist)            # [j] = layer j + 1

    def fwd(j, c):
        a, A, F, ZH, IS = c
        z = p["W_h"][j - 1] @ a + p["b_h"][j - 1]                 # z_{j+1} = W_{j+1} a_j + b_{j+1}
        g, be = ((p["g_h"][j - 1], p["be_h"][j - 1]) if bn else (zero, zero))
        f, fp, zh, ist = layer(z, g, be)                          # f(y_{j+1})
        a = a + f if residual else f                              # a_{j+1} = [a_j +] f(y_{j+1})
        return a, A.at[j].set(a), F.at[j].set(fp), ZH.at[j].set(zh), IS.at[j].set(ist)

    a, A, F, ZH, IS = lax.fori_loop(1, D, fwd, (a, A, F, ZH, IS))
    zL = p["W_out"] @ a + p["b_out"]                               # z_L, L = D + 1
    loss = primitives.output(output).loss(zL, Y)
    # backward through da_j = dL/da_j: delta_j = BN'(da_j * f'(y_j)); da_{j-1} = W_j^T delta_j
    # (+ da_j for a residual layer); dW_j = delta_j a_{j-1}^T (Lecture 5 with the variants)
    dL = primitives.output(output).delta(zL, Y)                    # delta_L
    g_out = dL @ a.T                                               # dW_L = delta_L a_D^T

    # gamma of hidden layer j + 1 at G[j] (G[0] = g_in, G[j] = g_h[j - 1]); dG, dB likewise
    G = jnp.concatenate([p["g_in"][None], p["g_h"]]) if bn else None

    def hidden_delta(da, j, dG, dB):  # delta_{j+1} from da_{j+1}; dgamma, dbeta into dG, dB
        dy = da * F[j]                                             # dL/dy = da * f'(y)
        if not bn:
            return dy, dG, dB
        dz, dg, db = grads.batch_norm_backward(dy, ZH[j], IS[j], G[j])  # delta = BN'(dy)
        return dz, dG.at[j].set(dg), dB.at[j].set(db)

    dG = dB = jnp.zeros((S + 1, h, 1), X.dtype)
    da = p["W_out"].T @ dL                                         # da_D = W_L^T delta_L
    delta, dG, dB = hidden_delta(da, D - 1, dG, dB)                # delta_D
    gWn = nan.at[D].set(_norm(g_out))
    dn = nan.at[D].set(_norm(dL)).at[D - 1].set(_norm(delta))

    def bwd(i, c):
        delta, da, gW_h, gb_h, dG, dB, gWn, dn = c                 # delta = delta_{j+1}
        j = D - 1 - i
        gw = delta @ A[j - 1].T                                    # dW_{j+1} = delta_{j+1} a_j^T
        gW_h = gW_h.at[j - 1].set(gw)
        gb_h = gb_h.at[j - 1].set(jnp.sum(delta, axis=1, keepdims=True))
        da = p["W_h"][j - 1].T @ delta + (da if residual else 0)   # da_j (+ da_{j+1}: identity)
        delta, dG, dB = hidden_delta(da, j - 1, dG, dB)            # delta_j
        return (delta, da, gW_h, gb_h, dG, dB, gWn.at[j].set(_norm(gw)),
                dn.at[j - 1].set(_norm(delta)))

    c0 = (delta, da, jnp.zeros_like(p["W_h"]), jnp.zeros_like(p["b_h"]), dG, dB, gWn, dn)
    delta, da, gW_h, gb_h, dG, dB, gWn, dn = lax.fori_loop(0, D - 1, bwd, c0)
    g_in = delta @ X.T                                             # dW_1 = delta_1 X^T
    g = {"W_in": g_in, "b_in": jnp.sum(delta, axis=1, keepdims=True), "W_h": gW_h, "b_h": gb_h,
         "W_out": g_out, "b_out": jnp.sum(dL, axis=1, keepdims=True)}
    if bn:
        g.update(g_in=dG[0], be_in=dB[0], g_h=dG[1:], be_h=dB[1:])
    g = {k: g[k] for k in p}
    t = jnp.arange(Lmax)
    hidden = t[: S + 1] < D
    fp2 = jnp.where(hidden, jnp.mean(F * F, axis=(1, 2)), jnp.nan)
    an = jnp.concatenate([_norm(X)[None], jnp.where(hidden, jax.vmap(_norm)(A), jnp.nan)])
    if bn:
        zstd = jnp.where(hidden, jnp.sqrt(jnp.mean(1.0 / IS[..., 0] ** 2, axis=1)), jnp.nan)
        gain = jnp.where(hidden, jnp.mean(jnp.square(F * IS), axis=(1, 2)), jnp.nan)
    else:
        zstd = gain = nan[: S + 1]
    stats = {"grad_norm": gWn.at[0].set(_norm(g_in)), "delta_norm": dn, "fprime_sq": fp2,
             "act_norm": an, "z_std": jnp.concatenate([zstd, nan[:1]]),
             "bn_gain_sq": jnp.concatenate([gain, nan[:1]]), "loss": loss}
    return loss, g, stats


def make_train(activation, output, steps, schemes, h, dmax, dtype, residual=False,
               norm="none"):
    """The experiment's training engine: one compiled function for every depth of one width.

    Why not the sweep engine with the library's mlp: there the depth is part of the params'
    structure, so each depth would compile anew; here it is a traced loop bound over the padded
    stack (forward_backward), so one compile serves every depth (the default sweep compiles
    once). The depth-D net is the library's mlp: the tests check loss, gradient, deltas and
    the GD step against models.get("mlp") and grads.mlp (residual and norm too).

    Draws the initial params of every (scheme, seed) run and runs ``steps`` full-batch GD steps
    w -= lr g, measuring the net before every step and after the last.
    (seeds [seed], scales [scheme], X, Y, D, lr) -> (p0, hist), hist[name]: [run, steps + 1, ...]
    as in forward_backward; runs = (scheme, seed) scheme-major. Keys as in the sweep engine:
    k_init, k_batch = split(PRNGKey(seed))."""
    def one(p, X, Y, D, lr):
        def step(p, _):  # statistics of the params entering the step, then w -= lr g
            _, g, stats = forward_backward(p, X, Y, D, activation, output, residual, norm)
            return jax.tree.map(lambda w, d: w - lr * d, p, g), stats

        # steps + 1 passes: the last one only measures the trained net (its update is dropped)
        _, hist = lax.scan(step, p, None, length=steps + 1)
        return hist

    def all_runs(seeds, scales, X, Y, D, lr):
        n, d_out = X.shape[0], Y.shape[0]
        keys = jax.vmap(lambda s: train.run_keys(s)[0])(seeds)
        draws = jax.vmap(lambda k: uniform_draws(k, n, h, d_out, dmax, dtype))(keys)
        ps = [jax.vmap(lambda u: init_stack(u, s, scales[i], norm))(draws)
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
        """The per-run arrays by name, in metrics.zarr order."""
        return {k: getattr(self, k) for k in METRICS}


def compute(cfg, run) -> Result | RemedyResult:
    P = cfg.experiment
    if P.remedies:
        return compute_remedies(cfg, run)
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


def save(cfg, run, res: Result) -> dict:
    """metrics.zarr: every Result array with its dims and coordinates (dataset()). The
    summary: per width, init and depth, medians over seeds."""
    if isinstance(res, RemedyResult):
        return save_remedies(cfg, run, res)
    M, depths, widths, inits, scale = res.metrics(), res.depths, res.widths, res.inits, res.scale
    run.save_metrics(dataset(res, cfg.train.steps))

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


# ---------------------------------------------------------------- the remedies side by side
class Remedy(NamedTuple):
    activation: str
    init: str
    residual: bool
    norm: str
    label: str


# Lecture 5 section 10's four remedies against the plain sigmoid net they repair; each changes
# one thing (residual and batch norm keep the sigmoid and the standard init).
REMEDIES = {
    "sigmoid": Remedy("sigmoid", "standard", False, "none", "plain sigmoid, standard init"),
    "relu_he": Remedy("relu", "he", False, "none", "ReLU + He init"),
    "xavier": Remedy("sigmoid", "xavier", False, "none", "sigmoid + Xavier init"),
    "residual": Remedy("sigmoid", "standard", True, "none", "sigmoid + skip connections"),
    "batchnorm": Remedy("sigmoid", "standard", False, "batch", "sigmoid + batch norm"),
}
REMEDY_THEORY = {
    "sigmoid": "sigma' <= 1/4: ||dz_1||/||dz_L|| <= 0.25^D prod ||W_l||_2; Glorot factor "
               "sqrt(n Var(W) E[f'^2]) with n Var(W) = 1/3",
    "relu_he": "Glorot factor sqrt(n Var(W) E[f'^2]) = sqrt(2 x 1/2) = 1 per layer",
    "xavier": "Glorot factor sqrt(n Var(W) E[f'^2]) with n Var(W) = 1: sqrt(E[sigma'^2]) ~ 0.23",
    "residual": "dL/da_{l-1} = (I + W_l^T diag f'(z_l)) dL/da_l: per layer the RMS of dL/da "
                "grows by sqrt(1 + n Var(W) E[f'^2]) >= 1, the identity path never shrinks it",
    "batchnorm": "dz = (1/sigma_B) P[f'(y) * W^T dz_above] (P removes the parts along 1 and "
                 "zhat): per layer at most sqrt(n Var(W) E[(f'(y)/sigma_B)^2]), free of the "
                 "scale of W; for hidden layers ~ sqrt(E[sigma'(zh)^2] / Var[sigma(zh)]) = "
                 "1.017, zh ~ N(0, 1)",
}


def bn_factor_limit() -> float:
    """sqrt(E[sigma'(x)^2] / Var[sigma(x)]) for x ~ N(0, 1) (Gauss-Hermite, 80 nodes): the
    per-layer dL/dz factor of a batch-normalized sigmoid layer fed by one, when the batch
    variance of z is n Var(W) Var[a] (W and a independent), whatever the scale of W."""
    x, w = np.polynomial.hermite_e.hermegauss(80)
    w = w / w.sum()
    sig = 1 / (1 + np.exp(-x))
    fp = sig * (1 - sig)
    return float(np.sqrt(np.sum(w * fp ** 2) / (np.sum(w * sig ** 2) - np.sum(w * sig) ** 2)))


def remedy_predicted_dz(r: Remedy, D, h, d_out, fprime_sq, bn_gain_sq=None, scale=1.0):
    """Predicted per-layer ratio RMS(dL/dz_l) / RMS(dL/dz_{l+1}), l = 1..D (numpy float64),
    from the measured E[f'(y_l)^2] (``fprime_sq`` [>= D]) and, for batch norm,
    E[(f'(y_l) / sigma_B(z_l))^2] (``bn_gain_sq`` [>= D], per unit i its own sigma_B);
    n = fan-out of W_{l+1}.
      plain:      sqrt(n Var(W_{l+1}) E[f'_l^2])                          (Glorot)
      residual:   sqrt(E[f'_l^2] / E[f'_{l+1}^2] (1 + n Var(W_{l+1}) E[f'_{l+1}^2])), l < D
                  (dL/da_l = dL/da_{l+1} + W_{l+1}^T delta_{l+1}, the two terms uncorrelated)
      batch norm: sqrt(n Var(W_{l+1}) E[(f'_l / sigma_B)^2]), an upper estimate: the BN
                  backward divides by sigma_B and then projects dL/dy onto the complement of
                  1 and zhat, which can only shorten it (measured: a few % per layer)."""
    fan_out = np.array([h] * (D - 1) + [d_out], np.float64)
    var = np.array([theory.init_variance(r.init, h, int(n), scale) for n in fan_out])
    fp2 = np.asarray(fprime_sq[:D], np.float64)
    g2 = fan_out * var * fp2                                   # Glorot factor squared
    if r.norm == "batch":
        return np.sqrt(fan_out * var * np.asarray(bn_gain_sq[:D], np.float64))
    if r.residual:
        out = np.sqrt(g2)
        nxt = fan_out[:-1] * var[:-1] * fp2[1:]                # n Var(W_{l+1}) E f'_{l+1}^2
        out[:-1] = np.sqrt(fp2[:-1] / fp2[1:] * (1 + nxt))
        return out
    return np.sqrt(g2)


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

    def dataset(self):
        import xarray as xr

        L = max(self.depths) + 1
        run = ("remedy", "depth", "seed")
        data = {}
        for k, v in vars(self).items():
            if isinstance(v, np.ndarray) and v.ndim >= 3:
                tail = {L: ("layer",), L - 1: ("pair",)}.get(v.shape[-1]) if v.ndim == 4 else ()
                data[k] = (run + (("step",) if k == "loss" else tail), v)
        return xr.Dataset(data, coords={
            "remedy": list(self.remedies), "depth": list(self.depths),
            "seed": np.asarray(self.seeds), "layer": np.arange(1, L + 1),
            "pair": np.arange(1, L), "step": np.arange(self.loss.shape[-1])})


def compute_remedies(cfg, run) -> RemedyResult:
    """Every remedy x depth x seed: one compile per remedy (the depth is traced)."""
    P = cfg.experiment
    ds = load_data(cfg, run)
    dtype = make.dtype(cfg)
    X, Y = jnp.asarray(ds.X), jnp.asarray(ds.Y)
    seeds = make.seed_values(cfg.sweep.seeds, cfg.seed)
    depths, names = sorted(set(P.remedy_depths)), list(P.remedy_list)
    dmax, steps, lr, h = max(depths), cfg.train.steps, cfg.optimizer.lr, P.widths[0]
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
    seeds_arr = jnp.asarray(seeds, jnp.int32)
    scale = cfg.model.init_scale
    with np.errstate(divide="ignore", invalid="ignore"):
        for ri, name in enumerate(names):
            r = REMEDIES[name]
            fn = make_train(r.activation, out, steps, (r.init,), h, dmax, dtype, r.residual,
                            r.norm)
            for di, D in enumerate(depths):
                with run.timed(f"remedy_{name}_depth{D}" + ("_and_compile" if di == 0 else "")):
                    p0, hist = jax.device_get(fn(seeds_arr, jnp.asarray([scale], dtype), X, Y,
                                                 D, lr))
                ix, Ld = (ri, di), D + 1
                f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
                M["grad_norm_init"][ix][..., :Ld] = f64(hist["grad_norm"][:, 0, :Ld])
                M["grad_norm_final"][ix][..., :Ld] = f64(hist["grad_norm"][:, -1, :Ld])
                width = np.array([h] * D + [ds.d_out], np.float64)
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
                for si in range(len(seeds)):
                    pr = remedy_predicted_dz(r, D, h, ds.d_out,
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
    return RemedyResult(n=ds.n, m=ds.m, d_out=ds.d_out, width=h, lr=lr, remedies=names,
                        depths=depths, seeds=seeds, **M)


def _med(a):
    return float(np.median(a))


def save_remedies(cfg, run, res: RemedyResult) -> dict:
    """metrics.zarr from RemedyResult.dataset(); the summary: per remedy and depth, medians
    over seeds."""
    run.save_metrics(res.dataset())
    bn_limit = bn_factor_limit()
    out = {}
    for ri, name in enumerate(res.remedies):
        r = REMEDIES[name]
        deps = {}
        for di, D in enumerate(res.depths):
            ix, L = (ri, di), D + 1
            lossT = res.loss[ix][:, -1]
            plain = not r.residual and r.norm == "none"
            deps[str(D)] = {
                "ratio_first_last": _med(res.ratio_first_last[ix]),
                "ratio_first_last_seeds": res.ratio_first_last[ix],
                "dz_ratio_first_last": _med(res.dz_first_last[ix]),
                "dz_ratio_first_last_predicted": _med(res.dz_first_last_predicted[ix]),
                "factor_measured_dz": _factor(res.ratio_measured_dz[ix], D),
                "factor_predicted_dz": _factor(res.ratio_predicted_dz[ix], D),
                "grad_norms_init": np.median(res.grad_norm_init[ix], axis=0)[:L],
                "grad_norms_final": np.median(res.grad_norm_final[ix], axis=0)[:L],
                "dz_rms_init": np.median(res.dz_rms_init[ix], axis=0)[:L],
                "bound_with_weight_norms": _med(res.bound[ix]) if plain else None,
                "bound_holds": (bool(np.all(res.dz_first_last[ix] * np.sqrt(
                    res.width / res.d_out) <= res.bound[ix] * (1 + 1e-9))) if plain else None),
                "initial_loss": _med(res.loss[ix][:, 0]),
                "final_loss": float(np.median(np.where(np.isfinite(lossT), lossT, np.inf))),
                "final_loss_iqr": [float(q) for q in np.nanpercentile(lossT, [25, 75])],
                "diverged": int(np.sum(~np.isfinite(lossT)))}
        out[name] = {"label": r.label, "activation": r.activation, "init": r.init,
                     "residual": r.residual, "norm": r.norm, "theory": REMEDY_THEORY[name],
                     "depths": deps}
    return {"remedies": out, "depths": res.depths, "seeds": res.seeds, "width": res.width,
            "data": cfg.data.name, "m": res.m, "n": res.n, "d_out": res.d_out,
            "output": cfg.model.output, "steps": cfg.train.steps, "lr": res.lr,
            "bn_factor_limit": bn_limit, "sigmoid_fprime_max_pow_depth":
                {str(D): 0.25 ** D for D in res.depths}}


def present_remedies(cfg, run, res: RemedyResult, summary: dict) -> None:
    depths, Dm, names = res.depths, res.depths[-1], res.remedies
    figs = ["remedies_grad_norms.png", "remedies_summary.png"]
    plot_remedy_norms(res, run.figure(figs[0]))
    plot_remedy_summary(res, cfg.model.output, run.figure(figs[1]))
    header = ["remedy", "theory factor / layer", "measured factor", f"|dz_1|/|dz_L| D={Dm}",
              "predicted", f"|dW_1|/|dW_L| D={Dm}", f"loss D={depths[0]}", f"loss D={Dm}"]
    rows = []
    for name in names:
        e = summary["remedies"][name]
        d = e["depths"][str(Dm)]
        rows.append([e["label"], d["factor_predicted_dz"], d["factor_measured_dz"],
                     d["dz_ratio_first_last"], d["dz_ratio_first_last_predicted"],
                     d["ratio_first_last"], e["depths"][str(depths[0])]["final_loss"],
                     d["final_loss"]])
    report.print_table(f"depth_sweep remedies: width {res.width}, D up to {Dm}, medians over "
                       f"{len(res.seeds)} seeds; factors are geometric means over the layers",
                       header, rows)
    print(f"0.25^{Dm} = {0.25 ** Dm:.3g}; batch-norm factor limit sqrt(E[sigma'^2]/Var[sigma]) "
          f"= {summary['bn_factor_limit']:.4f}")
    per_depth = [[summary["remedies"][n]["label"], D, d["ratio_first_last"],
                  d["dz_ratio_first_last"], d["dz_ratio_first_last_predicted"],
                  d["factor_measured_dz"], d["factor_predicted_dz"], d["initial_loss"],
                  d["final_loss"], d["diverged"]]
                 for n in names for D, d in ((D, summary["remedies"][n]["depths"][str(D)])
                                             for D in depths)]
    theory_lines = "\n".join(f"- **{REMEDIES[n].label}**: {REMEDY_THEORY[n]}" for n in names)
    run.save_report(report.report(
        "Depth sweep: the remedies for vanishing gradients", question(__doc__), command(cfg),
        [("Setup", f"mlp width {res.width}, output `{cfg.model.output}`, data `{cfg.data.name}` "
                   f"(n={res.n}, m={res.m}, d_out={res.d_out}), depths {depths}, seeds "
                   f"{[int(s) for s in res.seeds]}, full-batch GD lr {res.lr:g} for "
                   f"{cfg.train.steps} steps, {cfg.precision}. Batch norm uses the batch's own "
                   "statistics (training mode). dz_l = dL/dz_l; its per-unit RMS is "
                   "||dz_l||_F / sqrt(width_l). Theory factors are computed per run from the "
                   "measured E[f'^2] (and, for batch norm, the batch std of z)."),
         ("Theory", theory_lines),
         (f"At depth {Dm}", report.markdown_table(header, rows)),
         ("Per depth", report.markdown_table(
             ["remedy", "D", "|dW_1|/|dW_L|", "|dz_1|/|dz_L| (RMS)", "predicted",
              "factor meas.", "factor pred.", "initial loss", "final loss", "diverged"],
             per_depth))],
        figs))


def _theory_label(name, factor):
    """The legend of a remedy's theory line; ``factor``: its geometric-mean prediction."""
    return {"sigmoid": f"Glorot sqrt(n Var(W) E f'^2)\n= {factor:.3f} per layer",
            "relu_he": f"Glorot sqrt(2 x 1/2) = 1\n({factor:.3f} with E f'^2 measured)",
            "xavier": f"Glorot sqrt(E sigma'^2)\n= {factor:.3f} per layer",
            "residual": f"dL/da x sqrt(1 + n Var(W) E f'^2)\n(I + W^T diag f'), {factor:.3f}/layer",
            "batchnorm": f"sqrt(n Var(W) E[(f'/sigma_B)^2])\n= {factor:.3f} per layer (upper)",
            }[name]


def plot_remedy_norms(res: RemedyResult, path):
    """Top: median ||dL/dW_l||_F at init against k = layers below the output, one curve per
    depth; bottom: the per-unit RMS of dL/dz_l with the remedy's prediction (dotted) for the
    deepest net. One column per remedy, shared axes per row."""
    names, depths = res.remedies, res.depths
    cmap = plt.get_cmap("viridis")
    cnorm = matplotlib.colors.Normalize(vmin=min(depths), vmax=max(depths))
    fig, axes = _subplots(2, len(names), figsize=(3.6 * len(names) + 1.2, 7.8), sharey="row",
                          sharex=True)
    Dm = depths[-1]
    for c, name in enumerate(names):
        for row, arr in enumerate((res.grad_norm_init, res.dz_rms_init)):
            ax = axes[row, c]
            for di, D in enumerate(depths):
                g = np.median(arr[c, di], axis=0)[: D + 1]
                ax.plot(np.arange(D + 1)[::-1], np.where(g > 0, g, np.nan), "-", lw=1.2,
                        color=cmap(cnorm(D)))
            g = np.median(arr[c, -1], axis=0)[: Dm + 1]
            kk = np.arange(Dm + 1)
            if row == 0 and name == "sigmoid":
                ax.plot(kk, g[-1] * 0.25 ** kk, "--", color="0.2", lw=1.2,
                        label="0.25^k (sigma' <= 1/4)")
            if row == 1:
                pred = np.median(res.ratio_predicted_dz[c, -1], axis=0)[:Dm]  # pair l = 1..D
                cum = g[-1] * np.concatenate([[1.0], np.cumprod(pred[::-1])])
                ax.plot(kk, cum, ":", color="tab:red", lw=2.2,
                        label=_theory_label(name, _factor(res.ratio_predicted_dz[c, -1], Dm)))
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.grid(alpha=0.3)
            if row == 1 or (row == 0 and name == "sigmoid"):
                ax.legend(fontsize=7.5, loc="lower left")
            if c == 0:
                ax.set_ylabel("||dL/dW_l||_F at init" if row == 0 else
                              "RMS of dL/dz_l per unit at init")
            if row == 1:
                ax.set_xlabel("k = layers below the output")
        axes[0, c].set_title(REMEDIES[name].label, fontsize=11)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=cnorm, cmap=cmap), ax=axes,
                 label="depth D (hidden layers)", shrink=0.8)
    fig.suptitle(f"Vanishing-gradient remedies, width {res.width}, medians of {len(res.seeds)} "
                 "seeds: per-layer gradient norms at init, one curve per depth\n"
                 f"k = 0 is the output layer, k = D the input layer; dotted red: the remedy's "
                 f"theory for D = {Dm}, anchored at the output", fontsize=11)
    return plots.save(fig, path)


def plot_remedy_summary(res: RemedyResult, output, path):
    """Per remedy against depth: measured (markers) and predicted (line) RMS dz_1 / RMS dz_L,
    the weight-gradient ratio ||dW_1|| / ||dW_L||, and the loss after training (median, IQR
    band)."""
    fig, axes = _subplots(1, 3, figsize=(16, 4.8))
    colors = plt.get_cmap("tab10")
    d = np.asarray(res.depths)
    for c, name in enumerate(res.remedies):
        col, lab = colors(c), REMEDIES[name].label
        ax = axes[0, 0]
        ax.plot(d, np.median(res.dz_first_last[c], axis=1), "o", color=col, ms=5, label=lab)
        ax.plot(d, np.median(res.dz_first_last_predicted[c], axis=1), "-", color=col, lw=1.2)
        ax = axes[0, 1]
        r = res.ratio_first_last[c]
        ax.fill_between(d, np.percentile(r, 25, axis=1), np.percentile(r, 75, axis=1),
                        color=col, alpha=0.15)
        ax.plot(d, np.median(r, axis=1), "o-", color=col, ms=4, label=lab)
        ax = axes[0, 2]
        fin = res.loss[c, :, :, -1]
        finf = np.where(np.isfinite(fin), fin, np.inf)
        med = np.median(finf, axis=1)
        ax.fill_between(d, np.nanpercentile(fin, 25, axis=1), np.nanpercentile(fin, 75, axis=1),
                        color=col, alpha=0.15)
        ax.plot(d, np.where(np.isfinite(med), med, np.nan), "o-", color=col, ms=4, label=lab)
        bad = ~np.all(np.isfinite(fin), axis=1)
        if bad.any():   # diverged runs: an x at the top of the panel
            ax.plot(d[bad], np.full(bad.sum(), 2 * np.log(10)), "x", color=col, ms=10, mew=2,
                    label=f"{lab}: some runs diverged")
    axes[0, 0].plot([], [], "k-", lw=1.2, label="lines: theory (batch norm: upper estimate)")
    dm = float(max(d))
    axes[0, 0].plot(d, 0.25 ** d.astype(float), "k--", lw=1, label="0.25^D")
    for ax, yl, t in ((axes[0, 0], "RMS(dL/dz_1) / RMS(dL/dz_L) at init",
                       "Back-propagated signal, first / last layer"),
                      (axes[0, 1], "||dL/dW_1|| / ||dL/dW_L|| at init",
                       "Weight gradients, first / last layer (IQR band)"),
                      (axes[0, 2], f"training loss after {res.loss.shape[-1] - 1} steps",
                       f"Loss after full-batch GD lr {res.lr:g} (IQR band)")):
        ax.set_yscale("log")
        _log_ticks(ax.yaxis)
        ax.set_xlabel("depth D (hidden layers)")
        ax.set_ylabel(yl)
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_xlim(0, dm + 1)
    axes[0, 0].set_ylim(bottom=np.nanmin(res.dz_first_last) / 10)
    if output == "softmax_ce":
        axes[0, 2].axhline(np.log(10), color="k", lw=0.8, ls="--", label="ln 10")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    axes[0, 2].legend(fontsize=8)
    fig.suptitle(f"Remedies vs depth, width {res.width}, medians over {len(res.seeds)} seeds",
                 fontsize=11)
    return plots.save(fig, path)


# ---------------------------------------------------------------- present
def present(cfg, run, res: Result, summary: dict) -> None:
    P = cfg.experiment
    if isinstance(res, RemedyResult):
        return present_remedies(cfg, run, res, summary)
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
from bpexp.experiments.depth_sweep.page import page  # noqa: E402,F401  (the run page's figures)
