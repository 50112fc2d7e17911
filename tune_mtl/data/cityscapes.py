"""Cityscapes in MTAN's preprocessed layout: semantic segmentation (main, 19 or 7 classes) and depth, 128x256.

MTAN's archive `cityscapes2.zip` (128x256, https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip?dl=0;
the 256x512 one is https://www.dropbox.com/s/q2333k4eyrnezbh/cityscapes.zip?dl=0; both linked from the README
of lorenmt/mtan) unzips to::

    ROOT/train/{image,label_2,label_7,label_19,depth}/N.npy    2975 samples
    ROOT/val/{image,label_2,label_7,label_19,depth}/N.npy      500 samples -> our test split (as MTAN/LibMTL)

image [128, 256, 3] in [0, 1]; label_K [128, 256] with K classes and -1 = void; depth [128, 256, 1] (inverse
depth, 0 = no measurement). LibMTL's copy (examples/cityscapes) names the 7-class folder `label/`; both work.

`mode`: MTLA offers Cityscapes `fine` and `coarse`, after the two annotation sets of Cityscapes (gtFine, and
the polygon-level gtCoarse; torchvision's `Cityscapes(mode=...)`). The preprocessed archives hold only labels
derived from the fine annotations, so here `coarse` means the coarse *label granularity*: the 7 Cityscapes
categories (flat, construction, object, nature, sky, human, vehicle) obtained from the 19 classes by the official
trainId -> category table (from label_19/, or label_7/ / label/ as shipped when label_19/ is absent).
`fine` reads the K-class labels as stored (`classes`: 19 by default, or 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import DataBundle, runtime_tasks
from tune_mtl.data.declarations.cityscapes import NAME, declare_tasks
from tune_mtl.data.npy_dense import (
    NpyDenseSplit,
    build_splits,
    check_layout,
    describe_layout,
    find_layout_root,
    input_shape_of,
    parse_scales,
    parse_size,
)

ARCHIVE_URL = "https://www.dropbox.com/s/lg2ktu7o8hzwf99/cityscapes2.zip?dl=0"
# Cityscapes trainId (road, sidewalk, building, wall, fence, pole, traffic light, traffic sign, vegetation,
# terrain, sky, person, rider, car, truck, bus, train, motorcycle, bicycle) -> category id - 1
# (flat, construction, object, nature, sky, human, vehicle); cityscapesScripts' labels.py.
CATEGORY_OF_TRAIN_ID = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)

def label_source(dataset_root: Path | None, mode: str, classes: int) -> tuple[str, tuple[int, ...] | None]:
    """(label folder to read, class-id lookup table or None) for `mode`/`classes`, given what is on disk."""
    train = None if dataset_root is None else dataset_root / "train"

    def has(folder: str) -> bool:
        return train is not None and (train / folder).is_dir()

    if mode == "coarse" and has("label_19"):
        return "label_19", CATEGORY_OF_TRAIN_ID
    if classes == 19:
        return "label_19", None
    if has("label_7") or not has("label"):
        return "label_7", None
    return "label", None


def _what(label_folder: str) -> str:
    return (
        f"MTAN's preprocessed Cityscapes: train/ and val/ with image/ {label_folder}/ depth/ folders of N.npy files"
    )


def _resolve(root: str | None, mode: str, classes: int | None) -> tuple[str | None, int, str, tuple[int, ...] | None]:
    if classes is None:
        classes = 19 if mode == "fine" else 7
    if mode == "coarse" and classes != 7:
        raise UserError(f"'dataset.{NAME}.classes' must be 7 with mode coarse (the 7 categories), got {classes}")
    root = find_layout_root(root, "train/image")
    label_folder, label_map = label_source(Path(root).expanduser() if root else None, mode, classes)
    return root, classes, label_folder, label_map


def prepare(root: str, download: bool) -> str:
    """Cityscapes cannot be fetched by a library call: explain the archive, then check what is under `root`."""
    how = (
        f"download MTAN's preprocessed cityscapes2.zip (128x256) from {ARCHIVE_URL} (linked from "
        f"github.com/lorenmt/mtan) and unzip it so that '{root}/train/image/0.npy' exists"
    )
    try:
        resolved, _, label_folder, _ = _resolve(root, "fine", None)
        base, found = check_layout(NAME, resolved, ("image", label_folder, "depth"), _what(label_folder))
    except UserError as err:
        raise UserError(f"{how}; then run the prepare command again ({err})") from None
    return f"cityscapes ready: {describe_layout(base, found)}"


def cityscapes(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `cityscapes` (declared in data/declarations/cityscapes.py) from MTAN's .npy files under `root`."""
    size = parse_size(NAME, options["image_size"])
    scales = parse_scales(NAME, options["scales"])
    root, classes, label_folder, label_map = _resolve(options["root"], options["mode"], options["classes"])
    base, found = check_layout(NAME, root, ("image", label_folder, "depth"), _what(label_folder))
    make = partial(_split, label_folder=label_folder, classes=classes, scales=scales, size=size, label_map=label_map)
    train, val, test = build_splits(NAME, options, seed, base, found, make)
    return DataBundle(
        name=NAME,
        train=train,
        val=val,
        test=test,
        tasks=runtime_tasks(declare_tasks(options)),
        input_shape=input_shape_of(base / "train", found["train"][0], size),
        default_model="segnet",
        info={"options": options, "root": str(base), "label_folder": label_folder, "classes": classes},
    )


def _split(
    folder: Path,
    indices: list[int],
    augment: bool,
    label_folder: str,
    classes: int,
    scales: Sequence[float],
    size: tuple[int, int] | None,
    label_map: Sequence[int] | None,
) -> NpyDenseSplit:
    return NpyDenseSplit(folder, indices, label_folder, classes, with_normal=False, augment=augment,
                         scales=scales, size=size, label_map=label_map)
