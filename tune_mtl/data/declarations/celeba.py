"""CelebA's declaration (data/celeba.py builds it): the 40 binary attributes, a chosen main attribute first, and
optionally the identity task."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, binary_task, classification_task

NAME = "celeba"
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)

OPTIONS = {
    "root": Field(str, "data/celeba", help="folder holding celeba/ (see `launch.py prepare celeba`)", path=True),
    "download": Field(bool, False, help="let torchvision download CelebA (Google Drive, needs gdown) into root"),
    "attributes": Field(object, "all", help="'all' or a list of attribute names (comma-separated string too)"),
    "main": Field(str, None, help="main attribute (or 'identity'), moved to task 0; default: the first attribute"),
    "identity": Field(bool, False, help="add the identity classification task (auxiliary only)"),
    "image_size": Field(int, 64, low=8, high=512, help="side of the square input images"),
    "max_train": Field(int, 0, low=0, help="keep at most this many official training images (0: all)"),
    "max_val": Field(int, 0, low=0, help="keep at most this many official validation images (0: all)"),
    "max_test": Field(int, 0, low=0, help="keep at most this many official test images (0: all)"),
    "in_memory": Field(bool, False, help="decode the chosen images once into memory (and onto the GPU)"),
    "data_seed": Field(int, 0, low=0, help="seed of the max_* subsets (fixed across trials)"),
}


def parse_attributes(value: Any) -> list[str]:
    if isinstance(value, str):
        if value.strip().lower() == "all":
            return list(ATTRIBUTES)
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise UserError(f"'dataset.{NAME}.attributes' must be 'all' or a list of attribute names, got {value!r}")
    names = []
    for name in value:
        if name not in ATTRIBUTES:
            raise unknown_name(f"CelebA attribute (dataset.{NAME}.attributes)", name, ATTRIBUTES)
        if name not in names:
            names.append(name)
    return names


def task_order(options: dict[str, Any]) -> list[str]:
    """Task names, main first: attributes, then 'identity' when asked."""
    names = parse_attributes(options["attributes"])
    if options["identity"]:
        names.append("identity")
    main = options["main"]
    if main is not None:
        if main not in ATTRIBUTES and main != "identity":
            raise unknown_name(f"CelebA main task (dataset.{NAME}.main)", main, ATTRIBUTES + ("identity",))
        if main == "identity" and not options["identity"]:
            raise UserError(
                f"'dataset.{NAME}.main' is 'identity' but 'dataset.{NAME}.identity' is false; set it to true"
            )
        names = [main] + [n for n in names if n != main]
    return names


def declare_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    """The attributes (binary, accuracy primary, F1 too), main first, and 'identity' when asked; identity's class
    count comes from the files (0 here: only the builder reads them)."""
    return [classification_task("identity", 0) if name == "identity" else binary_task(name)
            for name in task_order(options)]


DECLARATIONS = (
    DataSetDeclaration(
        name=NAME,
        description="CelebA faces: 40 binary attributes (main attribute first), optional identity task; official "
                    "splits.",
        options=OPTIONS,
        tasks=declare_tasks,
        builder="tune_mtl.data.celeba:celeba",
        default_model="resnet18",
        aliases=("celeb_a",),
        prepare="tune_mtl.data.celeba:prepare",
    ),
)
