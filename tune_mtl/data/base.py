"""What every data set provides: three splits, one `Task` per task (main task first), a default model.

A runtime `Task` adds what training needs (the per-sample loss, the metric accumulator) to the task a data set
declares (`data.declaration.TaskDeclaration`, torch-free): builders make theirs with `Task.from_declaration`,
so the tasks a trial trains are the ones the search driver validated.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tune_mtl.core.metrics import (
    Metric,
    MetricDirection,
    metric_factory,
    per_sample_cross_entropy,
    per_sample_depth_l1,
    per_sample_mse,
    per_sample_normal_cosine,
    per_sample_segmentation_cross_entropy,
)
from tune_mtl.data.declaration import TaskDeclaration

Batch = tuple[Tensor, tuple[Tensor, ...]]
# A split yields one (input, per-task targets) pair per index; `TensorSplit` also accepts index tensors.
Split = Dataset[Batch]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # regression | classification | binary | segmentation | depth | normal | ...
    out_dim: int  # channels / classes the head must produce
    loss: Callable[[Tensor, Tensor], Tensor]  # (pred, target) -> per-sample loss [B]
    make_metric: Callable[[], Metric]
    primary: MetricDirection  # the metric a search optimises when this task is the objective

    @classmethod
    def from_declaration(cls, declared: TaskDeclaration) -> Task:
        """The declared task with the loss of its kind and the accumulator of its metric family."""
        return cls(declared.name, declared.kind, declared.out_dim, LOSSES[declared.kind],
                   metric_factory(declared.metrics, declared.out_dim), declared.primary)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.make_metric().names

    def metric_direction(self, metric: str) -> bool | None:
        return self.make_metric().direction(metric)


# The per-sample loss [B] of each task kind (data.declaration.KINDS).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "regression": per_sample_mse,
    "classification": per_sample_cross_entropy,
    "binary": per_sample_cross_entropy,
    "segmentation": per_sample_segmentation_cross_entropy,
    "depth": per_sample_depth_l1,
    "normal": per_sample_normal_cosine,
}


def runtime_tasks(declared: list[TaskDeclaration]) -> list[Task]:
    return [Task.from_declaration(task) for task in declared]


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    tasks: list[Task]
    input_shape: tuple[int, ...]
    default_model: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)


class TensorSplit(Dataset[Batch]):
    """An in-memory split: inputs [N, ...] and one target tensor [N, ...] per task."""

    def __init__(self, inputs: Tensor, targets: tuple[Tensor, ...]) -> None:
        if any(t.shape[0] != inputs.shape[0] for t in targets):
            raise ValueError("every task needs one target per input")
        self.inputs, self.targets = inputs, tuple(targets)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, index: Any) -> Batch:
        return self.inputs[index], tuple(t[index] for t in self.targets)


class TensorBatches:
    """Batches of a `TensorSplit` by slicing (no per-item collate): the toy data set's hot loop."""

    def __init__(self, split: TensorSplit, batch_size: int, shuffle: bool, generator: torch.Generator | None):
        self.split, self.batch_size, self.shuffle, self.generator = split, batch_size, shuffle, generator

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            yield self.split[order[start : start + self.batch_size]]


def prepare_hint(dataset: str) -> str:
    """The fix every missing-data error ends with."""
    return f"run `python launch.py prepare {dataset} --root DIR` and set dataset.root to DIR"


def require_files(dataset: str, root: str | os.PathLike[str] | None, expected: list[str], what: str) -> Path:
    """Check that `root` holds every relative path in `expected`; otherwise one clear `UserError` naming the
    path, what was expected there and the `prepare` command."""
    from tune_mtl.core.errors import UserError

    hint = prepare_hint(dataset)
    if not root:
        raise UserError(f"data set '{dataset}' needs 'dataset.root' (a folder with {what}); {hint}")
    base = Path(root).expanduser()
    missing = [rel for rel in expected if not (base / rel).exists()]
    if missing:
        raise UserError(
            f"data root '{base}' is missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
            f"(expected {what}); {hint}"
        )
    return base


def make_loader(
    dataset: Split, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0
) -> TensorBatches | DataLoader[Batch]:
    generator = torch.Generator().manual_seed(seed)
    if isinstance(dataset, TensorSplit):
        return TensorBatches(dataset, batch_size, shuffle, generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers)


def cycle(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Endless iteration over a loader (validation batches for auxiliary-task strategies)."""
    while True:
        yield from loader


def split_indices(
    where: str, source: str, n_train: int, n_val: int, n_test: int, available_train: int, available_test: int,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Seeded disjoint train/val indices from a training set and test indices from a test set, after checking
    that the requested sizes fit (one clear error naming the option and what `source` holds)."""
    from tune_mtl.core.errors import UserError

    if n_train + n_val > available_train:
        raise UserError(
            f"'{where}.train_size' + 'val_size' = {n_train + n_val} exceeds the {available_train} training "
            f"images of {source}"
        )
    if n_test > available_test:
        raise UserError(f"'{where}.test_size' = {n_test} exceeds the {available_test} test images of {source}")
    order = torch.randperm(available_train, generator=generator)
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": torch.randperm(available_test, generator=generator)[:n_test],
    }
