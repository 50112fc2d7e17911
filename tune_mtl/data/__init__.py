"""Data set registry: `@register("name")` on a builder `(options: dict, seed: int) -> DataBundle`.

Every module in this package is imported on first use, so adding a data set is adding one module.

Each entry also declares its tasks cheaply (`tasks=`: options -> `Task`s, no file read), so that the search
driver (a cluster's head node, which may not hold the data) checks task and metric names without building
the data set: only trials build it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tune_mtl.core.errors import unknown_name
from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import import_submodules
from tune_mtl.data.base import DataBundle, Task, TensorSplit, make_loader

Builder = Callable[[dict[str, Any], int], DataBundle]
TaskDeclaration = Callable[[dict[str, Any]], list[Task]]
_BUILDERS: dict[str, Builder] = {}
_DESCRIPTIONS: dict[str, str] = {}
_OPTIONS: dict[str, dict[str, Field]] = {}
_PREPARE: dict[str, Callable[[str, bool], str]] = {}
_DEFAULT_MODEL: dict[str, str] = {}
_ALIASES: dict[str, str] = {}
_TASKS: dict[str, TaskDeclaration] = {}
_discovered = False


def register(
    name: str,
    options: dict[str, Field],
    description: str = "",
    prepare: Callable[[str, bool], str] | None = None,
    default_model: str | None = None,
    aliases: tuple[str, ...] = (),
    tasks: TaskDeclaration | None = None,
) -> Callable[[Builder], Builder]:
    """`options` declares the data set's keys (type, default, valid range) so configs are checked up front.

    `default_model` names the model a search uses when the config names none (it must match the bundle's).
    `prepare(root, download) -> message` fetches what can be fetched (torchvision, with `download`) or
    explains which archive to get, then checks the layout under `root` (raising `UserError` if incomplete).
    `tasks(options) -> [Task]` declares the tasks (names, metrics, primary metric and direction) from the
    options alone, without reading any file; the builder's bundle must hold the same names.
    """

    def wrap(fn: Builder) -> Builder:
        _BUILDERS[name] = fn
        _OPTIONS[name] = options
        if prepare is not None:
            _PREPARE[name] = prepare
        if default_model is not None:
            _DEFAULT_MODEL[name] = default_model
        if tasks is not None:
            _TASKS[name] = tasks
        for alias in aliases:  # the names the seed code bases use (Toy_reg, Cityscape, ...)
            _ALIASES[_normal(alias)] = name
        _DESCRIPTIONS[name] = description or (fn.__doc__ or "").strip().splitlines()[0]
        return fn

    return wrap


def _discover() -> None:
    global _discovered
    if not _discovered:
        import_submodules(__name__, __path__, skip={"base"})
        _discovered = True


def names() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def resolve(name: str) -> str:
    _discover()
    key = _normal(name)
    key = _ALIASES.get(key, key)
    if key not in _BUILDERS:
        raise unknown_name("data set", str(name), _BUILDERS)
    return key


def default_model(name: str) -> str:
    from tune_mtl.core.errors import UserError

    key = resolve(name)
    if key not in _DEFAULT_MODEL:
        raise UserError(f"data set '{key}' has no default model; name one under 'model.name'")
    return _DEFAULT_MODEL[key]


def options(name: str) -> dict[str, Field]:
    return _OPTIONS[resolve(name)]


def build(name: str, options: dict[str, Any] | None = None, seed: int = 0) -> DataBundle:
    """Build a data set; `options` are checked against its declared fields and defaults filled in."""
    key = resolve(name)
    return _BUILDERS[key](check_options(f"dataset.{key}", options, _OPTIONS[key]), seed)


def declared_tasks(name: str, options: dict[str, Any] | None = None) -> list[Task]:
    """The tasks a data set declares for `options` (checked and defaults filled in), without building it."""
    from tune_mtl.core.errors import UserError

    key = resolve(name)
    if key not in _TASKS:
        raise UserError(f"data set '{key}' declares no tasks (register it with tasks=...)")
    return _TASKS[key](check_options(f"dataset.{key}", options, _OPTIONS[key]))


def prepare(name: str, root: str, download: bool) -> str:
    key = resolve(name)
    if key not in _PREPARE:
        return f"data set '{key}' needs no preparation"
    return _PREPARE[key](root, download)


def catalogue() -> list[dict[str, Any]]:
    _discover()
    return [
        {
            "name": n,
            "description": _DESCRIPTIONS[n],
            "options": {
                k: {"type": f.kind.__name__, "default": f.default, "help": f.help} for k, f in _OPTIONS[n].items()
            },
        }
        for n in sorted(_BUILDERS)
    ]


__all__ = [
    "DataBundle",
    "Task",
    "TensorSplit",
    "build",
    "catalogue",
    "declared_tasks",
    "default_model",
    "make_loader",
    "names",
    "options",
    "prepare",
    "register",
    "resolve",
]
