"""Strategy registry, read from the declarations (`strategies/declarations.py`): names, aliases, knobs and needs
without torch, so the search driver validates strategies without importing any implementation. `get` and
`build` import a strategy's implementation module on demand (inside trials).

Adding a strategy: its declaration in `declarations.py` and its class in `<name>.py` (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tune_mtl.core.errors import unknown_name
from tune_mtl.strategies.declaration import StrategyDeclaration
from tune_mtl.strategies.knobs import Knob

if TYPE_CHECKING:  # the implementation side imports torch: only `get`/`build` load it
    from tune_mtl.strategies.base import Strategy

_DECLARATIONS: dict[str, StrategyDeclaration] = {}
_ALIASES: dict[str, str] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _load_declarations() -> None:
    if _DECLARATIONS:
        return
    from tune_mtl.strategies.declarations import DECLARATIONS

    table: dict[str, StrategyDeclaration] = {}
    aliases: dict[str, str] = {}
    for declaration in DECLARATIONS:
        key = _canonical(declaration.name)
        if key != declaration.name or key in table:
            raise RuntimeError(f"strategy '{declaration.name}' is declared twice or not in canonical form")
        table[key] = declaration
        for alias in (declaration.name, *declaration.aliases):
            if aliases.setdefault(_canonical(alias), key) != key:
                raise RuntimeError(f"strategy alias '{alias}' names two strategies")
    _ALIASES.update(aliases)
    _DECLARATIONS.update(table)  # last: a concurrent reader sees all of it or nothing


def names() -> list[str]:
    _load_declarations()
    return sorted(_DECLARATIONS)


def resolve(name: str) -> str:
    """Canonical name for a strategy name or alias (case-insensitive, '_' == '-')."""
    _load_declarations()
    key = _ALIASES.get(_canonical(str(name)))
    if key is None:
        raise unknown_name("strategy", str(name), names())
    return key


def declaration(name: str) -> StrategyDeclaration:
    """What a strategy declares (no torch): names, family, knobs, needs, implementation."""
    return _DECLARATIONS[resolve(name)]


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
    _load_declarations()
    return [
        {
            "name": key,
            "aliases": sorted({_canonical(a) for a in (decl.name, *decl.aliases)} - {key}),
            "family": decl.family,
            "summary": decl.summary,
            "needs_auxiliary_tasks": decl.needs_auxiliary_tasks,
            "hyperparameters": {k: spec.describe() for k, spec in decl.knob_specs().items()},
        }
        for key, decl in sorted(_DECLARATIONS.items())
    ]


from tune_mtl.strategies.compatibility import check_compatibility  # noqa: E402 (needs resolve/declaration above)

__all__ = ["build", "catalogue", "check_compatibility", "declaration", "get", "knob_specs", "names", "resolve"]
