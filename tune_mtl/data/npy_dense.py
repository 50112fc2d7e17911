"""The preprocessed dense-prediction layout of MTAN (lorenmt/mtan) and LibMTL, shared by NYUv2 and Cityscapes.

On disk (one `.npy` per sample and per modality, the file stem is the integer sample index)::

    ROOT/train/image/0.npy    float [H, W, 3], RGB in [0, 1]
    ROOT/train/label/0.npy    float [H, W], class index, -1 = ignore  (Cityscapes: label_7/ label_19/ ...)
    ROOT/train/depth/0.npy    float [H, W, 1], 0 = no measurement
    ROOT/train/normal/0.npy   float [H, W, 3], unit normals, all-zero = no measurement (NYUv2 only)
    ROOT/val/...              the same; MTAN and LibMTL evaluate on it, so it is our *test* split

Our validation split is a seeded fraction of `train/` (never augmented). Items come out channels-first:
image [3, H, W] float32, segmentation [H, W] int64, depth [1, H, W] float32, normal [3, H, W] float32.

Training augmentation follows MTAN's `RandomScaleCrop` (credited there to Jialong Wu, mtan issue #34) plus a
horizontal flip: crop a random window of size (H/s, W/s) for s drawn from `scales`, resize it back to (H, W)
(bilinear for image and normals, nearest for labels and depth), divide depth by s (the scene moved s times
closer), and with probability 1/2 mirror everything and negate the normals' x component.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import Batch, prepare_hint, require_files

MTAN_SCALES = (1.0, 1.2, 1.5)

def indices_of(folder: Path) -> list[int]:
    """Sorted integer stems of the `N.npy` files in `folder`."""
    out = []
    for name in fnmatch.filter(os.listdir(folder), "*.npy"):
        stem = name[:-4]
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def find_layout_root(root: str | os.PathLike[str] | None, marker: str) -> str | None:
    """`root`, or its single sub-folder holding `marker` (an unzipped archive often adds one folder level)."""
    if not root:
        return None if root is None else str(root)
    base = Path(root).expanduser()
    if (base / marker).exists() or not base.is_dir():
        return str(root)
    nested = [child for child in base.iterdir() if child.is_dir() and (child / marker).exists()]
    return str(nested[0]) if len(nested) == 1 else str(root)


def check_layout(
    dataset: str, root: str | None, folders: Sequence[str], what: str
) -> tuple[Path, dict[str, list[int]]]:
    """Check `train/` and `val/` hold every folder in `folders` with the same sample indices.

    Returns (resolved root, {"train": indices, "val": indices}). Any gap is one `UserError`.
    """
    root = find_layout_root(root, f"train/{folders[0]}")
    expected = [f"{split}/{folder}" for split in ("train", "val") for folder in folders]
    base = require_files(dataset, root, expected, what)
    hint = prepare_hint(dataset)
    found: dict[str, list[int]] = {}
    for split in ("train", "val"):
        reference = indices_of(base / split / folders[0])
        if not reference:
            raise UserError(f"data root '{base}' has no N.npy files in {split}/{folders[0]} (expected {what}); {hint}")
        for folder in folders[1:]:
            missing = sorted(set(reference) - set(indices_of(base / split / folder)))
            if missing:
                raise UserError(
                    f"data root '{base}' is missing {split}/{folder}/{missing[0]}.npy"
                    f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} "
                    f"(expected {what}); {hint}"
                )
        found[split] = reference
    return base, found


def parse_size(dataset: str, value: list[Any] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in value):
        raise UserError(f"'dataset.{dataset}.image_size' must be [H, W] with integers >= 8, got {value!r}")
    return int(value[0]), int(value[1])


def parse_scales(dataset: str, value: list[Any] | None) -> tuple[float, ...]:
    if value is None:
        return MTAN_SCALES
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1.0 for v in value):
        raise UserError(f"'dataset.{dataset}.scales' must be a non-empty list of numbers >= 1, got {value!r}")
    return tuple(float(v) for v in value)


def split_train_val(indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded hold-out of `fraction` of `indices` (at least one sample on each side)."""
    if len(indices) < 2:
        raise UserError(f"train/ needs at least 2 samples to carve a validation split, found {len(indices)}")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(max(1, round(fraction * len(indices))), len(indices) - 1)
    val = sorted(indices[i] for i in order[:n_val])
    train = sorted(indices[i] for i in order[n_val:])
    return train, val


