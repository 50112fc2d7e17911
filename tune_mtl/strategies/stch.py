"""STCH (Lin et al., ICML 2024): smooth Tchebycheff scalarisation, as in LibMTL / the official MTL code.

Warm-up (epochs < `warmup_epochs`, and the epoch == `warmup_epochs` itself): descend sum_t log l_t; during
epoch `warmup_epochs` the mean task losses are accumulated into the nadir vector z. Afterwards descend
    T * mu * log sum_t exp(log(l_t / z_t) / mu),
a smooth max of the normalised log losses (mu -> 0: the Tchebycheff max; mu large: their mean). Both are
implemented as loss weights: d/dl_t of the objective, detached, i.e. 1/l_t in warm-up and
T * softmax_t(log(l / z) / mu) / l_t afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import LossWeighting, StepContext
from tune_mtl.strategies.declarations import STCHKnobs

EPS = 1e-20


def smooth_tchebycheff(values: Tensor, mu: float) -> Tensor:
    """mu * log sum exp(values / mu): within [max, max + mu log T] of max(values)."""
    return mu * torch.logsumexp(values / mu, dim=-1)


class STCH(LossWeighting, declaration=declared.STCH):
    knobs: STCHKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.loss_sum: Tensor | None = None
        self.loss_count = 0
        self.nadir: Tensor | None = None

    def weights(self, ctx: StepContext) -> Tensor:
        losses = ctx.task_losses.detach()
        if ctx.epoch <= self.knobs.warmup_epochs:
            if ctx.epoch == self.knobs.warmup_epochs:
                self.loss_sum = losses.clone() if self.loss_sum is None else self.loss_sum.to(losses) + losses
                self.loss_count += 1
            return 1.0 / (losses + EPS)
        if self.nadir is None:
            # The mean loss of the warm-up's last epoch; none seen (no step ran in epoch `warmup_epochs`):
            # the losses are left unnormalised.
            self.nadir = (self.loss_sum / self.loss_count if self.loss_sum is not None and self.loss_count
                          else torch.ones_like(losses))
        normalised = torch.log(losses / self.nadir.to(losses) + EPS)
        return ctx.num_tasks * torch.softmax(normalised / self.knobs.mu, dim=0) / (losses + EPS)

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "loss_count": self.loss_count, "nadir": self.nadir}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum, self.loss_count, self.nadir = state["loss_sum"], state["loss_count"], state["nadir"]
