"""Exact small quadratic programs on the T x T Gramian, shared by the gradient aggregators.

* `min_norm_weights(G)`: the min-norm point of the convex hull of the task gradients (MGDA), by Wolfe's
  active-set algorithm (Wolfe 1976). Frank-Wolfe (LibMTL, torchjd) stops on a step-size threshold and can be
  far from the minimiser when the gradients differ in scale by 1e2 or more; Wolfe's method is finite and
  ends with the KKT conditions solved exactly on the support: <g_t, d> >= |d|^2 for every t.
* `nonneg_qp(H, f)`: min 1/2 x'Hx + f'x subject to x >= 0, the Gram-matrix form of Lawson-Hanson NNLS
  (Bro & de Jong 1997). Projections onto the dual cone of the task gradients (UPGrad, DualProj) are of this
  form.
* `project_simplex(v)`: Euclidean projection onto the probability simplex (MoCo's weight update).

Everything runs in float64 numpy: T is small (2-40), so a few tiny dense solves beat any torch overhead, and
float64 is what makes the KKT residuals small relative to |d|^2 when |d|^2 is 1e-8 of the largest gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# Relative optimality tolerance (in units of the largest diagonal entry, after rescaling to 1).
_TOL = 1e-13


def to_numpy(matrix: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(matrix, Tensor):
        matrix = matrix.detach().to("cpu", torch.float64).numpy()
    return np.asarray(matrix, dtype=np.float64)


def like(weights: np.ndarray, reference: Tensor) -> Tensor:
    return torch.as_tensor(weights, dtype=reference.dtype, device=reference.device)


def solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        solution: np.ndarray = np.linalg.solve(matrix, rhs)
    except np.linalg.LinAlgError:  # exactly singular: duplicated gradients; the min-norm solution is fine
        solution = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
    return solution


def _affine_min_norm(G: np.ndarray) -> np.ndarray:
    """Weights (summing to 1, any sign) of the min-norm point of the affine hull of the rows behind G."""
    n = len(G)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = G
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    return solve(kkt, rhs)[:n]


def min_norm_weights(gramian: Tensor | np.ndarray, max_iter: int = 1000) -> np.ndarray:
    """w on the simplex minimising w'Gw (Wolfe's min-norm-point algorithm on the Gramian)."""
    G = to_numpy(gramian)
    T = len(G)
    scale = float(np.max(np.diag(G))) if T else 0.0
    if T == 1 or scale <= 0.0 or not np.isfinite(scale):
        return np.full(T, 1.0 / max(T, 1))
    G = G / scale  # only the argmin matters; unit scale makes the tolerances meaningful
    first = int(np.argmin(np.diag(G)))
    support = [first]
    lam = np.zeros(T)
    lam[first] = 1.0
    for _ in range(max_iter):
        Gl = G @ lam
        norm2 = float(lam @ Gl)
        j = int(np.argmin(Gl))
        # Optimal when no vertex lies strictly below the supporting hyperplane <., d> = |d|^2.
        if Gl[j] >= norm2 - _TOL * (norm2 + 1e-3) or j in support:
            break
        support.append(j)
        while True:  # minor cycle: move to the affine minimiser, dropping vertices whose weight would turn <= 0
            idx = np.array(support)
            mu = _affine_min_norm(G[idx][:, idx])
            if np.all(mu > 0):
                lam = np.zeros(T)
                lam[idx] = mu
                break
            current = lam[idx]
            blocked = mu <= 0
            ratios = current[blocked] / (current[blocked] - mu[blocked])
            theta = float(np.min(ratios))
            new = current + theta * (mu - current)
            new[np.flatnonzero(blocked)[np.argmin(ratios)]] = 0.0  # the blocking vertex leaves exactly
            keep = new > 0
            support = [int(i) for i in idx[keep]]
            lam = np.zeros(T)
            lam[idx[keep]] = new[keep] / new[keep].sum()
    return lam


def min_norm_two(g11: float, g12: float, g22: float) -> float:
    """Closed form for two tasks: weight of task 1 in the min-norm point of [g1, g2] (Sener & Koltun 2018)."""
    denom = g11 - 2 * g12 + g22
    if denom <= 0:
        return 0.5
    return float(np.clip((g22 - g12) / denom, 0.0, 1.0))


def nonneg_qp(H: np.ndarray, f: np.ndarray, max_iter: int = 1000) -> np.ndarray:
    """x >= 0 minimising 1/2 x'Hx + f'x, H positive semi-definite (active set, Gram form of NNLS)."""
    H = to_numpy(H)
    g = -np.asarray(f, dtype=np.float64)
    n = len(H)
    scale = float(np.max(np.abs(np.diag(H)))) if n else 0.0
    if scale <= 0.0:
        return np.zeros(n)
    H, g = H / scale, g / scale
    tol = _TOL * (1.0 + float(np.max(np.abs(g))))
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        w = g - H @ x  # negative gradient: a free coordinate with w_j > 0 still decreases the objective
        candidates = np.where(passive, -np.inf, w)
        j = int(np.argmax(candidates))
        if passive.all() or candidates[j] <= tol:
            break
        passive[j] = True
        while True:
            idx = np.flatnonzero(passive)
            s = np.zeros(n)
            s[idx] = solve(H[idx][:, idx], g[idx])
            if np.all(s[idx] > 0):
                break
            blocked = idx[s[idx] <= 0]
            ratios = x[blocked] / (x[blocked] - s[blocked])
            alpha = float(np.min(ratios))
            x = x + alpha * (s - x)
            x[blocked[np.argmin(ratios)]] = 0.0
            passive &= x > 0
            if not passive.any():
                s = np.zeros(n)
                break
        x = s
    return x


def dual_cone_weights(gramian: Tensor | np.ndarray, U: np.ndarray) -> np.ndarray:
    """For each row u of U: v minimising v'Gv subject to v >= u.

    J'v is then the projection of J'u onto the dual cone {d : J d >= 0} (Quinton & Rey 2024, Prop. 1):
    substituting v = u + z turns it into the non-negative QP  min 1/2 z'Gz + (Gu)'z, z >= 0.
    """
    G = to_numpy(gramian)
    U = np.atleast_2d(np.asarray(U, dtype=np.float64))
    return np.stack([u + nonneg_qp(G, G @ u) for u in U])


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {w >= 0, sum w = 1} (sort-based, Held et al. 1974)."""
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - cumulative / k > 0)[0][-1])
    projected: np.ndarray = np.maximum(v - cumulative[rho] / (rho + 1), 0.0)
    return projected
