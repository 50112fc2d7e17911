"""Tiny files in the real on-disk formats that torchvision's MNIST, CIFAR10 and CelebA readers expect."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from tune_mtl.data.celeba import ATTRIBUTES


# -- MNIST: IDX files (big-endian magic 0x0000 08 <ndim>, then one uint32 per dimension, then uint8 data) -------
def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 | array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def digit_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distinct 28x28 uint8 images: a bright bar whose row depends on the label, plus a random speckle."""
    images = (rng.random((len(labels), 28, 28)) < 0.05).astype(np.uint8) * 120
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row : row + 3, 4:24] = 255
    return images


def write_mnist(root: Path, n_train: int = 48, n_test: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = digit_images(labels, rng)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[f"{prefix}_images"], out[f"{prefix}_labels"] = images, labels
    return out


# -- CIFAR-10: python pickles of {'data': uint8 [n, 3072] (R, G, B planes), 'labels': [n]} ------------------------
def write_cifar10(root: Path, per_batch: int = 12, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    all_labels = []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        labels = [(k * per_batch + i) % 10 for i in range(n)]
        entry = {
            "batch_label": f"{name} of 6",
            "labels": labels,
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "filenames": [f"img_{k}_{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
        if name != "test_batch":
            all_labels += labels
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": per_batch, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return {"train_labels": np.array(all_labels)}


# -- CelebA: img_align_celeba/*.jpg and five space-separated text files ---------------------------------------
def write_celeba(root: Path, partitions=(0,) * 10 + (1,) * 4 + (2,) * 4, size=(20, 24), seed: int = 0) -> dict:
    from PIL import Image

    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = len(partitions)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = rng.choice([-1, 1], size=(n, len(ATTRIBUTES)))
    identities = rng.integers(1, 6, size=n)
    for name in files:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / name, format="JPEG")

    def rows(values: np.ndarray) -> str:
        return "\n".join(f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values, strict=True))

    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(ATTRIBUTES) + " \n" + rows(attrs) + "\n")
    partition_lines = (f"{f} {p}" for f, p in zip(files, partitions, strict=True))
    (folder / "list_eval_partition.txt").write_text("\n".join(partition_lines) + "\n")
    (folder / "identity_CelebA.txt").write_text(
        "\n".join(f"{f} {i}" for f, i in zip(files, identities, strict=True)) + "\n"
    )
    bbox = rng.integers(0, 100, size=(n, 4))
    (folder / "list_bbox_celeba.txt").write_text(f"{n}\nimage_id x_1 y_1 width height\n" + rows(bbox) + "\n")
    marks = rng.integers(0, 100, size=(n, 10))
    header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (folder / "list_landmarks_align_celeba.txt").write_text(f"{n}\n{header}\n" + rows(marks) + "\n")
    return {"files": files, "attrs": (attrs + 1) // 2, "identities": identities, "partitions": np.array(partitions)}
