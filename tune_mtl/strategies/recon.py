"""Recon (Shi et al., ICLR 2023): turn the shared layers with the most gradient conflict into task-specific ones.

Warm-up: for `warmup_steps` steps the `base` strategy trains the model while, for every shared module of the
(sequential) encoder, the task gradients restricted to that module's parameters are compared pairwise; a
pair with cosine similarity below `threshold` adds one to the module's conflict score. Then the `k`
modules with the highest scores (ties: the earlier module) get one copy per task, initialised from the
current weights: from the first split module on, the encoder carries one representation per task (shared
modules after it are applied to every branch). Training continues with `base` on the new model.
Differences from the paper: the paper retrains the reconfigured network from scratch; here training goes on
from the warmed-up weights (the optimizer is rebuilt, so Adam's moments restart). Only `nn.Sequential`
encoders (the MLP) can be split.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.strategies import declarations as declared
from tune_mtl.strategies import jacobian as jac
from tune_mtl.strategies.base import StepContext, Strategy
from tune_mtl.strategies.declarations import ReconKnobs

log = logging.getLogger(__name__)


class BranchedSequential(nn.Module):
    """A sequential encoder whose modules at `split` have one copy per task."""

    def __init__(self, layers: list[nn.Module], split: list[int], num_tasks: int) -> None:
        super().__init__()
        self.split = sorted(split)
        self.num_tasks = num_tasks
        self.layers = nn.ModuleList(
            nn.ModuleList(copy.deepcopy(layer) for _ in range(num_tasks)) if i in self.split else layer
            for i, layer in enumerate(layers)
        )

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        h: Tensor | list[Tensor] = x
        for layer in self.layers:
            if isinstance(layer, nn.ModuleList):  # a split module: one copy per task (a ModuleList has no forward)
                branches = h if isinstance(h, list) else [h] * self.num_tasks
                h = [copy_t(h_t) for copy_t, h_t in zip(layer, branches, strict=True)]
            else:
                h = [layer(h_t) for h_t in h] if isinstance(h, list) else layer(h)
        return h

    def task_specific_parameters(self) -> list[list[nn.Parameter]]:
        copies = [layer for layer in self.layers if isinstance(layer, nn.ModuleList)]
        return [[p for per_task in copies for p in per_task[t].parameters()] for t in range(self.num_tasks)]


def conflict_counts(jacobian: Tensor, blocks: list[Tensor], threshold: float) -> Tensor:
    """Per block of columns of J[T, P]: the number of task pairs whose gradient cosine is below `threshold`."""
    T = jacobian.shape[0]
    upper = torch.triu(torch.ones(T, T, dtype=torch.bool, device=jacobian.device), diagonal=1)
    counts = []
    for cols in blocks:
        g = jacobian[:, cols]
        unit = g / g.norm(dim=1, keepdim=True).clamp(min=1e-12)
        counts.append(((unit @ unit.T) < threshold)[upper].sum())
    return torch.stack(counts).to(torch.float64)


class Recon(Strategy, declaration=declared.RECON):
    knobs: ReconKnobs

    def __init__(self, num_tasks: int, **params: Any) -> None:
        super().__init__(num_tasks, **params)
        from tune_mtl import strategies

        # ReconKnobs checked the base when the knobs were parsed (an unknown name, recon itself).
        self.base_strategy = strategies.build(self.knobs.base, num_tasks)
        self.model: nn.Module | None = None
        self.split: list[int] | None = None
        self.seen = 0

    def setup(self, model: nn.Module, device: torch.device, seed: int = 0) -> None:
        super().setup(model, device, seed)
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Sequential):
            raise UserError(
                f"strategy 'recon' splits layers of a sequential encoder (nn.Sequential, e.g. model 'mlp'); "
                f"this model's encoder is {type(encoder).__name__}"
            )
        self.model = model
        self.candidates = [i for i, m in enumerate(encoder) if any(p.requires_grad for p in m.parameters())]
        self.scores = torch.zeros(len(self.candidates), dtype=torch.float64)
        self.base_strategy.setup(model, device, seed)

    def parameters(self) -> list[nn.Parameter]:
        return self.base_strategy.parameters()

    def _score(self, ctx: StepContext) -> None:
        offsets, start = {}, 0
        for p in ctx.shared_params:
            offsets[id(p)] = torch.arange(start, start + p.numel())
            start += p.numel()
        encoder = self._encoder()
        blocks = [torch.cat([offsets[id(p)] for p in encoder[i].parameters() if p.requires_grad])
                  for i in self.candidates]
        J = jac.task_jacobian(ctx.task_losses, ctx.shared_params, retain_graph=True)
        self.scores += conflict_counts(J, blocks, self.knobs.threshold).cpu()

    def _model(self) -> nn.Module:
        if self.model is None:
            raise RuntimeError("recon: setup(model, device) must run before the first step")
        return self.model

    def _encoder(self) -> nn.Sequential:
        encoder = self._model().encoder
        if not isinstance(encoder, nn.Sequential):  # checked in setup; split already (BranchedSequential)
            raise RuntimeError(f"recon: the encoder is {type(encoder).__name__}, no longer the sequential one")
        return encoder

    def chosen_modules(self) -> list[int]:
        k = min(self.knobs.k, max(len(self.candidates) - 1, 0))  # keep at least one module shared
        if k < self.knobs.k:
            log.warning("recon: k=%d but the encoder has %d shared modules; splitting %d", self.knobs.k,
                        len(self.candidates), k)
        order = sorted(range(len(self.candidates)), key=lambda j: (-float(self.scores[j]), j))
        return sorted(self.candidates[j] for j in order[:k])

    def _apply_split(self, split: list[int]) -> None:
        self.split = list(split)
        if split:
            self._model().encoder = BranchedSequential(list(self._encoder()), split, self.num_tasks)
            self.model_changed()

    def backward(self, ctx: StepContext) -> dict[str, float]:
        if self.split is None:
            self._score(ctx)
            self.seen += 1
            if self.seen >= self.knobs.warmup_steps:
                self._apply_split(self.chosen_modules())
                if self.split:  # the old graph belongs to the old parameters: recompute on the new model
                    ctx = dataclasses.replace(
                        ctx, losses=ctx.compute_losses(ctx.batch), shared_params=self.model.shared_parameters(),
                        task_params=self.model.task_parameters(), representation=None,
                    )
        logs = self.base_strategy.backward(ctx)
        return {**logs, "split_modules": float(len(self.split or []))}

    def state_dict(self) -> dict[str, Any]:
        return {"split": self.split, "scores": self.scores.clone(), "seen": self.seen,
                "base": self.base_strategy.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores, self.seen = state["scores"].clone(), state["seen"]
        if state["split"] is not None and self.split is None:
            self._apply_split(state["split"])
        elif state["split"] != self.split:
            raise ValueError(f"recon checkpoint split {state['split']} but this model is split at {self.split}")
        self.base_strategy.load_state_dict(state["base"])
