"""What a data set declares without torch: its options, its tasks (names, kinds, metrics, the primary metric and
its direction, from the options alone), its default model, aliases, and where its builder and `prepare` live.

The registry (`tune_mtl.data`) reads only these declarations (`data/declarations/<family>.py`), so the search
driver (a cluster's head node, which may hold neither the data nor torch) checks task and metric names
without building the data set; `data.build` imports the builder inside a trial, and the builder makes its
runtime tasks (loss function, metric accumulator: `data.base.Task.from_declaration`) from the same
declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tune_mtl.core.metric_names import (
    BINARY,
    CLASSIFICATION,
    DEPTH,
    NORMAL,
    REGRESSION,
    SEGMENTATION,
    MetricDirection,
    MetricFamily,
)
from tune_mtl.core.options import Field
from tune_mtl.core.registry import load_object

# A task's kind names its per-sample loss (`data.base.LOSSES`) and, for UW, its likelihood form.
KINDS = ("regression", "classification", "binary", "segmentation", "depth", "normal")


class TaskMetrics(Protocol):
    """What resolving an objective reads of a task: a declared task (driver) or a built one (trial)."""

    @property
    def name(self) -> str: ...

    @property
    def primary(self) -> MetricDirection: ...

    @property
    def metric_names(self) -> tuple[str, ...]: ...

    def metric_direction(self, metric: str) -> bool | None: ...


@dataclass(frozen=True)
class TaskDeclaration:
    name: str
    kind: str  # one of KINDS
    out_dim: int  # channels / classes the head must produce (0: known only once the files are read)
    metrics: MetricFamily  # what its accumulator reports, and which way is better
    primary: MetricDirection  # the metric a search optimises when this task is the objective

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"task '{self.name}': kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.metrics.direction(self.primary.name) != self.primary.higher_is_better:
            raise ValueError(f"task '{self.name}': primary metric {self.primary} is not one of {self.metrics}")

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics.names

    def metric_direction(self, metric: str) -> bool | None:
        return self.metrics.direction(metric)


def regression_task(name: str) -> TaskDeclaration:
    """Per-sample MSE; mse (primary) and mae."""
    return TaskDeclaration(name, "regression", 1, REGRESSION, REGRESSION.primary("mse"))


def classification_task(name: str, classes: int) -> TaskDeclaration:
    """Cross-entropy over `classes`; accuracy."""
    return TaskDeclaration(name, "classification", classes, CLASSIFICATION, CLASSIFICATION.primary("accuracy"))


def binary_task(name: str, primary: str = "accuracy") -> TaskDeclaration:
    """Two-class cross-entropy for a one-vs-rest task; accuracy and F1 of class 1."""
    return TaskDeclaration(name, "binary", 2, BINARY, BINARY.primary(primary))


def segmentation_task(classes: int, name: str = "segmentation") -> TaskDeclaration:
    """Per-pixel cross-entropy (label -1 ignored); mIoU (primary) and pixel accuracy."""
    return TaskDeclaration(name, "segmentation", classes, SEGMENTATION, SEGMENTATION.primary("miou"))


def depth_task(name: str = "depth") -> TaskDeclaration:
    """L1 over valid pixels; absolute (primary) and relative error."""
    return TaskDeclaration(name, "depth", 1, DEPTH, DEPTH.primary("abs_err"))


def normal_task(name: str = "normal") -> TaskDeclaration:
    """1 - cosine over valid pixels; angle statistics, mean angle primary."""
    return TaskDeclaration(name, "normal", 3, NORMAL, NORMAL.primary("mean_angle"))


@dataclass(frozen=True)
class DataSetDeclaration:
    name: str
    description: str  # one line for `launch.py datasets`
    options: dict[str, Field]  # the data set's keys (type, default, valid range), checked before anything runs
    # The tasks, main first, from the checked options alone (no file read); the builder's bundle holds the same.
    tasks: Callable[[dict[str, Any]], list[TaskDeclaration]]
    builder: str  # "module:function", a `(options: dict, seed: int) -> DataBundle`, imported in trials
    default_model: str | None = None  # the model a search uses when the config names none
    aliases: tuple[str, ...] = ()  # the names the seed code bases use (Toy_reg, Cityscape, ...)
    # "module:function", a `(root: str, download: bool) -> message` that fetches what can be fetched or
    # explains which archive to get, then checks the layout under `root` (`launch.py prepare`; may import torch).
    prepare: str | None = None

    def load_builder(self) -> Callable[[dict[str, Any], int], Any]:
        """The builder function (imports its module, and with it torch)."""
        builder: Callable[[dict[str, Any], int], Any] = load_object(self.builder)
        return builder

    def load_prepare(self) -> Callable[[str, bool], str] | None:
        if self.prepare is None:
            return None
        prepare: Callable[[str, bool], str] = load_object(self.prepare)
        return prepare

