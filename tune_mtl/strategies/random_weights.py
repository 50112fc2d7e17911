"""Random loss weighting (RLW, Lin et al. 2022): weights = softmax of standard normal draws, fresh each step.

Draws come from the strategy's own generator (seeded from the trial seed, checkpointed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import LossWeighting, StepContext


class RandomWeighting(LossWeighting, declaration=declared.RANDOM):
    def weights(self, ctx: StepContext) -> Tensor:
        draw = torch.randn(ctx.num_tasks, generator=self.generator, device=self.generator.device)
        return torch.softmax(draw, dim=0).to(ctx.losses.device)
