"""Equal weighting (EW / Unif): every task weighs 1, the plain sum of the mean task losses."""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import LossWeighting, StepContext


class Uniform(LossWeighting, declaration=declared.UNIFORM):
    def weights(self, ctx: StepContext) -> Tensor:
        return torch.ones(ctx.num_tasks, device=ctx.losses.device)
