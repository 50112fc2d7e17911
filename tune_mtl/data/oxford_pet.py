"""Oxford-IIIT Pet through torchvision's `OxfordIIITPet`: trimap segmentation (main, 3 classes) and breed (37).

On disk (what `OxfordIIITPet(root, download=True)` leaves; `python launch.py prepare oxford_pet --root DIR
--download` does that)::

    ROOT/oxford-iiit-pet/images/Abyssinian_1.jpg ...
    ROOT/oxford-iiit-pet/annotations/trimaps/Abyssinian_1.png     1 = pet, 2 = background, 3 = border
    ROOT/oxford-iiit-pet/annotations/trainval.txt, test.txt       "Abyssinian_1 1 1 1": id, breed 1..37, species, ...

Trimap values 1, 2, 3 become classes 0, 1, 2 (anything else -> -1, ignored). Images and trimaps are resized to
`image_size` x `image_size` (bilinear / nearest), images scaled to [0, 1]. The trainval list is split into
train and validation by a seeded `val_fraction`; the test list is the test split. `augment` mirrors training
images (and their trimaps) with probability 1/2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import OxfordIIITPet
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import Batch, DataBundle, prepare_hint, require_files, runtime_tasks
from tune_mtl.data.declarations.oxford_pet import NAME, TRIMAP_CLASSES, declare_tasks
from tune_mtl.data.npy_dense import split_train_val

FOLDER = "oxford-iiit-pet"
EXPECTED = [
    f"{FOLDER}/images",
    f"{FOLDER}/annotations/trimaps",
    f"{FOLDER}/annotations/trainval.txt",
    f"{FOLDER}/annotations/test.txt",
]
WHAT = (
    "torchvision's Oxford-IIIT Pet files: oxford-iiit-pet/images/*.jpg, oxford-iiit-pet/annotations/trimaps/*.png, "
    "trainval.txt and test.txt"
)

def _torchvision_root(root: str | None) -> str | None:
    """Accept the oxford-iiit-pet folder itself as well as its parent (torchvision's root)."""
    if root and Path(root).expanduser().name == FOLDER and (Path(root).expanduser() / "images").is_dir():
        return str(Path(root).expanduser().parent)
    return root


def check_files(root: str | None) -> Path:
    """The layout under `root`, and every image and trimap the split lists name; one `UserError` otherwise."""
    base = require_files(NAME, _torchvision_root(root), EXPECTED, WHAT)
    pet = base / FOLDER
    images = {p.stem for p in (pet / "images").glob("*.jpg")}
    trimaps = {p.stem for p in (pet / "annotations" / "trimaps").glob("*.png")}
    for split in ("trainval", "test"):
        with open(pet / "annotations" / f"{split}.txt") as file:
            ids = [line.split()[0] for line in file if line.strip()]
        if not ids:
            raise UserError(f"data root '{base}' has an empty {FOLDER}/annotations/{split}.txt (expected {WHAT}); "
                            f"{prepare_hint(NAME)}")
        for folder, have, ext in (("images", images, "jpg"), ("annotations/trimaps", trimaps, "png")):
            missing = [i for i in ids if i not in have]
            if missing:
                raise UserError(
                    f"data root '{base}' is missing {FOLDER}/{folder}/{missing[0]}.{ext}"
                    f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} listed in {split}.txt "
                    f"(expected {WHAT}); {prepare_hint(NAME)}"
                )
    return base


def trimap_to_classes(trimap: np.ndarray) -> Tensor:
    """Trimap values 1 (pet), 2 (background), 3 (border) -> 0, 1, 2; anything else -> -1 (ignored)."""
    labels = torch.from_numpy(trimap.astype(np.int64)) - 1
    labels[(labels < 0) | (labels >= TRIMAP_CLASSES)] = -1
    return labels


class PetSplit(Dataset[Batch]):
    """Items `indices` of a torchvision `OxfordIIITPet` -> (image [3, S, S], (trimap classes [S, S], breed []))."""

    def __init__(self, pets: OxfordIIITPet, indices: list[int], size: int, augment: bool) -> None:
        self.pets, self.indices, self.size, self.augment = pets, list(indices), size, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        image, (trimap, breed) = self.pets[self.indices[i]]
        size = [self.size, self.size]
        image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        trimap = TF.resize(trimap, size, interpolation=InterpolationMode.NEAREST)
        x = TF.pil_to_tensor(image).float() / 255.0
        labels = trimap_to_classes(np.asarray(trimap))
        if self.augment and bool(torch.rand(()) < 0.5):
            x, labels = x.flip(-1), labels.flip(-1)
        return x, (labels, torch.tensor(breed, dtype=torch.long))


def prepare(root: str, download: bool) -> str:
    if download:
        OxfordIIITPet(root, split="trainval", download=True)  # fetches images.tar.gz and annotations.tar.gz
    try:
        base = check_files(root)
    except UserError as err:
        if download:
            raise
        raise UserError(f"{err} (or add --download to fetch it with torchvision)") from None
    sizes = {split: len(OxfordIIITPet(str(base), split=split)) for split in ("trainval", "test")}
    return f"oxford_pet ready under '{base}': {sizes['trainval']} trainval and {sizes['test']} test images"


def oxford_pet(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `oxford_pet` (declared in data/declarations/oxford_pet.py) from torchvision's files under `root`."""
    base = str(check_files(options["root"]))
    target_types = ["segmentation", "category"]
    trainval = OxfordIIITPet(base, split="trainval", target_types=target_types)
    test = OxfordIIITPet(base, split="test", target_types=target_types)
    data_seed = seed if options["data_seed"] is None else options["data_seed"]
    train_idx, val_idx = split_train_val(list(range(len(trainval))), options["val_fraction"], data_seed)
    test_idx = list(range(len(test)))
    if options["max_train_samples"] is not None:
        train_idx = train_idx[: options["max_train_samples"]]
    if options["max_eval_samples"] is not None:
        val_idx, test_idx = val_idx[: options["max_eval_samples"]], test_idx[: options["max_eval_samples"]]
    size = options["image_size"]
    return DataBundle(
        name=NAME,
        train=PetSplit(trainval, train_idx, size, options["augment"]),
        val=PetSplit(trainval, val_idx, size, False),
        test=PetSplit(test, test_idx, size, False),
        tasks=runtime_tasks(declare_tasks(options)),
        input_shape=(3, size, size),
        default_model="unet",
        info={"options": options, "root": base},
    )
