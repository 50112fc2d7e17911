"""Weights & Biases, logged from inside each trial (as Ray's `setup_wandb` does), offline without an account.

The driver only decides the mode once (`trial_settings`) and puts it into every trial's config; each trial
opens its own run (`trial_logger`), so logging never sits on the driver's critical path. One W&B run per
trial, named like the trial (`<strategy>-<n>`), grouped by search (the run folder's name), `job_type` = the
strategy, config = the trial's hyperparameters, and the trial's score in its summary. The verdict of the final
stage has a run of its own, with the same settings (search/verdict_wandb.py).

Cost: each trial's run has one `wandb-core` service process, started by `wandb.init` and stopped when the
run closes (so that its file is complete before Ray may end the worker): at most one per running trial, none
on the driver (measured alone: ~1.7 s `import wandb` once per process, ~0.5-0.9 s per run to start). Console
capture is off: a trial's output stays in Ray's worker log, not copied twice.

W&B online but unreachable (no network, a wrong WANDB_BASE_URL): the driver warns once and the whole search
logs offline instead (`wandb sync` uploads it later); a trial whose online run cannot start falls back to an
offline run too. Nothing is lost either way.

The API key is only ever read from the environment by wandb itself: it is never passed as an argument,
printed, or written into configs or results.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import threading
import time
import warnings
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tune_mtl.core.keys import TRACKING, TRIAL_NAME

DEFAULT_BASE_URL = "https://api.wandb.ai"
REACH_TIMEOUT_S = 5.0  # the driver's one check that the W&B server answers
TRIAL_INIT_TIMEOUT_S = 15.0  # an online run that cannot start within this falls back to offline
# Not hyperparameters: what the driver adds to every trial's config.
INTERNAL_KEYS = (TRACKING, TRIAL_NAME)


# -- the driver: decide the mode once ----------------------------------------------------------------------
def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """A TCP connection to the W&B server within `timeout` (name resolution included, which a plain socket
    timeout does not bound: it runs in a daemon thread that is left behind if it hangs)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    answered: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


@cache
def usable_mode(mode: str) -> str:
    """`mode`, or offline (with one warning) when it is online and the W&B server does not answer."""
    if mode != "online" or reachable(base_url()):
        return mode
    print(f"warning: W&B server {base_url()} is unreachable; logging offline instead (upload later with "
          "`wandb sync <run folder>/wandb/offline-run-*`)", file=sys.stderr, flush=True)
    return "offline"


def trial_settings(mode: str, project: str, group: str, folder: Path) -> dict[str, Any]:
    """What the driver puts under config[keys.TRACKING] so that the trial can open its own run."""
    return {"wandb_mode": usable_mode(mode), "project": project, "group": group, "dir": str(folder)}


# -- the trial: its own run -------------------------------------------------------------------------------
class TrialLogger:
    """Logs one trial's epochs to its own W&B run from the trial process. This base class logs nothing."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class WandbTrialLogger(TrialLogger):
    def __init__(self, run: Any) -> None:
        self.run = run
        self.closed = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.closed:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if not self.closed:
            self.run.summary.update(values)

    def close(self) -> None:
        """Finish the run and stop this process's wandb-core once it has written every record. `finish()`
        returns before the service has written the run's file, and Ray kills a worker's child processes when
        the worker ends (right after a search's last result, or when Tune stops the trial): without the
        teardown the last trial of a search could lose its W&B data. The next trial in this process starts
        a new service (~0.3 s more than reusing one)."""
        if self.closed:
            return
        self.closed = True
        import wandb

        self.run.finish()
        wandb.teardown()
        wait_for_service_exit()


SERVICE_EXIT_TIMEOUT_S = 10.0


def live_services() -> list[int]:
    """PIDs of this process's wandb-core children that have not exited (Linux /proc; elsewhere none known)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        state, parent = rest.split()[:2]
        if name.endswith("(wandb-core") and int(parent) == me and state != "Z":
            found.append(int(stat.parent.name))
    return found


def wait_for_service_exit(timeout: float = SERVICE_EXIT_TIMEOUT_S) -> None:
    """wandb.teardown() asks the service to stop and returns; the service writes out its runs' files before it
    exits, so waiting for that (bounded) is what makes the run complete on disk."""
    deadline = time.monotonic() + timeout
    while live_services() and time.monotonic() < deadline:
        time.sleep(0.05)


def run_id(group: str, trial_name: str) -> str:
    """The same id for the same trial of the same search: a retried or resumed trial continues its run."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "-", trial_name)[:40]
    return f"{readable}-{hashlib.sha1(f'{group}/{trial_name}'.encode()).hexdigest()[:12]}"


def hyperparameters(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in INTERNAL_KEYS}


def open_run(settings: dict[str, Any], trial_name: str, strategy: str, config: dict[str, Any], mode: str,
             id_suffix: str = "") -> Any:
    import wandb

    folder = Path(settings["dir"])
    (folder / "wandb").mkdir(parents=True, exist_ok=True)  # wandb writes <dir>/wandb/{offline-,}run-*
    return wandb.init(
        project=settings["project"], group=settings["group"], name=trial_name, job_type=strategy,
        tags=[strategy], config=hyperparameters(config), dir=str(folder), mode=mode,  # type: ignore[arg-type]
        id=run_id(settings["group"], trial_name) + id_suffix, resume="allow",
        reinit="create_new",  # a reused trial process opens one run after another
        settings=wandb.Settings(console="off", silent=True, save_code=False, x_save_requirements=False,
                                init_timeout=TRIAL_INIT_TIMEOUT_S),
    )


def trial_logger(settings: dict[str, Any] | None, trial_name: str, strategy: str,
                 config: dict[str, Any]) -> TrialLogger:
    """The logger of one trial (a no-op when W&B is disabled or no settings were given)."""
    if not settings or settings["wandb_mode"] == "disabled":
        return TrialLogger()
    mode = settings["wandb_mode"]
    try:
        return WandbTrialLogger(open_run(settings, trial_name, strategy, config, mode))
    except Exception as err:  # noqa: BLE001 - wandb raises CommError, UsageError, TimeoutError...
        if mode != "online":
            raise
        first = (str(err).splitlines() or [""])[0]
        warnings.warn(f"W&B online run of {trial_name} could not start ({type(err).__name__}: {first}); "
                      "logging it offline instead", stacklevel=2)
        # wandb keeps the id of the run that failed to start reserved in this process: the offline run gets
        # its own (it syncs as a run of its own, with the same name and group).
        return WandbTrialLogger(open_run(settings, trial_name, strategy, config, "offline", "-offline"))

