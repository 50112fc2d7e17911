"""CelebA: the 40 binary face attributes as tasks (a chosen main attribute first), optionally identity.

On disk: torchvision's CelebA layout under `dataset.root`:

    <root>/celeba/img_align_celeba/000001.jpg ...        aligned and cropped faces, 178x218 JPEG
    <root>/celeba/list_attr_celeba.txt                    line 1: count, line 2: 40 names, then "file  1 -1 ..."
    <root>/celeba/list_eval_partition.txt                 "file  0|1|2" (official train / valid / test)
    <root>/celeba/identity_CelebA.txt                     "file  identity" (1 ... 10177)
    <root>/celeba/list_bbox_celeba.txt                    line 1: count, line 2: header, then "file  x y w h"
    <root>/celeba/list_landmarks_align_celeba.txt         line 1: count, line 2: header, then "file  10 ints"

read by `torchvision.datasets.CelebA` (space-separated, repeated spaces allowed; attributes -1/1 become 0/1).
torchvision verifies the MD5 of the five text files on every load; the builder skips that and `prepare`
reports it once. Images are centre-cropped to a square and resized to `image_size` (antialiased), then
normalised to [-1, 1]. The official partitions give train / val / test; `max_train` / `max_val` / `max_test`
keep a seeded random subset of each (0 keeps all). `in_memory` decodes the chosen images once into a uint8
tensor (fast epochs, 12 KB per 64x64 image); otherwise each batch is decoded from JPEG by the data loader.

Tasks: binary attributes (accuracy primary, as in the MTL literature; F1 reported too) and, with `identity`,
a 10177-way identity task. The official partitions are identity-disjoint, so the identity task can only act as
an auxiliary task: its validation and test accuracy are ~0 by construction.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import Batch, DataBundle, prepare_hint, require_files, runtime_tasks
from tune_mtl.data.cifar10 import ImageSplit
from tune_mtl.data.declarations.celeba import ATTRIBUTES as ATTRIBUTES  # the file header's names; tests read it
from tune_mtl.data.declarations.celeba import NAME, declare_tasks, task_order

if TYPE_CHECKING:
    from PIL.Image import Image

FOLDER = "celeba"
IMAGES = f"{FOLDER}/img_align_celeba"
TEXT_FILES = [
    "list_attr_celeba.txt",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
]
EXPECTED = [IMAGES] + [f"{FOLDER}/{name}" for name in TEXT_FILES]
WHAT = f"torchvision's CelebA layout: {IMAGES}/*.jpg and {FOLDER}/{{{', '.join(TEXT_FILES)}}}"
PARTITIONS = {"train": 0, "val": 1, "test": 2}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

# torchvision's CelebA reader (torchvision ships no type information). Read here: attr [N, 40], attr_names,
# identity [N, 1], filename, root, _load_csv, and item i -> (image, target).
CelebASource = Any


def _celeba_class() -> tuple[Any, Any]:
    """(torchvision's CelebA, the same without the per-load MD5 of the text files)."""
    from torchvision.datasets import CelebA

    class LocalCelebA(CelebA):  # type: ignore[misc]  # torchvision ships no type information: CelebA is Any
        """torchvision's reader without the per-load MD5 of the text files (checked once by `prepare`)."""

        file_list = [(file_id, None, filename) for file_id, _, filename in CelebA.file_list]

    return CelebA, LocalCelebA


class SquareResize:
    """PIL image -> uint8 tensor [3, size, size]: centre square crop, antialiased resize."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image) -> Tensor:
        from torchvision.transforms import functional as TF

        image = image.convert("RGB")
        side = min(image.size)
        image = TF.center_crop(image, [side, side])
        image = TF.resize(image, [self.size, self.size], antialias=True)
        pixels: Tensor = TF.pil_to_tensor(image)  # torchvision is untyped: its functions return Any
        return pixels


class CelebASplit(Dataset[Batch]):
    """One partition, decoded lazily: item -> (normalised image [3, S, S], one 0-dim target per task)."""

    def __init__(self, source: CelebASource, indices: Tensor, targets: tuple[Tensor, ...]) -> None:
        self.source, self.indices, self.targets = source, indices, targets
        self.mean = torch.tensor(MEAN).view(-1, 1, 1)
        self.std = torch.tensor(STD).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> Tensor:
        pixels: Tensor = self.source[int(self.indices[i])][0]  # torchvision's __getitem__ + SquareResize: uint8
        return pixels

    def __getitem__(self, i: int) -> Batch:
        x = (self.image(i).float() / 255.0 - self.mean) / self.std
        return x, tuple(t[i] for t in self.targets)


def check_layout(root: str | None) -> Path:
    return require_files(NAME, root, EXPECTED, WHAT)


def load_celeba(base: Path, image_size: int) -> CelebASource:
    _, local = _celeba_class()
    try:
        return local(str(base), split="all", target_type=["attr", "identity"], transform=SquareResize(image_size))
    except Exception as err:  # noqa: BLE001 - malformed text files fail in many ways
        raise UserError(
            f"could not read CelebA under '{base / FOLDER}' ({type(err).__name__}: {err}); "
            f"run `python launch.py prepare {NAME} --root DIR`"
        ) from None


def partition_of(source: CelebASource) -> Tensor:
    """Official partition per image (0 train, 1 valid, 2 test), via torchvision's own parser."""
    splits = source._load_csv("list_eval_partition.txt")
    rows = {"list_eval_partition.txt": len(splits.index), "list_attr_celeba.txt": len(source.attr),
            "identity_CelebA.txt": len(source.identity)}
    if len(set(rows.values())) != 1:
        counts = ", ".join(f"{k}: {v}" for k, v in rows.items())
        raise UserError(
            f"CelebA under '{Path(source.root) / FOLDER}' has text files of different lengths ({counts}); "
            f"run `python launch.py prepare {NAME} --root DIR`"
        )
    partition: Tensor = splits.data[:, 0]
    return partition


def check_images(base: Path, filenames: list[str]) -> None:
    present = set(os.listdir(base / IMAGES))
    missing = [f for f in filenames if f not in present]
    if missing:
        raise UserError(
            f"data root '{base}' is missing {len(missing)} of the {len(filenames)} images listed in "
            f"list_eval_partition.txt under {IMAGES} (e.g. {', '.join(missing[:3])}); "
            f"{prepare_hint(NAME)}"
        )


def prepare(root: str, download: bool) -> str:
    """Download CelebA with torchvision (when asked), then check the layout, every listed image and the MD5
    of the text files."""
    from torchvision.datasets.utils import check_integrity

    official, _ = _celeba_class()
    if download:
        try:
            official(root, split="all", download=True)
        except Exception as err:  # noqa: BLE001 - network, gdown and quota errors vary
            raise UserError(
                f"could not download CelebA into '{root}' ({type(err).__name__}: {err}); torchvision fetches it from "
                f"Google Drive (needs `gdown`, often over quota): put img_align_celeba.zip (unzipped) and the five "
                f"text files into '{root}/{FOLDER}' by hand"
            ) from None
    base = check_layout(root)
    source = load_celeba(base, 64)
    partition = partition_of(source)
    check_images(base, list(source.filename))
    counts = [int((partition == p).sum()) for p in PARTITIONS.values()]
    md5 = {filename: digest for _, digest, filename in official.file_list}
    differ = [f for f in TEXT_FILES if not check_integrity(str(base / FOLDER / f), md5[f])]
    checksum = f"MD5 differs from the official release for {', '.join(differ)}" if differ else "MD5 verified"
    return (
        f"{NAME}: CelebA found under '{base / FOLDER}' ({counts[0]} train, {counts[1]} valid, {counts[2]} test "
        f"images; {checksum})"
    )


def subset(partition: Tensor, part: int, limit: int, generator: torch.Generator) -> Tensor:
    idx = torch.nonzero(partition == part).flatten()
    if 0 < limit < len(idx):
        idx = idx[torch.randperm(len(idx), generator=generator)[:limit]].sort().values
    return idx


def celeba(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `celeba` (declared in data/declarations/celeba.py) from the files under `root`."""
    names = task_order(options)
    if options["download"]:
        prepare(options["root"], download=True)
    base = check_layout(options["root"])
    source = load_celeba(base, options["image_size"])
    partition = partition_of(source)
    header = list(source.attr_names)
    absent = [n for n in names if n != "identity" and n not in header]
    if absent:
        raise UserError(f"list_attr_celeba.txt under '{base / FOLDER}' has no attribute {', '.join(absent)}")
    n_ids = int(source.identity.max()) if options["identity"] else 0
    g = torch.Generator().manual_seed(options["data_seed"])
    limits = {"train": options["max_train"], "val": options["max_val"], "test": options["max_test"]}
    indices = {split: subset(partition, part, limits[split], g) for split, part in PARTITIONS.items()}
    empty = [split for split, idx in indices.items() if len(idx) == 0]
    if empty:
        raise UserError(f"CelebA under '{base / FOLDER}' has no {', '.join(empty)} images in list_eval_partition.txt")
    check_images(base, [source.filename[int(i)] for idx in indices.values() for i in idx])

    def targets(idx: Tensor) -> tuple[Tensor, ...]:
        out = []
        for name in names:
            if name == "identity":
                out.append(source.identity[idx, 0].long() - 1)  # ids 1..10177 -> classes 0..10176
            else:
                out.append(source.attr[idx, header.index(name)].long())
        return tuple(out)

    def split(idx: Tensor) -> CelebASplit | ImageSplit:
        lazy = CelebASplit(source, idx, targets(idx))
        if not options["in_memory"]:
            return lazy
        images = torch.stack([lazy.image(i) for i in range(len(lazy))])
        return ImageSplit(images, lazy.targets, MEAN, STD)

    tasks = runtime_tasks([replace(t, out_dim=n_ids) if t.name == "identity" else t for t in declare_tasks(options)])
    size = options["image_size"]
    return DataBundle(
        name=NAME,
        train=split(indices["train"]),
        val=split(indices["val"]),
        test=split(indices["test"]),
        tasks=tasks,
        input_shape=(3, size, size),
        default_model="resnet18",
        info={"options": options, "tasks": names, "num_identities": n_ids,
              "sizes": {k: len(v) for k, v in indices.items()}},
    )
