"""Multi-MNIST's declaration (data/multi_mnist.py builds it): left digit (main) and right digit, 10-way each."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, classification_task

NAME = "multi_mnist"

OPTIONS = {
    "root": Field(
        str, "data/multi_mnist", help="folder holding MNIST/raw (see `launch.py prepare multi_mnist`)", path=True
    ),
    "download": Field(bool, False, help="let torchvision download MNIST into root if it is missing"),
    "train_size": Field(int, 50000, low=1, help="training images (from MNIST train)"),
    "val_size": Field(int, 10000, low=1, help="validation images (from MNIST train, disjoint from training)"),
    "test_size": Field(int, 10000, low=1, help="test images (from MNIST test)"),
    "data_seed": Field(int, 0, low=0, help="seed of the split and of the digit pairing (fixed across trials)"),
}


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    """Left digit (main) and right digit, 10-way each."""
    return [classification_task(name, 10) for name in ("left", "right")]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="Multi-MNIST: left digit (main) and right digit of two overlapping MNIST digits, 10-way each.",
        options=OPTIONS,
        tasks=declare_tasks,
        builder="tune_mtl.data.multi_mnist:multi_mnist",
        default_model="multilenet",
        aliases=("multimnist",),
        prepare="tune_mtl.data.multi_mnist:prepare",
    ),
)
