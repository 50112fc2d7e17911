"""CIFAR-10's declaration (data/cifar10.py builds it): ten one-vs-rest binary tasks, airplane (0) main, F1
primary (every task is 1:9 imbalanced)."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, binary_task

NAME = "cifar10"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

OPTIONS = {
    "root": Field(
        str, "data/cifar10", help="folder holding cifar-10-batches-py (see `launch.py prepare cifar10`)", path=True
    ),
    "download": Field(bool, False, help="let torchvision download CIFAR-10 into root if it is missing"),
    "train_size": Field(int, 45000, low=1, help="training images (from the training batches)"),
    "val_size": Field(int, 5000, low=1, help="validation images (from the training batches, disjoint)"),
    "test_size": Field(int, 10000, low=1, help="test images (from test_batch)"),
    "noise": Field(float, 0.0, low=0.0, high=1.0, help="fraction of training labels corrupted per noisy task"),
    "noise_kind": Field(str, "uniform", choices=("uniform", "background"),
                        help="uniform: flip 0<->1; background: set to the negative class"),
    "noise_tasks": Field(str, "main", choices=("main", "all"), help="corrupt the main task only or all tasks"),
    "data_seed": Field(int, 0, low=0, help="seed of the split and of the noise (fixed across trials)"),
}


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    return [binary_task(name, primary="f1") for name in CLASSES]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="CIFAR-10 as ten one-vs-rest binary tasks (airplane main), label-flip noise on the training "
                    "split.",
        options=OPTIONS,
        tasks=declare_tasks,
        builder="tune_mtl.data.cifar10:cifar10",
        default_model="resnet18",
        aliases=("cifar_10",),
        prepare="tune_mtl.data.cifar10:prepare",
    ),
)
