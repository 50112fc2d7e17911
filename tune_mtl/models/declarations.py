"""Every model family's declaration, in one table: options (type, default, valid range), what strategies may
need to know before the model is built, and the builder. No torch here: the search driver validates `model:`
options and checks strategies against the model from this table alone; `models.build` imports the builder
inside a trial.

Adding a model family: its `ModelDeclaration` here, added to `DECLARATIONS`, and its builder
`(bundle: DataBundle, options: dict) -> HPSModel` in `tune_mtl/models/<family>.py` (CONTRIBUTING.md).
tests/test_registries.py checks that table and builders agree.
"""

from __future__ import annotations

from tune_mtl.core.options import Field
from tune_mtl.models.declaration import ModelDeclaration

MLP = ModelDeclaration(
    name="mlp",
    options={
        "shared_layers": Field(int, 3, low=0, high=64, help="number of shared Linear+ReLU layers"),
        "shared_width": Field(int, 64, low=1, help="width of the shared layers"),
        "task_layers": Field(int, 1, low=0, high=64, help="hidden layers per task head"),
        "task_width": Field(int, 32, low=1, help="width of the task layers"),
    },
    builder="tune_mtl.models.mlp:build",
    sequential_encoder=True,
    shares_parameters=lambda options: bool(options["shared_layers"] > 0),
)

MULTILENET = ModelDeclaration(
    name="multilenet",
    options={
        "width": Field(float, 1.0, low=0.05, high=16.0, help="multiplier of every channel count and hidden size"),
        "rep_dim": Field(int, 50, low=1, help="size of the shared representation (before the width multiplier)"),
        "head_hidden": Field(int, 50, low=0, help="hidden units of each task head (0: a linear head)"),
        "dropout": Field(float, 0.5, low=0.0, high=0.95, help="dropout2d after conv2 and dropout in each head"),
    },
    builder="tune_mtl.models.lenet:multilenet",
)

LENET = ModelDeclaration(
    name="lenet",
    options={
        "width": Field(float, 1.0, low=0.05, high=16.0, help="multiplier of every channel count and hidden size"),
        "fc_layers": Field(int, 2, low=0, high=4,
                           help="shared fully connected layers after the convolutions (LeNet-5: 2)"),
        "fc_width": Field(int, 120, low=1, help="width of the shared fully connected layers (LeNet-5: 120, 84)"),
        "head_hidden": Field(int, 0, low=0, help="hidden units of each task head (0: a linear head)"),
        "dropout": Field(float, 0.0, low=0.0, high=0.95, help="dropout in the task heads"),
    },
    builder="tune_mtl.models.lenet:lenet",
)

RESNET18 = ModelDeclaration(
    name="resnet18",
    options={
        "width": Field(float, 1.0, low=0.03, high=8.0, help="multiplier of the 64/128/256/512 channels"),
        "depth": Field(int, 18, choices=(10, 18, 34), help="BasicBlock ResNet depth (blocks 1111, 2222, 3463)"),
        "stem": Field(str, "auto", choices=("auto", "cifar", "imagenet"),
                      help="cifar: 3x3 stride 1, no max-pool; imagenet: 7x7 stride 2 + max-pool; auto: cifar up to "
                           "32x32"),
        "head_hidden": Field(int, 0, low=0, help="hidden units of each task head (0: a linear head)"),
        "pretrained_path": Field(str, None, help="local state dict for the encoder (never downloaded)", path=True),
    },
    builder="tune_mtl.models.resnet:resnet18",
)

RESNET_DILATED = ModelDeclaration(
    name="resnet_dilated",
    options={
        # resnet_dilated.ARCHITECTURES builds these depths (tests/test_registries.py checks they agree).
        "layers": Field(int, 50, choices=(18, 34, 50, 101), help="ResNet depth"),
        "width": Field(int, 64, low=1, high=512, help="channels of the stem and layer1 (doubled per layer)"),
        "aspp_channels": Field(int, 256, low=1, high=2048, help="channels of each task's ASPP head"),
        "pretrained_path": Field(str, None, help="local torchvision ResNet state dict to start from (width 64)",
                                 path=True),
    },
    builder="tune_mtl.models.resnet_dilated:resnet_dilated",
)

SEGNET = ModelDeclaration(
    name="segnet",
    options={
        "width_multiplier": Field(float, 1.0, low=0.01, high=4.0, help="scales SegNet's filters 64-128-256-512-512"),
        "deep": Field(bool, False, help="two conv-BN-ReLU per block instead of one (MTAN's 'deep' split)"),
    },
    builder="tune_mtl.models.segnet:segnet",
)

UNET = ModelDeclaration(
    name="unet",
    options={
        "width": Field(int, 64, low=1, high=1024, help="channels of the first level (doubled at each level)"),
        "depth": Field(int, 4, low=1, high=7, help="number of down-sampling steps"),
    },
    builder="tune_mtl.models.unet:unet",
)

DECLARATIONS: tuple[ModelDeclaration, ...] = (LENET, MLP, MULTILENET, RESNET18, RESNET_DILATED, SEGNET, UNET)
