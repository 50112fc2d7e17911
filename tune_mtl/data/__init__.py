"""Data set registry, read from the declarations (`data/declarations/<family>.py`): names, aliases, options,
default model and the declared tasks, without torch, so that the search driver (a cluster's head node, which may
hold neither the data files nor torch) checks task and metric names without building anything. `build` imports
a data set's builder on demand (inside trials); `prepare` imports its preparation (`launch.py prepare`).

Adding a data set: its declaration in `declarations/<family>.py` and its builder in `<family>.py`
(CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import import_submodules
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration

if TYPE_CHECKING:  # the built side imports torch: `build` loads it; the names stay importable from here
    from tune_mtl.data.base import DataBundle, Task, TensorSplit, make_loader

_DECLARATIONS: dict[str, DataSetDeclaration] = {}
_ALIASES: dict[str, str] = {}
_RUNTIME = {"DataBundle", "Task", "TensorSplit", "make_loader"}  # re-exported from data.base, lazily


def __getattr__(name: str) -> Any:
    """`tune_mtl.data.DataBundle` etc. import torch only when someone asks for them."""
    if name in _RUNTIME:
        from tune_mtl.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _load_declarations() -> None:
    if _DECLARATIONS:
        return
    from tune_mtl.data import declarations

    table: dict[str, DataSetDeclaration] = {}
    aliases: dict[str, str] = {}
    for module in import_submodules(declarations.__name__, declarations.__path__):
        for declaration in module.DECLARATIONS:
            if declaration.name in table or _normal(declaration.name) != declaration.name:
                raise RuntimeError(f"data set '{declaration.name}' is declared twice or not in canonical form")
            table[declaration.name] = declaration
            for alias in declaration.aliases:
                if aliases.setdefault(_normal(alias), declaration.name) != declaration.name:
                    raise RuntimeError(f"data set alias '{alias}' names two data sets")
    _ALIASES.update(aliases)
    _DECLARATIONS.update(table)  # last: a concurrent reader sees all of it or nothing


def names() -> list[str]:
    _load_declarations()
    return sorted(_DECLARATIONS)


def resolve(name: str) -> str:
    _load_declarations()
    key = _normal(name)
    key = _ALIASES.get(key, key)
    if key not in _DECLARATIONS:
        raise unknown_name("data set", str(name), _DECLARATIONS)
    return key


def declaration(name: str) -> DataSetDeclaration:
    return _DECLARATIONS[resolve(name)]


def default_model(name: str) -> str:
    declared = declaration(name)
    if declared.default_model is None:
        raise UserError(f"data set '{declared.name}' has no default model; name one under 'model.name'")
    return declared.default_model


def options(name: str) -> dict[str, Field]:
    return declaration(name).options


def build(name: str, options: dict[str, Any] | None = None, seed: int = 0) -> DataBundle:
    """Build a data set; `options` are checked against its declared fields and defaults filled in."""
    declared = declaration(name)
    bundle: DataBundle = declared.load_builder()(check_options(f"dataset.{declared.name}", options,
                                                               declared.options), seed)
    return bundle


def declared_tasks(name: str, options: dict[str, Any] | None = None) -> list[TaskDeclaration]:
    """The tasks a data set declares for `options` (checked and defaults filled in), without building it."""
    declared = declaration(name)
    return declared.tasks(check_options(f"dataset.{declared.name}", options, declared.options))


def prepare(name: str, root: str, download: bool) -> str:
    declared = declaration(name)
    prepare_files = declared.load_prepare()
    if prepare_files is None:
        return f"data set '{declared.name}' needs no preparation"
    return prepare_files(root, download)


def catalogue() -> list[dict[str, Any]]:
    _load_declarations()
    return [
        {
            "name": n,
            "description": declared.description,
            "options": {
                k: {"type": f.kind.__name__, "default": f.default, "help": f.help} for k, f in declared.options.items()
            },
        }
        for n, declared in sorted(_DECLARATIONS.items())
    ]


__all__ = [
    "DataBundle",
    "Task",
    "TaskDeclaration",
    "TensorSplit",
    "build",
    "catalogue",
    "declaration",
    "declared_tasks",
    "default_model",
    "make_loader",
    "names",
    "options",
    "prepare",
    "resolve",
]
