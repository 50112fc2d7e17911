"""The one place that computes per-task gradients.

`task_jacobian` gets J[T, P] from ONE batched reverse pass (`is_grads_batched=True`: autograd vmaps the
backward over the T rows of the identity), not from T backward passes with `retain_graph`. If some op in the
graph has no batching rule, it falls back to the loop and says so once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
_fallback_reported = False


def flatten_grads(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter], rows: int) -> Tensor:
    """Per-parameter [rows, *shape] gradients (None = unused) -> one [rows, P] matrix."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros(rows, *p.shape, device=p.device, dtype=p.dtype)).reshape(rows, -1)
            for g, p in zip(grads, params, strict=True)
        ],
        dim=1,
    )


def task_jacobian(
    task_losses: Tensor, params: Sequence[nn.Parameter], retain_graph: bool = True, batched: bool = True
) -> Tensor:
    """J[t, :] = d task_losses[t] / d params, flattened: a [T, P] matrix."""
    global _fallback_reported
    params = list(params)
    T = task_losses.shape[0]
    if batched:
        eye = torch.eye(T, device=task_losses.device, dtype=task_losses.dtype)
        try:
            grads = torch.autograd.grad(
                task_losses, params, grad_outputs=eye, is_grads_batched=True, retain_graph=retain_graph,
                allow_unused=True,
            )
            return flatten_grads(grads, params, T)
        except RuntimeError as err:  # an op without a vmap rule: fall back, once reported
            if not _fallback_reported:
                log.warning("batched Jacobian unavailable (%s); using a loop of %d backward passes", err, T)
                _fallback_reported = True
    rows = []
    for t in range(T):
        keep = retain_graph or t < T - 1
        grads = torch.autograd.grad(task_losses[t], params, retain_graph=keep, allow_unused=True)
        rows.append(flatten_grads([None if g is None else g.unsqueeze(0) for g in grads], params, 1))
    return torch.cat(rows, dim=0)


def write_grads(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Set (overwrite) `.grad` of `params` from one flat [P] vector."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"gradient has {flat.numel()} entries, parameters need {offset}")


def backward_heads(task_losses: Tensor, head_params: Sequence[nn.Parameter], weights: Tensor | None = None) -> None:
    """Give each task head the gradient of its own (optionally weighted) loss; leaves shared grads alone."""
    head_params = [p for p in head_params if p.requires_grad]
    if not head_params:
        return
    total = task_losses.sum() if weights is None else (weights.detach() * task_losses).sum()
    grads = torch.autograd.grad(total, head_params, allow_unused=True)
    for p, g in zip(head_params, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g
