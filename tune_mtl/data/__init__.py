"""Data set registry, read from the declarations (`data/declarations/<family>.py`): names, aliases, options,
default model and the declared tasks, without torch, so that the search driver (a cluster's head node, which may
hold neither the data files nor torch) checks task and metric names without building anything. `build` imports
a data set's builder on demand (inside trials); `prepare` imports its preparation (`launch.py prepare`).

Adding a data set: its declaration in `declarations/<family>.py` and its builder in `<family>.py`
(CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.errors import UserError
from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import DeclarationTable, import_submodules
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration

if TYPE_CHECKING:  # the built side imports torch: `build` loads it; the names stay importable from here
    from tune_mtl.data.base import DataBundle, Task, TensorSplit, make_loader

_RUNTIME = {"DataBundle", "Task", "TensorSplit", "make_loader"}  # re-exported from data.base, lazily


def __getattr__(name: str) -> Any:
    """`tune_mtl.data.DataBundle` etc. import torch only when someone asks for them."""
    if name in _RUNTIME:
        from tune_mtl.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _declarations() -> list[DataSetDeclaration]:
    from tune_mtl.data import declarations

    return [declared for module in import_submodules(declarations.__name__, declarations.__path__)
            for declared in module.DECLARATIONS]


_TABLE = DeclarationTable("data set", _normal, _declarations)


def names() -> list[str]:
    return _TABLE.names()


def resolve(name: str) -> str:
    return _TABLE.resolve(name)


def declaration(name: str) -> DataSetDeclaration:
    return _TABLE[name]


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
    return [
        {
            "name": n,
            "description": declared.description,
            "options": {
                k: {"type": f.kind.__name__, "default": f.default, "help": f.help} for k, f in declared.options.items()
            },
        }
        for n, declared in _TABLE.items()
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
