"""FairGrad (Ban & Ji, ICML 2024): alpha-fair resource allocation between tasks.

The weights solve G w = w^(-1/alpha) elementwise (G = J J^T), found like the official code / LibMTL with
`scipy.optimize.least_squares` from the uniform start, here with the analytic Jacobian and tight tolerances.
alpha = 1 is proportional fairness, alpha -> inf approaches max-min fairness. Update: w^T J.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import Tensor

from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies.base import GramianWeighting
from tune_mtl.strategies.declarations import FairGradKnobs
from tune_mtl.strategies.min_norm import to_numpy


def fairgrad_weights(gramian: Tensor, alpha: float) -> Tensor:
    A = to_numpy(gramian)
    T = A.shape[0]
    power = 1.0 / alpha

    def residual(w: np.ndarray) -> np.ndarray:
        out: np.ndarray = A @ w - np.power(w, -power)
        return out

    def jacobian(w: np.ndarray) -> np.ndarray:
        return A + np.diag(power * np.power(w, -power - 1.0))

    result = least_squares(
        residual, np.full(T, 1.0 / T), jac=jacobian, bounds=(0.0, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15,
        max_nfev=1000,
    )
    return torch.as_tensor(result.x, dtype=gramian.dtype, device=gramian.device)


class FairGrad(GramianWeighting, declaration=declared.FAIRGRAD):
    knobs: FairGradKnobs

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return fairgrad_weights(gramian, self.knobs.alpha)
