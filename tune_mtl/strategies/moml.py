"""MOML (Ye et al., NeurIPS 2021; AIJ 2024): multi-objective meta learning of the task weights.

Bilevel: the lower level trains the model on sum_t softmax(a)_t l_t, the upper level minimises every task's
loss after that training as a multi-objective problem in the logits a. As in LibMTL's `train_MOML`: one
batch is split into a lower-level (LL) and an upper-level (UL) half; g_f = J_LL (all model parameters); a
virtual SGD step w' = w - inner_lr * softmax(a)^T g_f; the hypergradient of UL task t is
-inner_lr * J_UL(w')[t] g_f^T dsoftmax(a); the T hypergradients are combined by MGDA (min-norm point, the
paper's choice) or averaged, and `a` takes one Adam step (lr `outer_lr`). The model then descends the
weighted loss of the whole batch with the new weights.
Differences: LibMTL draws two batches per step and halves the epoch; here the current batch is halved.
The weights are T * softmax(a) (LibMTL: softmax(a)) so that the uniform start reproduces the `uniform`
strategy's sum of task losses instead of shrinking the step by T.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import LossWeighting, StepContext
from tune_mtl.strategies.declarations import MOMLKnobs
from tune_mtl.strategies.learned_weights import LearnedWeights
from tune_mtl.strategies.stochastic_moo import (
    min_norm_weights,
    move_parameters,
    piece_indices,
    sub_batch,
    trial_state,
)


def softmax_jacobian(z: Tensor) -> Tensor:
    return torch.diag(z) - torch.outer(z, z)


class MOML(LossWeighting, declaration=declared.MOML):
    knobs: MOMLKnobs
    learned: LearnedWeights

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.learned = LearnedWeights(torch.zeros(num_tasks), lr=self.knobs.outer_lr)

    @property
    def logits(self) -> Tensor:
        return self.learned.values

    def hypergradients(self, ctx: StepContext) -> Tensor:
        """[T, T]: row t = d(UL loss t after the virtual step) / d logits."""
        params = [*ctx.shared_params, *ctx.all_task_params]
        lower, upper = piece_indices(ctx.losses.shape[1], 2, ctx.losses.device)
        g_f = jac.task_jacobian(ctx.losses[:, lower].mean(dim=1), params, retain_graph=True).detach()
        z = torch.softmax(self.logits.detach(), dim=0).to(g_f)
        with trial_state(ctx.model):
            move_parameters(params, z @ g_f, -self.knobs.inner_lr)
            ul_losses = ctx.compute_losses(sub_batch(ctx.batch, upper)).mean(dim=1)
            g_F = jac.task_jacobian(ul_losses, params, retain_graph=False).detach()
        return -self.knobs.inner_lr * (g_F @ g_f.T) @ softmax_jacobian(z)

    def weights(self, ctx: StepContext) -> Tensor:
        hyper = self.hypergradients(ctx)
        if self.knobs.upper == "mgda":
            direction = min_norm_weights(hyper @ hyper.T) @ hyper
        else:
            direction = hyper.mean(dim=0)
        self.learned.step(direction)
        return ctx.num_tasks * torch.softmax(self.logits.detach(), dim=0).to(ctx.losses)

    def state_dict(self) -> dict[str, Any]:
        logits, optimizer = self.learned.state()
        return {"logits": logits, "opt": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learned.load(state["logits"], state["opt"])
