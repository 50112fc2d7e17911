"""Dynamic weight average (Liu, Johns & Davison 2019, MTAN).

    w_t = T * softmax_t( r_t / temperature ),   r_t = L_t(e-1) / L_t(e-2)

from the mean training loss of each task over the last two epochs (`end_epoch`); uniform (all 1) for the
first two epochs. The weights sum to the number of tasks T.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import LossWeighting, StepContext
from tune_mtl.strategies.declarations import DWAKnobs


def dwa_weights(previous: Tensor, before: Tensor, temperature: float) -> Tensor:
    ratio = previous / before.clamp_min(torch.finfo(before.dtype).tiny)
    return previous.numel() * torch.softmax(ratio / temperature, dim=0)


class DWA(LossWeighting, declaration=declared.DWA):
    knobs: DWAKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.history: list[Tensor] = []  # mean training loss per task of the last two epochs

    def weights(self, ctx: StepContext) -> Tensor:
        if len(self.history) < 2:
            return torch.ones(ctx.num_tasks, device=ctx.losses.device, dtype=ctx.losses.dtype)
        before, previous = self.history
        return dwa_weights(previous, before, self.knobs.temperature).to(ctx.losses.device, ctx.losses.dtype)

    def end_epoch(self, epoch: int, mean_task_losses: Tensor) -> None:
        self.history = (self.history + [mean_task_losses.detach().double().cpu()])[-2:]

    def state_dict(self) -> dict[str, Any]:
        return {"history": [h.clone() for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [h.clone() for h in state.get("history", [])]
