"""A small typed-options checker shared by the YAML config and the data-set/model builders.

Each field declares its type, default and valid range; `check_options` returns the filled-in dict or raises
one `UserError` naming the key (with the closest valid key for typos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tune_mtl.core.errors import UserError, closest

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


@dataclass(frozen=True)
class Field:
    kind: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    # A file-system path: the search makes it absolute against the launch directory, because Ray runs
    # every trial in its own working directory.
    path: bool = False


def check_value(where: str, key: str, spec: Field, value: Any) -> Any:
    name = f"{where}.{key}" if where else key
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is bool and not isinstance(value, bool):
        raise UserError(f"'{name}' must be true or false, got {value!r}")
    if spec.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise UserError(f"'{name}' must be an integer, got {value!r}")
    if not isinstance(value, spec.kind):
        raise UserError(f"'{name}' must be {_TYPE_NAMES.get(spec.kind, spec.kind.__name__)}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        # NaN compares false with every bound, so a range check alone would let it through.
        raise UserError(f"'{name}' must be a finite number, got {value!r}")
    if spec.choices is not None:
        normal = value.lower() if isinstance(value, str) else value
        if normal not in spec.choices:
            raise UserError(f"'{name}' must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
        value = normal
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        lo = "-inf" if spec.low is None else spec.low
        hi = "inf" if spec.high is None else spec.high
        raise UserError(f"'{name}' must lie in [{lo}, {hi}], got {value!r}")
    return value


def check_options(where: str, given: dict[str, Any] | None, fields: dict[str, Field]) -> dict[str, Any]:
    if given is not None and not isinstance(given, dict):
        raise UserError(f"'{where or 'the config'}' must be a mapping of options ({', '.join(sorted(fields))}), "
                        f"got {given!r}")
    given = dict(given or {})
    for key in given:
        if key not in fields:
            hint = closest(str(key), fields)
            did = f" (did you mean '{hint}'?)" if hint else ""
            name = f"{where}.{key}" if where else str(key)
            raise UserError(f"unknown key '{name}'{did}; valid keys: {', '.join(sorted(fields))}")
    return {
        key: check_value(where, key, spec, given[key]) if key in given and given[key] is not None else spec.default
        for key, spec in fields.items()
    }
