"""SDMGrad (Xiao et al., NeurIPS 2023): stochastic direction-oriented multi-objective gradient descent.

As in LibMTL / the official code: three independent mini-batches give the Jacobians zeta, xi1, xi2; the
weights w take `niter` projected SGD steps (lr 5, momentum 0.5) on
w^T (xi1 xi2^T) w / 2 + lamda * <w, mean_row(xi1 xi2^T)>, with the cross Gramian normalised by its mean
diagonal scale; the update is (w^T zeta + lamda * mean(zeta)) / (1 + lamda). Like LibMTL's one SGD optimiser
created at start-up, both w and the momentum buffer carry over from one training step to the next (and are
checkpointed). The cross Gramian is not symmetric: the gradient of w^T GG w / 2 is (GG + GG^T) w / 2.
Approximation: the three batches are three disjoint thirds of the current batch (per-sample losses), so one
batched reverse pass gives all 3T rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import SDMGradKnobs
from tune_mtl.strategies.stochastic_moo import piece_losses, project_to_simplex

LR, MOMENTUM = 5.0, 0.5  # the weights' SGD optimiser in LibMTL and the official code


# Its own backward: several Jacobians or no Jacobian per step, no aggregate(J).
class SDMGrad(Strategy, declaration=declared.SDMGRAD):
    knobs: SDMGradKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.w = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64)
        self.velocity: Tensor | None = None  # SGD momentum buffer of w (None before the first SGD step)

    def aggregate_pieces(self, zeta: Tensor, xi1: Tensor, xi2: Tensor) -> Tensor:
        """Three [T, P] Jacobians of independent batches -> the shared update [P]."""
        GG = xi1.double() @ xi2.double().T
        scale = torch.sqrt(torch.clamp(torch.diagonal(GG), min=0.0)).mean()
        GG = GG / (scale.pow(2) + 1e-8)
        Gg = GG.mean(dim=1)
        symmetric = 0.5 * (GG + GG.T)
        w = self.w.to(GG)
        velocity = self.velocity
        for _ in range(self.knobs.niter):
            grad = symmetric @ w + self.knobs.lamda * Gg
            velocity = grad if velocity is None else MOMENTUM * velocity.to(GG) + grad  # torch SGD's rule
            w = project_to_simplex(w - LR * velocity)
        self.w, self.velocity = w.detach(), velocity
        return (w.to(zeta.dtype) @ zeta + self.knobs.lamda * zeta.mean(dim=0)) / (1.0 + self.knobs.lamda)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        T = ctx.num_tasks
        J = jac.task_jacobian(piece_losses(ctx.losses, 3).reshape(-1), ctx.shared_params, retain_graph=True)
        zeta, xi1, xi2 = J.reshape(3, T, -1)
        jac.write_grads(ctx.shared_params, self.aggregate_pieces(zeta, xi1, xi2))
        jac.backward_heads(ctx.task_losses, ctx.all_task_params)
        return weight_logs(self.w)

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "velocity": None if self.velocity is None else self.velocity.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"].clone()
        velocity = state.get("velocity")
        self.velocity = None if velocity is None else velocity.clone()
