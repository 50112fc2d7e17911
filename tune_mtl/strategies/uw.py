"""Uncertainty weighting (Kendall, Gal & Cipolla 2018): one learnable log-variance s_t = log sigma_t^2 per task.

    regression task:      1/(2 sigma^2) L + log sigma  =  exp(-s)/2 * L + s/2
    classification task:  1/sigma^2     L + log sigma  =  exp(-s)   * L + s/2

`form=auto` takes each task's kind from `ctx.task_kinds` (classification, binary, segmentation,
multilabel -> the classification form; anything else -> the regression form). Without that list, every task
uses the regression form, which is LibMTL's UW (L / (2 exp(s)) + s / 2, s initialised to -0.5).
The s_t are `parameters()`: the trainer's optimizer steps them (no weight decay).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import LossWeighting, StepContext, weight_logs
from tune_mtl.strategies.declarations import UncertaintyWeightingKnobs

CLASSIFICATION_KINDS = {"classification", "binary", "segmentation", "multilabel"}


class UncertaintyWeighting(LossWeighting, declaration=declared.UW):
    knobs: UncertaintyWeightingKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.log_vars = nn.Parameter(torch.full((num_tasks,), self.knobs.init))

    def setup(self, model: nn.Module, device: torch.device, seed: int = 0) -> None:
        super().setup(model, device, seed)
        self.log_vars = nn.Parameter(self.log_vars.detach().to(device))

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def scales(self, ctx: StepContext) -> Tensor:
        """c_t: 1/2 for the regression form, 1 for the classification form."""
        if self.knobs.form != "auto":
            kinds: list[str] = [self.knobs.form] * ctx.num_tasks
        else:
            kinds = ctx.task_kinds or ["regression"] * ctx.num_tasks
        return torch.tensor([1.0 if k in CLASSIFICATION_KINDS else 0.5 for k in kinds],
                            device=ctx.losses.device, dtype=ctx.losses.dtype)

    def weights(self, ctx: StepContext) -> Tensor:
        return self.scales(ctx) * torch.exp(-self.log_vars.to(ctx.losses.dtype))

    def backward(self, ctx: StepContext) -> dict[str, float]:
        weights = self.weights(ctx)
        torch.autograd.backward((weights * ctx.task_losses + self.log_vars.to(ctx.losses.dtype) / 2).sum())
        return weight_logs(weights)