# -- geometry shared by all dense tasks -----------------------------------------------------------------
# One sample's modalities: image, segmentation label and depth always; surface normals only where the data set
# has them.
Sample = tuple[Tensor, Tensor, Tensor, Tensor | None]


def resize_sample(image: Tensor, label: Tensor, depth: Tensor, normal: Tensor | None, size: tuple[int, int]) -> Sample:
    """Resize to `size`: bilinear for image/normals (normals re-normalised), nearest for labels and depth."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label, depth, normal
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=True)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    depth = F.interpolate(depth[None], size=size, mode="nearest")[0]
    if normal is not None:
        valid = normal.abs().sum(0, keepdim=True) > 0
        normal = F.interpolate(normal[None], size=size, mode="bilinear", align_corners=True)[0]
        valid = F.interpolate(valid[None].float(), size=size, mode="nearest")[0] > 0
        normal = F.normalize(normal, dim=0) * valid
    return image, label, depth, normal


def scale_crop_flip(
    image: Tensor,
    label: Tensor,
    depth: Tensor,
    normal: Tensor | None,
    scale: float,
    top: int,
    left: int,
    flip: bool,
) -> Sample:
    """MTAN's scale-crop with a given window (top, left, H/scale, W/scale), then an optional mirror."""
    height, width = image.shape[-2:]
    h, w = int(height / scale), int(width / scale)

    def crop(t: Tensor) -> Tensor:  # [..., H, W] -> [1, ..., h, w]
        return t[None, ..., top : top + h, left : left + w]

    if scale != 1.0:
        size = (height, width)
        image = F.interpolate(crop(image), size=size, mode="bilinear", align_corners=True)[0]
        label = F.interpolate(crop(label)[None].float(), size=size, mode="nearest")[0, 0].long()
        depth = F.interpolate(crop(depth), size=size, mode="nearest")[0] / scale
        if normal is not None:
            normal = F.interpolate(crop(normal), size=size, mode="bilinear", align_corners=True)[0]
    if flip:
        image = image.flip(-1)
        label = label.flip(-1)
        depth = depth.flip(-1)
        if normal is not None:
            normal = normal.flip(-1).clone()
            normal[0] = -normal[0]  # mirroring the image mirrors the surfaces: x of every normal changes sign
    return image, label, depth, normal


def random_scale_crop_flip(
    image: Tensor, label: Tensor, depth: Tensor, normal: Tensor | None, scales: Sequence[float]
) -> Sample:
    """Random window and flip from torch's global generator (seeded per trial and per loader worker)."""
    height, width = image.shape[-2:]
    scale = scales[int(torch.randint(len(scales), ()))]
    h, w = int(height / scale), int(width / scale)
    top = int(torch.randint(height - h + 1, ()))
    left = int(torch.randint(width - w + 1, ()))
    flip = bool(torch.rand(()) < 0.5)
    return scale_crop_flip(image, label, depth, normal, scale, top, left, flip)


