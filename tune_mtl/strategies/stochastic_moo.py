"""Shared pieces of the stochastic multi-objective methods (SDMGrad, MoDo, MOML, FORUM).

These methods draw several *independent* mini-batches per step (LibMTL feeds them two or three loaders). Here
one batch is cut into disjoint sub-batches instead, so the trainer's one-batch-per-step contract holds; with
fewer samples than pieces every piece is the whole batch (no independence, but no empty means either).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor, nn

from tune_mtl.strategies.base import Batch


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
    """Euclidean projection of a vector onto {w >= 0, sum w = 1} (sort-based, exact; computed in float64)."""
    x = v.double()
    u, _ = torch.sort(x, descending=True)
    cssv = torch.cumsum(u, dim=0) - 1.0
    ks = torch.arange(1, x.numel() + 1, device=x.device, dtype=x.dtype)
    positive = torch.nonzero(u - cssv / ks > 0)
    rho = int(positive.max()) if positive.numel() else 0  # k = 1 always qualifies up to rounding
    theta = cssv[rho] / (rho + 1)
    return torch.clamp(x - theta, min=0.0).to(v.dtype)


def min_norm_weights(gramian: Tensor, iterations: int = 2000, tol: float = 1e-12) -> Tensor:
    """argmin_{w in simplex} w^T G w by accelerated projected gradient (small T x T problems only)."""
    G = gramian.detach().double()
    T = G.shape[0]
    lipschitz = float(torch.linalg.eigvalsh(G).max().clamp(min=1e-30)) * 2.0
    w = torch.full((T,), 1.0 / T, dtype=G.dtype, device=G.device)
    y, t_k = w.clone(), 1.0
    for _ in range(iterations):
        w_next = project_to_simplex(y - (2.0 * G @ y) / lipschitz)
        t_next = (1.0 + (1.0 + 4.0 * t_k**2) ** 0.5) / 2.0
        y = w_next + ((t_k - 1.0) / t_next) * (w_next - w)
        done = float((w_next - w).abs().max()) < tol
        w, t_k = w_next, t_next
        if done:
            break
    return w.to(gramian.dtype)


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


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()
