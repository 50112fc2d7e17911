"""Auto-Lambda (Liu et al. 2022): task weights lambda meta-learned on the main task's validation loss.

One-step look-ahead, first order: with the task Jacobian J (rows g_t = grad L_t(theta) over the shared and the
main-task head parameters, one batched reverse pass), a VIRTUAL plain-SGD step

    theta' = theta - virtual_lr * sum_t lambda_t g_t

is taken (never written to the model), the main-task validation loss L_val is differentiated at theta', and the
chain rule through theta' gives

    dL_val(theta') / dlambda_t = -virtual_lr * < g_t, grad L_val(theta') >.

That is exact for the one unrolled step (lambda enters theta' linearly, so no Hessian term arises); Auto-Lambda
estimates the same inner products by finite differences and also folds the optimiser's momentum and weight
decay into the virtual step, which this version leaves out. The approximation is the single-step horizon.
lambda takes one step of its own Adam optimiser (`weight_lr`), is kept >= 0, and the updated lambda weights the
model's gradient of this batch (shared: lambda @ J; head t: lambda_t grad L_t), as in Auto-Lambda's loop.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.auxiliary import flat, main_validation_gradient, write_shared_and_heads
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import AutoLambdaKnobs
from tune_mtl.strategies.learned_weights import LearnedWeights


class AutoLambda(Strategy, declaration=declared.AUTOLAMBDA):
    knobs: AutoLambdaKnobs
    learned: LearnedWeights

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        # float64 until the first step casts it to the losses' dtype, so weight_init is not rounded twice
        initial = torch.full((num_tasks,), self.knobs.weight_init, dtype=torch.float64)
        self.learned = LearnedWeights(initial, lr=self.knobs.weight_lr)

    @property
    def task_weights(self) -> Tensor:
        return self.learned.values

    def backward(self, ctx: StepContext) -> dict[str, float]:
        self.learned.to(ctx.losses.device, ctx.losses.dtype)
        task_losses = ctx.task_losses
        params = [*ctx.shared_params, *ctx.task_params[0]]
        J = jac.task_jacobian(task_losses, params, retain_graph=True)

        step = self.task_weights.detach() @ J
        sizes = [p.numel() for p in params]
        virtual = [p.detach() - self.knobs.virtual_lr * s.view_as(p)
                   for p, s in zip(params, torch.split(step, sizes), strict=True)]
        val_grad, val_loss = main_validation_gradient(ctx, params, at=virtual)
        self.meta_gradient = -self.knobs.virtual_lr * (J @ flat(val_grad))  # dL_val(theta') / dlambda
        self.learned.step(self.meta_gradient)
        with torch.no_grad():
            self.task_weights.clamp_(min=0.0)

        weights = self.task_weights.detach().clone()
        n_shared = sum(sizes[: len(ctx.shared_params)])
        write_shared_and_heads(ctx, weights @ J[:, :n_shared], weights)
        return {**weight_logs(weights), "val_loss": float(val_loss)}

    def state_dict(self) -> dict[str, Any]:
        weights, optimizer = self.learned.state()
        return {"weights": weights, "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learned.load(state["weights"], state["optimizer"])
