"""Tiny files in the real on-disk formats of the dense data sets (no downloads):

* MTAN / LibMTL preprocessed .npy layout (NYUv2, Cityscapes): ROOT/{train,val}/{image,label*,depth,normal}/N.npy
* torchvision's Oxford-IIIT Pet: ROOT/oxford-iiit-pet/images/*.jpg, annotations/trimaps/*.png, trainval.txt, test.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def _sample(
    rng: np.random.Generator, h: int, w: int, label_classes: dict[str, int], normal: bool
) -> dict[str, np.ndarray]:
    out = {"image": rng.random((h, w, 3), dtype=np.float32)}
    for folder, classes in label_classes.items():
        label = rng.integers(0, classes, size=(h, w)).astype(np.float32)
        label[rng.random((h, w)) < 0.1] = -1.0  # unlabelled pixels
        out[folder] = label
    depth = rng.uniform(0.5, 5.0, size=(h, w, 1)).astype(np.float32)
    depth[rng.random((h, w)) < 0.1] = 0.0  # no measurement
    out["depth"] = depth
    if normal:
        n = rng.normal(size=(h, w, 3)).astype(np.float32)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        n[rng.random((h, w)) < 0.1] = 0.0
        out["normal"] = n
    return out


def write_npy_layout(
    root: Path,
    n_train: int = 6,
    n_val: int = 3,
    size: tuple[int, int] = (32, 48),
    label_classes: dict[str, int] | None = None,
    normal: bool = True,
    seed: int = 0,
) -> Path:
    """Write MTAN's layout: image [H, W, 3], label [H, W] (-1 = ignore), depth [H, W, 1], normal [H, W, 3]."""
    label_classes = {"label": 13} if label_classes is None else label_classes
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            for folder, array in _sample(rng, *size, label_classes, normal).items():
                path = root / split / folder
                path.mkdir(parents=True, exist_ok=True)
                np.save(path / f"{i}.npy", array)
    return root


def write_nyuv2(root: Path, **kwargs) -> Path:
    return write_npy_layout(root, label_classes={"label": 13}, normal=True, **kwargs)


def write_cityscapes(root: Path, folders: dict[str, int] | None = None, **kwargs) -> Path:
    """MTAN's cityscapes2 layout by default (label_7 and label_19); LibMTL's copy has a single 7-class `label`."""
    folders = {"label_7": 7, "label_19": 19} if folders is None else folders
    return write_npy_layout(root, label_classes=folders, normal=False, **kwargs)


PET_BREEDS = ("Abyssinian", "beagle", "Bengal")  # breed ids 1, 2, 3 in the annotation files


def write_oxford_pet(
    root: Path, n_trainval: int = 6, n_test: int = 3, size: tuple[int, int] = (20, 28), seed: int = 0
) -> Path:
    """torchvision's OxfordIIITPet layout: JPEG images, trimap PNGs with values 1, 2, 3, split lists."""
    rng = np.random.default_rng(seed)
    base = root / "oxford-iiit-pet"
    images, trimaps = base / "images", base / "annotations" / "trimaps"
    images.mkdir(parents=True, exist_ok=True)
    trimaps.mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, count in (("trainval", n_trainval), ("test", n_test)):
        lines = []
        for _ in range(count):
            breed = counter % len(PET_BREEDS)
            name = f"{PET_BREEDS[breed]}_{counter + 1}"
            counter += 1
            pixels = (rng.random((size[0], size[1], 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / f"{name}.jpg", quality=90)
            trimap = rng.integers(1, 4, size=size).astype(np.uint8)
            Image.fromarray(trimap, mode="L").save(trimaps / f"{name}.png")
            species = 1 if PET_BREEDS[breed][0].isupper() else 2  # cats are capitalised in the real files
            lines.append(f"{name} {breed + 1} {species} {breed + 1}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
