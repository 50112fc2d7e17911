"""The training loop of one trial: train / validate / test every epoch, with resumable state.

Independent of Ray: `trial.py` drives it and reports to Tune; tests and benchmarks drive it directly.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tune_mtl import data, models, strategies
from tune_mtl.core.delta_m import delta_m
from tune_mtl.data.base import Batch, TensorSplit, cycle, make_loader
from tune_mtl.strategies.base import StepContext
from tune_mtl.training.objective import resolve_objective
from tune_mtl.training.trial_config import TrialConfig

log = logging.getLogger(__name__)


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite: the trial ends as failed with this reason."""


class EpochInterrupted(Exception):
    """The caller's `should_stop` asked the epoch to end early (the search stopped the trial)."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Batch, device: torch.device) -> Batch:
    x, targets = batch
    return x.to(device, non_blocking=True), tuple(t.to(device, non_blocking=True) for t in targets)


class Trainer:
    def __init__(self, config: dict[str, Any] | TrialConfig, device: str | torch.device = "cpu") -> None:
        self.cfg = config if isinstance(config, TrialConfig) else TrialConfig.parse(config)
        self.device = torch.device(device)
        seed_everything(self.cfg.seed)
        self.bundle = data.build(self.cfg.dataset, self.cfg.dataset_options, self.cfg.seed)
        for split in (self.bundle.train, self.bundle.val, self.bundle.test):
            if isinstance(split, TensorSplit):  # small in-memory data: move once, slice on the device
                split.inputs = split.inputs.to(self.device)
                split.targets = tuple(t.to(self.device) for t in split.targets)
        self.tasks = self.bundle.tasks
        self.model = models.build(self.cfg.model or None, self.bundle, self.cfg.model_options).to(self.device)
        self.strategy = strategies.build(self.cfg.strategy, len(self.tasks), self.cfg.strategy_params)
        self.strategy.setup(self.model, self.device, self.cfg.seed)
        self.optimizer = self._make_optimizer()
        self.strategy.on_model_change(self._rebuild_optimizer)
        self.objective = resolve_objective(self.tasks, self.cfg.objective)
        tr = self.cfg.training
        self.train_loader = make_loader(self.bundle.train, tr["batch_size"], True, self.cfg.seed, tr["num_workers"])
        self.val_batches: Iterator[Batch] | None = None
        self.epoch = 0
        self.step = 0

    # -- set-up ----------------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        opt = self.cfg.optimizer
        groups: list[dict[str, Any]] = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if self.strategy.parameters():
            groups.append({"params": self.strategy.parameters(), "weight_decay": 0.0})
        if opt["name"] == "sgd":
            return torch.optim.SGD(groups, lr=opt["lr"], momentum=opt["beta1"], weight_decay=opt["weight_decay"])
        return torch.optim.Adam(
            groups, lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]), weight_decay=opt["weight_decay"]
        )

    def _rebuild_optimizer(self) -> None:
        # A strategy that changed the parameter set (Recon's layer split) needs an optimizer over the new
        # parameters; the moments of the replaced ones cannot carry over.
        self.optimizer = self._make_optimizer()

    # -- one step --------------------------------------------------------------------------------
    def forward_losses(self, batch: Batch) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Per-sample losses [T, B], the shared representation and the task outputs."""
        x, targets = batch
        rep, outputs = self.model(x)
        losses = torch.stack([task.loss(out, y) for task, out, y in zip(self.tasks, outputs, targets, strict=True)])
        return losses, rep, outputs

    def compute_losses(self, batch: Batch) -> Tensor:
        return self.forward_losses(batch)[0]

    def train_step(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        batch = to_device(batch, self.device)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses, rep, _ = self.forward_losses(batch)
        task_losses = losses.detach().mean(dim=1)
        if not torch.isfinite(task_losses).all():
            bad = ", ".join(f"{t.name}={v:.4g}" for t, v in zip(self.tasks, task_losses.tolist(), strict=True))
            raise TrialDiverged(f"training loss became non-finite at epoch {self.epoch + 1}, step {self.step} ({bad})")
        ctx = StepContext(
            losses=losses,
            model=self.model,
            shared_params=self.model.shared_parameters(),
            task_params=self.model.task_parameters(),
            representation=rep,
            step=self.step,
            epoch=self.epoch,
            batch=batch,
            compute_losses=self.compute_losses,
            val_batch=self.next_validation_batch(),
            task_kinds=[task.kind for task in self.tasks],
        )
        logs = self.strategy.backward(ctx)
        self.optimizer.step()
        self.step += 1
        return task_losses, logs

    # -- epochs ----------------------------------------------------------------------------------
    def _start_validation_stream(self) -> None:
        """Validation batches for auxiliary-task strategies, reshuffled per epoch from (seed, epoch) so that a
        run resumed from an end-of-epoch checkpoint sees exactly the batches an uninterrupted run would."""
        seed = self.cfg.seed + 1 + 7919 * self.epoch
        self.val_batches = cycle(make_loader(self.bundle.val, self.cfg.training["val_batch_size"], True, seed))

    def next_validation_batch(self) -> Batch | None:
        if not self.strategy.needs_validation_batch:
            return None
        if self.val_batches is None:
            self._start_validation_stream()
        assert self.val_batches is not None
        return to_device(next(self.val_batches), self.device)

    def train_epoch(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        self.val_batches = None  # a fresh, epoch-seeded validation stream
        loss_sum = torch.zeros(len(self.tasks), device=self.device)
        log_sums: dict[str, float] = defaultdict(float)
        batches = 0
        for batch in self.train_loader:
            if should_stop is not None and should_stop():
                raise EpochInterrupted(f"stopped during epoch {self.epoch + 1}")
            task_losses, logs = self.train_step(batch)
            loss_sum += task_losses
            for key, value in logs.items():
                log_sums[key] += value
            batches += 1
        mean_losses = loss_sum / max(batches, 1)
        self.strategy.end_epoch(self.epoch, mean_losses.detach())
        self.epoch += 1
        out = {f"train/{t.name}/loss": float(v) for t, v in zip(self.tasks, mean_losses, strict=True)}
        out["train/loss"] = float(mean_losses.sum())
        out.update({f"strategy/{k}": v / max(batches, 1) for k, v in log_sums.items()})
        return out

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        dataset = getattr(self.bundle, split)
        loader = make_loader(dataset, self.cfg.training["eval_batch_size"], False, 0, self.cfg.training["num_workers"])
        self.model.eval()
        meters = [task.make_metric() for task in self.tasks]
        loss_sum = torch.zeros(len(self.tasks), device=self.device)
        n = 0
        for batch in loader:
            batch = to_device(batch, self.device)
            losses, _, outputs = self.forward_losses(batch)
            loss_sum += losses.sum(dim=1)
            n += losses.shape[1]
            for meter, prediction, y in zip(meters, outputs, batch[1], strict=True):
                meter.update(prediction, y)
        out: dict[str, float] = {}
        for task, meter, loss in zip(self.tasks, meters, (loss_sum / max(n, 1)).tolist(), strict=True):
            out[f"{split}/{task.name}/loss"] = loss
            out.update({f"{split}/{task.name}/{k}": v for k, v in meter.compute().items()})
        if self.objective.baselines:
            values = {key: out[f"{split}/{key}"] for key in self.objective.baselines}
            out[f"{split}/delta_m"] = delta_m(values, self.objective.baselines, self.objective.higher_is_better)
        out[f"{split}/objective"] = self.objective.value(out, split, self.tasks)
        return out

    def run_epoch(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        """One epoch of training, then validation and test. `should_stop` is asked before every training step;
        when it answers yes the epoch ends there with EpochInterrupted, leaving the trainer mid-epoch (its last
        end-of-epoch checkpoint is what a stopped trial keeps)."""
        metrics = self.train_epoch(should_stop)
        if should_stop is not None and should_stop():
            raise EpochInterrupted(f"stopped after training epoch {self.epoch}")
        metrics.update(self.evaluate("val"))
        metrics.update(self.evaluate("test"))
        metrics["epoch"] = self.epoch
        return metrics

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        loader_generator = self.train_loader.generator  # TensorBatches and DataLoader both keep theirs
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "loader": loader_generator.get_state() if loader_generator is not None else None,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Strategy first: it may restore a model change (Recon) that the saved model/optimizer state assumes.
        self.strategy.load_state_dict(state["strategy"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        loader_generator = self.train_loader.generator
        if rng["loader"] is not None and loader_generator is not None:
            loader_generator.set_state(rng["loader"])
