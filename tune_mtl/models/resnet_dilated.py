"""ResNet-dilated encoder (output stride 8) with one DeepLab ASPP head per task: MTAN's `resnet_dilated.py` +
`DeepLabHead`, the backbone of LibMTL's NYUv2 and Cityscapes examples.

The encoder is a ResNet (18/34 basic blocks, 50/101 bottlenecks, base `width` channels) without its pooling
and classifier; as in MTAN, layer3 and layer4 drop their stride for dilation 2 and 4, so the shared map has
1/8 of the input resolution. Dense heads upsample to the input size; classification heads pool.

No weights are downloaded. `pretrained_path` loads a local torchvision ResNet state dict (e.g. the file of
`torchvision.models.ResNet50_Weights.IMAGENET1K_V1`; its `fc.*` entries are ignored); it needs width 64.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from tune_mtl.core.errors import UserError
from tune_mtl.models.dense_heads import aspp_head, image_shape, make_heads
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle

ARCHITECTURES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _nostride_dilate(module: nn.Module, dilate: int) -> None:
    """MTAN's conversion: strided convs lose their stride (3x3 ones get dilation dilate/2), others get `dilate`."""
    if isinstance(module, nn.Conv2d):
        if module.stride == (2, 2):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (dilate // 2,) * 2, (dilate // 2,) * 2
        elif module.kernel_size == (3, 3):
            module.dilation, module.padding = (dilate,) * 2, (dilate,) * 2


class ResNetDilated(nn.Module):
    """Module names follow torchvision's ResNet so that its state dicts load."""

    def __init__(self, in_channels: int, layers: int, width: int) -> None:
        super().__init__()
        block, counts = ARCHITECTURES[layers]
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, counts[0], 1)
        self.layer2 = self._make_layer(block, width * 2, counts[1], 2)
        self.layer3 = self._make_layer(block, width * 4, counts[2], 2)
        self.layer4 = self._make_layer(block, width * 8, counts[3], 2)
        self.layer3.apply(partial(_nostride_dilate, dilate=2))
        self.layer4.apply(partial(_nostride_dilate, dilate=4))
        self.out_channels = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, count: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: Tensor = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return out


def load_pretrained(encoder: ResNetDilated, path: str) -> None:
    if not os.path.isfile(path):
        raise UserError(
            f"'model.resnet_dilated.pretrained_path' '{path}' is not a file (a torchvision ResNet state dict)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot read pretrained weights '{path}': {err}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        first = (missing or unexpected or wrong)[0]
        raise UserError(
            f"pretrained weights '{path}' do not fit resnet_dilated (layers/width): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped entries, e.g. '{first}'"
        )
    encoder.load_state_dict(state)


def resnet_dilated(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    channels, height, width = image_shape("resnet_dilated", bundle)
    encoder = ResNetDilated(channels, options["layers"], options["width"])
    if options["pretrained_path"]:
        load_pretrained(encoder, os.path.expanduser(options["pretrained_path"]))
    body = partial(_aspp_body, aspp_channels=options["aspp_channels"])
    heads = make_heads("resnet_dilated", bundle, encoder.out_channels, body, output_size=(height, width))
    return HPSModel(encoder, heads)


def _aspp_body(in_channels: int, out_channels: int, aspp_channels: int) -> nn.Module:
    return aspp_head(in_channels, out_channels, aspp_channels)
