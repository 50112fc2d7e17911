"""What each kind of metric reports and which way is better, without torch.

The search driver (a cluster's head node) checks objective names and directions against these declarations
before Ray starts, and never imports torch; the accumulators in `core/metrics.py` (torch) take their names
and directions from the same `MetricFamily`, so the two sides cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MetricDirection:
    """One metric and whether larger is better (a task's `primary` metric: what a search optimises)."""

    name: str
    higher_is_better: bool

    @property
    def mode(self) -> str:
        return "max" if self.higher_is_better else "min"


@dataclass(frozen=True)
class MetricFamily:
    """The metrics one accumulator computes, in order, and each one's direction."""

    key: str  # the accumulator class that computes them (`core.metrics.metric_class`)
    higher_is_better: Mapping[str, bool]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.higher_is_better)

    def direction(self, name: str) -> bool | None:
        """True: larger is better; False: smaller is better; None: not one of this family's metrics."""
        return self.higher_is_better.get(name)

    def primary(self, name: str) -> MetricDirection:
        """`name` as a primary metric with its declared direction (a name outside the family is a bug)."""
        if name not in self.higher_is_better:
            raise ValueError(f"metric family '{self.key}' has no metric '{name}' (it has {', '.join(self.names)})")
        return MetricDirection(name, self.higher_is_better[name])


REGRESSION = MetricFamily("regression", {"mse": False, "mae": False})
CLASSIFICATION = MetricFamily("classification", {"accuracy": True})
# One-vs-rest tasks (CIFAR-10's, CelebA's attributes): accuracy and F1 of class 1, for imbalanced classes.
BINARY = MetricFamily("binary", {"accuracy": True, "f1": True})
SEGMENTATION = MetricFamily("segmentation", {"miou": True, "pixel_accuracy": True})
DEPTH = MetricFamily("depth", {"abs_err": False, "rel_err": False})
NORMAL = MetricFamily("normal", {"mean_angle": False, "median_angle": False, "within_11.25": True,
                                 "within_22.5": True, "within_30": True})
FAMILIES = {family.key: family for family in (REGRESSION, CLASSIFICATION, BINARY, SEGMENTATION, DEPTH, NORMAL)}
