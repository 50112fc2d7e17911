"""MoDo (Chen et al., NeurIPS 2023 / JMLR 2024): multi-objective gradient with double sampling.

As in LibMTL / the official code: lambda <- Proj_simplex(lambda - gamma * (J1 J2^T lambda + rho * lambda)) from
two independent batches, then the shared update lambda^T J3 from a third one; heads get their plain task
gradients. Approximation: LibMTL draws three extra batches; here the three batches are three disjoint thirds
of the current batch (one batched reverse pass over the 3T sub-batch losses), so fewer samples per estimate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import MoDoKnobs
from tune_mtl.strategies.stochastic_moo import piece_losses, project_to_simplex


# Its own backward: several Jacobians or no Jacobian per step, no aggregate(J).
class MoDo(Strategy, declaration=declared.MODO):
    knobs: MoDoKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.lambd = torch.full((num_tasks,), 1.0 / num_tasks)

    def aggregate_pieces(self, j1: Tensor, j2: Tensor, j3: Tensor) -> Tensor:
        lambd = self.lambd.to(j1)
        step = self.knobs.gamma * (j1 @ (j2.T @ lambd) + self.knobs.rho * lambd)
        self.lambd = project_to_simplex(lambd - step).detach()
        return self.lambd @ j3

    def backward(self, ctx: StepContext) -> dict[str, float]:
        J = jac.task_jacobian(piece_losses(ctx.losses, 3).reshape(-1), ctx.shared_params, retain_graph=True)
        j1, j2, j3 = J.reshape(3, ctx.num_tasks, -1)
        jac.write_grads(ctx.shared_params, self.aggregate_pieces(j1, j2, j3))
        jac.backward_heads(ctx.task_losses, ctx.all_task_params)
        return weight_logs(self.lambd)

    def state_dict(self) -> dict[str, Any]:
        return {"lambd": self.lambd.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lambd = state["lambd"].clone()
