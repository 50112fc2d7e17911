"""DualProj (GEM's projection, Lopez-Paz & Ranzato 2017, in torchjd's form): the mean task gradient projected
onto the dual cone of the task gradients, i.e. the closest update to the mean that conflicts with no task.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.min_norm import dual_cone_weights, like, to_numpy


class DualProj(GramianWeighting, declaration=declared.DUALPROJ):
    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        G = to_numpy(gramian)
        return like(dual_cone_weights(G, np.full((1, len(G)), 1.0 / len(G)))[0], gramian)
