"""Hard parameter sharing: one shared encoder, one head per task."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class HPSModel(nn.Module):
    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Tensor) -> tuple[Tensor | list[Tensor], list[Tensor]]:
        """Returns (shared representation, one output per task).

        An encoder whose later layers were split into per-task copies (Recon) returns one representation per
        task, a list; head t then reads representation t.
        """
        rep = self.encoder(x)
        if isinstance(rep, list):
            return rep, [head(r) for head, r in zip(self.heads, rep, strict=True)]
        return rep, [head(rep) for head in self.heads]

    def _encoder_task_parameters(self) -> list[list[nn.Parameter]]:
        # An encoder with task-specific parts (Recon's split layers) lists them per task.
        split = getattr(self.encoder, "task_specific_parameters", None)
        return split() if split is not None else [[] for _ in self.heads]

    def shared_parameters(self) -> list[nn.Parameter]:
        task_owned = {id(p) for params in self._encoder_task_parameters() for p in params}
        return [p for p in self.encoder.parameters() if p.requires_grad and id(p) not in task_owned]

    def task_parameters(self) -> list[list[nn.Parameter]]:
        encoder_parts = self._encoder_task_parameters()
        return [
            [p for p in (*encoder_parts[t], *head.parameters()) if p.requires_grad]
            for t, head in enumerate(self.heads)
        ]
