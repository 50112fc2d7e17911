"""The environment of a `launch.py` subprocess in the tests: this checkout on PYTHONPATH, a HOME of the test's
own (no ~/.ray token or W&B settings of the machine's), Ray without token auth and W&B quiet; and the
stop-and-resume tests' driver handling (start a search in its own session, wait, Ctrl-C, SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def launch_env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "RAY_AUTH_MODE": "disabled",
            "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT), **extra}


def start_search(args: list[str], home: Path) -> subprocess.Popen:
    """`launch.py search ARGS` in its own session: a signal to the group reaches the driver and the local Ray it
    started, nothing else."""
    return subprocess.Popen([sys.executable, "launch.py", "search", *args], cwd=ROOT, env=launch_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def start_new_search(space: dict[str, Any], home: Path) -> tuple[Path, subprocess.Popen]:
    """A new search of `space` (written to HOME/space.yaml) into HOME/run, quiet, without W&B: (run, driver)."""
    import yaml

    config = home / "space.yaml"
    config.write_text(yaml.safe_dump(space))
    return home / "run", start_search(["--config", str(config), "--storage-path", str(home), "--name", "run",
                                       "--quiet", "--wandb-mode", "disabled"], home)


def finish_search(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """`launch.py search ARGS` to its end."""
    return subprocess.run([sys.executable, "launch.py", "search", *args], cwd=ROOT, env=launch_env(home),
                          capture_output=True, text=True, timeout=600)


def wait_for(proc: subprocess.Popen, condition: Callable[[], bool], what: str, within_s: float = 300) -> None:
    """Poll until `condition()`; fails if the search ends first (a bound for the test not to hang, not a
    timing assertion)."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert proc.poll() is None, f"the search ended before {what}: " + proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.05)


def ctrl_c_when(proc: subprocess.Popen, condition: Callable[[], bool], what: str,
                stop_within_s: float = 120) -> tuple[str, str]:
    """Once `condition()` holds, SIGINT the driver (what Ctrl-C does) and wait for it to stop; (stdout, stderr).
    The group is SIGKILLed if it does not stop."""
    try:
        wait_for(proc, condition, what)
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=stop_within_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def kill_when(proc: subprocess.Popen, condition: Callable[[], bool], what: str) -> None:
    """Once `condition()` holds, SIGKILL the driver and its local Ray (the whole group)."""
    try:
        wait_for(proc, condition, what)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
