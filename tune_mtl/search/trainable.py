"""The Ray Tune trainable: a trial config -> `Trainer`, one `tune.report` (with a checkpoint) per epoch, made
from a thread of its own while the next epoch trains (background_reports.py).

One score per trial: every epoch reports keys.SCORE (the best validation objective so far: the trial is
scored at its best epoch, i.e. early stopping), keys.SCORE_EPOCH and, under keys.AT_SCORE, every val/ and
test/ metric of that epoch. Optuna is told that score, Tune's best trial and the summary use it, W&B shows it.
The scored epoch's model weights travel in every checkpoint (`scored_model.pt`), so the model the score
describes is kept however many epochs follow.

Resumes from `tune.get_checkpoint()` (a retried trial continues at its last epoch, not at epoch 0, with its
score so far). A diverged trial ends with one last result flagged `diverged` (with the reason, and NaN
validation metrics so that Optuna records the trial as failed) instead of raising: Tune retries raised
errors (a lost node needs that), and a deterministic divergence would only repeat.

W&B is logged from inside the trial (`tracking.trial_logger`): the driver never waits on it.

The driver imports this module (it hands `train_trial` to Tune by reference) but never runs it: torch is
imported inside the functions that run in the trial process, so the driver stays torch-free
(tests/test_torch_free_driver.py).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_mtl.core.keys import AT_SCORE, DIVERGED, FAILURE_REASON, OBJECTIVE, SCORE, SCORE_EPOCH, TRACKING, TRIAL_NAME

if TYPE_CHECKING:  # imported where used at run time: Ray, torch and the training stack load inside the trial
    import torch
    from ray.tune import Checkpoint

    from tune_mtl.training.trainer import Trainer

CHECKPOINT_FILE = "trainer.pt"
# The trial's own wall clock (sub-second; Tune's `timestamp` is whole seconds): when the trial process began
# its work and when each epoch's result was made. bench/cluster_width.py measures concurrency from them.
STARTED_AT, WALL_CLOCK = "started_at", "wall_clock"
SCORED_MODEL_FILE = "scored_model.pt"  # the model weights at the scored epoch
SCORE_FILE = "score.json"
EPOCH_FILE = "epoch.json"  # the epoch a checkpoint holds (see existing_checkpoint)


def pick_device() -> torch.device:
    """CUDA when Tune gave this trial a GPU (Ray sets CUDA_VISIBLE_DEVICES), CPU otherwise."""
    import ray
    import torch

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    return torch.device("cuda") if gpu_ids and torch.cuda.is_available() else torch.device("cpu")


def assigned_cpus() -> int:
    import ray
    import torch

    if not ray.is_initialized():
        return torch.get_num_threads()
    # Ray leaves RuntimeContext.get_assigned_resources unannotated (a dict of resource name -> amount).
    resources = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
    return max(1, int(resources.get("CPU", 1)))


class Score:
    """The best validation objective so far, its epoch, the metrics of that epoch and the model then."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.value: float | None = None
        self.epoch: int | None = None
        self.metrics: dict[str, float] = {}
        self.model_state: dict[str, Any] | None = None

    def update(self, metrics: dict[str, Any], epoch: int, model: torch.nn.Module) -> bool:
        value = metrics.get(OBJECTIVE)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.value is not None and not (value < self.value if self.mode == "min" else value > self.value):
            return False  # ties keep the earlier epoch
        self.value, self.epoch = float(value), epoch
        self.metrics = {k: v for k, v in metrics.items() if k.startswith(("val/", "test/"))}
        self.model_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def result(self) -> dict[str, Any]:
        if self.value is None:  # Tune checks that every result holds its metric: NaN until an epoch scores
            return {SCORE: math.nan, SCORE_EPOCH: 0}
        return {SCORE: self.value, SCORE_EPOCH: self.epoch, **{AT_SCORE + k: v for k, v in self.metrics.items()}}

    def save(self, folder: Path) -> None:
        (folder / SCORE_FILE).write_text(json.dumps({"value": self.value, "epoch": self.epoch,
                                                     "metrics": self.metrics}))
        if self.model_state is not None:
            import torch

            torch.save(self.model_state, folder / SCORED_MODEL_FILE)

    def load(self, folder: Path) -> None:
        if not (folder / SCORE_FILE).exists():
            return
        saved = json.loads((folder / SCORE_FILE).read_text())
        self.value, self.epoch, self.metrics = saved["value"], saved["epoch"], saved["metrics"]
        if (folder / SCORED_MODEL_FILE).exists():
            import torch

            self.model_state = torch.load(folder / SCORED_MODEL_FILE, weights_only=True)


def failure_result(trainer: Trainer, reason: str) -> dict[str, Any]:
    """NaN for every validation/test metric (whichever the search optimises), plus the reason."""
    metrics: dict[str, Any] = {"epoch": trainer.epoch, DIVERGED: True, FAILURE_REASON: reason}
    for split in ("val", "test"):
        metrics[f"{split}/objective"] = math.nan
        for task in trainer.tasks:
            for name in ("loss", *task.metric_names):
                metrics[f"{split}/{task.name}/{name}"] = math.nan
    return metrics


