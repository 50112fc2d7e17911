"""UNet with hard parameter sharing (as MTLA's Oxford-IIIT Pet model): the whole UNet is shared, each task has
its own head on the full-resolution output map.

`depth` poolings; level i has `width * 2**i` channels (double 3x3 conv-BN-ReLU); the decoder upsamples by
transposed convolution, concatenates the skip connection and applies a double conv. Sizes that do not halve
evenly are matched by resizing the upsampled map to its skip connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.dense_heads import conv_head, image_shape, make_heads
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, in_channels: int, width: int, depth: int) -> None:
        super().__init__()
        ch = [width * 2**i for i in range(depth + 1)]
        self.out_channels = ch[0]
        self.stem = double_conv(in_channels, ch[0])
        self.down = nn.ModuleList([double_conv(ch[i], ch[i + 1]) for i in range(depth)])
        self.upsample = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(depth)])
        self.up = nn.ModuleList([double_conv(2 * ch[i], ch[i]) for i in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for level in reversed(range(len(self.up))):
            skip = skips.pop()
            x = self.upsample[level](x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[level](torch.cat([skip, x], dim=1))
        return x


def unet(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    channels, height, width = image_shape("unet", bundle)
    if min(height, width) < 2 ** options["depth"]:
        raise UserError(
            f"model 'unet' with depth {options['depth']} needs images of at least {2 ** options['depth']} pixels "
            f"a side, got {height}x{width}"
        )
    encoder = UNet(channels, options["width"], options["depth"])
    return HPSModel(encoder, make_heads("unet", bundle, encoder.out_channels, conv_head))
