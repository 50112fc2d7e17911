"""Per-task metric accumulators. Each task declares one `primary` metric (what a search can optimise) and
whether higher is better. Accumulators sum over batches so the result is exact for the whole split.

Each accumulator's metric names and directions are its `MetricFamily` (`core/metric_names.py`, no torch):
the search driver validates against the families, trials compute with these classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import Tensor

from tune_mtl.core.metric_names import (
    BINARY,
    CLASSIFICATION,
    DEPTH,
    NORMAL,
    REGRESSION,
    SEGMENTATION,
    MetricFamily,
)
from tune_mtl.core.metric_names import MetricDirection as MetricDirection  # noqa: F401 (tasks built with torch)


class Metric:
    """Accumulates predictions of one task over a split.

    `names` are the metrics it computes; `higher_is_better` maps each to its direction. A search may only
    optimise, or take Delta_m% over, a metric whose direction its class declares (`direction`)."""

    names: tuple[str, ...] = ()
    higher_is_better: Mapping[str, bool] = {}

    def direction(self, name: str) -> bool | None:
        """True: larger is better; False: smaller is better; None: undeclared."""
        return self.higher_is_better.get(name)

    def update(self, pred: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class RegressionMetric(Metric):
    names = REGRESSION.names
    higher_is_better = REGRESSION.higher_is_better

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

    higher_is_better = BINARY.higher_is_better

    def __init__(self, binary_f1: bool = False) -> None:
        self.binary_f1 = binary_f1
        self.names = (BINARY if binary_f1 else CLASSIFICATION).names
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


def mean_over_batch(values: Tensor) -> Tensor:
    """[B, ...] -> [B]: mean of every per-sample element (pixels, outputs) so losses stay per-sample."""
    return values.reshape(values.shape[0], -1).mean(dim=1)


def per_sample_mse(pred: Tensor, target: Tensor) -> Tensor:
    return mean_over_batch((pred.reshape(target.shape) - target).pow(2))


def per_sample_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    return mean_over_batch(torch.nn.functional.cross_entropy(pred, target.long(), reduction="none"))


# -- dense prediction (NYUv2, Cityscapes, Oxford-IIIT Pet): per-sample losses over valid pixels -----------
IGNORE_INDEX = -1  # segmentation pixels without a label


def per_sample_segmentation_cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """Logits [B, C, H, W], labels [B, H, W] (-1 = ignore) -> cross-entropy averaged over each sample's labelled
    pixels [B] (0 for a sample with none)."""
    target = target.long()
    pixel = torch.nn.functional.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = (target != IGNORE_INDEX).reshape(target.shape[0], -1).sum(dim=1)
    return pixel.reshape(target.shape[0], -1).sum(dim=1) / valid.clamp(min=1)


def depth_valid_mask(target: Tensor) -> Tensor:
    """[B, 1, H, W] -> [B, H, W]: pixels with a depth measurement (0 marks none in the MTAN layout)."""
    return (target != 0).any(dim=1)


def normal_valid_mask(target: Tensor) -> Tensor:
    """[B, 3, H, W] -> [B, H, W]: pixels with a ground-truth normal (all-zero marks none)."""
    return (target != 0).any(dim=1)


def per_sample_depth_l1(pred: Tensor, target: Tensor) -> Tensor:
    """L1 over each sample's valid (non-zero) depth pixels [B]."""
    pred = pred.reshape(target.shape)
    valid = depth_valid_mask(target)
    err = ((pred - target).abs().sum(dim=1) * valid).reshape(target.shape[0], -1).sum(dim=1)
    return err / valid.reshape(target.shape[0], -1).sum(dim=1).clamp(min=1)


def per_sample_normal_cosine(pred: Tensor, target: Tensor) -> Tensor:
    """1 - cosine similarity, averaged over each sample's valid normal pixels [B]."""
    valid = normal_valid_mask(target)
    cos = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-8)
    err = ((1 - cos) * valid).reshape(target.shape[0], -1).sum(dim=1)
    return err / valid.reshape(target.shape[0], -1).sum(dim=1).clamp(min=1)


class SegmentationMetric(Metric):
    """mIoU and pixel accuracy from a confusion matrix accumulated over the split (label -1 ignored).

    mIoU averages the IoU of the classes present in the ground truth or the prediction; a class absent from
    both has no defined IoU and is left out (LibMTL's nanmean)."""

    names = SEGMENTATION.names
    higher_is_better = SEGMENTATION.higher_is_better

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, predicted]

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels = pred.argmax(dim=1) if pred.dim() == target.dim() + 1 else pred
        target = target.long().reshape(-1)
        labels = labels.long().reshape(-1)
        valid = target != IGNORE_INDEX
        pairs = target[valid] * self.num_classes + labels[valid]
        counts = torch.bincount(pairs, minlength=self.num_classes**2)
        self.confusion += counts.reshape(self.num_classes, self.num_classes).cpu()

    def compute(self) -> dict[str, float]:
        cm = self.confusion.double()
        tp = cm.diag()
        union = cm.sum(dim=0) + cm.sum(dim=1) - tp
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) if present.any() else 0.0
        total = cm.sum()
        return {"miou": miou, "pixel_accuracy": float(tp.sum() / total) if total > 0 else 0.0}


