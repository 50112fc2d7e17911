"""UPGrad (Quinton & Rey 2024): project each task gradient onto the dual cone {d : <g_t, d> >= 0 for all t}
and average the projections. The result never conflicts with any task gradient. Each projection is an exact
non-negative QP on the Gramian (`min_norm.dual_cone_weights`); torchjd's version needs quadprog and
regularises the Gramian, which moves the answer.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.min_norm import dual_cone_weights, like, to_numpy


class UPGrad(GramianWeighting, declaration=declared.UPGRAD):
    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = to_numpy(gramian)
        T = len(G)
        return like(dual_cone_weights(G, np.eye(T) / T).sum(axis=0), gramian)
