"""One `launch.py search` (1 trial x 1 epoch) per data set, on tiny files in each real on-disk format."""

import json

import pytest
import yaml
from fixtures_classification import write_celeba, write_cifar10, write_mnist
from fixtures_dense import write_cityscapes, write_nyuv2, write_oxford_pet

from tune_mtl.cli import main

pytestmark = pytest.mark.ray

CASES = {
    "multi_mnist": (lambda root: (write_mnist(root), root)[1],
                    {"train_size": 24, "val_size": 8, "test_size": 8}, {"name": "multilenet"}, "left/accuracy"),
    "cifar10": (lambda root: (write_cifar10(root), root)[1],
                {"train_size": 16, "val_size": 8, "test_size": 8, "noise": 0.25}, {"name": "lenet", "width": 0.5},
                "airplane/f1"),
    "celeba": (lambda root: (write_celeba(root), root)[1],
               {"image_size": 16, "attributes": ["Smiling", "Male"]},
               {"name": "resnet18", "width": 0.125, "depth": 10}, "Smiling/accuracy"),
    "nyuv2": (lambda root: write_nyuv2(root, n_train=6, n_val=3), {},
              {"name": "segnet", "width_multiplier": 0.0625}, "segmentation/miou"),
    "cityscapes": (lambda root: write_cityscapes(root, n_train=5, n_val=2), {},
                   {"name": "segnet", "width_multiplier": 0.0625}, "segmentation/miou"),
    "oxford_pet": (lambda root: write_oxford_pet(root, n_trainval=6, n_test=3), {"image_size": 32},
                   {"name": "unet", "width": 4, "depth": 2}, "segmentation/miou"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_trial_search_per_data_set(name, tmp_path, ray_session, capsys):
    write, options, model, objective = CASES[name]
    root = write(tmp_path / "data")
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": name, "root": str(root), **options},
        "model": model,
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-4, 1.0e-2]}},
        "training": {"batch_size": 2, "eval_batch_size": 4},
        "strategies": ["uniform"],
    }))
    rc = main(["search", "--config", str(config), "--num-samples", "1", "--epochs", "1", "--final-seeds", "0",
               "--storage-path", str(tmp_path / "runs"), "--name", name, "--quiet", "--wandb-mode", "disabled"])
    assert rc == 0, capsys.readouterr()
    summary = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
    best = summary["strategies"]["uniform"]["best"]
    assert summary["strategies"]["uniform"]["trials"] == 1 and not summary["strategies"]["uniform"]["failed"]
    assert best["metrics"][f"val/{objective}"] == best["val"]
    assert summary["objective"]["task"] == objective.split("/")[0]