def load_checkpoint(trainer: Trainer, checkpoint: Checkpoint, score: Score | None = None) -> None:
    import torch

    with checkpoint.as_directory() as folder:
        trainer.load_state_dict(torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False))
        if score is not None:
            score.load(Path(folder))
    # PBT restarts a trial from another trial's checkpoint with a mutated learning rate: the config's
    # value wins over the one saved in the optimizer state (the same value in every other case).
    for group in trainer.optimizer.param_groups:
        group["lr"] = trainer.cfg.optimizer["lr"]


def _saved_epoch(filesystem: Any, folder: str) -> int | None:
    """The epoch a checkpoint folder holds (from its small epoch file), or None if it is incomplete."""
    import pyarrow

    try:
        with filesystem.open_input_stream(f"{folder}/{EPOCH_FILE}") as stream:
            return int(json.loads(stream.read().decode())["epoch"])
    except (OSError, pyarrow.ArrowException, ValueError, KeyError):
        return None


def existing_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint to restore: Tune's, or, when that folder no longer exists, the newest complete one beside it.

    Tune restores a trial with the checkpoint its last experiment snapshot names. A driver killed after Tune
    rotated that checkpoint away (`num_to_keep`) and before the next snapshot leaves a stale name while newer
    checkpoints sit beside it; Tune also reuses folder numbers after a restore, so "newest" is decided by the
    epoch saved inside each folder, not by its number."""
    import pyarrow.fs
    from ray import tune

    filesystem, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    if filesystem is None:  # Ray types it Optional; Checkpoint.__init__ resolves one from any non-empty path
        return checkpoint
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        return checkpoint
    parent = path.rsplit("/", 1)[0]
    folders = [info.path for info in filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
               if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")]
    saved = [(epoch, folder) for folder in folders if (epoch := _saved_epoch(filesystem, folder)) is not None]
    if not saved:
        return checkpoint  # nothing to fall back to: Tune's own error names the missing folder
    return tune.Checkpoint(max(saved)[1], filesystem=filesystem)


def write_checkpoint(trainer: Trainer, score: Score) -> str:
    """A new folder holding the trainer's state, the score and, written last, the epoch (see existing_checkpoint)."""
    import torch

    folder = tempfile.mkdtemp(prefix="checkpoint-")
    try:
        torch.save(trainer.state_dict(), Path(folder) / CHECKPOINT_FILE)
        score.save(Path(folder))
        (Path(folder) / EPOCH_FILE).write_text(json.dumps({"epoch": trainer.epoch}))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], str | None, dict[str, Any] | None]:
    """(the Trainer's config, the trial name, the W&B settings): TrialConfig accepts only its own keys."""
    config = copy.deepcopy(dict(config))
    return config, config.pop(TRIAL_NAME, None), config.pop(TRACKING, None)


def train_trial(config: dict[str, Any]) -> None:
    from ray import tune

    from tune_mtl.core.errors import UserError
    from tune_mtl.search.trial_errors import user_error_result

    try:
        run_trial(config)
    except UserError as err:  # a configuration error: reported once, never retried (see trial_errors.py)
        tune.report(user_error_result(str(err)))


def run_trial(config: dict[str, Any]) -> None:
    import torch
    from ray import tune

    from tune_mtl.search.background_reports import BackgroundReports
    from tune_mtl.search.ray_adapter import trial_stop_event
    from tune_mtl.search.tracking import LoggerOpenedInBackground, trial_logger
    from tune_mtl.training.trainer import EpochInterrupted, Trainer, TrialDiverged

    started_at = time.time()
    torch.set_num_threads(assigned_cpus())  # N trials on N cores: one intra-op thread each, not N each
    trainer_config, name, tracking = split_config(config)
    name = name or tune.get_context().get_trial_name()
    reports = BackgroundReports(trial_stop_event())
    # Opened while the trainer is built: a worker's first W&B run takes ~0.9 s to open.
    logger = LoggerOpenedInBackground(
        lambda: trial_logger(tracking, name, trainer_config["strategy"]["name"], trainer_config))
    score: Score | None = None
    try:
        trainer = Trainer(trainer_config, device=pick_device())
        score = Score(trainer.objective.mode)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            load_checkpoint(trainer, existing_checkpoint(checkpoint), score)
        epochs = trainer.cfg.training["epochs"]
        while trainer.epoch < epochs:
            try:
                metrics = trainer.run_epoch(reports.stop_requested)
            except TrialDiverged as err:
                # A diverged trial has no score (Optuna: FAIL), whatever its epochs before scored.
                result = {**failure_result(trainer, str(err)), SCORE: math.nan, SCORE_EPOCH: 0}
                logger.log(result, step=trainer.epoch)
                logger.close()  # before the last report: Tune may end this worker right after it
                reports.send(result)
                reports.finish()
                return
            except EpochInterrupted:
                reports.finish()  # raises SystemExit when the stop came through a report
                raise SystemExit(0) from None  # Tune stopped the trial: end it as a direct report would
            score.update(metrics, trainer.epoch, trainer.model)
            result = {**metrics, **score.result(), STARTED_AT: started_at, WALL_CLOCK: time.time()}
            logger.log(result, step=trainer.epoch)
            if trainer.epoch >= epochs:  # W&B complete before the last report: Tune may end the worker after it
                logger.summary(score.result())
                logger.close()
            # The next epoch trains while Tune processes this one; `reports` removes the folder once Tune has
            # copied it.
            reports.send(result, write_checkpoint(trainer, score))
        reports.finish()
    finally:
        reports.settle()
        if score is not None:
            logger.summary(score.result())
        logger.close()
