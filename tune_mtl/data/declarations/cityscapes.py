"""Cityscapes' declaration (data/cityscapes.py builds it, MTAN's .npy layout): segmentation (main) and depth."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, depth_task, segmentation_task
from tune_mtl.data.declarations._npy_dense import COMMON_OPTIONS

NAME = "cityscapes"

OPTIONS = {
    **COMMON_OPTIONS,
    "root": Field(
        str, None, help="folder with train/ and val/ in MTAN's preprocessed Cityscapes .npy layout", path=True
    ),
    "mode": Field(str, "fine", choices=("fine", "coarse"), help="fine: K-class labels; coarse: 7 categories"),
    "classes": Field(int, None, choices=(7, 19), help="segmentation classes (fine: 19 or 7; coarse: 7)"),
}


def segmentation_classes(options: dict[str, Any]) -> int:
    """19 classes in fine mode unless `classes` says 7; coarse mode: the 7 categories."""
    classes: int = options["classes"] or (19 if options["mode"] == "fine" else 7)
    return classes


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    """Segmentation (main) and depth; reads no file."""
    return [segmentation_task(segmentation_classes(options)), depth_task()]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="Cityscapes (MTAN .npy layout): segmentation with 19 or 7 classes (main), depth.",
        options=OPTIONS,
        tasks=declare_tasks,
        builder="tune_mtl.data.cityscapes:cityscapes",
        default_model="segnet",
        aliases=("cityscape",),
        prepare="tune_mtl.data.cityscapes:prepare",
    ),
)
