"""Shared pieces of the stochastic multi-objective methods (SDMGrad, MoDo, MOML, FORUM).

These methods draw several *independent* mini-batches per step (LibMTL feeds them two or three loaders). Here
one batch is cut into disjoint sub-batches instead, so the trainer's one-batch-per-step contract holds; with
fewer samples than pieces every piece is the whole batch (no independence, but no empty means either).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from tune_mtl.strategies.base import Batch
from tune_mtl.strategies.min_norm import like, project_simplex, to_numpy
from tune_mtl.strategies.min_norm import min_norm_weights as exact_min_norm_weights


def piece_indices(batch_size: int, pieces: int, device: torch.device | None = None) -> list[Tensor]:
    """Disjoint, contiguous index sets covering 0..B-1 (the loader already shuffles)."""
    if batch_size < pieces:
        return [torch.arange(batch_size, device=device)] * pieces
    return list(torch.tensor_split(torch.arange(batch_size, device=device), pieces))


def piece_losses(losses: Tensor, pieces: int) -> Tensor:
    """Per-sample losses [T, B] -> mean task losses of each sub-batch, [pieces, T] (graph kept)."""
    return torch.stack([losses[:, idx].mean(dim=1) for idx in piece_indices(losses.shape[1], pieces, losses.device)])


def sub_batch(batch: Batch, idx: Tensor) -> Batch:
    x, targets = batch
    return x[idx], tuple(t[idx] for t in targets)


def project_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of a vector onto {w >= 0, sum w = 1}: `min_norm.project_simplex` (float64) on a
    tensor, returned in the tensor's dtype and device."""
    return like(project_simplex(to_numpy(v)), v)


def min_norm_weights(gramian: Tensor) -> Tensor:
    """argmin_{w in simplex} w^T G w: `min_norm.min_norm_weights` (Wolfe's exact active set) on a tensor."""
    return like(exact_min_norm_weights(gramian), gramian)


@contextmanager
def trial_state(model: nn.Module) -> Iterator[None]:
    """Let the caller evaluate the model at moved parameters (look-ahead steps) and put everything back.

    Inside, move parameters only with `move_parameters` (it rebinds `.data` instead of writing in place), so
    the autograd graph of the step's own losses, which saved the original parameter tensors, stays valid.
    Buffers are swapped for copies for the duration: extra forward passes in train mode then move the copies'
    BatchNorm statistics, which are dropped. Restoring the originals by an in-place copy instead would bump
    their version counters, and batch norm's backward saved them: the step's own backward would then fail.
    """
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(module, name, buf) for module in model.modules() for name, buf in module._buffers.items()
               if buf is not None]
    for module, name, buf in buffers:
        module._buffers[name] = buf.clone()
    try:
        yield
    finally:
        with torch.no_grad():
            for p, data in params:
                p.data = data
        for module, name, buf in buffers:
            module._buffers[name] = buf


def move_parameters(params: list[nn.Parameter], flat_step: Tensor, scale: float) -> None:
    """p <- p + scale * step (step flat over `params`), by rebinding `.data`; use inside `trial_state`."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.data = p.data + scale * flat_step[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
