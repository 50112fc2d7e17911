"""The Ray Tune trainable: a trial config -> `Trainer`, one `tune.report` (with a checkpoint) per epoch.

Resumes from `tune.get_checkpoint()` (a retried trial continues at its last epoch, not at epoch 0).
A diverged trial raises `TrialDiverged`, so Tune records it as failed with that reason.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

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


def train_trial(config: dict[str, Any]) -> None:
    from ray import tune

    from tune_mtl.train import Trainer

    torch.set_num_threads(assigned_cpus())  # N trials on N cores: one intra-op thread each, not N each
    trainer = Trainer(config, device=pick_device())
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False))
    epochs = trainer.cfg.training["epochs"]
    while trainer.epoch < epochs:
        metrics = trainer.run_epoch()
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
