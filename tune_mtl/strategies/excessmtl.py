"""ExcessMTL (He et al., ICML 2024): robust task weighting by excess risk, as in LibMTL / the official code.

The excess risk of task t is estimated by a diagonal (AdaGrad-style) second-order approximation,
e_t = g_t^T diag(1 / sqrt(sum_k g_t,k^2 + 1e-7)) g_t, g_t the task gradient of the shared parameters with the
squared gradients accumulated over all steps. The first step fixes the reference e_t^0; later steps take an
exponentiated-gradient step w_t <- w_t * exp(robust_step_size * e_t / e_t^0), renormalised to sum T.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import LossWeighting, StepContext
from tune_mtl.strategies.declarations import ExcessMTLKnobs


class ExcessMTL(LossWeighting, declaration=declared.EXCESSMTL):
    knobs: ExcessMTLKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.loss_weight = torch.ones(num_tasks)
        self.grad_sq_sum: Tensor | None = None
        self.initial_excess: Tensor | None = None

    def weights(self, ctx: StepContext) -> Tensor:
        J = jac.task_jacobian(ctx.task_losses, ctx.shared_params, retain_graph=True).detach()
        if self.grad_sq_sum is None or self.grad_sq_sum.shape != J.shape:
            self.grad_sq_sum = torch.zeros_like(J)
        self.grad_sq_sum = self.grad_sq_sum.to(J) + J.pow(2)
        excess = (J.pow(2) / torch.sqrt(self.grad_sq_sum + 1e-7)).sum(dim=1)
        weight = self.loss_weight.to(J)
        if self.initial_excess is None:
            self.initial_excess = excess
        else:
            initial = self.initial_excess.to(J)
            # A task without a shared gradient at the first step (dead units, a zero loss) has no reference
            # excess: its weight stays put instead of turning into 0/0 = NaN.
            ratio = torch.where(initial > 0, excess / initial.clamp_min(torch.finfo(J.dtype).tiny), 0.0)
            weight = weight * torch.exp(self.knobs.robust_step_size * ratio)
            weight = weight / weight.sum() * ctx.num_tasks
        self.loss_weight = weight.detach()
        return self.loss_weight

    def state_dict(self) -> dict[str, Any]:
        return {"loss_weight": self.loss_weight, "grad_sq_sum": self.grad_sq_sum, "initial_excess": self.initial_excess}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_weight = state["loss_weight"].clone()
        self.grad_sq_sum = state["grad_sq_sum"]
        self.initial_excess = state["initial_excess"]
