"""Theory of the remedies: each remedy's predicted per-layer factor of dL/dz."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bpexp import theory


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