class DepthMetric(Metric):
    """Absolute and relative error over the valid (non-zero) ground-truth pixels of the split."""

    names = DEPTH.names
    higher_is_better = DEPTH.higher_is_better

    def __init__(self) -> None:
        self.abs = self.rel = 0.0
        self.n = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = pred.reshape(target.shape).double()
        target = target.double()
        valid = target != 0
        diff = (pred[valid] - target[valid]).abs()
        self.abs += float(diff.sum())
        self.rel += float((diff / target[valid].abs()).sum())
        self.n += int(valid.sum())

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"abs_err": self.abs / n, "rel_err": self.rel / n}


class NormalMetric(Metric):
    """Angle (degrees) between predicted and true normals over valid pixels: mean, median and the fraction
    within 11.25, 22.5 and 30 degrees.

    The angle is atan2(|p x t|, p . t), exact near 0 where acos of a rounded dot product is not. Mean and
    fractions are exact. The median is exact while at most `max_exact` angles are held; past that the angles
    go into a histogram of 0.001-degree bins (a full NYUv2 split would hold ~70M floats otherwise).
    """

    names = NORMAL.names
    higher_is_better = NORMAL.higher_is_better
    THRESHOLDS = (11.25, 22.5, 30.0)
    BIN = 1e-3

    def __init__(self, max_exact: int = 4_000_000) -> None:
        self.max_exact = max_exact
        self.angles: list[Tensor] = []
        self.held = 0
        self.histogram: Tensor | None = None
        self.sum = 0.0
        self.n = 0
        self.within = [0] * len(self.THRESHOLDS)

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = normal_valid_mask(target)
        p = pred.movedim(1, -1)[valid].double()
        t = target.movedim(1, -1)[valid].double()
        p = p / p.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        t = t / t.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        angle = torch.rad2deg(torch.atan2(torch.linalg.cross(p, t).norm(dim=-1), (p * t).sum(dim=-1))).cpu()
        self.sum += float(angle.sum())
        self.n += angle.numel()
        for i, threshold in enumerate(self.THRESHOLDS):
            self.within[i] += int((angle < threshold).sum())
        if self.histogram is None:
            self.angles.append(angle.float())
            self.held += angle.numel()
            if self.held > self.max_exact:
                self.histogram = torch.zeros(int(round(180 / self.BIN)) + 1, dtype=torch.float64)
                for chunk in self.angles:
                    self._bin(self.histogram, chunk)
                self.angles, self.held = [], 0
        else:
            self._bin(self.histogram, angle)

    def _bin(self, histogram: Tensor, angle: Tensor) -> None:
        """Add `angle`'s counts into `histogram` in place (the caller passes `self.histogram` once it exists)."""
        index = (angle.double() / self.BIN).floor().long().clamp(0, histogram.numel() - 1)
        histogram += torch.bincount(index, minlength=histogram.numel()).double()

    def _median(self) -> float:
        if self.histogram is None:
            if not self.angles:
                return 0.0
            ordered = torch.cat(self.angles).double().sort().values  # numpy's median: mean of the middle two
            middle = ordered.numel() // 2
            return float(ordered[middle] if ordered.numel() % 2 else (ordered[middle - 1] + ordered[middle]) / 2)
        cumulative = self.histogram.cumsum(0)
        ranks = [(self.n + 1) // 2] if self.n % 2 else [self.n // 2, self.n // 2 + 1]  # 1-based middle rank(s)
        bins = [int(torch.searchsorted(cumulative, torch.tensor(float(r), dtype=torch.float64))) for r in ranks]
        return (sum(bins) / len(bins) + 0.5) * self.BIN

    def compute(self) -> dict[str, float]:
        n = max(self.n, 1)
        out = {"mean_angle": self.sum / n, "median_angle": self._median()}
        for threshold, count in zip(self.THRESHOLDS, self.within, strict=True):
            out[f"within_{threshold:g}"] = count / n
        return out


def metric_factory(family: MetricFamily, out_dim: int) -> Callable[[], Metric]:
    """The accumulator of a declared task's metric family (`out_dim`: a segmentation task's class count)."""
    factories: dict[str, Callable[[], Metric]] = {
        REGRESSION.key: RegressionMetric,
        CLASSIFICATION.key: ClassificationMetric,
        BINARY.key: partial(ClassificationMetric, binary_f1=True),
        SEGMENTATION.key: partial(SegmentationMetric, out_dim),
        DEPTH.key: DepthMetric,
        NORMAL.key: NormalMetric,
    }
    return factories[family.key]

