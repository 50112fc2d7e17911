"""Plug-in discovery shared by the strategy, data-set and model registries: importing every module of a
package runs its registrations, so adding a strategy, data set or model is adding one file."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_submodules(package: str, path: Iterable[str], skip: Iterable[str] = ()) -> None:
    skip = set(skip)
    for module in pkgutil.iter_modules(list(path)):
        if module.name not in skip and not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")
