"""Gradient Vaccine (Wang et al. 2021): when the cosine similarity of (the already adjusted) g_i with g_j falls
below an EMA target phi_ij, add the multiple of g_j that lifts it to exactly phi_ij; phi_ij tracks the
observed similarity with rate `beta`. Whole-model granularity (LibMTL's default group); the EMA targets are
the strategy state. Work on the Gramian: g_i' = C[i] @ J, so all similarities come from C G C'.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.declarations import GradVacKnobs
from tune_mtl.strategies.min_norm import like, to_numpy


def gradvac_coefficients(G: np.ndarray, targets: np.ndarray, beta: float, order: list[list[int]]) -> np.ndarray:
    """C[T, T] with adjusted gradients C @ J; updates `targets` (phi) in place. order[i]: partners of i."""
    T = len(G)
    C = np.eye(T)
    norms = np.sqrt(np.maximum(np.diag(G), 0.0))
    for i in range(T):
        for j in order[i]:
            adjusted_norm = np.sqrt(max(C[i] @ G @ C[i], 0.0))
            denom = adjusted_norm * norms[j]
            if denom <= 0:
                continue
            cos = (C[i] @ G[:, j]) / denom
            phi = targets[i, j]
            if cos < phi < 1:  # phi = 1 cannot be reached by a finite step
                # Solves cos(g_i' + a g_j, g_j) = phi for a (the paper's Eq. 3 in norms and cosines).
                a = adjusted_norm * (phi * np.sqrt(1 - cos**2) - cos * np.sqrt(1 - phi**2))
                C[i, j] += a / (norms[j] * np.sqrt(1 - phi**2))
            targets[i, j] = (1 - beta) * phi + beta * cos
    return C


class GradVac(GramianWeighting, declaration=declared.GRADVAC):
    knobs: GradVacKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        self.targets = np.zeros((num_tasks, num_tasks))

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        T = self.num_tasks
        order = []
        for i in range(T):
            draw = torch.randperm(T, generator=self.generator, device=self.generator.device)
            partners = [j for j in draw.tolist() if j != i]
            order.append(partners)
        return like(gradvac_coefficients(to_numpy(gramian), self.targets, self.knobs.beta, order).sum(axis=0), gramian)

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.copy(), **self.random_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.targets = np.array(state["targets"], dtype=np.float64)
        self.load_random_state(state)
