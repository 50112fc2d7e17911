"""A vector of task weights (or their logits) that a strategy learns with its own Adam optimiser.

GradNorm, Auto-Lambda, FAMO, FORUM and MOML each learn T numbers by a rule of their own (a GradNorm loss, a
meta-gradient, a loss-decrease VJP, a bilevel direction) and step them with a private Adam rather than the
trainer's optimiser: the step size is a knob of the method, the update happens inside `backward` (GradNorm
renormalises right after it), and the model's optimiser settings must not leak into the weights. This class
is that shared part: the leaf tensor, its Adam, moving both to another device or dtype without losing Adam's
moments, and the checkpoint.

Not a strategy itself (no `Strategy` subclass here), so the registry's discovery imports it harmlessly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class LearnedWeights:
    """`values` [T] (a leaf that requires grad) and the Adam optimiser that steps it."""

    def __init__(self, initial: Tensor, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = lr
        self.weight_decay = weight_decay
        self._rebuild(initial, None)

    def _rebuild(self, values: Tensor, optimizer_state: dict[str, Any] | None) -> None:
        self.values = values.detach().clone().requires_grad_(True)
        self.optimizer = torch.optim.Adam([self.values], lr=self.lr, weight_decay=self.weight_decay)
        if optimizer_state is not None:
            # Adam casts its moments to the parameter's device and dtype when it loads them.
            self.optimizer.load_state_dict(optimizer_state)

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Move the values (and Adam's moments) to `device` (and `dtype`); a no-op when they are there."""
        dtype = self.values.dtype if dtype is None else dtype
        if (self.values.device, self.values.dtype) != (torch.device(device), dtype):
            self._rebuild(self.values.to(device, dtype), self.optimizer.state_dict())

    def detached(self) -> Tensor:
        return self.values.detach()

    def step(self, grad: Tensor) -> None:
        """One Adam step of the values along `grad` (cast to their dtype and device)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.values.grad = grad.detach().to(self.values)
        self.optimizer.step()

    def state(self) -> tuple[Tensor, dict[str, Any]]:
        """(values, Adam's state) for a checkpoint."""
        return self.values.detach().clone(), self.optimizer.state_dict()

    def load(self, values: Tensor, optimizer_state: dict[str, Any]) -> None:
        """Restore a checkpoint on the current device (values keep their saved dtype)."""
        self._rebuild(values.to(self.values.device), optimizer_state)
