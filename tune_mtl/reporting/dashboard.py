"""`launch.py dashboard RUN_DIR`: TensorBoard and optuna-dashboard on a run folder, in one command.

Both servers listen on 127.0.0.1 only (reach them from elsewhere through an SSH tunnel), each on a port the
operating system reports free, and are started from this Python environment's own scripts (the versions
pinned in constraints.txt). Their URLs are printed once each answers HTTP; Ctrl-C stops both. Their own
logs go to a temporary file, shown only when a server fails to start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tune_mtl.core.errors import UserError
from tune_mtl.storage.run_folder import RunFolder, is_url, open_run
from tune_mtl.storage.secrets import is_masked, mask_url

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0  # TensorBoard's first start imports a lot; a loaded 2-core machine needs the margin
STOP_TIMEOUT_S = 10.0


@dataclass
class Server:
    name: str
    command: list[str]
    port: int
    log: IO[bytes] = field(repr=False)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def start(self) -> None:
        # A session of its own: the terminal's Ctrl-C reaches only launch.py, which stops the servers in order;
        # on Linux the kernel also stops them if launch.py itself is killed (no orphaned servers on the ports).
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_stop_with_parent if sys.platform == "linux" else None)

    def exit_code(self) -> int | None:
        """None while it runs (and before it starts)."""
        return None if self.process is None else self.process.poll()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # both shut down cleanly on SIGINT
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _stop_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def script(name: str) -> str:
    """A console script of this environment (next to its python), else one on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise UserError(f"'{name}' is not installed in this environment; run `make venv` (or "
                        f"pip install -c constraints.txt -e .) to install the dashboards")
    return found


def optuna_url(run: RunFolder, given: str | None) -> str | None:
    """The run's Optuna storage with its password (None when the run has no study, e.g. PBT)."""
    if not run.studies:
        return None
    if given:
        if mask_url(given) != run.optuna_display_url():
            raise UserError(f"--optuna-storage '{mask_url(given)}' is not this run's storage "
                            f"'{run.optuna_display_url()}'")
        return given
    if is_masked(run.optuna_display_url()):
        raise UserError(f"this run's Optuna storage '{run.optuna_storage}' has a password, which is not saved; "
                        "pass it with --optuna-storage")
    return run.optuna_display_url()


def plan(run: RunFolder, storage: str | None, log: IO[bytes]) -> tuple[list[Server], list[str]]:
    """The servers to start for `run`, and notes on what is left out."""
    servers, notes = [], []
    if is_url(run.tune_storage):
        notes.append(f"TensorBoard reads local folders only: copy {run.tune_storage} to a local folder and "
                     f"run `tensorboard --logdir <folder>`")
    else:
        port = free_port()
        servers.append(Server("TensorBoard", [script("tensorboard"), "--logdir", run.tune_storage, "--host", HOST,
                                              "--port", str(port), "--reload_interval", "15"], port, log))
    if storage is None:
        notes.append("no Optuna study in this run (PBT draws its population without Optuna)")
    else:
        port = free_port()
        servers.append(Server("Optuna dashboard", [script("optuna-dashboard"), storage, "--host", HOST,
                                                   "--port", str(port)], port, log))
    return servers, notes


def wait_until_up(servers: list[Server], log_path: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.exit_code() is not None:
                raise UserError(f"{server.name} stopped at start (exit code {server.exit_code()}); "
                                f"its log: {log_path}")
            if server.answers():
                waiting.remove(server)
        if waiting and time.monotonic() > deadline:
            raise UserError(f"{', '.join(s.name for s in waiting)} did not answer within {timeout_s:.0f} s; "
                            f"its log: {log_path}")
        time.sleep(0.3)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops the servers as Ctrl-C does (they run in sessions of their own)


def serve(run_dir: str, storage: str | None = None) -> int:
    """Start the dashboards of RUN_DIR, print their URLs, keep them up until Ctrl-C (or one of them stops)."""
    run = open_run(run_dir)
    url = optuna_url(run, storage)
    log = tempfile.NamedTemporaryFile(prefix=f"dashboards-{run.name}-", suffix=".log", delete=False)
    servers, notes = plan(run, url, log)
    for note in notes:
        print(f"note: {note}", flush=True)
    if not servers:
        raise UserError(f"nothing to show for {run.path}")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    clean = False
    try:
        for server in servers:
            server.start()
        wait_until_up(servers, log.name)
        for server in servers:
            print(f"{server.name + ':':18} {server.url}", flush=True)
        print(f"run: {run.path}   (Ctrl-C stops both)", flush=True)
        while all(server.exit_code() is None for server in servers):
            time.sleep(0.5)
        stopped = next(s for s in servers if s.exit_code() is not None)
        raise UserError(f"{stopped.name} stopped (exit code {stopped.exit_code()}); its log: {log.name}")
    except KeyboardInterrupt:
        print("\nstopping the dashboards", flush=True)
        clean = True
        return 0
    finally:
        for server in servers:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
        log.close()
        if clean:  # the log only matters when something went wrong
            os.unlink(log.name)
