"""ResNet encoder with one head per task (`resnet18`: CIFAR-10 one-vs-rest tasks, CelebA attributes).

BasicBlock ResNet (He et al. 2016). The stem is the CIFAR variant (3x3 conv, stride 1, no max-pool) for inputs
up to 32x32 and the ImageNet one (7x7 conv stride 2, max-pool) above (`stem: auto`). `width` multiplies the
64/128/256/512 channels; `depth` picks 10, 18 (default) or 34 layers. The shared representation is the
globally average-pooled last stage [B, 512 * width]; each task head is linear (or a small MLP).

No weights are ever downloaded. `pretrained_path` opts into a local state dict: parameter names follow
torchvision's `resnet18`/`resnet34` (`conv1`, `bn1`, `layer1.0.conv1`, ...; `fc.*` is ignored), so a torchvision
checkpoint loads into `depth: 18|34, width: 1, stem: imagenet` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle

BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(fan_in, fan_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(fan_out)
        self.conv2 = nn.Conv2d(fan_out, fan_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(fan_out)
        self.downsample = (
            nn.Sequential(nn.Conv2d(fan_in, fan_out, 1, stride=stride, bias=False), nn.BatchNorm2d(fan_out))
            if stride != 1 or fan_in != fan_out
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        shortcut: Tensor = x if self.downsample is None else self.downsample(x)
        return (out + shortcut).relu()


class ResNetEncoder(nn.Module):
    # Set by setattr in __init__ (torchvision's names, so that its state dicts load); declared for the checker.
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, in_channels: int, depth: int, width: float, imagenet_stem: bool) -> None:
        super().__init__()
        channels = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, channels[0], 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(channels[0])
        fan_in = channels[0]
        for stage, (count, fan_out) in enumerate(zip(BLOCKS[depth], channels, strict=True), start=1):
            blocks = []
            for i in range(count):
                blocks.append(BasicBlock(fan_in, fan_out, stride=2 if i == 0 and stage > 1 else 1))
                fan_in = fan_out
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.out_dim = channels[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)).relu())
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


def load_pretrained(encoder: nn.Module, path: str) -> None:
    """Load a local state dict (torchvision names; `fc.*`, `module.`/`encoder.` prefixes tolerated)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(
            f"'model.pretrained_path' '{file}' does not exist; give a local .pt/.pth state dict or leave it empty"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"'model.pretrained_path' '{file}' is not a readable PyTorch state dict ({err})") from None
    for key in ("state_dict", "model", "encoder"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"'model.pretrained_path' '{file}' holds a {type(state).__name__}, not a state dict")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "encoder."):
            key = key.removeprefix(prefix)
        if not key.startswith("fc."):
            cleaned[key] = value
    own = encoder.state_dict()
    missing = sorted(set(own) - set(cleaned))
    wrong = [k for k in own if k in cleaned and tuple(cleaned[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = f"missing {', '.join(missing[:3])}" if missing else ""
        if wrong:
            k = wrong[0]
            detail += (f"{'; ' if detail else ''}shape of {k} is {tuple(cleaned[k].shape)}, "
                       f"the model needs {tuple(own[k].shape)}")
        raise UserError(
            f"'model.pretrained_path' '{file}' does not fit this encoder ({detail}); match depth, width and stem "
            "to the checkpoint (torchvision resnet18: depth 18, width 1, stem imagenet)"
        )
    encoder.load_state_dict({k: cleaned[k] for k in own})


def task_head(rep_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(rep_dim, out_dim)
    return nn.Sequential(nn.Linear(rep_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def resnet18(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """ResNet-18 encoder (CIFAR stem for small images) shared by all tasks, one linear head per task."""
    shape = tuple(bundle.input_shape)
    if len(shape) != 3:
        raise UserError(f"model 'resnet18' needs image inputs (C, H, W); data set '{bundle.name}' has shape {shape}")
    stem = options["stem"]
    imagenet_stem = stem == "imagenet" or (stem == "auto" and max(shape[1:]) > 32)
    encoder = ResNetEncoder(shape[0], options["depth"], options["width"], imagenet_stem)
    if options["pretrained_path"]:
        load_pretrained(encoder, options["pretrained_path"])
    heads = [task_head(encoder.out_dim, options["head_hidden"], task.out_dim) for task in bundle.tasks]
    return HPSModel(encoder, heads)
