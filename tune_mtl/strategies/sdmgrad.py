"""SDMGrad (Xiao et al., NeurIPS 2023): stochastic direction-oriented multi-objective gradient descent.

As in LibMTL / the official code: three independent mini-batches give the Jacobians zeta, xi1, xi2; the
weights w (kept across steps) take `niter` projected SGD steps (lr 5, momentum 0.5, restarted each step) on
w^T (xi1 xi2^T) w / 2 + lamda * <w, mean_row(xi1 xi2^T)>, with the cross Gramian normalised by its mean
diagonal scale; the update is (w^T zeta + lamda * mean(zeta)) / (1 + lamda).
Approximation: the three batches are three disjoint thirds of the current batch (per-sample losses), so one
batched reverse pass gives all 3T rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import GradientAggregation, Knob, StepContext, weight_logs
from tune_mtl.strategies.stochastic_moo import piece_losses, project_to_simplex


class SDMGrad(GradientAggregation):
    name = "sdmgrad"
    summary = "direction-oriented stochastic MGDA (three sub-batches, regularised towards the mean gradient)"
    knobs = {
        "lamda": Knob(0.3, float, low=0.0, high=100.0, help="pull towards the average-gradient direction"),
        "niter": Knob(20, int, low=1, high=1000, help="projected SGD steps on the weights per training step"),
    }

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.w = torch.full((num_tasks,), 1.0 / num_tasks)

    def aggregate_pieces(self, zeta: Tensor, xi1: Tensor, xi2: Tensor) -> Tensor:
        """Three [T, P] Jacobians of independent batches -> the shared update [P]."""
        GG = xi1 @ xi2.T
        scale = torch.sqrt(torch.clamp(torch.diagonal(GG), min=0.0)).mean()
        GG = GG / (scale.pow(2) + 1e-8)
        Gg = GG.mean(dim=1)
        w = self.w.to(GG)
        velocity = torch.zeros_like(w)
        for _ in range(self.niter):
            velocity = 0.5 * velocity + (GG @ w + self.lamda * Gg)
            w = project_to_simplex(w - 5.0 * velocity)
        self.w = w.detach()
        return (w @ zeta + self.lamda * zeta.mean(dim=0)) / (1.0 + self.lamda)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        T = ctx.num_tasks
        J = jac.task_jacobian(piece_losses(ctx.losses, 3).reshape(-1), ctx.shared_params, retain_graph=True)
        zeta, xi1, xi2 = J.reshape(3, T, -1)
        jac.write_grads(ctx.shared_params, self.aggregate_pieces(zeta, xi1, xi2))
        jac.backward_heads(ctx.task_losses, ctx.all_task_params)
        return weight_logs(self.w)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()
