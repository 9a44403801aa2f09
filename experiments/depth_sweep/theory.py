"""Theory of the depth sweep: the Glorot factor per layer, the 0.25^D bound."""

from __future__ import annotations

import numpy as np

from bpexp import theory


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
