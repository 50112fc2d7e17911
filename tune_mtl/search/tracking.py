"""Weights & Biases through Ray Tune's logger callback, usable offline without an account.

Ray's `WandbLoggerCallback` insists on an API key even for `mode="offline"`; offline runs need none, so
the key check is skipped there. The key is only ever read from the environment by wandb itself: it is
never passed as an argument, printed, or written into configs or results.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ray.air.integrations.wandb import WandbLoggerCallback


class WandbCallback(WandbLoggerCallback):
    def __init__(self, project: str, group: str, mode: str, folder: Path) -> None:
        # wandb writes its runs to <dir>/wandb/{offline-,}run-*: here <run dir>/wandb/.
        (folder / "wandb").mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, group=group, mode=mode, dir=str(folder))
        self.mode = mode

    def setup(self, *args, **kwargs):
        if self.mode == "online":
            return super().setup(*args, **kwargs)
        # Offline: no key needed; keep the rest of Ray's set-up (project/group resolution) as it is.
        self.api_key_file = None
        self.api_key = None

    def __del__(self, _finalizing=sys.is_finalizing):  # bound now: module globals are None at exit
        # Ray's __del__ calls ray.is_initialized(); when the callback is collected at interpreter exit the
        # `ray` module global is already None and it prints a traceback. Its actors were stopped at
        # on_experiment_end, so at exit there is nothing left to clean up.
        if not _finalizing():
            super().__del__()


def wandb_callbacks(mode: str, project: str, folder: Path) -> list:
    if mode == "disabled":
        return []
    return [WandbCallback(project=project, group=folder.name, mode=mode, folder=folder)]


# -- logging from inside the trial (interface; replaces the driver-side callback, issue 9) -----------------
class TrialLogger:
    """Logs one trial's epochs to its own W&B run from the trial process. This base class logs nothing."""

    def log(self, metrics: dict, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def trial_settings(mode: str, project: str, group: str, folder: Path) -> dict:
    """What the driver puts under config[keys.TRACKING] so that the trial can open its own run."""
    return {"wandb_mode": mode, "project": project, "group": group, "dir": str(folder)}


def trial_logger(settings: dict | None, trial_name: str, strategy: str, config: dict) -> TrialLogger:
    """The logger of one trial (a no-op when W&B is disabled or no settings were given)."""
    return TrialLogger()
