"""NYUv2, Cityscapes and Oxford-IIIT Pet on tiny files in their real on-disk formats; SegNet, UNet and
ResNet-dilated HPS models; one training epoch of each data set's default model through the Trainer."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from fixtures_dense import write_cityscapes, write_nyuv2, write_oxford_pet

from tune_mtl import data, models
from tune_mtl.core.errors import UserError
from tune_mtl.data.cityscapes import CATEGORY_OF_TRAIN_ID
from tune_mtl.data.npy_dense import scale_crop_flip
from tune_mtl.models.resnet_dilated import ResNetDilated
from tune_mtl.training.trainer import Trainer

TINY_SEGNET = {"name": "segnet", "width_multiplier": 0.0625}  # filters 4-8-16-32-32
TINY_UNET = {"name": "unet", "width": 4, "depth": 2}
TINY_RESNET = {"name": "resnet_dilated", "layers": 18, "width": 4, "aspp_channels": 8}




@pytest.fixture
def nyu_root(tmp_path):
    return write_nyuv2(tmp_path / "nyuv2", n_train=6, n_val=3)


@pytest.fixture
def city_root(tmp_path):
    return write_cityscapes(tmp_path / "cityscapes", n_train=5, n_val=2)


@pytest.fixture
def pet_root(tmp_path):
    return write_oxford_pet(tmp_path / "pets", n_trainval=6, n_test=3)


def raw_nyu(root, split, index):
    load = lambda m: np.load(root / split / m / f"{index}.npy")  # noqa: E731
    return (
        torch.from_numpy(np.moveaxis(load("image"), -1, 0)),
        torch.from_numpy(load("label")).long(),
        torch.from_numpy(np.moveaxis(load("depth"), -1, 0)),
        torch.from_numpy(np.moveaxis(load("normal"), -1, 0)),
    )


# -- NYUv2 -------------------------------------------------------------------------------------------------
def test_nyuv2_loader_shapes_dtypes_ranges_and_splits(nyu_root):
    bundle = data.build("nyuv2", {"root": str(nyu_root), "val_fraction": 0.34}, seed=0)
    assert [t.name for t in bundle.tasks] == ["segmentation", "depth", "normal"]
    assert [t.out_dim for t in bundle.tasks] == [13, 1, 3]
    assert bundle.input_shape == (3, 32, 48) and bundle.default_model == "segnet"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 2, 3)
    assert sorted(bundle.train.indices + bundle.val.indices) == list(range(6))  # carved from train/
    assert bundle.test.indices == [0, 1, 2] and bundle.test.folder.name == "val"  # MTAN's val/ is the test split
    again = data.build("nyuv2", {"root": str(nyu_root), "val_fraction": 0.34}, seed=0)
    assert again.val.indices == bundle.val.indices
    splits = {tuple(data.build("nyuv2", {"root": str(nyu_root), "val_fraction": 0.34}, seed=s).val.indices)
              for s in range(6)}
    assert len(splits) > 1  # the split follows the seed
    for split in (bundle.train, bundle.val, bundle.test):
        image, (label, depth, normal) = split[0]
        assert image.shape == (3, 32, 48) and image.dtype == torch.float32
        assert label.shape == (32, 48) and label.dtype == torch.int64
        assert label.min() >= -1 and label.max() < 13 and (label == -1).any()
        assert depth.shape == (1, 32, 48) and depth.dtype == torch.float32 and (depth >= 0).all()
        assert normal.shape == (3, 32, 48) and normal.dtype == torch.float32


def test_nyuv2_evaluation_splits_are_not_augmented(nyu_root):
    bundle = data.build("nyuv2", {"root": str(nyu_root)}, seed=0)
    for split, folder in ((bundle.val, "train"), (bundle.test, "val")):
        for i in range(len(split)):
            image, targets = split[i]
            raw = raw_nyu(nyu_root, folder, split.indices[i])
            for got, want in zip((image, *targets), raw, strict=True):
                assert torch.equal(got, want.to(got.dtype))


def test_nyuv2_training_flip_mirrors_and_negates_normal_x(nyu_root):
    bundle = data.build("nyuv2", {"root": str(nyu_root), "scales": [1.0]}, seed=0)
    image0, label0, depth0, normal0 = raw_nyu(nyu_root, "train", bundle.train.indices[0])
    flipped_normal = normal0.flip(-1) * torch.tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
    torch.manual_seed(0)
    seen = {"plain": 0, "flipped": 0}
    for _ in range(12):
        image, (label, depth, normal) = bundle.train[0]
        if torch.equal(image, image0):
            assert torch.equal(normal, normal0) and torch.equal(label, label0) and torch.equal(depth, depth0)
            seen["plain"] += 1
        else:
            assert torch.equal(image, image0.flip(-1)) and torch.equal(label, label0.flip(-1))
            assert torch.equal(depth, depth0.flip(-1)) and torch.equal(normal, flipped_normal)
            seen["flipped"] += 1
    assert seen["plain"] > 0 and seen["flipped"] > 0
    off = data.build("nyuv2", {"root": str(nyu_root), "augment": False}, seed=0)
    assert all(torch.equal(off.train[0][0], image0) for _ in range(4))


def test_scale_crop_divides_depth_by_scale_and_keeps_shapes():
    image = torch.rand(3, 12, 18)
    label = torch.randint(-1, 5, (12, 18))
    depth = torch.rand(1, 12, 18) + 1.0
    normal = torch.nn.functional.normalize(torch.randn(3, 12, 18), dim=0)
    out = scale_crop_flip(image, label, depth, normal, scale=1.5, top=2, left=3, flip=False)
    assert [t.shape for t in out] == [image.shape, label.shape, depth.shape, normal.shape]
    assert out[1].dtype == torch.int64 and set(out[1].unique().tolist()) <= set(label.unique().tolist())
    window = depth[:, 2:10, 3:15]  # (12/1.5, 18/1.5) = (8, 12): nearest resize keeps its values, / 1.5
    scaled_back = (out[2] * 1.5).flatten()[:, None]
    assert torch.isclose(scaled_back, window.flatten()[None], rtol=1e-6).any(dim=1).all()
    assert torch.allclose(out[2].max() * 1.5, window.max())
    # flip alone: a pure mirror with the normals' x negated
    _, _, _, n_flip = scale_crop_flip(image, label, depth, normal, scale=1.0, top=0, left=0, flip=True)
    assert torch.equal(n_flip[0], -normal[0].flip(-1)) and torch.equal(n_flip[1:], normal[1:].flip(-1))


def test_nyuv2_image_size_and_sample_limits(nyu_root):
    bundle = data.build(
        "nyuv2", {"root": str(nyu_root), "image_size": [16, 24], "max_train_samples": 2, "max_eval_samples": 1}
    )
    assert bundle.input_shape == (3, 16, 24)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (2, 1, 1)
    image, (label, depth, normal) = bundle.test[0]
    assert image.shape == (3, 16, 24) and label.shape == (16, 24) and depth.shape == (1, 16, 24)
    norms = normal.norm(dim=0)
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-5)  # resized normals stay unit (or none)
    with pytest.raises(UserError, match="image_size"):
        data.build("nyuv2", {"root": str(nyu_root), "image_size": [16]})


# -- Cityscapes --------------------------------------------------------------------------------------------
def test_cityscapes_fine_19_and_7_classes(city_root):
    fine = data.build("cityscapes", {"root": str(city_root)}, seed=0)
    assert [t.name for t in fine.tasks] == ["segmentation", "depth"] and fine.tasks[0].out_dim == 19
    assert fine.info["label_folder"] == "label_19"
    image, (label, depth) = fine.test[1]
    assert image.shape == (3, 32, 48) and label.dtype == torch.int64 and depth.shape == (1, 32, 48)
    assert torch.equal(label, torch.from_numpy(np.load(city_root / "val" / "label_19" / "1.npy")).long())
    seven = data.build("cityscapes", {"root": str(city_root), "classes": 7}, seed=0)
    assert seven.tasks[0].out_dim == 7 and seven.info["label_folder"] == "label_7"
    assert seven.test[0][1][0].max() < 7


def test_cityscapes_coarse_is_the_category_grouping_of_the_19_classes(city_root):
    coarse = data.build("cityscapes", {"root": str(city_root), "mode": "coarse", "augment": False}, seed=0)
    assert coarse.tasks[0].out_dim == 7
    fine19 = torch.from_numpy(np.load(city_root / "val" / "label_19" / "0.npy")).long()
    expected = torch.tensor(CATEGORY_OF_TRAIN_ID + (-1,))[fine19]  # -1 (void) stays -1
    assert torch.equal(coarse.test[0][1][0], expected)
    assert (expected == -1).any() and expected.max() < 7
    with pytest.raises(UserError, match="classes.*7.*coarse"):
        data.build("cityscapes", {"root": str(city_root), "mode": "coarse", "classes": 19})


def test_cityscapes_reads_libmtl_label_folder(tmp_path):
    root = write_cityscapes(tmp_path / "libmtl", folders={"label": 7}, n_train=3, n_val=1)
    bundle = data.build("cityscapes", {"root": str(root), "classes": 7})
    assert bundle.info["label_folder"] == "label" and bundle.tasks[0].out_dim == 7
    with pytest.raises(UserError, match="label_19"):  # 19 classes are not in LibMTL's copy
        data.build("cityscapes", {"root": str(root)})


# -- Oxford-IIIT Pet ---------------------------------------------------------------------------------------
def test_oxford_pet_loader(pet_root):
    bundle = data.build("oxford_pet", {"root": str(pet_root), "image_size": 16, "val_fraction": 0.34}, seed=0)
    assert [t.name for t in bundle.tasks] == ["segmentation", "breed"]
    assert [t.out_dim for t in bundle.tasks] == [3, 37] and bundle.default_model == "unet"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (4, 2, 3)
    assert bundle.input_shape == (3, 16, 16)
    breeds = set()
    for split in (bundle.train, bundle.val, bundle.test):
        for i in range(len(split)):
            image, (trimap, breed) = split[i]
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            assert 0.0 <= image.min() and image.max() <= 1.0
            assert trimap.shape == (16, 16) and trimap.dtype == torch.int64
            assert set(trimap.unique().tolist()) <= {0, 1, 2}
            assert breed.dtype == torch.int64 and breed.ndim == 0
            breeds.add(int(breed))
    assert breeds == {0, 1, 2}  # breed ids 1..3 in the annotation files


def test_oxford_pet_trimap_values_map_to_classes(pet_root):
    from PIL import Image

    base = pet_root / "oxford-iiit-pet"
    name = (base / "annotations" / "test.txt").read_text().split()[0]
    trimap = np.tile(np.array([[1, 2, 3, 1], [3, 3, 2, 1], [2, 1, 1, 3], [1, 2, 3, 2]], dtype=np.uint8), (2, 2))
    Image.fromarray(trimap, mode="L").save(base / "annotations" / "trimaps" / f"{name}.png")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(base / "images" / f"{name}.jpg")
    bundle = data.build("oxford_pet", {"root": str(pet_root), "image_size": 8}, seed=0)
    _, (labels, _) = bundle.test[0]
    assert torch.equal(labels, torch.from_numpy(trimap.astype(np.int64) - 1))


def test_oxford_pet_training_flip_only(pet_root):
    bundle = data.build("oxford_pet", {"root": str(pet_root), "image_size": 8}, seed=0)
    reference = data.build("oxford_pet", {"root": str(pet_root), "image_size": 8, "augment": False}, seed=0)
    plain = reference.train[0]
    torch.manual_seed(0)
    kinds = set()
    for _ in range(10):
        image, (trimap, _) = bundle.train[0]
        if torch.equal(image, plain[0]):
            kinds.add("plain")
        else:
            assert torch.equal(image, plain[0].flip(-1)) and torch.equal(trimap, plain[1][0].flip(-1))
            kinds.add("flipped")
    assert kinds == {"plain", "flipped"}
    assert all(torch.equal(bundle.val[0][0], reference.val[0][0]) for _ in range(3))


# -- missing / incomplete roots ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nyuv2", "cityscapes", "oxford_pet"])
def test_missing_root_is_one_clear_error(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        data.build(name, {"root": str(missing)})
    message = str(err.value)
    assert str(missing) in message and f"python launch.py prepare {name} --root DIR" in message
    assert "expected" in message
    with pytest.raises(UserError, match="dataset.root"):
        data.build(name, {})


def test_incomplete_npy_root_names_the_missing_file(nyu_root, city_root):
    (nyu_root / "val" / "normal" / "2.npy").unlink()
    with pytest.raises(UserError, match=r"val/normal/2\.npy.*prepare nyuv2"):
        data.build("nyuv2", {"root": str(nyu_root)})
    shutil.rmtree(city_root / "train" / "depth")
    with pytest.raises(UserError, match=r"train/depth.*prepare cityscapes"):
        data.build("cityscapes", {"root": str(city_root)})


def test_incomplete_pet_root_names_the_missing_file(pet_root):
    base = pet_root / "oxford-iiit-pet"
    name = (base / "annotations" / "trainval.txt").read_text().split()[0]
    (base / "annotations" / "trimaps" / f"{name}.png").unlink()
    with pytest.raises(UserError, match=rf"trimaps/{name}\.png.*prepare oxford_pet"):
        data.build("oxford_pet", {"root": str(pet_root)})


def test_prepare_explains_the_archive_and_checks_the_layout(nyu_root, city_root, pet_root, tmp_path):
    assert "6 training and 3 evaluation samples" in data.prepare("nyuv2", str(nyu_root), download=False)
    assert "cityscapes ready" in data.prepare("cityscapes", str(city_root), download=False)
    assert "6 trainval and 3 test images" in data.prepare("oxford_pet", str(pet_root), download=False)
    with pytest.raises(UserError, match=r"nyuv2\.zip.*dropbox"):
        data.prepare("nyuv2", str(tmp_path / "empty"), download=False)
    with pytest.raises(UserError, match=r"cityscapes2\.zip.*dropbox"):
        data.prepare("cityscapes", str(tmp_path / "empty"), download=False)
    with pytest.raises(UserError, match="--download"):
        data.prepare("oxford_pet", str(tmp_path / "empty"), download=False)
    # an unzipped archive often adds one folder level: ROOT/nyuv2/train/...
    wrapper = tmp_path / "unzipped"
    wrapper.mkdir()
    shutil.move(nyu_root, wrapper / "nyuv2")
    assert data.build("nyuv2", {"root": str(wrapper)}).input_shape == (3, 32, 48)


# -- models ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", [TINY_SEGNET, TINY_UNET, TINY_RESNET], ids=lambda m: m["name"])
def test_models_forward_dense_and_classification_heads(model, nyu_root, pet_root):
    options = {k: v for k, v in model.items() if k != "name"}
    nyu = data.build("nyuv2", {"root": str(nyu_root)})
    net = models.build(model["name"], nyu, options).eval()
    x = torch.stack([nyu.test[i][0] for i in range(2)])
    rep, (seg, depth, normal) = net(x)
    assert seg.shape == (2, 13, 32, 48) and depth.shape == (2, 1, 32, 48) and normal.shape == (2, 3, 32, 48)
    assert torch.allclose(normal.norm(dim=1), torch.ones(()), atol=1e-5)
    assert rep.dim() == 4 and rep.shape[0] == 2
    assert net.shared_parameters() and all(net.task_parameters())
    pets = data.build("oxford_pet", {"root": str(pet_root), "image_size": 32})
    net = models.build(model["name"], pets, options).eval()
    _, (trimap, breed) = net(torch.stack([pets.test[i][0] for i in range(2)]))
    assert trimap.shape == (2, 3, 32, 32) and breed.shape == (2, 37)


def test_resnet_dilated_has_output_stride_8_and_loads_local_weights(tmp_path, nyu_root):
    encoder = ResNetDilated(3, 18, 4)
    assert encoder(torch.rand(1, 3, 32, 48)).shape == (1, 32, 4, 6)
    state = {f"module.{k}": v for k, v in encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 32)  # a classifier checkpoint: fc is ignored
    torch.save({"state_dict": state}, tmp_path / "weights.pt")
    nyu = data.build("nyuv2", {"root": str(nyu_root)})
    options = {"layers": 18, "width": 4, "aspp_channels": 8, "pretrained_path": str(tmp_path / "weights.pt")}
    net = models.build("resnet_dilated", nyu, options)
    assert torch.equal(net.encoder.conv1.weight, encoder.conv1.weight)
    with pytest.raises(UserError, match="do not fit"):
        models.build("resnet_dilated", nyu, {**options, "width": 8})
    with pytest.raises(UserError, match="not a file"):
        models.build("resnet_dilated", nyu, {**options, "pretrained_path": str(tmp_path / "none.pt")})


def test_segnet_rejects_images_too_small_for_five_poolings(nyu_root):
    small = data.build("nyuv2", {"root": str(nyu_root), "image_size": [16, 24]})
    with pytest.raises(UserError, match="32x32"):
        models.build("segnet", small, {"width_multiplier": 0.0625})


# -- one epoch through the trainer -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dataset, model, extra",
    [
        ("nyuv2", TINY_SEGNET, {}),
        ("cityscapes", TINY_SEGNET, {}),
        ("oxford_pet", TINY_UNET, {"image_size": 32}),
    ],
    ids=["nyuv2", "cityscapes", "oxford_pet"],
)
def test_one_training_epoch_of_the_default_model(dataset, model, extra, nyu_root, city_root, pet_root):
    root = {"nyuv2": nyu_root, "cityscapes": city_root, "oxford_pet": pet_root}[dataset]
    assert data.build(dataset, {"root": str(root), **extra}).default_model == model["name"]
    trainer = Trainer(
        {
            "dataset": {"name": dataset, "root": str(root), **extra},
            "model": model,
            "strategy": "uniform",
            "training": {"batch_size": 2, "epochs": 1},
        }
    )
    metrics = trainer.run_epoch()
    assert metrics["epoch"] == 1
    for split in ("val", "test"):
        assert f"{split}/segmentation/miou" in metrics and f"{split}/segmentation/pixel_accuracy" in metrics
    if dataset != "oxford_pet":
        assert "test/depth/abs_err" in metrics and "test/depth/rel_err" in metrics
    if dataset == "nyuv2":
        assert "test/normal/mean_angle" in metrics and "test/normal/within_11.25" in metrics
    if dataset == "oxford_pet":
        assert "test/breed/accuracy" in metrics
    assert metrics["val/objective"] == metrics["val/segmentation/miou"] and trainer.objective.mode == "max"
    assert all(math.isfinite(v) for v in metrics.values())