class NpyDenseSplit(Dataset[Batch]):
    """Samples `indices` of one folder (`train/` or `val/`) of the .npy layout.

    `label_folder` names the segmentation folder (`label`, `label_7`, ...), `label_map` optionally maps stored
    class ids to the ones trained on (a lookup table; -1 stays -1), `num_classes` bounds the labels.
    """

    def __init__(
        self,
        folder: Path,
        indices: Sequence[int],
        label_folder: str,
        num_classes: int,
        with_normal: bool,
        augment: bool,
        scales: Sequence[float] = MTAN_SCALES,
        size: tuple[int, int] | None = None,
        label_map: Sequence[int] | None = None,
    ) -> None:
        self.folder, self.indices = Path(folder), list(indices)
        self.label_folder, self.num_classes, self.with_normal = label_folder, num_classes, with_normal
        self.augment, self.scales, self.size = augment, tuple(scales), size
        self.label_map = None if label_map is None else torch.tensor(list(label_map) + [-1], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, modality: str, index: int) -> np.ndarray:
        array: np.ndarray = np.load(self.folder / modality / f"{index}.npy")  # numpy types np.load as Any
        return array

    def load_raw(self, i: int) -> Sample:
        """Item `i` as stored (channels-first), before resizing and augmentation."""
        index = self.indices[i]
        image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(self._load("image", index), -1, 0))).float()
        label = torch.from_numpy(np.asarray(self._load(self.label_folder, index))).float().round().long()
        depth = torch.from_numpy(np.asarray(self._load("depth", index), dtype=np.float32))
        depth = depth.reshape(1, *depth.shape[:2]) if depth.ndim == 2 else depth.permute(2, 0, 1).contiguous()
        normal = None
        if self.with_normal:
            normal = torch.from_numpy(np.ascontiguousarray(np.moveaxis(self._load("normal", index), -1, 0))).float()
        stored_classes = self.num_classes if self.label_map is None else len(self.label_map) - 1
        if label.max() >= stored_classes or label.min() < -1:
            raise UserError(
                f"'{self.folder / self.label_folder / f'{index}.npy'}' has class ids outside -1..{stored_classes - 1} "
                f"(min {int(label.min())}, max {int(label.max())}); is it the {stored_classes}-class label folder?"
            )
        if self.label_map is not None:  # index -1 picks the table's trailing -1
            label = self.label_map[label]
        return image, label, depth, normal

    def __getitem__(self, i: int) -> Batch:
        image, label, depth, normal = self.load_raw(i)
        if self.size is not None:
            image, label, depth, normal = resize_sample(image, label, depth, normal, self.size)
        if self.augment:
            image, label, depth, normal = random_scale_crop_flip(image, label, depth, normal, self.scales)
        targets = (label, depth) if normal is None else (label, depth, normal)
        return image, targets


def input_shape_of(folder: Path, index: int, size: tuple[int, int] | None) -> tuple[int, int, int]:
    image = np.load(folder / "image" / f"{index}.npy", mmap_mode="r")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise UserError(f"'{folder / 'image' / f'{index}.npy'}' has shape {image.shape}; expected [H, W, 3]")
    height, width = size if size is not None else image.shape[:2]
    return 3, int(height), int(width)


def build_splits(
    dataset: str,
    options: dict[str, Any],
    seed: int,
    base: Path,
    found: dict[str, list[int]],
    make: Callable[[Path, list[int], bool], NpyDenseSplit],
) -> tuple[NpyDenseSplit, NpyDenseSplit, NpyDenseSplit]:
    """train / val (carved from train/, seeded) / test (= val/, as MTAN and LibMTL evaluate)."""
    data_seed = seed if options["data_seed"] is None else options["data_seed"]
    train_idx, val_idx = split_train_val(found["train"], options["val_fraction"], data_seed)
    test_idx = found["val"]
    if options["max_train_samples"] is not None:
        train_idx = train_idx[: options["max_train_samples"]]
    if options["max_eval_samples"] is not None:
        val_idx, test_idx = val_idx[: options["max_eval_samples"]], test_idx[: options["max_eval_samples"]]
    return (
        make(base / "train", train_idx, options["augment"]),
        make(base / "train", val_idx, False),
        make(base / "val", test_idx, False),
    )


def describe_layout(base: Path, found: dict[str, list[int]]) -> str:
    return f"{len(found['train'])} training and {len(found['val'])} evaluation samples under '{base}'"
