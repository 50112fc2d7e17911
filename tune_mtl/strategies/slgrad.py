"""SLGrad (Grégoire et al. 2023): sample-level weights from the main task's validation gradient.

    w[t, i] = max(0, < grad_shared l_t(x_i), grad_shared L_main(val batch) >)

with the gradients taken w.r.t. the SHARED parameters and L_main the mean main-task (task 0) loss over
`ctx.val_batch`. All T*B inner products come from one forward-mode JVP of the per-sample losses in the
direction of the validation gradient (`jacobian.per_sample_directional_derivatives`), not from T*B backward
passes. Then ONE weighted backward per batch:

    loss = sum_t mean_i  w~[t, i] * l_t(x_i),      w~ = w * (T * B) / sum(w)

i.e. the weights are rescaled so that their mean over the T*B entries is 1: uniform weights give exactly the
plain loss sum_t mean_i l_t(x_i) of the `uniform` strategy (the seed normalised to sum 1 and divided by B
again, shrinking the step by B). If every weight clamps to zero, uniform weights are used (warned once).

Batch norm: the model stays in its current mode. The validation forward and the JVP forward run through
`jacobian.functional_losses` on copies of the buffers, so the running statistics move once per step (the
trainer's forward), not three times. Dropout: the JVP pass is a forward pass of its own and draws its own masks.

`lookahead` (off by default; the seed always took this extra optimizer step and never undid it): the weights
are computed at a VIRTUAL point theta' = theta - lookahead_lr * sum_t wbar_t grad L_t(theta), wbar_t being the
previous batch's mean weight per task (per-sample weights of another batch mean nothing here). theta' is
never written to the model: there is still exactly one optimizer step per batch.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.auxiliary import main_validation_gradient
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import SLGradKnobs

log = logging.getLogger(__name__)


def normalised_sample_weights(derivatives: Tensor) -> tuple[Tensor, bool]:
    """[T, B] directional derivatives -> (weights with mean 1 over the T*B entries, True if all clamped to 0
    and the weights fell back to uniform)."""
    clamped = derivatives.clamp_min(0.0)
    total = clamped.sum()
    if not total > 0:
        return torch.ones_like(clamped), True
    return clamped * (clamped.numel() / total), False


class SLGrad(Strategy, declaration=declared.SLGRAD):
    knobs: SLGradKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.task_weights: Tensor | None = None  # previous batch's mean weight per task (look-ahead only)
        self._fallback_warned = False
        self.last_weights: Tensor | None = None

    def _lookahead_point(self, ctx: StepContext) -> list[Tensor] | None:
        if not self.knobs.lookahead:
            return None
        prev = torch.ones(ctx.num_tasks) if self.task_weights is None else self.task_weights
        prev = prev.to(ctx.losses.device, ctx.losses.dtype)
        grads = torch.autograd.grad((prev * ctx.task_losses).sum(), ctx.shared_params, retain_graph=True,
                                    allow_unused=True)
        return [p.detach() - self.knobs.lookahead_lr * (0 if g is None else g)
                for p, g in zip(ctx.shared_params, grads, strict=True)]

    def backward(self, ctx: StepContext) -> dict[str, float]:
        at = self._lookahead_point(ctx)
        direction, val_loss = main_validation_gradient(ctx, ctx.shared_params, at)
        derivatives, _ = jac.per_sample_directional_derivatives(
            ctx.model, ctx.compute_losses, ctx.batch, ctx.shared_params, direction, at
        )
        weights, fell_back = normalised_sample_weights(derivatives)
        if fell_back and not self._fallback_warned:
            log.warning("slgrad: every sample weight clamped to zero at step %d; using uniform weights "
                        "for such batches (reported once)", ctx.step)
            self._fallback_warned = True
        weights = weights.to(ctx.losses.dtype)
        self.last_weights = weights  # [T, B], kept for inspection and tests
        torch.autograd.backward((weights * ctx.losses).mean(dim=1).sum())
        per_task = weights.mean(dim=1)  # (1/B) * per-task sum: 1 for uniform weights
        self.task_weights = per_task.detach().cpu()
        logs = weight_logs(per_task)
        logs.update(val_loss=float(val_loss), zero_weight_fraction=float((derivatives <= 0).float().mean()),
                    uniform_fallback=float(fell_back))
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"task_weights": self.task_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_weights = state.get("task_weights")
