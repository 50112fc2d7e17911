"""Task heads on a shared feature map [B, C, h, w], one per task, chosen by the task's `kind`:

* segmentation: C logits per pixel; depth: 1 channel; normal: 3 channels, L2-normalised per pixel;
* classification / binary: global average pool of the shared map, then one linear layer.

Dense heads are MTAN's split heads (3x3 conv, 1x1 conv) for full-resolution encoder-decoders (SegNet, UNet) or
DeepLab's ASPP head (as MTAN's ResNet-dilated model and LibMTL's Cityscapes/NYUv2 examples use it) for the
stride-8 ResNet-dilated encoder, upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_mtl.core.errors import UserError

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle, Task

DENSE_KINDS = {"segmentation", "depth", "normal"}
POOLED_KINDS = {"classification", "binary"}
ATROUS_RATES = (12, 24, 36)  # DeepLabv3's rates at output stride 8, as MTAN/LibMTL use them


def image_shape(model: str, bundle: DataBundle) -> tuple[int, int, int]:
    shape = tuple(bundle.input_shape)
    if len(shape) != 3:
        raise UserError(f"model '{model}' needs images [C, H, W]; data set '{bundle.name}' has inputs of shape {shape}")
    channels, height, width = shape
    return channels, height, width


def dense_out_channels(task: Task) -> int:
    return {"depth": 1, "normal": 3}.get(task.kind, task.out_dim)


class DenseOutput(nn.Module):
    """Wraps a dense predictor: resizes to `output_size` (if given) and L2-normalises normals."""

    def __init__(self, body: nn.Module, normalize: bool, output_size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.body, self.normalize = body, normalize
        self.output_size = None if output_size is None else tuple(int(s) for s in output_size)

    def forward(self, rep: Tensor) -> Tensor:
        out = self.body(rep)
        if self.output_size is not None and tuple(out.shape[-2:]) != self.output_size:
            out = F.interpolate(out, size=self.output_size, mode="bilinear", align_corners=False)
        return F.normalize(out, dim=1) if self.normalize else out


def conv_head(in_channels: int, out_channels: int) -> nn.Module:
    """MTAN's split head: 3x3 conv then 1x1 conv to the task's channels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1),
        nn.Conv2d(in_channels, out_channels, kernel_size=1),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): 1x1 conv, three dilated 3x3 convs and image pooling, fused by
    a 1x1 conv. Unlike torchvision's, the pooling branch has no BatchNorm: a batch norm over one 1x1 value per
    sample fails on a last training batch of one sample."""

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int] = ATROUS_RATES) -> None:
        super().__init__()

        def branch(kernel: int, dilation: int) -> nn.Module:
            pad = 0 if kernel == 1 else dilation
            return nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel, padding=pad, dilation=dilation, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )

        self.branches = nn.ModuleList([branch(1, 1)] + [branch(3, r) for r in rates])
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.project = nn.Sequential(
            nn.Conv2d(out_channels * (len(rates) + 2), out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        out: Tensor = self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))
        return out


def aspp_head(in_channels: int, out_channels: int, aspp_channels: int) -> nn.Module:
    """DeepLabHead: ASPP, 3x3 conv + BN + ReLU, 1x1 conv to the task's channels."""
    return nn.Sequential(
        ASPP(in_channels, aspp_channels),
        nn.Conv2d(aspp_channels, aspp_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(aspp_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(aspp_channels, out_channels, 1),
    )


def pooled_head(in_channels: int, out_dim: int) -> nn.Module:
    """Classification from the shared map: global average pool, flatten, linear."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, out_dim))


def make_heads(
    model: str,
    bundle: DataBundle,
    in_channels: int,
    dense_body: Callable[[int, int], nn.Module],
    output_size: Sequence[int] | None = None,
) -> list[nn.Module]:
    """One head per task of `bundle`; `dense_body(in_channels, out_channels)` builds the dense predictor."""
    heads: list[nn.Module] = []
    for task in bundle.tasks:
        if task.kind in DENSE_KINDS:
            body = dense_body(in_channels, dense_out_channels(task))
            heads.append(DenseOutput(body, normalize=task.kind == "normal", output_size=output_size))
        elif task.kind in POOLED_KINDS:
            heads.append(pooled_head(in_channels, task.out_dim))
        else:
            raise UserError(
                f"model '{model}' has no head for task '{task.name}' of kind '{task.kind}'; "
                f"it supports {', '.join(sorted(DENSE_KINDS | POOLED_KINDS))}"
            )
    return heads


def init_like_mtan(module: nn.Module) -> None:
    """MTAN's initialisation: Xavier-normal conv/linear weights, zero biases, unit BatchNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
