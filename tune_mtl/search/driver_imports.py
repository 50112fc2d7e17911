"""The search driver stays torch-free: what it imports of third-party code that would load torch on its own.

Tune's default TensorBoard callback runs on the driver and imports tensorboardX, whose writer module imports
torch when it is installed, only to name `torch.Tensor` in type hints (`numpy_compatible`); the values the
callback logs are floats. Importing tensorboardX with torch hidden keeps ~0.5 GB and 1-3 s of start-up off the
driver (issue 9; tests/test_torch_free_driver.py runs a search whose driver cannot import torch).
"""

from __future__ import annotations

import importlib
import sys


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
