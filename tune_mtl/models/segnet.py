"""SegNet with hard parameter sharing (MTAN's `model_segnet_split.py`, 'standard' and 'deep' variants).

Shared: a five-level encoder (filters 64-128-256-512-512 times `width_multiplier`; conv-BN-ReLU blocks, max
pooling that remembers its indices) and the mirrored decoder (max unpooling with those indices), ending in a
full-resolution map of filters[0] channels: the shared representation. Per task: MTAN's 3x3 + 1x1 conv head
(dense tasks) or a pooled linear head (classification). Inputs need H and W of at least 32 (five poolings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.dense_heads import conv_head, image_shape, init_like_mtan, make_heads
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle

BASE_FILTERS = (64, 128, 256, 512, 512)


def conv_bn_relu(c_in: int, c_out: int, deep: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if deep:
        layers += [nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SegNetEncoderDecoder(nn.Module):
    def __init__(self, in_channels: int, filters: tuple[int, ...], deep: bool = False) -> None:
        super().__init__()
        f = filters
        self.out_channels = f[0]
        self.encoder_block = nn.ModuleList([conv_bn_relu(in_channels, f[0], deep)])
        self.decoder_block = nn.ModuleList([conv_bn_relu(f[0], f[0], deep)])
        self.conv_block_enc = nn.ModuleList([conv_bn_relu(f[0], f[0], deep)])
        self.conv_block_dec = nn.ModuleList([conv_bn_relu(f[0], f[0], deep)])
        for i in range(len(f) - 1):
            self.encoder_block.append(conv_bn_relu(f[i], f[i + 1], deep))
            self.decoder_block.append(conv_bn_relu(f[i + 1], f[i], deep))
            repeats = 1 if i == 0 else 2
            self.conv_block_enc.append(nn.Sequential(*[conv_bn_relu(f[i + 1], f[i + 1], deep) for _ in range(repeats)]))
            self.conv_block_dec.append(nn.Sequential(*[conv_bn_relu(f[i], f[i], deep) for _ in range(repeats)]))
        self.down = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.up = nn.MaxUnpool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        indices, sizes = [], []
        for enc, conv in zip(self.encoder_block, self.conv_block_enc, strict=True):
            x = conv(enc(x))
            sizes.append(x.shape[-2:])
            x, idx = self.down(x)
            indices.append(idx)
        for level in reversed(range(len(self.encoder_block))):
            x = self.up(x, indices[level], output_size=sizes[level])  # output_size: odd sizes round-trip
            x = self.conv_block_dec[level](self.decoder_block[level](x))
        return x


def segnet(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    channels, height, width = image_shape("segnet", bundle)
    if min(height, width) < 2 ** len(BASE_FILTERS):
        raise UserError(f"model 'segnet' needs images of at least 32x32 (five poolings), got {height}x{width}")
    filters = tuple(max(1, round(c * options["width_multiplier"])) for c in BASE_FILTERS)
    encoder = SegNetEncoderDecoder(channels, filters, options["deep"])
    heads = make_heads("segnet", bundle, encoder.out_channels, conv_head)
    model = HPSModel(encoder, heads)
    init_like_mtan(model)
    return model
