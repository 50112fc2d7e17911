"""CAGrad (Liu et al. 2021): the update maximises the worst task improvement within a ball around the
average gradient g0:  d = g0 + sqrt(phi) g_w / |g_w|,  phi = alpha^2 |g0|^2, where w minimises the dual

    F(w) = g_w' g0 + sqrt(phi) |g_w|   over the simplex,   g_w = J' w.

The official code hands F to SLSQP (~2 ms per step for three tasks here); F is smooth and convex on the
simplex, so `cagrad_dual` runs projected Newton with an active set instead (a few 3x3 solves, converged
to machine precision). `rescale` divides d by 1 (0), 1 + alpha^2 (1, the default) or 1 + alpha (2).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.declarations import CAGradKnobs
from tune_mtl.strategies.min_norm import like, solve, to_numpy

_EPS = 1e-20  # keeps |g_w| differentiable at 0 (scaled units)


def cagrad_dual(gramian: Tensor | np.ndarray, alpha: float, max_iter: int = 100) -> np.ndarray:
    """w on the simplex minimising w'G b + alpha |g0| sqrt(w'Gw), b = 1/T (the CAGrad dual)."""
    G = to_numpy(gramian)
    T = len(G)
    scale = float(np.max(np.diag(G)))
    b = np.full(T, 1.0 / T)
    if scale <= 0 or alpha == 0:
        return b
    G = G / scale  # F scales by the same factor: the argmin does not move
    a = G @ b
    c = alpha * np.sqrt(max(b @ a, 0.0))

    def objective(w: np.ndarray) -> float:
        return float(a @ w + c * np.sqrt(w @ G @ w + _EPS))

    w = b.copy()
    active = np.ones(T, dtype=bool)  # coordinates allowed to be positive (the current face)
    for _ in range(max_iter):
        Gw = G @ w
        s = np.sqrt(w @ Gw + _EPS)
        grad = a + c * Gw / s
        hess = c * (G / s - np.outer(Gw, Gw) / s**3)
        idx = np.flatnonzero(active)
        n = len(idx)
        kkt = np.zeros((n + 1, n + 1))
        kkt[:n, :n] = hess[idx][:, idx] + 1e-14 * np.eye(n)
        kkt[:n, n] = kkt[n, :n] = 1.0
        sol = solve(kkt, np.append(-grad[idx], 0.0))
        p = np.zeros(T)
        p[idx] = sol[:n]
        if np.max(np.abs(p)) < 1e-11:  # Newton step below the precision of the weights
            # Stationary on this face: re-open the coordinate whose multiplier grad_j + mu is most negative.
            multipliers = np.where(active, np.inf, grad + sol[n])
            j = int(np.argmin(multipliers))
            if multipliers[j] >= -1e-13:
                break
            active[j] = True
            continue
        shrinking = p < 0
        t_max = float(np.min(-w[shrinking] / p[shrinking])) if shrinking.any() else np.inf
        t = min(1.0, t_max)
        f0, slope = objective(w), float(grad @ p)
        while t > 1e-16 and objective(w + t * p) > f0 + 1e-4 * t * slope + 1e-15 * abs(f0):
            t *= 0.5
        if t <= 1e-16:  # no decrease left to find in floating point: as converged as it gets
            break
        step_to = w + t * p
        if t == t_max:  # reached a face of the simplex: the blocking coordinate leaves exactly
            step_to[np.flatnonzero(shrinking)[np.argmin(-w[shrinking] / p[shrinking])]] = 0.0
        w = np.maximum(step_to, 0.0)
        active &= w > 1e-15
        w[~active] = 0.0
        w /= w.sum()
    return w


class CAGrad(GramianWeighting, declaration=declared.CAGRAD):
    knobs: CAGradKnobs

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = to_numpy(gramian)
        T = len(G)
        w = cagrad_dual(G, self.knobs.alpha)
        b = np.full(T, 1.0 / T)
        gw_norm = np.sqrt(max(w @ G @ w, 0.0))
        g0_norm = np.sqrt(max(b @ G @ b, 0.0))
        coefficients = b + (self.knobs.alpha * g0_norm / gw_norm * w if gw_norm > 0 else 0.0)
        coefficients = coefficients / (1.0, 1.0 + self.knobs.alpha**2, 1.0 + self.knobs.alpha)[self.knobs.rescale]
        return like(coefficients, gramian)
