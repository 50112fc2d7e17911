"""IMTL (Liu et al. 2021), impartial multi-task learning.

* IMTL-G (`mode: gradient`): the shared update d = sum_t a_t g_t with sum_t a_t = 1 whose projections onto
  every unit task gradient u_t are equal. With D = [g_1 - g_t]_t and U = [u_1 - u_t]_t (t >= 2),
  a_{2:} = g_1 U' (D U')^{-1}; all of it is T x T algebra on the Gramian.
* IMTL-L (`mode: loss`): learnable log-scales s_t, loss sum_t (e^{s_t} L_t - s_t); the s_t are exposed through
  `parameters()` so the trainer's optimizer steps them.
* IMTL-H (`mode: hybrid`, the paper's full method and LibMTL's): IMTL-G on the gradients of the scaled
  losses e^{s_t} L_t, plus the IMTL-L update of s.
Task heads always get the gradient of their own (scaled) loss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting, StepContext, weight_logs
from tune_mtl.strategies.declarations import IMTLGradientKnobs, IMTLKnobs, IMTLLossKnobs


def imtl_g_weights(gramian: Tensor) -> Tensor:
    """a[T] (sum 1) with <a @ J, g_t / |g_t|> equal for every t."""
    G = gramian.double()
    T = G.shape[0]
    if T == 1:
        return torch.ones(1, dtype=gramian.dtype, device=gramian.device)
    inv_norm = 1.0 / G.diagonal().clamp_min(1e-300).sqrt()
    # Rows t >= 2 of A map g to g_1 - g_t, so D = A J and U = A diag(inv_norm) J.
    A = torch.cat([torch.ones(T - 1, 1, dtype=G.dtype), -torch.eye(T - 1, dtype=G.dtype)], dim=1).to(G.device)
    GU = G * inv_norm[None, :]  # G diag(inv_norm) = J U-rows' building block
    DUt = A @ GU @ A.T
    g1Ut = GU[0] @ A.T
    rest = torch.linalg.lstsq(DUt.T, g1Ut.unsqueeze(1)).solution.squeeze(1)
    return torch.cat([(1 - rest.sum()).unsqueeze(0), rest]).to(gramian.dtype)


class IMTL(GramianWeighting, declaration=declared.IMTL):
    knobs: IMTLKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.log_scales = nn.Parameter(torch.zeros(num_tasks)) if self.knobs.mode != "gradient" else None

    def setup(self, model: nn.Module, device: torch.device, seed: int = 0) -> None:
        super().setup(model, device, seed)
        if self.log_scales is not None:
            self.log_scales.data = self.log_scales.data.to(device)

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return imtl_g_weights(gramian)

    def parameters(self) -> list[nn.Parameter]:
        return [] if self.log_scales is None else [self.log_scales]

    def backward(self, ctx: StepContext) -> dict[str, float]:
        task_losses = ctx.task_losses
        logs: dict[str, float] = {}
        if self.log_scales is not None:
            s = self.log_scales
            # The scale parameters see only their own objective sum_t (e^{s_t} L_t - s_t); the network sees
            # the scaled losses with s held fixed. Each side keeps its own dtype (float64 losses, float32 s).
            s.grad = (s.detach().exp() * task_losses.detach().to(s.dtype) - 1).detach()
            task_losses = s.detach().exp().to(task_losses.dtype) * task_losses
            logs.update(weight_logs(s.detach().exp(), "scale"))
        if self.knobs.mode == "loss":
            torch.autograd.backward(task_losses.sum())
            return logs
        self.step_on_losses(ctx, task_losses)
        logs.update(self.logs())
        return logs


class IMTLGradient(IMTL, declaration=declared.IMTL_G):
    knobs: IMTLGradientKnobs


class IMTLLoss(IMTL, declaration=declared.IMTL_L):
    knobs: IMTLLossKnobs
