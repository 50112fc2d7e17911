"""Hard parameter sharing: one shared encoder, one head per task."""

from __future__ import annotations

from torch import Tensor, nn


class HPSModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: list[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Returns (shared representation, one output per task)."""
        rep = self.encoder(x)
        return rep, [head(rep) for head in self.heads]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.encoder.parameters() if p.requires_grad]

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [[p for p in head.parameters() if p.requires_grad] for head in self.heads]
