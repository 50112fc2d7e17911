"""Strategy registry. Every module in this package that defines a `Strategy` subclass with a `name` is
discovered at import, so adding a strategy is adding one file."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.core.registry import import_submodules
from tune_mtl.strategies.base import GradientAggregation, GramianWeighting, LossWeighting, Strategy

_INTERNAL = {"base", "jacobian", "compatibility"}
_REGISTRY: dict[str, type[Strategy]] = {}
_ALIASES: dict[str, str] = {}


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _collect(subclasses: list[type[Strategy]]) -> None:
    for sub in subclasses:
        if "name" in sub.__dict__:
            key = _canonical(sub.name)
            if key in _REGISTRY and _REGISTRY[key] is not sub:
                raise RuntimeError(f"two strategies are named '{key}'")
            _REGISTRY[key] = sub
            for alias in (sub.name, *sub.aliases):
                _ALIASES[_canonical(alias)] = key
        _collect(sub.__subclasses__())


def _discover() -> None:
    if _REGISTRY:
        return
    import_submodules(__name__, __path__, skip=_INTERNAL)
    _collect(Strategy.__subclasses__())


def names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def resolve(name: str) -> str:
    """Canonical name for a strategy name or alias (case-insensitive, '_' == '-')."""
    _discover()
    key = _ALIASES.get(_canonical(str(name)))
    if key is None:
        raise unknown_name("strategy", str(name), names())
    return key


def get(name: str) -> type[Strategy]:
    return _REGISTRY[resolve(name)]


def build(name: str, num_tasks: int, params: dict[str, Any] | None = None) -> Strategy:
    return get(name)(num_tasks, **(params or {}))


def catalogue() -> list[dict[str, Any]]:
    """Everything `launch.py strategies` prints: name, aliases, family, summary, knobs."""
    _discover()
    return [
        {
            "name": key,
            "aliases": sorted({_canonical(a) for a in (cls.name, *cls.aliases)} - {key}),
            "family": cls.family,
            "summary": cls.summary,
            "needs_auxiliary_tasks": cls.needs_auxiliary_tasks,
            "hyperparameters": {k: knob.describe() for k, knob in cls.knob_specs().items()},
        }
        for key, cls in sorted(_REGISTRY.items())
    ]


from tune_mtl.strategies.compatibility import check_compatibility  # noqa: E402 (needs resolve/get above)

__all__ = [
    "GradientAggregation", "GramianWeighting", "LossWeighting", "Strategy", "UserError",
    "build", "catalogue", "check_compatibility", "get", "names", "resolve",
]
