"""NYUv2's declaration (data/nyuv2.py builds it, MTAN's .npy layout): 13-class segmentation (main), depth,
surface normal."""

from __future__ import annotations

from typing import Any

from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, depth_task, normal_task, segmentation_task
from tune_mtl.data.declarations._npy_dense import COMMON_OPTIONS

NAME = "nyuv2"
NUM_CLASSES = 13


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    return [segmentation_task(NUM_CLASSES), depth_task(), normal_task()]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="NYUv2 (MTAN .npy layout): 13-class segmentation (main), depth, surface normal.",
        options=dict(COMMON_OPTIONS),
        tasks=declare_tasks,
        builder="tune_mtl.data.nyuv2:nyuv2",
        default_model="segnet",
        aliases=("nyu", "nyu_v2"),
        prepare="tune_mtl.data.nyuv2:prepare",
    ),
)
