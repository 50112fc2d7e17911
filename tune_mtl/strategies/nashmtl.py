"""Nash-MTL (Navon et al. 2022): task weights alpha > 0 of the Nash bargaining solution, G alpha = 1 / alpha
(elementwise) on the raw Gramian G = J J^T (float64), as the paper states it and the official code solves it
(it works in G / |G|_F for conditioning, and its constraint scales back: the update's norm is the paper's).

The equation is the stationarity condition of the strictly convex f(alpha) = alpha'G alpha / 2 - sum log alpha,
so damped Newton (Hessian G + diag(1/alpha^2)) solves it to machine precision in a handful of iterations;
the official sequence of convex programs (CCP through cvxpy) approximates the same point. The weights are
recomputed every `update_weights_every` steps (in between, the previous alpha weights the losses and no
Jacobian is needed), and the shared gradient is clipped to `max_norm` (0: no clipping).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy, gramian, weight_logs
from tune_mtl.strategies.declarations import NashMTLKnobs
from tune_mtl.strategies.min_norm import solve, to_numpy

# Floor on the eigenvalues of the Gramian relative to its trace: when the task gradients are linearly
# dependent, G alpha = 1/alpha has no solution (f is unbounded below along a null direction of G); lifting
# only the smallest eigenvalues leaves well-posed problems exact.
_EIGEN_FLOOR = 1e-10


def nash_weights(gramian: Tensor | np.ndarray, start: np.ndarray | None = None, max_iter: int = 20) -> np.ndarray:
    """alpha > 0 with G alpha = 1 / alpha, by damped Newton on alpha'G alpha / 2 - sum log alpha."""
    G = to_numpy(gramian)
    T = len(G)
    floor = _EIGEN_FLOOR * max(float(np.trace(G)), 1e-300)
    smallest = float(np.linalg.eigvalsh(G)[0])
    if smallest < floor:
        G = G + (floor - smallest) * np.eye(T)
    alpha = np.ones(T) / np.sqrt(max(float(np.sum(G)), 1e-300) / T) if start is None else np.array(start, float)

    def objective(x: np.ndarray) -> float:
        return float(0.5 * x @ G @ x - np.sum(np.log(x)))

    for _ in range(max_iter):
        grad = G @ alpha - 1.0 / alpha
        if np.max(np.abs(grad * alpha)) < 1e-13:  # relative residual of G alpha = 1/alpha
            break
        step = -solve(G + np.diag(1.0 / alpha**2), grad)
        shrinking = step < 0
        t = min(1.0, 0.99 * float(np.min(-alpha[shrinking] / step[shrinking]))) if shrinking.any() else 1.0
        f0 = objective(alpha)
        while t > 1e-12 and objective(alpha + t * step) > f0 + 1e-4 * t * float(grad @ step):
            t *= 0.5
        alpha = alpha + t * step
    return alpha


# Its own backward: several Jacobians or no Jacobian per step, no aggregate(J).
class NashMTL(Strategy, declaration=declared.NASHMTL):
    knobs: NashMTLKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.alpha = np.ones(num_tasks)
        self.updates = 0  # steps seen, for update_weights_every

    def backward(self, ctx: StepContext) -> dict[str, float]:
        task_losses = ctx.task_losses
        update = self.updates % self.knobs.update_weights_every == 0
        self.updates += 1
        if update:
            J = jac.task_jacobian(task_losses, ctx.shared_params, retain_graph=True)
            self.alpha = self.solve(to_numpy(gramian(J)), warm=self.updates > 1)
        weights = torch.as_tensor(self.alpha, dtype=task_losses.dtype, device=task_losses.device)
        if update:  # J is at hand: no second backward through the encoder
            jac.write_grads(ctx.shared_params, weights @ J)
            jac.backward_heads(task_losses, ctx.all_task_params, weights)
        else:
            torch.autograd.backward((weights * task_losses).sum())
        if self.knobs.max_norm > 0:
            torch.nn.utils.clip_grad_norm_(ctx.shared_params, self.knobs.max_norm)
        return weight_logs(weights)

    def solve(self, G: np.ndarray, warm: bool) -> np.ndarray:
        """alpha with G alpha = 1/alpha on the raw Gramian (the paper's equation, and the official code's: its
        CCP constraint alpha_i * n * (G/n alpha)_i >= 1 undoes the normalisation it solves in). Solved on G/n,
        n = |G|_F, for conditioning: alpha_n of G/n gives alpha = alpha_n / sqrt(n)."""
        norm = float(np.linalg.norm(G))
        if not (norm > 0 and np.isfinite(norm)):
            return self.alpha
        root = np.sqrt(norm)
        # Warm start from the previous solution: consecutive Gramians are close.
        start = self.alpha * root if warm else None
        alpha: np.ndarray = nash_weights(G / norm, start=start, max_iter=self.knobs.optim_niter) / root
        return alpha

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.copy(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = np.array(state["alpha"], dtype=np.float64)
        self.updates = int(state["updates"])
