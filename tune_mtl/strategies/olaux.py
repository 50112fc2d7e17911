"""OL-AUX (Lin et al. 2019, "Adaptive auxiliary task weighting"): online learning of auxiliary weights.

The main task (task 0) weighs 1; auxiliary task k weighs w_k (initially 1). Each step the shared parameters get
sum_t w_t g_t (g_t the task gradients from one batched Jacobian) and every head its weighted task gradient.
Over a window of N steps the first-order effect of w_k on the main loss, -lr * sum_j <g_main_j, g_k_j>, is
accumulated; at the end of the window

    w_k <- max(0, w_k + beta * sum_{j in window} <g_main_j, g_k_j>)

(beta absorbs the model's learning rate; weights are kept non-negative so an auxiliary loss is never
maximised). The seed's counter started at 0.4 and never equalled N, so its weights never moved.
"""

from __future__ import annotations

from typing import Any

import torch

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.auxiliary import write_shared_and_heads
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import OLAuxKnobs


class OLAux(Strategy, declaration=declared.OLAUX):
    knobs: OLAuxKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.task_weights = torch.ones(num_tasks, dtype=torch.float64)
        self.alignment = torch.zeros(num_tasks - 1, dtype=torch.float64)  # sum_j <g_main_j, g_k_j>
        self.steps_in_window = 0

    def backward(self, ctx: StepContext) -> dict[str, float]:
        J = jac.task_jacobian(ctx.task_losses, ctx.shared_params, retain_graph=True)
        weights = self.task_weights.to(J)
        write_shared_and_heads(ctx, weights @ J, weights)
        self.alignment += (J[1:] @ J[0]).detach().double().cpu()
        self.steps_in_window += 1
        if self.steps_in_window >= self.knobs.N:
            self.task_weights[1:] = (self.task_weights[1:] + self.knobs.beta * self.alignment).clamp_min(0.0)
            self.alignment.zero_()
            self.steps_in_window = 0
        return weight_logs(weights)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.task_weights.clone(), "alignment": self.alignment.clone(),
                "steps_in_window": self.steps_in_window}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_weights = state["weights"].clone()
        self.alignment = state["alignment"].clone()
        self.steps_in_window = int(state["steps_in_window"])
