"""What the strategy, data-set and model registries share: finding the declaration modules of a package, and
loading an implementation named "module:attribute" only when it is needed (inside a trial: the
implementations import torch, the declarations do not)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any


def import_submodules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> list[ModuleType]:
    """Import every public module of a package (names starting with '_' are private helpers) and return them."""
    skip = set(skip)
    return [importlib.import_module(f"{package}.{module.name}") for module in pkgutil.iter_modules(list(path))
            if module.name not in skip and not module.name.startswith("_")]


def load_object(path: str) -> Any:
    """The object a "package.module:attribute" path names (imports the module)."""
    module, separator, attribute = path.partition(":")
    if not separator:
        raise ValueError(f"'{path}' must read 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)
