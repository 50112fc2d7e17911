"""NYUv2 in MTAN's preprocessed layout: 13-class segmentation (main), depth and surface normals, 288x384.

MTAN's archive `nyuv2.zip` (https://www.dropbox.com/s/p2nn02wijg7peiy/nyuv2.zip?dl=0, linked from the README of
lorenmt/mtan; LibMTL's examples/nyu uses the same files) unzips to::

    ROOT/train/{image,label,depth,normal}/N.npy    795 samples
    ROOT/val/{image,label,depth,normal}/N.npy      654 samples  -> our test split (as MTAN/LibMTL evaluate)

image [288, 384, 3] in [0, 1]; label [288, 384] with 13 classes and -1 = unlabelled; depth [288, 384, 1] with
0 = no measurement; normal [288, 384, 3] unit vectors (Eigen & Fergus), zero = none. The validation split is a
seeded `val_fraction` of train/; augmentation (MTAN's random scale-crop and flip) touches the training split only.
See `tune_mtl/data/npy_dense.py` for the shared loading and augmentation code.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import DataBundle, runtime_tasks
from tune_mtl.data.declarations.nyuv2 import NAME, NUM_CLASSES, declare_tasks
from tune_mtl.data.npy_dense import (
    NpyDenseSplit,
    build_splits,
    check_layout,
    describe_layout,
    input_shape_of,
    parse_scales,
    parse_size,
)

FOLDERS = ("image", "label", "depth", "normal")
ARCHIVE_URL = "https://www.dropbox.com/s/p2nn02wijg7peiy/nyuv2.zip?dl=0"
WHAT = "MTAN's preprocessed NYUv2: train/ and val/, each with image/ label/ depth/ normal/ folders of N.npy files"

def prepare(root: str, download: bool) -> str:
    """NYUv2 cannot be fetched by a library call: explain the archive, then check what is under `root`."""
    how = (
        f"download MTAN's preprocessed nyuv2.zip from {ARCHIVE_URL} (linked from github.com/lorenmt/mtan)"
        f" and unzip it so that '{root}/train/image/0.npy' exists"
    )
    try:
        base, found = check_layout(NAME, root, FOLDERS, WHAT)
    except UserError as err:
        raise UserError(f"{how}; then run the prepare command again ({err})") from None
    return f"nyuv2 ready: {describe_layout(base, found)}"


def nyuv2(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `nyuv2` (declared in data/declarations/nyuv2.py) from MTAN's .npy files under `root`."""
    size = parse_size(NAME, options["image_size"])
    scales = parse_scales(NAME, options["scales"])
    base, found = check_layout(NAME, options["root"], FOLDERS, WHAT)
    make = partial(_split, num_classes=NUM_CLASSES, scales=scales, size=size)
    train, val, test = build_splits(NAME, options, seed, base, found, make)
    return DataBundle(
        name=NAME,
        train=train,
        val=val,
        test=test,
        tasks=runtime_tasks(declare_tasks(options)),
        input_shape=input_shape_of(base / "train", found["train"][0], size),
        default_model="segnet",
        info={"options": options, "root": str(base)},
    )


def _split(
    folder: Path,
    indices: list[int],
    augment: bool,
    num_classes: int,
    scales: Sequence[float],
    size: tuple[int, int] | None,
) -> NpyDenseSplit:
    return NpyDenseSplit(folder, indices, "label", num_classes, with_normal=True, augment=augment,
                         scales=scales, size=size)
