"""Weights & Biases, logged from inside each trial (as Ray's `setup_wandb` does), offline without an account.

The driver only decides the mode once (`trial_settings`) and puts it into every trial's config; each trial
opens its own run (`trial_logger`), so logging never sits on the driver's critical path. One W&B run per
trial, named like the trial (`<strategy>-<n>`), grouped by search (the run folder's name), `job_type` = the
strategy, config = the trial's hyperparameters, and the trial's score in its summary. The verdict of the final
stage has a run of its own, with the same settings (search/verdict_wandb.py).

Cost: one `wandb-core` service process per trial process (Tune reuses a worker for trial after trial), started
by its first run and kept for the next ones; none on the driver. Each run's file is complete on disk when the
run closes (`WandbTrialLogger.close`), without stopping the service. Measured alone (offline, one process, 8
logs per run, load ~1.5): `import wandb` ~1.7 s once per process, then per run ~0.025 s to open and ~0.013 s to
close, against ~0.23 s to open when each close stopped the service (the next run started a new one). Console
capture is off: a trial's output stays in Ray's worker log, not copied twice.

W&B online but unreachable (no network, a wrong WANDB_BASE_URL): the driver warns once and the whole search
logs offline instead (`wandb sync` uploads it later); a trial whose online run cannot start falls back to an
offline run too. Nothing is lost either way.

The API key is only ever read from the environment by wandb itself: it is never passed as an argument,
printed, or written into configs or results.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
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
        self.lock = threading.Lock()  # close() may come from the trial's thread and from the exit hook at once
        OPEN_LOGGERS.add(self)
        close_at_exit()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        with self.lock:
            if not self.closed:
                self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        with self.lock:
            if not self.closed:
                self.run.summary.update(values)

    def close(self) -> None:
        """Finish the run and return once its transaction log is complete on disk, keeping this process's
        wandb-core for its next trial (Tune reuses trial processes: a run that starts a new service opens in
        ~0.23 s, one that reuses it in ~0.025 s). `finish()` returns before the service has written the run's
        file, and Ray kills a worker's child processes when the worker ends (right after a search's last
        result, or when Tune stops the trial), so close() waits until the service has closed the file
        (`wait_until_written`): after that nothing of this run is left in the service, whatever ends the
        process. Where that cannot be observed (no /proc, or the service never showed the file open) or takes
        over SERVICE_EXIT_TIMEOUT_S, it stops the service instead (wandb.teardown writes out every run before
        the service exits) and waits for the exit, as every close did before; the next run starts a new one."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            OPEN_LOGGERS.discard(self)
            log_file = Path(self.run.settings.sync_file).resolve()  # <dir>/wandb/{offline-,}run-*/run-<id>.wandb
            observed = log_file in files_open_in_services()
            self.run.finish()
            if observed and wait_until_written(log_file):
                return
            import wandb

            wandb.teardown()
            wait_for_service_exit()


# When Tune stops a trial (ASHA, or the end of a search) and no next trial reuses its process, Ray calls the
# trainable's stop(), which tells the trial's thread to end but does not wait for it (FunctionTrainable.cleanup:
# `session.finish(timeout=0)`), while the thread's `finally: logger.close()` is still to run. If the process then
# exits normally (its actor out of scope), Python runs atexit handlers but does not wait for that daemon thread:
# this exit hook closes (or waits for the close of) every run still open. Measured on Ray 2.60: the cached worker
# of a search's last trial ran its atexit handlers ~50 ms after fit() returned, and an exit hook that waited 1 s
# for the trial's thread delayed the driver's ray.shutdown() instead of being cut.
# A worker ended by SIGTERM (the driver's ray.shutdown() right after fit()) has its children, wandb-core
# included, killed by Ray before any Python exit code runs: the trainable's cleanup therefore waits (bounded) for
# the trial's thread, so a stopped trial's close is over before fit() returns
# (ray_adapter.trainable_waiting_for_its_thread; before it, the run of a trial ASHA stopped as the last of its
# worker was lost in 1-2 of 3 small searches). NOT covered: an open run of a worker killed outright (ray.kill
# after TUNE_FORCE_TRIAL_CLEANUP_S, a lost node, SIGKILL).
OPEN_LOGGERS: set[WandbTrialLogger] = set()


def close_open_loggers() -> None:
    for logger in list(OPEN_LOGGERS):
        logger.close()


def close_at_exit() -> None:
    """(Re-)register the exit hook last, so that it runs before wandb's own (atexit runs the last registered
    first; wandb registers one each time it starts a service), while the service is still there."""
    atexit.unregister(close_open_loggers)
    atexit.register(close_open_loggers)


SERVICE_EXIT_TIMEOUT_S = 10.0
POLL_S = 0.002  # the service closes a finished run's file within milliseconds


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


def files_open_in_services(services: list[int] | None = None) -> set[Path]:
    """The files this process's wandb-core services hold open (Linux /proc; elsewhere none known)."""
    found = set()
    for pid in live_services() if services is None else services:
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # exited meanwhile
            continue
        for fd in descriptors:
            try:
                found.add(Path(os.readlink(fd)))
            except OSError:
                continue
    return found


def wait_until_written(log_file: Path, timeout: float = SERVICE_EXIT_TIMEOUT_S) -> bool:
    """Whether the service closed the finished run's transaction log within `timeout`: it writes the exit record
    last and then closes the file, so a closed file is a complete one (on disk for any process that reads it,
    even if the service is killed the next moment)."""
    services = live_services()
    deadline = time.monotonic() + timeout
    while log_file in files_open_in_services(services):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


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


class LoggerOpenedInBackground(TrialLogger):
    """A trial's logger opened by a thread of its own while the trial builds its trainer and trains.

    A process's first W&B run costs ~0.9 s before it can log (importing wandb, starting wandb-core): on the
    trial's path, that delayed every worker's first epoch by as much. Every call waits until the logger is open
    and raises, once, what opening it raised; `close` always waits, so a run is never left open."""

    def __init__(self, open_logger: Callable[[], TrialLogger]) -> None:
        self._logger: TrialLogger = TrialLogger()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(open_logger,), daemon=True, name="trial-logger")
        self._thread.start()

    def _open(self, open_logger: Callable[[], TrialLogger]) -> None:
        try:
            self._logger = open_logger()
        except BaseException as err:  # raised in the trial's own thread, at its next call
            self._error = err

    def _opened(self) -> TrialLogger:
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._logger

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._opened().log(metrics, step)

    def summary(self, values: dict[str, Any]) -> None:
        self._opened().summary(values)

    def close(self) -> None:
        self._opened().close()


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

