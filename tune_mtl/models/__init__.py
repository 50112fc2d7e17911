"""Model registry, read from the declarations (`models/declarations.py`): names, options and what strategies
need to know, without torch, so the search driver validates a model without importing it. `build` imports the
builder module on demand (inside trials).

Adding a model family: its declaration in `declarations.py` and its builder in `<family>.py` (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import DeclarationTable
from tune_mtl.models.declaration import ModelDeclaration

if TYPE_CHECKING:  # the built side imports torch: only `build` loads it
    from tune_mtl.data.base import DataBundle
    from tune_mtl.models.hps import HPSModel

def _normal(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def _declarations() -> tuple[ModelDeclaration, ...]:
    from tune_mtl.models.declarations import DECLARATIONS

    return DECLARATIONS


_TABLE = DeclarationTable("model", _normal, _declarations)


def names() -> list[str]:
    return _TABLE.names()


def resolve(name: str) -> str:
    return _TABLE.resolve(name)


def declaration(name: str) -> ModelDeclaration:
    return _TABLE[name]


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
