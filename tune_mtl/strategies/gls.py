"""Geometric loss strategy (Chennupati et al. 2019): minimise the geometric mean (prod_t L_t)^(1/T).

Computed as exp(mean_t log L_t) (no overflow or underflow of the product). Its gradient is the loss-weighted
sum with w_t = G / (T L_t), G the geometric mean: those w_t are what `weight/<t>` logs. A task loss of exactly
0 is clamped to the smallest positive float (the geometric mean is then ~0 and so is its gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs


def geometric_mean(task_losses: Tensor) -> Tensor:
    return torch.exp(torch.log(task_losses.clamp_min(torch.finfo(task_losses.dtype).tiny)).mean())


class GLS(Strategy, declaration=declared.GLS):
    def backward(self, ctx: StepContext) -> dict[str, float]:
        task_losses = ctx.task_losses
        loss = geometric_mean(task_losses)
        torch.autograd.backward(loss)
        effective = loss.detach() / (ctx.num_tasks * task_losses.detach().clamp_min(torch.finfo(loss.dtype).tiny))
        return {**weight_logs(effective), "geometric_mean": float(loss.detach())}
