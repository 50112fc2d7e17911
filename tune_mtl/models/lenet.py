"""LeNet-style HPS models for small images: `multilenet` (Sener & Koltun's Multi-MNIST network) and `lenet`.

`multilenet` follows MultiObjectiveOptimization's MultiLeNetR/MultiLeNetO (Sener & Koltun, NeurIPS 2018):
shared encoder conv 10@5x5 -> maxpool 2 -> relu -> conv 20@5x5 -> dropout2d -> maxpool 2 -> relu -> fc 50 -> relu;
per task fc 50 -> 50 -> relu -> dropout -> fc 50 -> out. `width` multiplies every channel count and hidden size
(1.0 is the published network). `lenet` is LeNet-5 (conv 6@5x5, conv 16@5x5, fc 120, fc 84) with linear
heads, for colour inputs such as CIFAR-10. Both read channels and size from `bundle.input_shape` and head sizes
from `bundle.tasks[t].out_dim`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle


def scaled(base: int, width: float) -> int:
    return max(1, round(base * width))


def image_shape(bundle: DataBundle, model: str, min_side: int) -> tuple[int, int, int]:
    shape = tuple(bundle.input_shape)
    if len(shape) != 3:
        raise UserError(f"model '{model}' needs image inputs (C, H, W); data set '{bundle.name}' has shape {shape}")
    if min(shape[1:]) < min_side:
        raise UserError(
            f"model '{model}' needs images of at least {min_side}x{min_side}; data set '{bundle.name}' gives "
            f"{shape[1]}x{shape[2]}"
        )
    channels, height, width = shape
    return channels, height, width


def after_conv_pool(side: int, kernel: int = 5, pool: int = 2) -> int:
    return (side - kernel + 1) // pool


class ConvEncoder(nn.Module):
    """Two conv/pool stages and fully connected layers; output [B, rep_dim] after a ReLU."""

    def __init__(self, in_shape: tuple[int, int, int], channels: tuple[int, int], fc: list[int], dropout: float,
                 drop_after_conv2: bool) -> None:
        super().__init__()
        c, h, w = in_shape
        self.conv1 = nn.Conv2d(c, channels[0], kernel_size=5)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=5)
        self.conv2_drop = nn.Dropout2d(dropout) if drop_after_conv2 and dropout > 0 else nn.Identity()
        self.pool = nn.MaxPool2d(2)
        flat = channels[1] * after_conv_pool(after_conv_pool(h)) * after_conv_pool(after_conv_pool(w))
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip([flat] + fc[:-1], fc, strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.fc = nn.Sequential(*layers)
        self.out_dim = fc[-1] if fc else flat

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv1(x)).relu()
        x = self.pool(self.conv2_drop(self.conv2(x))).relu()
        out: Tensor = self.fc(x.flatten(1))
        return out


def head(rep_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(rep_dim, out_dim)
    return nn.Sequential(nn.Linear(rep_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))


def multilenet(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """Sener & Koltun's MultiLeNet (Multi-MNIST): shared conv encoder, one small MLP head per task."""
    shape = image_shape(bundle, "multilenet", 12)
    w = options["width"]
    encoder = ConvEncoder(shape, (scaled(10, w), scaled(20, w)), [scaled(options["rep_dim"], w)], options["dropout"],
                          drop_after_conv2=True)
    hidden = scaled(options["head_hidden"], w) if options["head_hidden"] > 0 else 0
    heads = [head(encoder.out_dim, hidden, task.out_dim, options["dropout"]) for task in bundle.tasks]
    return HPSModel(encoder, heads)


def lenet(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """LeNet-5 encoder (conv 6, conv 16, fc 120, fc 84 at width 1) with a head per task."""
    shape = image_shape(bundle, "lenet", 12)
    w = options["width"]
    n, base = options["fc_layers"], options["fc_width"]
    # LeNet-5's 120 -> 84 taper when fc_width is left at 120; otherwise constant width.
    sizes = [120, 84, 84, 84][:n] if base == 120 else [base] * n
    encoder = ConvEncoder(shape, (scaled(6, w), scaled(16, w)), [scaled(s, w) for s in sizes], 0.0,
                          drop_after_conv2=False)
    hidden = scaled(options["head_hidden"], w) if options["head_hidden"] > 0 else 0
    heads = [head(encoder.out_dim, hidden, task.out_dim, options["dropout"]) for task in bundle.tasks]
    return HPSModel(encoder, heads)
