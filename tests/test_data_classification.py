"""Multi-MNIST, CIFAR-10 and CelebA on tiny files in torchvision's real on-disk formats, their default models
through one training epoch, the data-root errors, and the classification metrics they report."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from fixtures_classification import write_celeba, write_cifar10, write_mnist

from tune_mtl import data, models
from tune_mtl.core.errors import UserError
from tune_mtl.core.metrics import ClassificationMetric, per_sample_cross_entropy
from tune_mtl.data import multi_mnist as mm
from tune_mtl.training.trainer import Trainer


# -- metrics ---------------------------------------------------------------------------------------------------
def test_accuracy_and_f1_match_a_hand_computed_confusion_matrix():
    # targets / predictions: TP = 3, FN = 2, FP = 1, TN = 4 -> accuracy 7/10, F1 = 2*3 / (2*3 + 1 + 2) = 2/3
    target = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    labels = torch.tensor([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    two_logits = torch.stack([1 - labels, labels], dim=1).float()
    meter = ClassificationMetric(binary_f1=True)
    meter.update(two_logits[:4], target[:4])  # accumulated over batches, exact for the split
    meter.update(two_logits[4:], target[4:])
    assert meter.compute() == pytest.approx({"accuracy": 0.7, "f1": 2 / 3})
    one_logit = ClassificationMetric(binary_f1=True)  # a single logit: positive iff > 0
    one_logit.update((labels.float() * 2 - 1).unsqueeze(1), target)
    assert one_logit.compute() == pytest.approx({"accuracy": 0.7, "f1": 2 / 3})
    never_positive = ClassificationMetric(binary_f1=True)
    never_positive.update(torch.tensor([[1.0, 0.0]] * 4), torch.tensor([0, 0, 1, 0]))
    assert never_positive.compute() == pytest.approx({"accuracy": 0.75, "f1": 0.0})


def test_ten_way_accuracy_and_per_sample_cross_entropy():
    logits = torch.full((4, 10), -5.0)
    logits[torch.arange(4), torch.tensor([3, 7, 7, 0])] = 5.0
    meter = ClassificationMetric()
    meter.update(logits, torch.tensor([3, 7, 1, 0]))
    assert meter.compute() == {"accuracy": 0.75}
    loss = per_sample_cross_entropy(logits, torch.tensor([3, 7, 1, 0]))
    assert loss.shape == (4,)
    assert loss[2] > 9.0 > loss[0]


# -- Multi-MNIST -----------------------------------------------------------------------------------------------
def test_compose_keeps_both_digits_where_the_seed_lost_the_right_one():
    left = torch.zeros(1, 28, 28, dtype=torch.uint8)
    right = torch.zeros(1, 28, 28, dtype=torch.uint8)
    right[0, 20:28, 4:24] = 255  # the bottom strokes of the right digit: canvas rows 26..33
    image = mm.compose(left, right)[0, 0]
    assert image.shape == (28, 28)
    # a real resize keeps the mass (area scales by (28/36)^2) and puts it in the lower right of the image
    assert float(image.sum()) == pytest.approx(8 * 20 * (28 / 36) ** 2, rel=0.03)
    rows = image.sum(dim=1)
    assert rows[:19].sum() == 0 and rows[20:26].min() > 5
    assert image[:, :7].sum() == 0
    # np.resize (the seed) reads the first 784 of 1296 canvas pixels in order: rows >= 21 vanish with the strokes
    canvas = np.zeros((36, 36))
    canvas[6:34, 6:34] = right[0].numpy() / 255.0
    assert np.resize(canvas, (28, 28)).sum() == 0

    both = mm.compose(torch.full((1, 28, 28), 255, dtype=torch.uint8), right)[0, 0]
    assert both[:18, :18].min() > 0.99  # the left digit fills the top left
    assert both[27, 27] == 0 and both[:, 27].sum() == 0  # the canvas border beyond both digits stays empty


@pytest.fixture
def mnist_root(tmp_path):
    raw = write_mnist(tmp_path, n_train=48, n_test=24)
    return tmp_path, raw


def test_multi_mnist_loader_pairs_digits_from_the_idx_files(mnist_root):
    root, raw = mnist_root
    opts = {"root": str(root), "train_size": 30, "val_size": 10, "test_size": 16}
    bundle = data.build("multi_mnist", opts)
    assert [t.name for t in bundle.tasks] == ["left", "right"] and bundle.tasks[0].out_dim == 10
    assert bundle.input_shape == (1, 28, 28) and bundle.default_model == "multilenet"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (30, 10, 16)
    for split, source in (("train", "train"), ("val", "train"), ("test", "t10k")):
        dataset = getattr(bundle, split)
        x, (y_left, y_right) = dataset[:]
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y_left.dtype == torch.long and 0 <= int(y_left.min()) and int(y_right.max()) <= 9
        left, right = bundle.info["pairs"][split]
        assert bool((left != right).all())
        images = torch.from_numpy(raw[f"{source}_images"])
        expected = (mm.compose(images[left], images[right]) - mm.MEAN) / mm.STD
        torch.testing.assert_close(x, expected)
        assert y_left.tolist() == raw[f"{source}_labels"][left.numpy()].tolist()
        assert y_right.tolist() == raw[f"{source}_labels"][right.numpy()].tolist()
    train_digits = set(bundle.info["pairs"]["train"][0].tolist())
    assert not train_digits & set(bundle.info["pairs"]["val"][0].tolist())  # validation digits never trained on
    again = data.build("multi_mnist", opts, seed=5)  # the trial seed does not change the data
    torch.testing.assert_close(again.train.inputs, bundle.train.inputs)
    other = data.build("multi_mnist", {**opts, "data_seed": 1})
    assert not torch.equal(other.train.targets[1], bundle.train.targets[1])


def test_multi_mnist_download_flag_reuses_files_already_there(mnist_root):
    root, _ = mnist_root  # torchvision skips the download when the four raw files exist: no network touched
    assert "48 train, 24 test digits" in data.prepare("multi_mnist", str(root), download=True)
    bundle = data.build(
        "multi_mnist", {"root": str(root), "download": True, "train_size": 8, "val_size": 4, "test_size": 4}
    )
    assert len(bundle.train) == 8


def test_multi_mnist_sizes_beyond_the_files_are_a_user_error(mnist_root):
    root, _ = mnist_root
    with pytest.raises(UserError, match="train_size.*exceeds the 48 training images of MNIST"):
        data.build("multi_mnist", {"root": str(root), "train_size": 40, "val_size": 10, "test_size": 4})


def train_one_epoch(config: dict) -> tuple[Trainer, dict[str, float]]:
    trainer = Trainer(
        {"strategy": "uniform", "training": {"batch_size": 8, "epochs": 1, "eval_batch_size": 16}, **config}
    )
    metrics = trainer.run_epoch()
    assert metrics["epoch"] == 1
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    assert not bad
    return trainer, metrics


def test_multilenet_trains_one_epoch_on_multi_mnist(mnist_root):
    root, _ = mnist_root
    trainer, metrics = train_one_epoch({
        "dataset": {"name": "multi_mnist", "root": str(root), "train_size": 24, "val_size": 8, "test_size": 8},
    })
    assert type(trainer.model.encoder).__name__ == "ConvEncoder"  # the default model: multilenet at width 1
    assert trainer.model.encoder.conv1.out_channels == 10 and trainer.model.encoder.out_dim == 50
    for split in ("val", "test"):
        for task in ("left", "right"):
            assert 0.0 <= metrics[f"{split}/{task}/accuracy"] <= 1.0
    assert metrics["val/objective"] == metrics["val/left/accuracy"]


# -- CIFAR-10 --------------------------------------------------------------------------------------------------
@pytest.fixture
def cifar_root(tmp_path):
    write_cifar10(tmp_path, per_batch=12, n_test=20)
    return tmp_path


def raw_cifar_classes(root, split: str) -> torch.Tensor:
    import pickle

    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    labels = []
    for name in names:
        with open(folder / name, "rb") as f:
            labels += pickle.load(f)["labels"]
    return torch.tensor(labels)


@pytest.mark.parametrize("kind,tasks", [("uniform", "main"), ("uniform", "all"), ("background", "all")])
def test_cifar10_one_vs_rest_tasks_with_noise_on_the_training_split_only(cifar_root, kind, tasks):
    opts = {"root": str(cifar_root), "train_size": 40, "val_size": 12, "test_size": 16, "noise": 0.25,
            "noise_kind": kind, "noise_tasks": tasks}
    bundle = data.build("cifar10", opts)
    assert bundle.num_tasks == 10 and bundle.tasks[0].name == "airplane"
    assert all(t.kind == "binary" and t.out_dim == 2 for t in bundle.tasks)
    assert bundle.tasks[0].make_metric().names == ("accuracy", "f1") and bundle.tasks[0].primary.name == "f1"
    x, y = bundle.train[:]
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.float32 and bundle.train.inputs.dtype == torch.uint8
    assert abs(float(x.mean())) < 0.5  # normalised per channel
    noisy = torch.stack(y)
    clean = torch.stack([(raw_cifar_classes(cifar_root, "train")[bundle.info["indices"]["train"]] == t).long()
                         for t in range(10)])
    torch.testing.assert_close(bundle.info["clean_train_targets"], clean)
    mask = bundle.info["noise_mask"]
    noisy_tasks = range(10) if tasks == "all" else range(1)
    for t in range(10):
        if t in noisy_tasks:
            assert int(mask[t].sum()) == 10  # round(0.25 * 40), exactly
        else:
            assert not mask[t].any()
        assert torch.equal(noisy[t][~mask[t]], clean[t][~mask[t]])
        if kind == "uniform":
            assert torch.equal(noisy[t][mask[t]], 1 - clean[t][mask[t]])
        else:
            assert not noisy[t][mask[t]].any()
    for split in ("val", "test"):  # clean: exactly the one-vs-rest encoding of the pickled labels
        _, labels = getattr(bundle, split)[:]
        classes = raw_cifar_classes(cifar_root, "train" if split == "val" else "test")[bundle.info["indices"][split]]
        assert torch.equal(torch.stack(labels), torch.stack([(classes == t).long() for t in range(10)]))
    assert not set(bundle.info["indices"]["train"].tolist()) & set(bundle.info["indices"]["val"].tolist())


def test_cifar10_without_noise_is_clean(cifar_root):
    bundle = data.build("cifar10", {"root": str(cifar_root), "train_size": 40, "val_size": 12, "test_size": 16})
    assert torch.equal(torch.stack(bundle.train.targets), bundle.info["clean_train_targets"])
    assert (torch.stack(bundle.train.targets).sum(dim=0) == 1).all()


@pytest.mark.parametrize("model", [{"name": "resnet18", "width": 0.125}, {"name": "lenet", "width": 0.5}])
def test_cifar10_models_train_one_epoch(cifar_root, model):
    trainer, metrics = train_one_epoch({
        "dataset": {"name": "cifar10", "root": str(cifar_root), "train_size": 16, "val_size": 8, "test_size": 8,
                    "noise": 0.5, "noise_kind": "background"},
        "model": model,
    })
    assert trainer.bundle.default_model == "resnet18"
    assert {f"test/{c}/f1" for c in ("airplane", "truck")} <= set(metrics)
    assert metrics["val/objective"] == metrics["val/airplane/f1"]
    if model["name"] == "resnet18":  # CIFAR stem for 32x32: 3x3 stride 1, no max-pool
        assert trainer.model.encoder.conv1.kernel_size == (3, 3) and trainer.model.encoder.conv1.out_channels == 8


def test_resnet_pretrained_path_loads_a_local_state_dict_and_rejects_a_mismatch(cifar_root, tmp_path):
    bundle = data.build("cifar10", {"root": str(cifar_root), "train_size": 8, "val_size": 4, "test_size": 4})
    source = models.build("resnet18", bundle, {"width": 0.125, "depth": 10})
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": {**source.encoder.state_dict(), "fc.weight": torch.zeros(3, 64)}}, path)
    loaded = models.build("resnet18", bundle, {"width": 0.125, "depth": 10, "pretrained_path": str(path)})
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)
    with pytest.raises(UserError, match="does not fit this encoder.*shape of conv1.weight"):
        models.build("resnet18", bundle, {"width": 0.25, "depth": 10, "pretrained_path": str(path)})
    with pytest.raises(UserError, match="does not exist"):
        models.build("resnet18", bundle, {"pretrained_path": str(tmp_path / "none.pt")})


# -- CelebA ----------------------------------------------------------------------------------------------------
@pytest.fixture
def celeba_root(tmp_path):
    return tmp_path, write_celeba(tmp_path)


def test_celeba_attributes_main_first_identity_and_official_partitions(celeba_root):
    root, raw = celeba_root
    bundle = data.build("celeba", {"root": str(root), "image_size": 16, "main": "Smiling", "identity": True})
    names = [t.name for t in bundle.tasks]
    assert names[0] == "Smiling" and names[-1] == "identity" and len(names) == 41 and len(set(names)) == 41
    assert bundle.tasks[-1].out_dim == int(raw["identities"].max()) and bundle.tasks[1].out_dim == 2
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 4, 4)
    assert bundle.input_shape == (3, 16, 16) and bundle.default_model == "resnet18"
    from tune_mtl.data.celeba import ATTRIBUTES

    for split, part in (("train", 0), ("val", 1), ("test", 2)):
        rows = np.nonzero(raw["partitions"] == part)[0]
        dataset = getattr(bundle, split)
        for i, row in enumerate(rows[:2]):
            x, y = dataset[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            assert -1.0 <= float(x.min()) <= float(x.max()) <= 1.0
            assert all(t.dtype == torch.long for t in y)
            assert int(y[0]) == raw["attrs"][row, ATTRIBUTES.index("Smiling")]
            assert int(y[1]) == raw["attrs"][row, 0]
            assert int(y[-1]) == raw["identities"][row] - 1


def test_celeba_subsets_in_memory_and_attribute_errors(celeba_root):
    root, raw = celeba_root
    opts = {"root": str(root), "image_size": 12, "attributes": "Young, Male", "max_train": 6, "max_test": 3}
    lazy = data.build("celeba", opts)
    assert [t.name for t in lazy.tasks] == ["Young", "Male"]
    assert (len(lazy.train), len(lazy.val), len(lazy.test)) == (6, 4, 3)
    cached = data.build("celeba", {**opts, "in_memory": True})
    x, y = cached.train[:]
    assert x.shape == (6, 3, 12, 12)
    for i in range(6):
        lx, ly = lazy.train[i]
        torch.testing.assert_close(x[i], lx)
        assert [int(t[i]) for t in y] == [int(t) for t in ly]
    with pytest.raises(UserError, match="unknown CelebA attribute.*'Smilling'.*did you mean 'Smiling'"):
        data.build("celeba", {"root": str(root), "attributes": ["Smilling"]})
    with pytest.raises(UserError, match="'identity' but 'dataset.celeba.identity' is false"):
        data.build("celeba", {"root": str(root), "main": "identity"})
    (root / "celeba" / "img_align_celeba" / raw["files"][3]).unlink()
    with pytest.raises(UserError, match=f"missing 1 of the 18 images.*{raw['files'][3]}.*launch.py prepare celeba"):
        data.build("celeba", {"root": str(root)})


def test_celeba_default_model_trains_one_epoch(celeba_root):
    root, _ = celeba_root
    trainer, metrics = train_one_epoch({
        "dataset": {"name": "celeba", "root": str(root), "image_size": 16,
                    "attributes": ["Smiling", "Male", "Young"], "identity": True},
        "model": {"name": "resnet18", "width": 0.125, "depth": 10},
    })
    assert trainer.model.encoder.conv1.kernel_size == (3, 3)  # 16x16 <= 32: CIFAR stem under stem=auto
    assert {"val/Smiling/accuracy", "val/Smiling/f1", "test/identity/accuracy"} <= set(metrics)


# -- data roots ------------------------------------------------------------------------------------------------
WRITERS = {"multi_mnist": write_mnist, "cifar10": write_cifar10, "celeba": write_celeba}
ONE_FILE = {
    "multi_mnist": "MNIST/raw/t10k-labels-idx1-ubyte",
    "cifar10": "cifar-10-batches-py/data_batch_3",
    "celeba": "celeba/list_eval_partition.txt",
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_missing_or_incomplete_root_is_one_clear_user_error(tmp_path, name):
    absent = tmp_path / "nowhere"
    with pytest.raises(UserError) as missing:
        data.build(name, {"root": str(absent)})
    message = str(missing.value)
    assert str(absent) in message and f"python launch.py prepare {name} --root DIR" in message
    assert "expected torchvision's" in message and "\n" not in message
    with pytest.raises(UserError, match="needs 'dataset.root'"):
        data.build(name, {"root": ""})

    WRITERS[name](tmp_path / "partial")
    (tmp_path / "partial" / ONE_FILE[name]).unlink()
    with pytest.raises(UserError, match=f"missing {ONE_FILE[name]} .*launch.py prepare {name}"):
        data.build(name, {"root": str(tmp_path / "partial")})
    with pytest.raises(UserError, match=f"missing {ONE_FILE[name]}"):
        data.prepare(name, str(tmp_path / "partial"), download=False)


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_prepare_checks_a_complete_root_without_downloading(tmp_path, name):
    WRITERS[name](tmp_path)
    message = data.prepare(name, str(tmp_path), download=False)
    assert message.startswith(f"{name}: ") and "found under" in message
    assert "MD5 differs" in message or name == "multi_mnist"  # tiny fixtures are not the official files


def test_corrupt_files_are_a_user_error(tmp_path):
    write_cifar10(tmp_path / "c")
    (tmp_path / "c" / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="could not read CIFAR-10"):
        data.build("cifar10", {"root": str(tmp_path / "c"), "train_size": 8, "val_size": 4, "test_size": 4})
    write_mnist(tmp_path / "m")
    shutil.copy(tmp_path / "m/MNIST/raw/t10k-labels-idx1-ubyte", tmp_path / "m/MNIST/raw/t10k-images-idx3-ubyte")
    with pytest.raises(UserError, match="could not read MNIST"):
        data.build("multi_mnist", {"root": str(tmp_path / "m"), "train_size": 8, "val_size": 4, "test_size": 4})
