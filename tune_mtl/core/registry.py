"""What the strategy, data-set and model registries share: finding the declaration modules of a package, and
loading an implementation named "module:attribute" only when it is needed (inside a trial: the
implementations import torch, the declarations do not)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

from tune_mtl.core.errors import unknown_name


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


class Named(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def aliases(self) -> tuple[str, ...]: ...


D = TypeVar("D", bound=Named)


class DeclarationTable(Generic[D]):
    """The declarations of one kind of plug-in (strategy, data set, model), by canonical name and alias.

    Loaded on first use by `load` (which imports the declaration modules, never an implementation), then only
    read. `normal` is how a user's spelling maps to a key (case, '-' or '_')."""

    def __init__(self, kind: str, normal: Callable[[str], str], load: Callable[[], Iterable[D]]) -> None:
        self.kind, self.normal, self._load = kind, normal, load
        self._by_name: dict[str, D] = {}
        self._aliases: dict[str, str] = {}

    def _loaded(self) -> dict[str, D]:
        if not self._by_name:
            by_name: dict[str, D] = {}
            aliases: dict[str, str] = {}
            for declaration in self._load():
                key = declaration.name
                if key in by_name or self.normal(key) != key:
                    raise RuntimeError(f"{self.kind} '{key}' is declared twice or not in canonical form")
                by_name[key] = declaration
                for alias in (key, *declaration.aliases):
                    if aliases.setdefault(self.normal(alias), key) != key:
                        raise RuntimeError(f"{self.kind} alias '{alias}' names two {self.kind}s")
            self._aliases.update(aliases)
            self._by_name.update(by_name)  # last: a concurrent reader sees all of it or nothing
        return self._by_name

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def resolve(self, name: str) -> str:
        """The canonical name of `name` or one of its aliases; one `UserError` (with the closest name) if none."""
        table = self._loaded()
        key = self._aliases.get(self.normal(str(name)))
        if key is None:
            raise unknown_name(self.kind, str(name), table)
        return key

    def __getitem__(self, name: str) -> D:
        """The declaration of `name` (any spelling or alias)."""
        return self._by_name[self.resolve(name)]

    def items(self) -> list[tuple[str, D]]:
        return sorted(self._loaded().items())
