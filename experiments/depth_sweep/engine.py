"""The depth and remedies experiments' training engine: MLPs of every depth from one padded
stack (bpexp.stacked's padded drivers), one compile per width, full-batch GD.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from bpexp import primitives, stacked, train


stack_to_mlp = stacked.unstack   # the depth-D net inside the padded stack


def uniform_draws(key, n, h, d_out, dmax, dtype):
    """One draw u ~ U(-1, 1) per weight of the padded net (primitives.uniforms: one threefry
    call), laid out for the padded stack. Every scheme is built from the same u (common random
    numbers across schemes and, because the layers are nested, across depths)."""
    return primitives.uniforms(key, [(h, n), (max(dmax - 1, 1), h, h), (d_out, h)], dtype)


def seed_draws(seeds, n, h, d_out, dmax, dtype):
    """``uniform_draws`` of each seed's k_init (train.run_keys), stacked over ``seeds``."""
    keys = jax.vmap(lambda s: train.run_keys(s)[0])(seeds)
    return jax.vmap(lambda k: uniform_draws(k, n, h, d_out, dmax, dtype))(keys)


@functools.lru_cache(maxsize=16)
def draws_fn(n, h, d_out, dmax, dtype):
    """jit(seed_draws) for one shape, compiled once: (seeds) -> the draws of every seed."""
    return jax.jit(lambda seeds: seed_draws(seeds, n, h, d_out, dmax, dtype))


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


STATS = ("grad_norm", "delta_norm", "fprime_sq", "act_norm", "z_std", "bn_gain_sq")


def _norm(A):
    """||A||_F, scaled by max |A| first so that float32 squares of tiny deep-net gradients do
    not underflow to 0."""
    s = jnp.max(jnp.abs(A))
    s = jnp.where(s > 0, s, 1.0)
    return s * jnp.sqrt(jnp.sum(jnp.square(A / s)))


def forward_backward(p, X, Y, D, activation, output, residual=False, norm="none"):
    """:func:`measured_pass` without the buffers (batch norm is on when p holds its
    parameters)."""
    del norm
    return measured_pass(p, X, Y, D, activation, output, residual)[:3]


def measured_pass(p, X, Y, D, activation, output, residual=False, stats=True, buf=None):
    """Loss, gradient (same pytree as p; unused padded layers get 0) and per-layer statistics of
    the depth-D net, 1 <= D <= S + 1: one pass of bpexp.stacked's padded drivers (``D`` may be
    traced, so one compile serves every depth). ``residual``: the hidden-to-hidden layers (and
    the first one if n == h) add their input; ``norm`` "batch": batch norm before f (the
    params hold g_in, be_in, g_h, be_h).

    Layer index t = 0..D (0-based; layer t+1 of the notes, t = D is the output layer):
      gW[t] = ||dL/dW_{t+1}||_F, dn[t] = ||delta_{t+1}||_F (delta = dL/dz), fp2[t] = mean
      f'(y_{t+1})^2 (t < D), an[t] = ||a_t||_F (a_0 = X); batch norm only (t < D): zstd[t] =
      RMS over units of the batch std sqrt(var + eps) of z_{t+1}, bn_gain_sq[t] = mean of
      (f'(y) / sqrt(var + eps))^2 over units and examples. Entries beyond the net are NaN.

    Returns (loss, gradient, statistics, buffers). ``stats`` False: only the loss and the
    gradient (every statistic NaN, at the cost of the plain pass). ``buf``: the hidden-layer
    buffers to write into (stacked.padded_forward), e.g. the previous step's. Batch norm is on
    when p holds its parameters."""
    S = p["W_h"].shape[0]
    Lmax, bn = S + 2, "g_in" in p
    nan = jnp.full((Lmax,), jnp.nan, X.dtype)
    zL, a_D, buf = stacked.padded_forward(p, X, D, activation, residual, buf)
    out = primitives.output(output)
    loss = out.loss(zL, Y)
    if not stats:
        g, _ = stacked.padded_backward(p, X, D, a_D, buf, out.delta(zL, Y), residual)
        return loss, g, {k: nan[: S + 1] if k == "fprime_sq" else nan for k in STATS} | {
            "loss": loss}, buf
    g, norms = stacked.padded_backward(p, X, D, a_D, buf, out.delta(zL, Y), residual,
                                       lambda d, w: jnp.stack([_norm(d), _norm(w)]))
    dn, gWn = norms[:, 0], norms[:, 1]                 # ||delta_l||, ||dW_l|| at l - 1
    t = jnp.arange(Lmax)
    hidden = t[: S + 1] < D
    F, IS = buf.fprime, buf.inv_std
    fp2 = jnp.where(hidden, jnp.mean(F * F, axis=(1, 2)), jnp.nan)
    an = jnp.concatenate([_norm(X)[None], jnp.where(hidden, jax.vmap(_norm)(buf.a), jnp.nan)])
    if bn:
        zstd = jnp.where(hidden, jnp.sqrt(jnp.mean(1.0 / IS[..., 0] ** 2, axis=1)), jnp.nan)
        gain = jnp.where(hidden, jnp.mean(jnp.square(F * IS), axis=(1, 2)), jnp.nan)
    else:
        zstd = gain = nan[: S + 1]
    stats = {"grad_norm": gWn, "delta_norm": dn, "fprime_sq": fp2,
             "act_norm": an, "z_std": jnp.concatenate([zstd, nan[:1]]),
             "bn_gain_sq": jnp.concatenate([gain, nan[:1]]), "loss": loss}
    return loss, g, stats, buf


