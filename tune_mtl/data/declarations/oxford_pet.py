"""Oxford-IIIT Pet's declaration (data/oxford_pet.py builds it): 3-class trimap segmentation (main) and 37-breed
classification."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, classification_task, segmentation_task

NAME = "oxford_pet"
NUM_BREEDS = 37
TRIMAP_CLASSES = 3

OPTIONS = {
    "root": Field(str, None, help="folder holding oxford-iiit-pet/ (torchvision's OxfordIIITPet root)", path=True),
    "image_size": Field(int, 128, low=8, high=1024, help="images and trimaps are resized to this square size"),
    "augment": Field(bool, True, help="random horizontal flip of training images"),
    "val_fraction": Field(float, 0.1, low=0.01, high=0.9, help="fraction of trainval held out for validation"),
    "max_train_samples": Field(int, None, low=1, help="use at most this many training samples"),
    "max_eval_samples": Field(int, None, low=1, help="use at most this many validation and test samples"),
    "data_seed": Field(int, None, help="seed of the train/validation split (default: the trial seed)"),
}


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    """Trimap segmentation (main) and 37-breed classification."""
    return [segmentation_task(TRIMAP_CLASSES), classification_task("breed", NUM_BREEDS)]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="Oxford-IIIT Pet (torchvision files): 3-class trimap segmentation (main), 37-breed "
                    "classification.",
        options=OPTIONS,
        tasks=declare_tasks,
        builder="tune_mtl.data.oxford_pet:oxford_pet",
        default_model="unet",
        aliases=("oxford_pet_iii", "oxford_iiit_pet", "oxfordpet", "pet"),
        prepare="tune_mtl.data.oxford_pet:prepare",
    ),
)
