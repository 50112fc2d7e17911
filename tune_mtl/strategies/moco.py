"""Stochastic MoCo (Fernando et al. 2023, "Mitigating gradient bias in multi-objective learning").

Stochastic task gradients bias MGDA-type weights; MoCo tracks each task gradient with an EMA y_t and moves
the weights lambda by one projected gradient step on lambda'(YY' + rho I)lambda per training step:

    h_t = L_t g_t / |g_t|            (LibMTL's normalisation of the raw gradients)
    y_t <- y_t - beta_k (y_t - h_t),                  beta_k  = beta / k^beta_sigma
    lambda <- Proj_simplex(lambda - gamma_k (YY' + rho I) lambda),   gamma_k = gamma / k^gamma_sigma
    shared update: Y' lambda

The paper's simplex projection is used (LibMTL's code takes a softmax instead). y, lambda and k are state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GradientAggregation, weight_logs
from tune_mtl.strategies.declarations import MoCoKnobs
from tune_mtl.strategies.min_norm import project_simplex, to_numpy


class MoCo(GradientAggregation, declaration=declared.MOCO):
    knobs: MoCoKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.tracked: Tensor | None = None  # y [T, P], created at the first step
        self.lam = np.full(num_tasks, 1.0 / num_tasks)
        self.k = 0

    def aggregate(self, jacobian: Tensor) -> Tensor:
        """jacobian: the loss-normalised task gradients h [T, P]."""
        self.k += 1
        if self.tracked is None:
            self.tracked = torch.zeros_like(jacobian)
        beta_k = self.knobs.beta / self.k**self.knobs.beta_sigma
        gamma_k = self.knobs.gamma / self.k**self.knobs.gamma_sigma
        self.tracked = self.tracked.to(jacobian) - beta_k * (self.tracked.to(jacobian) - jacobian)
        Y = self.tracked
        M = to_numpy(Y @ Y.T) + self.knobs.rho * np.eye(self.num_tasks)
        self.lam = project_simplex(self.lam - gamma_k * M @ self.lam)
        return torch.as_tensor(self.lam, dtype=Y.dtype, device=Y.device) @ Y

    def shared_update(self, jacobian: Tensor, task_losses: Tensor) -> Tensor:
        scale = task_losses.detach().to(jacobian.dtype) / (jacobian.norm(dim=1) + 1e-8)
        return self.aggregate(jacobian * scale[:, None])

    def logs(self) -> dict[str, float]:
        return weight_logs(torch.as_tensor(self.lam))

    def state_dict(self) -> dict[str, Any]:
        tracked = None if self.tracked is None else self.tracked.detach().clone()
        return {"tracked": tracked, "lambda": self.lam.copy(), "k": self.k}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracked = state["tracked"]
        self.lam = np.array(state["lambda"], dtype=np.float64)
        self.k = int(state["k"])
