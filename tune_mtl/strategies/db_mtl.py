"""DB-MTL (Lin et al., 2023): dual balancing of loss scales and gradient magnitudes.

Loss scale: every task contributes log(l_t) instead of l_t. Gradient magnitude: an EMA of the log-loss task
gradients of the shared parameters, g_t <- g_t + beta / step^beta_sigma * (g_t_old - g_t) (LibMTL's form,
starting from zero), is rescaled so every task's gradient has the norm of the largest one, and the rescaled
gradients are summed. Heads get the gradients of their log losses (as LibMTL, which backpropagates the log
losses into the decoders).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import GradientAggregation, StepContext, weight_logs
from tune_mtl.strategies.declarations import DBMTLKnobs

EPS = 1e-8


class DBMTL(GradientAggregation, declaration=declared.DB_MTL):
    knobs: DBMTLKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.step = 0
        self.buffer: Tensor | None = None
        self.last_scales = torch.ones(num_tasks)  # norm scales of the last step, for the logs

    def scaled_gradients(self, log_jacobian: Tensor) -> Tensor:
        """Update the EMA with this step's [T, P] log-loss Jacobian; return the rescaled rows [T, P]."""
        self.step += 1
        if self.buffer is None or self.buffer.shape != log_jacobian.shape:
            self.buffer = torch.zeros_like(log_jacobian)
        rate: float = self.knobs.beta / self.step**self.knobs.beta_sigma
        self.buffer = (log_jacobian + rate * (self.buffer.to(log_jacobian) - log_jacobian)).detach()
        norms = self.buffer.norm(dim=1)
        self.last_scales = norms.max() / (norms + EPS)
        scaled: Tensor = self.last_scales.unsqueeze(1) * self.buffer
        return scaled

    def aggregate(self, jacobian: Tensor) -> Tensor:
        return self.scaled_gradients(jacobian).sum(dim=0)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        log_losses = torch.log(ctx.task_losses + EPS)
        J = jac.task_jacobian(log_losses, ctx.shared_params, retain_graph=True)
        jac.write_grads(ctx.shared_params, self.aggregate(J))
        jac.backward_heads(log_losses, ctx.all_task_params)
        return weight_logs(self.last_scales, prefix="scale")

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "buffer": None if self.buffer is None else self.buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.buffer = None if state["buffer"] is None else state["buffer"].clone()
