"""Aligned-MTL (Senushkin et al. 2023): align the task gradients so that the aligned Jacobian B J has equal
singular values (a condition number of 1), then sum its rows.

With G = V diag(lambda) V' (rank r), B = sigma V diag(lambda^-1/2) V' gives B G B = sigma^2 V_r V_r': every
non-zero singular value of B J equals sigma. `scale` picks sigma: sqrt of the smallest non-zero eigenvalue
(the paper, LibMTL), of the median, or the root mean square of the singular values (torchjd's options).
Weights w = B 1, update w' J.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.declarations import AlignedMTLKnobs


def alignment_matrix(gramian: Tensor, scale: str = "min") -> Tensor:
    """B[T, T] such that B J has all non-zero singular values equal."""
    G = gramian.double()
    eigenvalues, V = torch.linalg.eigh(G)
    tol = eigenvalues.max().clamp_min(0) * G.shape[0] * torch.finfo(gramian.dtype).eps
    keep = eigenvalues > tol
    if not keep.any():
        return torch.zeros_like(gramian)
    lam, V = eigenvalues[keep], V[:, keep]
    sigma = {"min": lam.min().sqrt(), "median": lam.sqrt().median(), "rmse": lam.mean().sqrt()}[scale]
    B: Tensor = sigma * (V / lam.sqrt()) @ V.T
    return B.to(gramian.dtype)


class AlignedMTL(GramianWeighting, declaration=declared.ALIGNED_MTL):
    knobs: AlignedMTLKnobs

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return alignment_matrix(gramian, self.knobs.scale).sum(dim=0)
