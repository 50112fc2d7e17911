"""A strategy's hyperparameters ("knobs") as a typed, frozen dataclass, without torch.

The search driver validates `strategy_knobs` in a search space and prints `launch.py strategies` from these
declarations alone; the strategy classes (torch) read the same dataclass as `self.knobs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Self, get_args, get_origin, get_type_hints

from tune_mtl.core.errors import unknown_name
from tune_mtl.core.options import Field, check_value

KNOB_HELP = "tune_mtl.knob"  # dataclass-field metadata key of a knob's bounds and help


@dataclass(frozen=True)
class Knob(Field):
    """The declared valid values of one strategy hyperparameter: an `options.Field`, so knobs are checked by the
    same validator as every other typed option (`options.check_value`). Built from a `StrategyKnobs` field:
    the type from its annotation, the choices from a `Literal[...]` annotation.

    Which part of the valid range is worth *searching* lives in `search_spaces/strategies/<name>.yaml`.
    """

    def check(self, strategy: str, name: str, value: Any) -> Any:
        return check_value(f"strategy_knobs.{strategy}", name, self, value)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default": self.default, "type": self.kind.__name__, "help": self.help}
        if self.low is not None or self.high is not None:
            out["valid"] = [self.low, self.high]
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def knob(default: Any, *, low: float | None = None, high: float | None = None, help: str = "") -> Any:
    """A field of a `StrategyKnobs` dataclass: its default, inclusive bounds (numbers) and a line of help.
    (Typed `Any` so that `alpha: float = knob(0.5)` type-checks, as `dataclasses.field` does.)"""
    return field(default=default, metadata={KNOB_HELP: (low, high, help)})


@dataclass(frozen=True)
class StrategyKnobs:
    """Base of every strategy's knobs: a frozen dataclass whose fields are declared with `knob(...)`; as it is,
    the knobs of a strategy that has none.

    A field with `init=False` is fixed by the class (a variant such as IMTL-G fixing IMTL's `mode`): it keeps
    its type for the code but is no hyperparameter a user can set. A check across knobs, or one the declared
    ranges cannot express, goes in `__post_init__` and raises `UserError`.
    """

    @classmethod
    def specs(cls) -> dict[str, Knob]:
        hints = get_type_hints(cls)
        out = {}
        for f in fields(cls):
            if not f.init:
                continue
            low, high, help_text = f.metadata.get(KNOB_HELP, (None, None, ""))
            kind, choices = hints[f.name], None
            if get_origin(kind) is Literal:
                choices = get_args(kind)
                kind = type(choices[0])
            out[f.name] = Knob(kind, f.default, low=low, high=high, choices=choices, help=help_text)
        return out

    @classmethod
    def parse(cls, strategy: str, given: Mapping[str, Any]) -> Self:
        """The knobs from user values (defaults for the rest); one `UserError` for an unknown or invalid one."""
        specs = cls.specs()
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise unknown_name(f"hyperparameter of strategy '{strategy}'", unknown[0], specs)
        return cls(**{k: spec.check(strategy, k, given[k]) for k, spec in specs.items() if k in given})
