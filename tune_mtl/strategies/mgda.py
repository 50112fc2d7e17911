"""MGDA (Sener & Koltun 2018): the min-norm point of the convex hull of the task gradients.

`mgda` works on the Jacobian of the shared parameters; `mgda-ub` (the paper's upper bound) on the Jacobian of
the shared representation Z, which is much cheaper for wide encoders, and then backpropagates the weighted
loss sum_t w_t L_t through the whole network (as the paper's code does). The min-norm problem is solved
exactly (Wolfe's active set, `min_norm.py`), not by early-stopped Frank-Wolfe.

`normalization` follows LibMTL's `mgda_gn`: gradients are divided by |g_t| (`l2`), by L_t (`loss`), by
L_t |g_t| (`loss+`) or not at all (`none`) before the min-norm solve; the update is the min-norm
combination of the normalised gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import GramianWeighting, StepContext, gramian
from tune_mtl.strategies.declarations import MGDAKnobs
from tune_mtl.strategies.min_norm import like, min_norm_weights


class MGDA(GramianWeighting, declaration=declared.MGDA):
    knobs: MGDAKnobs

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return like(min_norm_weights(gramian), gramian)

    def _normalizers(self, jacobian: Tensor, task_losses: Tensor) -> Tensor:
        norms = jacobian.norm(dim=1)
        losses = task_losses.detach().to(jacobian.dtype)
        scale = {"none": torch.ones_like(norms), "l2": norms, "loss": losses, "loss+": losses * norms}
        # A zero gradient or loss stays as it is rather than turning into NaN.
        out = scale[self.knobs.normalization]
        return torch.where(out > 0, out, torch.ones_like(out))

    def combination(self, jacobian: Tensor, task_losses: Tensor) -> Tensor:
        """[T] coefficients c with update c @ J: min-norm weights of the normalised gradients / normaliser."""
        norm = self._normalizers(jacobian, task_losses)
        # Scaling the rows of the float64 Gramian equals the Gramian of the scaled rows.
        scale = 1.0 / norm.double()
        self.last_weights = self.weights_from_gramian(gramian(jacobian) * scale[:, None] * scale[None, :])
        return (self.last_weights * scale).to(jacobian.dtype)

    def shared_update(self, jacobian: Tensor, task_losses: Tensor) -> Tensor:
        return self.combination(jacobian, task_losses) @ jacobian


class MGDAUpperBound(MGDA, declaration=declared.MGDA_UB):
    def backward(self, ctx: StepContext) -> dict[str, float]:
        if ctx.representation is None:
            return super().backward(ctx)
        task_losses = ctx.task_losses
        J = jac.task_jacobian(task_losses, [ctx.representation], retain_graph=True)
        coefficients = self.combination(J, task_losses)
        torch.autograd.backward((coefficients.detach() * task_losses).sum())
        return self.logs()
