"""CIFAR-10 as ten one-vs-rest binary tasks (SLGrad's set-up): task t is "label == t", airplane (0) is main.

On disk: torchvision's CIFAR-10 python layout under `dataset.root`:

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5   pickled dicts {'data': uint8 [10000, 3072]
    <root>/cifar-10-batches-py/test_batch                        (row-major R, G, B planes of 32x32),
    <root>/cifar-10-batches-py/batches.meta                      'labels': [10000 ints]}; meta {'label_names'}

read by `torchvision.datasets.CIFAR10`. torchvision verifies each file's MD5 on every load; the builder skips
that (it hashes 180 MB per trial) and `prepare` reports it once instead. Validation images come from the
training batches (a seeded, disjoint subset), test images from `test_batch`.

Label noise, on the *training* split only so that validation and test measure the clean tasks: for each noisy
task (the main task or all ten) exactly round(noise * N_train) training samples, drawn with a seeded
permutation, get `uniform` noise (the binary label is flipped 0 <-> 1) or `background` noise (the label is set
to the negative class 0, whatever it was). `bundle.info['noise_mask']` [T, N_train] marks the drawn samples.
Metrics per task: accuracy and F1 of the positive class; F1 is the primary metric because every task is 1:9
imbalanced (predicting "negative" everywhere already scores 90 % accuracy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import Batch, DataBundle, TensorSplit, require_files, runtime_tasks, split_indices
from tune_mtl.data.declarations.cifar10 import CLASSES, NAME, declare_tasks

FOLDER = "cifar-10-batches-py"
FILES = [f"{FOLDER}/data_batch_{i}" for i in range(1, 6)] + [f"{FOLDER}/test_batch", f"{FOLDER}/batches.meta"]
WHAT = f"torchvision's CIFAR-10 python batches {FOLDER}/data_batch_1..5, test_batch, batches.meta"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

class ImageSplit(TensorSplit):
    """uint8 images [N, C, H, W] kept as bytes (4x less memory, also on the GPU); each batch is converted to
    float and normalised per channel when it is sliced."""

    def __init__(
        self, images: Tensor, targets: tuple[Tensor, ...], mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        super().__init__(images, targets)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __getitem__(self, index: Any) -> Batch:
        x = self.inputs[index]
        single = x.dim() == 3
        x = x.unsqueeze(0) if single else x
        if self.mean.device != x.device:
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x.float() / 255.0 - self.mean) / self.std
        return (x[0] if single else x), tuple(t[index] for t in self.targets)


def corrupt(
    labels: Tensor, fraction: float, kind: str, tasks: str, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """labels [T, N] in {0, 1} -> (noisy labels, mask of the drawn samples [T, N])."""
    noisy, mask = labels.clone(), torch.zeros_like(labels, dtype=torch.bool)
    n = labels.shape[1]
    count = round(fraction * n)
    for t in range(labels.shape[0] if tasks == "all" else 1):
        idx = torch.randperm(n, generator=generator)[:count]
        mask[t, idx] = True
        noisy[t, idx] = 1 - labels[t, idx] if kind == "uniform" else 0
    return noisy, mask


def one_vs_rest(classes: Tensor) -> Tensor:
    """class ids [N] -> binary labels [10, N] (row t: class == t)."""
    return (classes.unsqueeze(0) == torch.arange(10).unsqueeze(1)).long()


class CifarImages(Protocol):
    """What this module reads of torchvision's CIFAR10: the images and their class ids."""

    data: np.ndarray  # [N, 32, 32, 3] uint8
    targets: list[int]

    def __len__(self) -> int: ...


def _cifar_class() -> tuple[Any, Any]:
    """(torchvision's CIFAR10, the same without the per-load MD5): classes of an untyped library."""
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):  # type: ignore[misc]  # torchvision ships no type information: CIFAR10 is Any
        """torchvision's reader without the per-load MD5 (checked once by `prepare`); same files, same folder."""

        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10, LocalCIFAR10


def load_cifar(root: str, train: bool) -> CifarImages:
    _, local = _cifar_class()
    try:
        images: CifarImages = local(root, train=train, download=False)
        return images
    except Exception as err:  # noqa: BLE001 - a truncated or foreign pickle fails in many ways
        raise UserError(
            f"could not read CIFAR-10 under '{root}/{FOLDER}' ({type(err).__name__}: {err}); "
            f"run `python launch.py prepare {NAME} --root DIR`"
        ) from None


def check_layout(root: str | None) -> Path:
    return require_files(NAME, root, FILES, WHAT)


def prepare(root: str, download: bool) -> str:
    """Download CIFAR-10 with torchvision (when asked; it checks the archive's MD5), then check the layout and
    each file's MD5 against torchvision's table."""
    from torchvision.datasets.utils import check_integrity

    official, _ = _cifar_class()
    if download:
        try:
            official(root, train=True, download=True)
        except Exception as err:  # noqa: BLE001 - network and archive errors vary
            raise UserError(
                f"could not download CIFAR-10 into '{root}' ({err}); without internet, unpack "
                f"cifar-10-python.tar.gz from {official.url} into '{root}'"
            ) from None
    base = check_layout(root)
    train, test = load_cifar(str(base), True), load_cifar(str(base), False)
    files = official.train_list + official.test_list + [[official.meta["filename"], official.meta["md5"]]]
    differ = [name for name, md5 in files if not check_integrity(str(base / FOLDER / name), md5)]
    checksum = f"MD5 differs from the official release for {', '.join(differ)}" if differ else "MD5 verified"
    return f"{NAME}: CIFAR-10 found under '{base / FOLDER}' ({len(train)} train, {len(test)} test images; {checksum})"


def take(dataset: CifarImages, idx: Tensor) -> tuple[Tensor, Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(dataset.data[idx.numpy()])).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets)[idx]


def cifar10(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `cifar10` (declared in data/declarations/cifar10.py) from the files under `root`."""
    if options["download"]:
        prepare(options["root"], download=True)
    base = check_layout(options["root"])
    train_set, test_set = load_cifar(str(base), True), load_cifar(str(base), False)
    g = torch.Generator().manual_seed(options["data_seed"])
    indices = split_indices(f"dataset.{NAME}", f"CIFAR-10 under '{base}'", options["train_size"], options["val_size"],
                            options["test_size"], len(train_set), len(test_set), g)
    x_train, c_train = take(train_set, indices["train"])
    x_val, c_val = take(train_set, indices["val"])
    x_test, c_test = take(test_set, indices["test"])
    clean_train = one_vs_rest(c_train)
    y_train, noise_mask = corrupt(clean_train, options["noise"], options["noise_kind"], options["noise_tasks"], g)

    def split(images: Tensor, labels: Tensor) -> ImageSplit:
        return ImageSplit(images, tuple(labels[t] for t in range(10)), MEAN, STD)

    return DataBundle(
        name=NAME,
        train=split(x_train, y_train),
        val=split(x_val, one_vs_rest(c_val)),
        test=split(x_test, one_vs_rest(c_test)),
        tasks=runtime_tasks(declare_tasks(options)),
        input_shape=(3, 32, 32),
        default_model="resnet18",
        info={"options": options, "noise_mask": noise_mask, "clean_train_targets": clean_train,
              "classes": list(CLASSES), "indices": indices},  # indices: rows of the torchvision splits
    )
