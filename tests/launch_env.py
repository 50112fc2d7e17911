"""The environment of a `launch.py` subprocess in the tests: this checkout on PYTHONPATH, a HOME of the test's
own (no ~/.ray token or W&B settings of the machine's), Ray without token auth and W&B quiet."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def launch_env(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "RAY_AUTH_MODE": "disabled",
            "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT), **extra}
