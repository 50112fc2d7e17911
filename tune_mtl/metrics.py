"""Per-task metric accumulators. Each task declares one `primary` metric (what a search can optimise) and
whether higher is better. Accumulators sum over batches so the result is exact for the whole split."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class Metric:
    """Accumulates predictions of one task over a split."""

    names: tuple[str, ...] = ()

    def update(self, pred: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class RegressionMetric(Metric):
    names = ("mse", "mae")

    def __init__(self) -> None:
        self.sq = self.abs = 0.0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        diff = pred.reshape(target.shape) - target
        self.sq += float(diff.pow(2).sum())
        self.abs += float(diff.abs().sum())
        self.n += target.numel()

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"mse": self.sq / n, "mae": self.abs / n}


class ClassificationMetric(Metric):
    """Multi-class accuracy; with `binary_f1`, also F1 of class 1 (for imbalanced one-vs-rest tasks)."""

    def __init__(self, binary_f1: bool = False) -> None:
        self.binary_f1 = binary_f1
        self.names = ("accuracy", "f1") if binary_f1 else ("accuracy",)
        self.correct = self.n = 0
        self.tp = self.fp = self.fn = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels = pred.argmax(dim=1) if pred.dim() > 1 and pred.shape[1] > 1 else (pred.reshape(-1) > 0).long()
        target = target.reshape(-1).long()
        self.correct += int((labels == target).sum())
        self.n += target.numel()
        if self.binary_f1:
            self.tp += int(((labels == 1) & (target == 1)).sum())
            self.fp += int(((labels == 1) & (target != 1)).sum())
            self.fn += int(((labels != 1) & (target == 1)).sum())

    def compute(self) -> dict[str, float]:
        out = {"accuracy": self.correct / max(self.n, 1)}
        if self.binary_f1:
            denom = 2 * self.tp + self.fp + self.fn
            out["f1"] = 2 * self.tp / denom if denom else 0.0
        return out


@dataclass(frozen=True)
class MetricDirection:
    name: str
    higher_is_better: bool

    @property
    def mode(self) -> str:
        return "max" if self.higher_is_better else "min"


def mean_over_batch(values: Tensor) -> Tensor:
    """[B, ...] -> [B]: mean of every per-sample element (pixels, outputs) so losses stay per-sample."""
    return values.reshape(values.shape[0], -1).mean(dim=1)


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    return mean_over_batch((pred.reshape(target.shape) - target).pow(2))


def per_sample_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    return mean_over_batch(torch.nn.functional.cross_entropy(pred, target.long(), reduction="none"))