def make_train(activation, output, steps, schemes, h, dmax, dtype, residual=False,
               norm="none", from_draws=False):
    """The experiment's training engine: one compiled function for every depth of one width.

    Why not the sweep engine with the library's mlp: there the depth is part of the params'
    structure, so each depth would compile anew; here it is a traced loop bound over the padded
    stack (forward_backward), so one compile serves every depth (the default sweep compiles
    once). The depth-D net is the library's mlp: the tests check loss, gradient, deltas and
    the GD step against models.get("mlp") and grads.mlp (residual and norm too).

    Draws the initial params of every (scheme, seed) run and runs ``steps`` full-batch GD steps
    w -= lr g, recording the loss entering every step and after the last, and the per-layer
    statistics of the net at init and after the last step (only those two passes measure them:
    the others are plain forward/backward passes).
    (seeds [seed], scales [scheme], X, Y, D, lr) -> (p0, hist): hist["loss"] [run, steps + 1],
    hist[name] [run, 2, ...] (init, trained) for the statistics of forward_backward; runs =
    (scheme, seed) scheme-major. Keys as in the sweep engine: k_init, k_batch =
    split(PRNGKey(seed)). ``from_draws``: the first argument is instead the seeds'
    ``uniform_draws`` (leading seed axis; :func:`seed_draws`), so that functions of one shape
    share one draw (and its compile)."""
    def one(p, X, Y, D, lr):
        def fb(stats):
            return lambda p, buf: measured_pass(p, X, Y, D, activation, output, residual,
                                                stats, buf)

        def update(carry, t):  # the params entering the step, then w -= lr g
            p, buf = carry
            _, g, st, buf = lax.cond((t == 0) | (t == steps), fb(True), fb(False), p, buf)
            return (jax.tree.map(lambda w, d: w - lr * d, p, g), buf), st

        # steps + 1 passes: the last one only measures the trained net (its update is dropped);
        # the buffers are carried from step to step
        _, _, _, hist = train.loop(update, (p, stacked.empty_buffers(p, X)), steps + 1,
                                   each_step=lambda stats: stats)
        return {k: v if k == "loss" else v[jnp.array([0, steps])] for k, v in hist.items()}

    def all_runs(seeds, scales, X, Y, D, lr):
        draws = (seeds if from_draws else
                 seed_draws(seeds, X.shape[0], h, Y.shape[0], dmax, dtype))
        ps = [jax.vmap(lambda u: init_stack(u, s, scales[i], norm))(draws)
              for i, s in enumerate(schemes)]
        p0 = jax.tree.map(lambda *a: jnp.concatenate(a), *ps)
        return p0, jax.vmap(one, in_axes=(0, None, None, None, None))(p0, X, Y, D, lr)

    return jax.jit(all_runs)
