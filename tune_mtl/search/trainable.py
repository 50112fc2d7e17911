"""The Ray Tune trainable: a trial config -> `Trainer`, one `tune.report` (with a checkpoint) per epoch.

Resumes from `tune.get_checkpoint()` (a retried trial continues at its last epoch, not at epoch 0).
A diverged trial ends with one last result flagged `diverged` (with the reason, and NaN validation metrics
so that Optuna records the trial as failed) instead of raising: Tune retries raised errors (a lost node
needs that), and a deterministic divergence would only repeat.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from tune_mtl.core.keys import DIVERGED, FAILURE_REASON

CHECKPOINT_FILE = "trainer.pt"


def pick_device() -> torch.device:
    """CUDA when Tune gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), CPU otherwise."""
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    return torch.device("cuda") if gpu_ids and torch.cuda.is_available() else torch.device("cpu")


def assigned_cpus() -> int:
    import ray

    if not ray.is_initialized():
        return torch.get_num_threads()
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


def failure_result(trainer, reason: str) -> dict[str, Any]:
    """NaN for every validation/test metric (whichever the search optimises), plus the reason."""
    metrics: dict[str, Any] = {"epoch": trainer.epoch, DIVERGED: True, FAILURE_REASON: reason}
    for split in ("val", "test"):
        metrics[f"{split}/objective"] = math.nan
        for task in trainer.tasks:
            for name in ("loss", *task.make_metric().names):
                metrics[f"{split}/{task.name}/{name}"] = math.nan
    return metrics


def load_checkpoint(trainer, checkpoint) -> None:
    with checkpoint.as_directory() as folder:
        trainer.load_state_dict(torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False))
    # PBT restarts a trial from another trial's checkpoint with a mutated learning rate: the config's
    # value wins over the one saved in the optimizer state (the same value in every other case).
    for group in trainer.optimizer.param_groups:
        group["lr"] = trainer.cfg.optimizer["lr"]


def train_trial(config: dict[str, Any]) -> None:
    from ray import tune

    from tune_mtl.training.trainer import Trainer, TrialDiverged

    torch.set_num_threads(assigned_cpus())  # N trials on N cores: one intra-op thread each, not N each
    trainer = Trainer(config, device=pick_device())
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        load_checkpoint(trainer, checkpoint)
    epochs = trainer.cfg.training["epochs"]
    while trainer.epoch < epochs:
        try:
            metrics = trainer.run_epoch()
        except TrialDiverged as err:
            tune.report(failure_result(trainer, str(err)))
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
