"""FAMO (Liu et al., NeurIPS 2023): fast adaptive multitask optimisation from loss values only.

Task logits xi (z = softmax(xi)) weigh the log losses: the model descends sum_t z_t log(l_t) / c with
c = sum_t z_t / l_t (detached), i.e. task weight z_t / (c l_t) on l_t. After the model step the logits take
one Adam step (lr `w_lr`, weight decay `gamma`) whose gradient is the softmax VJP of
delta_t = log l_t(before step) - log l_t(after step) on the same batch: tasks whose loss fell least gain weight.

When the update happens: the official code and LibMTL call `update(new_losses)` right after
`optimizer.step()`. The trainer has no post-step hook, so the update runs at the START of the next backward:
the previous batch is stored and its losses at the current (= post-step) parameters are recomputed there with
`ctx.compute_losses(previous_batch)` under no_grad. Step k+1 therefore uses exactly the weights the official
order would give it; only the update after the very last step of training never happens (it could not
influence anything). The pending batch and its losses are part of `state_dict` so a resumed run is identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import LossWeighting, StepContext
from tune_mtl.strategies.declarations import FAMOKnobs
from tune_mtl.strategies.learned_weights import LearnedWeights

EPS = 1e-8


class FAMO(LossWeighting, declaration=declared.FAMO):
    knobs: FAMOKnobs
    learned: LearnedWeights

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.learned = LearnedWeights(torch.zeros(num_tasks), lr=self.knobs.w_lr, weight_decay=self.knobs.gamma)
        self.pending: tuple[Any, Tensor] | None = None  # (batch, its task losses before the step)

    @property
    def logits(self) -> Tensor:
        return self.learned.values

    def task_weights(self) -> Tensor:
        return torch.softmax(self.logits.detach(), dim=0)

    def update(self, before: Tensor, after: Tensor) -> None:
        """One logit step from the task losses of one batch before and after a model step."""
        delta = (before + EPS).log() - (after + EPS).log()
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(torch.softmax(self.logits, dim=0), self.logits, grad_outputs=delta.detach())
        self.learned.step(grad)

    def weights(self, ctx: StepContext) -> Tensor:
        if self.pending is not None:
            batch, before = self.pending
            # On copies of the buffers: this re-evaluation must not move batch-norm statistics a second time
            # per step (the official code's extra train-mode forward does; here only the trainer's forward does).
            with torch.no_grad():
                after = jac.functional_losses(ctx.model, ctx.compute_losses, batch, {}).mean(dim=1)
            self.update(before.to(after), after)
        task_losses = ctx.task_losses.detach()
        self.pending = (ctx.batch, task_losses.clone())
        z = self.task_weights().to(task_losses)
        D = task_losses + EPS
        c = (z / D).sum()
        return z / (c * D)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        super().backward(ctx)
        return {f"weight/{t}": float(w) for t, w in enumerate(self.task_weights().tolist())}

    def state_dict(self) -> dict[str, Any]:
        logits, optimizer = self.learned.state()
        return {"logits": logits, "w_opt": optimizer, "pending": self.pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learned.load(state["logits"], state["w_opt"])
        self.pending = state["pending"]
