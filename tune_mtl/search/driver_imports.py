"""What the search driver imports, and when.

Torch-free: Tune's default TensorBoard callback runs on the driver and imports tensorboardX, whose writer module
imports torch when it is installed, only to name `torch.Tensor` in type hints (`numpy_compatible`); the values
the callback logs are floats. Importing tensorboardX with torch hidden keeps ~0.5 GB and 1-3 s of start-up off
the driver (issue 9; tests/test_torch_free_driver.py runs a search whose driver cannot import torch).

While Ray starts: `ray.init` spends most of its ~1.5 s waiting for Ray's processes, and right after it the
driver opens the Optuna storage, whose imports (Optuna, SQLAlchemy, Alembic) take ~0.5 s on 2 cores. A thread
imports them meanwhile (`import_in_background(WHILE_RAY_STARTS)`). Only packages that never import Ray: two
threads importing the same modules at once could each wait for a module the other is initialising, and Python
then fails one of the imports, which must never be `ray.init`'s.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence

WHILE_RAY_STARTS = ("optuna", "sqlalchemy", "sqlalchemy.orm", "alembic.command", "alembic.config",
                    "alembic.migration", "alembic.script", "optuna.storages._rdb.models")


def import_in_background(modules: Sequence[str]) -> threading.Thread:
    """Import `modules` in a daemon thread; best effort: a module that fails here is imported again, with its
    own error, where the driver uses it."""

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - see the docstring
                continue

    thread = threading.Thread(target=run, daemon=True, name="driver-imports")
    thread.start()
    return thread


def import_tensorboardx_without_torch() -> None:
    """Import tensorboardX (once) as if torch were not installed, unless the process already holds torch."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # the import system's "not importable" marker
    try:
        importlib.import_module("tensorboardX")
    except ImportError:  # not installed: Tune then logs no TensorBoard files, as it would anyway
        pass
    finally:
        del sys.modules["torch"]
