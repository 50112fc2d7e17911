"""GCosim (Du et al. 2018, "Adapting auxiliary losses using gradient similarity").

Shared update: g_main + sum_k [cos(g_main, g_k) >= 0] g_k, with g_t the real per-task gradients of this batch
(one batched Jacobian; the seed accumulated them across tasks without zero_grad, so its "task gradients" were
running sums). `weighted=true` is the paper's weighted variant: max(0, cos) g_k. The gate only concerns the
shared parameters: each head still learns from its own task's loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.auxiliary import write_shared_and_heads
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import GCosimKnobs


def cosine_gates(J: Tensor, weighted: bool = False) -> Tensor:
    """[T, P] task gradients -> [T] coefficients: 1 for the main task, the gate of each auxiliary task."""
    norms = J.norm(dim=1)
    cos = (J @ J[0]) / (norms * norms[0]).clamp_min(torch.finfo(J.dtype).tiny)
    gates: Tensor = cos.clamp_min(0.0) if weighted else (cos >= 0).to(J.dtype)
    gates[0] = 1.0
    return gates


class GCosim(Strategy, declaration=declared.GCOSIM):
    knobs: GCosimKnobs

    def backward(self, ctx: StepContext) -> dict[str, float]:
        J = jac.task_jacobian(ctx.task_losses, ctx.shared_params, retain_graph=True)
        gates = cosine_gates(J, self.knobs.weighted)
        write_shared_and_heads(ctx, gates @ J, None)
        return weight_logs(gates)
