"""Model registry, read from the declarations (`models/declarations.py`): names, options and what strategies
need to know, without torch, so the search driver validates a model without importing it. `build` imports the
builder module on demand (inside trials).

Adding a model family: its declaration in `declarations.py` and its builder in `<family>.py` (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.errors import unknown_name
from tune_mtl.core.options import Field, check_options
from tune_mtl.models.declaration import ModelDeclaration

if TYPE_CHECKING:  # the built side imports torch: only `build` loads it
    from tune_mtl.data.base import DataBundle
    from tune_mtl.models.hps import HPSModel

_DECLARATIONS: dict[str, ModelDeclaration] = {}


def _load_declarations() -> None:
    if _DECLARATIONS:
        return
    from tune_mtl.models.declarations import DECLARATIONS

    table = {}
    for declaration in DECLARATIONS:
        if declaration.name in table or _normal(declaration.name) != declaration.name:
            raise RuntimeError(f"model '{declaration.name}' is declared twice or not in canonical form")
        table[declaration.name] = declaration
    _DECLARATIONS.update(table)


def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def names() -> list[str]:
    _load_declarations()
    return sorted(_DECLARATIONS)


def resolve(name: str) -> str:
    _load_declarations()
    key = _normal(name)
    if key not in _DECLARATIONS:
        raise unknown_name("model", str(name), _DECLARATIONS)
    return key


def declaration(name: str) -> ModelDeclaration:
    return _DECLARATIONS[resolve(name)]


def options(name: str) -> dict[str, Field]:
    return declaration(name).options


def has_sequential_encoder(name: str) -> bool:
    return declaration(name).sequential_encoder


def shares_parameters(name: str, options: dict[str, Any]) -> bool:
    """Whether the encoder built with `options` (defaults filled in for missing keys) has parameters."""
    declared = declaration(name)
    filled = {k: options.get(k, field.default) for k, field in declared.options.items()}
    return declared.shares_parameters(filled)


def build(name: str | None, bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """Build `name` (default: the data set's default model) with checked, defaulted options."""
    declared = declaration(name or bundle.default_model)
    model: HPSModel = declared.load()(bundle, check_options(f"model.{declared.name}", options, declared.options))
    return model


__all__ = ["build", "declaration", "has_sequential_encoder", "names", "options", "resolve", "shares_parameters"]
