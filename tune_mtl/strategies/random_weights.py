"""Random loss weighting (RLW, Lin et al. 2022): weights = softmax of standard normal draws, fresh each step.

Draws use the trainer's seeded global generator so a trial is reproducible from its seed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies.base import LossWeighting, StepContext


class RandomWeighting(LossWeighting):
    name = "random"
    aliases = ("rlw", "random-loss-weighting")
    summary = "random loss weighting: softmax(N(0, I)) drawn every step"

    def weights(self, ctx: StepContext) -> Tensor:
        return torch.softmax(torch.randn(ctx.num_tasks), dim=0).to(ctx.losses.device)
