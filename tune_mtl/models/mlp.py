"""Fully connected HPS network (the toy benchmark's model): searchable depth and width of both parts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:
    from tune_mtl.data.base import DataBundle


def mlp(sizes: list[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build_mlp_hps(
    input_dim: int, out_dims: list[int], shared_layers: int, shared_width: int, task_layers: int, task_width: int
) -> HPSModel:
    """`shared_layers` Linear+ReLU of `shared_width`; per task `task_layers` Linear+ReLU of `task_width`
    and a linear output layer (`task_layers=0`: the output layer alone)."""
    encoder = mlp([input_dim] + [shared_width] * shared_layers, final_activation=True)
    rep_dim = shared_width if shared_layers > 0 else input_dim
    heads = [mlp([rep_dim] + [task_width] * task_layers + [out], final_activation=False) for out in out_dims]
    return HPSModel(encoder, heads)


def build(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """The `mlp` model family (models/declarations.py): flat inputs, one head per task."""
    if len(bundle.input_shape) != 1:
        raise UserError(f"model 'mlp' needs flat inputs; data set '{bundle.name}' has shape {bundle.input_shape}")
    return build_mlp_hps(bundle.input_shape[0], [task.out_dim for task in bundle.tasks], **options)
