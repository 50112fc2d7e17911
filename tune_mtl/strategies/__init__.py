"""Strategy registry, read from the declarations (`strategies/declarations.py`): names, aliases, knobs and needs
without torch, so the search driver validates strategies without importing any implementation. `get` and
`build` import a strategy's implementation module on demand (inside trials).

Adding a strategy: its declaration in `declarations.py` and its class in `<name>.py` (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.registry import DeclarationTable
from tune_mtl.strategies.declaration import StrategyDeclaration
from tune_mtl.strategies.knobs import Knob

if TYPE_CHECKING:  # the implementation side imports torch: only `get`/`build` load it
    from tune_mtl.strategies.base import Strategy

def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _declarations() -> tuple[StrategyDeclaration, ...]:
    from tune_mtl.strategies.declarations import DECLARATIONS

    return DECLARATIONS


_TABLE = DeclarationTable("strategy", _canonical, _declarations)


def names() -> list[str]:
    return _TABLE.names()


def resolve(name: str) -> str:
    """Canonical name for a strategy name or alias (case-insensitive, '_' == '-')."""
    return _TABLE.resolve(name)


def declaration(name: str) -> StrategyDeclaration:
    """What a strategy declares (no torch): names, family, knobs, needs, implementation."""
    return _TABLE[name]


def knob_specs(name: str) -> dict[str, Knob]:
    """Every knob a user may set on strategy `name`: type, default, valid values, help."""
    return declaration(name).knob_specs()


def get(name: str) -> type[Strategy]:
    """The implementation class (imports its module, and torch)."""
    cls: type[Strategy] = declaration(name).load()
    return cls


def build(name: str, num_tasks: int, params: dict[str, Any] | None = None) -> Strategy:
    return get(name)(num_tasks, **(params or {}))


def catalogue() -> list[dict[str, Any]]:
    """Everything `launch.py strategies` prints: name, aliases, family, summary, knobs."""
    return [
        {
            "name": key,
            "aliases": sorted({_canonical(a) for a in (decl.name, *decl.aliases)} - {key}),
            "family": decl.family,
            "summary": decl.summary,
            "needs_auxiliary_tasks": decl.needs_auxiliary_tasks,
            "hyperparameters": {k: spec.describe() for k, spec in decl.knob_specs().items()},
        }
        for key, decl in _TABLE.items()
    ]


from tune_mtl.strategies.compatibility import check_compatibility  # noqa: E402 (needs resolve/declaration above)

__all__ = ["build", "catalogue", "check_compatibility", "declaration", "get", "knob_specs", "names", "resolve"]
