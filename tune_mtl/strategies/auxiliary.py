"""Mechanics shared by the auxiliary-task strategies (task 0 is the main task): the main task's validation
gradient, and writing a combined shared gradient plus weighted head gradients.

Not a strategy itself (no `Strategy` subclass here), so the registry's discovery imports it harmlessly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext


def main_validation_gradient(
    ctx: StepContext, params: Sequence[nn.Parameter], at: Sequence[Tensor] | None = None
) -> tuple[list[Tensor], Tensor]:
    """Gradient of L_main = mean_i l_0(x_i) over `ctx.val_batch` w.r.t. `params`, at their current values or
    at `at` (a look-ahead point). Runs through `jacobian.functional_losses`, so batch-norm running statistics
    are not updated by this extra forward pass. Returns (gradient per parameter, L_main without graph)."""
    if ctx.val_batch is None:
        raise RuntimeError("this strategy needs a validation batch (needs_validation_batch = True)")
    if at is None:
        leaves: list[Tensor] = list(params)
        overrides: dict[str, Tensor] = {}
    else:
        leaves = [t.detach().requires_grad_(True) for t in at]
        overrides = dict(zip(jac.parameter_names(ctx.model, params), leaves, strict=True))
    with torch.enable_grad():
        if overrides or any(True for _ in ctx.model.buffers()):
            val_losses = jac.functional_losses(ctx.model, ctx.compute_losses, ctx.val_batch, overrides)
        else:  # nothing to substitute or protect: the plain forward is cheaper
            val_losses = ctx.compute_losses(ctx.val_batch)
        main = val_losses[0].mean()
        grads = torch.autograd.grad(main, leaves, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves, strict=True)], main.detach()


def write_shared_and_heads(ctx: StepContext, shared_grad: Tensor, head_weights: Tensor | None) -> None:
    """Set the shared parameters' gradient to the flat `shared_grad`; give head t the gradient of
    head_weights[t] * L_t (None: weight 1). Call after `jacobian.task_jacobian(..., retain_graph=True)`."""
    jac.write_grads(ctx.shared_params, shared_grad)
    jac.backward_heads(ctx.task_losses, ctx.all_task_params, head_weights)


def flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])
