"""GradNorm (Chen et al. 2018): task weights w_t learned so that the weighted task gradients on the last shared
layer have norms in proportion to each task's relative inverse training rate.

    G_t = || grad_W (w_t L_t) || = w_t || grad_W L_t ||,       r_t = (L_t / L_t(0)) / mean_k (L_k / L_k(0))
    L_grad = sum_t | G_t - [mean_k G_k] * r_t^alpha |          (the bracketed target is a constant)

W is the weight of the last shared layer: the LAST tensor of `ctx.shared_params` with ndim >= 2 (a Linear
weight or a conv kernel; its bias is left out, as in the paper). L_t(0) are the task losses of the first step.
The model receives the gradient of sum_t w_t L_t with the current weights; then w takes one step of its own
Adam optimiser (`weight_lr`) on L_grad and is renormalised to sum T (kept positive). The weights have their
own optimiser rather than riding in the trainer's one so that the renormalisation follows every update
immediately and the weight step size is a knob of its own, whatever the model's optimiser (the seed's weights
never moved from 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy, weight_logs
from tune_mtl.strategies.declarations import GradNormKnobs
from tune_mtl.strategies.learned_weights import LearnedWeights

MIN_WEIGHT = 1e-4  # weights are kept >= this before renormalising, so none can turn negative


def last_shared_layer(shared_params: list[nn.Parameter]) -> nn.Parameter:
    for p in reversed(shared_params):
        if p.ndim >= 2:
            return p
    raise ValueError("GradNorm needs a shared layer with a weight matrix (a shared parameter with ndim >= 2)")


def gradnorm_loss(weights: Tensor, grad_norms: Tensor, task_losses: Tensor, initial: Tensor, alpha: float) -> Tensor:
    G = weights * grad_norms
    ratio = task_losses / initial
    target = (G.mean() * (ratio / ratio.mean()) ** alpha).detach()
    return (G - target).abs().sum()


class GradNorm(Strategy, declaration=declared.GRADNORM):
    knobs: GradNormKnobs
    learned: LearnedWeights

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.learned = LearnedWeights(torch.ones(num_tasks), lr=self.knobs.weight_lr)
        self.initial_losses: Tensor | None = None

    @property
    def task_weights(self) -> Tensor:
        return self.learned.values

    def backward(self, ctx: StepContext) -> dict[str, float]:
        self.learned.to(ctx.losses.device, ctx.losses.dtype)
        task_losses = ctx.task_losses
        if self.initial_losses is None:
            self.initial_losses = task_losses.detach().clamp_min(torch.finfo(task_losses.dtype).tiny)
        layer = last_shared_layer(ctx.shared_params)
        grad_norms = jac.task_jacobian(task_losses, [layer], retain_graph=True).norm(dim=1)
        used = self.task_weights.detach().clone()
        torch.autograd.backward((used * task_losses).sum())

        loss = gradnorm_loss(self.task_weights, grad_norms, task_losses.detach(), self.initial_losses, self.knobs.alpha)
        self.learned.step(torch.autograd.grad(loss, self.task_weights)[0])
        with torch.no_grad():
            self.task_weights.clamp_(min=MIN_WEIGHT)
            self.task_weights.mul_(self.num_tasks / self.task_weights.sum())
        return {**weight_logs(used), "gradnorm_loss": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        weights, optimizer = self.learned.state()
        return {"weights": weights, "initial_losses": self.initial_losses, "optimizer": optimizer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learned.load(state["weights"], state["optimizer"])
        self.initial_losses = state.get("initial_losses")
