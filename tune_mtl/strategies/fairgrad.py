"""FairGrad (Ban & Ji, ICML 2024): alpha-fair resource allocation between tasks.

The weights solve G w = w^(-1/alpha) elementwise (G = J J^T), found like the official code / LibMTL with
`scipy.optimize.least_squares` from the uniform start, here with the analytic Jacobian and tight tolerances.
alpha = 1 is proportional fairness, alpha -> inf approaches max-min fairness. Update: w^T J.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import Tensor

from tune_mtl.strategies.base import GramianWeighting, StrategyKnobs, knob
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


class FairGrad(GramianWeighting):
    name = "fairgrad"
    summary = "alpha-fair task weights: solve (J J^T) w = w^(-1/alpha)"

    @dataclass(frozen=True)
    class Knobs(StrategyKnobs):
        alpha: float = knob(1.0, low=0.001, high=100.0, help="fairness exponent (1: proportional fairness)")

    knobs: Knobs

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        return fairgrad_weights(gramian, self.knobs.alpha)
