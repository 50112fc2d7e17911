"""PCGrad (Yu et al. 2020): each task gradient is projected off every task gradient it conflicts with
(negative inner product), visiting the others in a fresh random order per task; the results are summed.

Done on the Gramian: the projected g_i' = C[i] @ J, so <g_i', g_j> = (C G)[i, j] and every projection is a
T x T update of C; the update is 1' C J. Projections are against the *original* g_j (as in the paper), never
against g_i itself. The order comes from the strategy's own generator (seeded from the trial seed).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.min_norm import like, to_numpy


def pcgrad_coefficients(gramian: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """C[T, T] with projected gradients C @ J (float64 numpy inside: T^2 scalar steps, torch's per-op
    overhead would dominate)."""
    G = to_numpy(gramian)
    T = len(G)
    C = np.eye(T)
    for i in range(T):
        device = None if generator is None else generator.device
        for j in torch.randperm(T, generator=generator, device=device).tolist():
            if j == i or G[j, j] <= 0:
                continue
            dot = C[i] @ G[:, j]
            if dot < 0:
                C[i, j] -= dot / G[j, j]
    return like(C, gramian)


class PCGrad(GramianWeighting, declaration=declared.PCGRAD):
    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return pcgrad_coefficients(gramian, self.generator).sum(dim=0)
