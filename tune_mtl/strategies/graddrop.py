"""GradDrop (Chen et al. 2020): gradient sign dropout.

Per shared coordinate, the sign purity P = (1 + sum_t g_t / sum_t |g_t|) / 2 is the probability of keeping
the positive task gradients there; with a uniform draw U, positive components survive where P > U and
negative ones where P < U; `leak` lets a fraction of the dropped components through. Applied to the
parameter Jacobian (torchjd's form; the paper and LibMTL apply it at the representation). Draws come from the
strategy's own generator on the model's device (seeded from the trial seed, checkpointed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GradientAggregation
from tune_mtl.strategies.declarations import GradDropKnobs


class GradDrop(GradientAggregation, declaration=declared.GRADDROP):
    knobs: GradDropKnobs

    def aggregate(self, jacobian: Tensor) -> Tensor:
        purity = 0.5 * (1 + jacobian.sum(dim=0) / (jacobian.abs().sum(dim=0) + 1e-12))
        draw = torch.rand(purity.shape, generator=self.generator, dtype=purity.dtype, device=self.generator.device)
        draw = draw.to(purity.device)  # a no-op where setup put the generator on the model's device
        keep = ((purity > draw) & (jacobian > 0)) | ((purity < draw) & (jacobian < 0))
        return (jacobian * (self.knobs.leak + (1 - self.knobs.leak) * keep.to(jacobian.dtype))).sum(dim=0)
