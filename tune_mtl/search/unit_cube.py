"""A search range's values as positions in [0, 1], so that one random draw can be carried into another range.

A paired search (`search.paired_startup`) starts every strategy's study from the same random draws of the
shared ranges (common random numbers). A strategy with its own range for a key (`per_strategy:` in the search
space) cannot take the shared draw as it is: it may lie outside its range. It takes the draw's *position*
instead: the same quantile of its own range. Positions follow the scale Optuna's RandomSampler draws on (linear,
or log for `loguniform`/`logint`; an integer or a choice covers the cell of width 1 around it, as in Optuna's
search-space transform), so a position of a random draw is uniform on [0, 1] and its image is distributed as a
random draw of the other range: the start-up stays random in each strategy's own range, and two strategies'
start-ups stay rank-paired (the smallest shared lr goes with the smallest own lr).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tune_mtl.search.spec import Range


def _scale(kind: str) -> tuple[Callable[[float], float], Callable[[float], float]]:
    if kind in ("loguniform", "logint"):
        return math.log, math.exp
    return float, float


def _discrete_bounds(value_range: Range) -> tuple[float, float]:
    """The integer ends of a discrete range: a choice is its index range."""
    if value_range.kind == "choice":
        return 0.0, float(len(value_range.values) - 1)
    lo, hi = value_range.values
    return float(lo), float(hi)


def _ends(value_range: Range) -> tuple[float, float]:
    """The range's ends on its sampling scale (integers and choices widened by half a cell each side)."""
    forward, _ = _scale(value_range.kind)
    if value_range.kind in ("uniform", "loguniform"):
        lo, hi = value_range.values
        return forward(lo), forward(hi)
    lo, hi = _discrete_bounds(value_range)
    return forward(lo - 0.5), forward(hi + 0.5)


def position(value_range: Range, value: Any, jitter: float) -> float:
    """Where `value` sits in `value_range`, in [0, 1]. A discrete value covers a cell; `jitter` in [0, 1) picks
    the point within it (a random jitter makes the position of a random draw uniform)."""
    forward, _ = _scale(value_range.kind)
    low, high = _ends(value_range)
    if value_range.kind in ("uniform", "loguniform"):
        point = forward(float(value))
    else:
        index = value_range.values.index(value) if value_range.kind == "choice" else int(value)
        cell_low, cell_high = forward(index - 0.5), forward(index + 0.5)
        point = cell_low + jitter * (cell_high - cell_low)
    return min(max((point - low) / (high - low), 0.0), 1.0)


def value_at(value_range: Range, where: float) -> Any:
    """The value of `value_range` at position `where` in [0, 1] (the inverse of `position`)."""
    _, backward = _scale(value_range.kind)
    low, high = _ends(value_range)
    point = low + min(max(where, 0.0), 1.0) * (high - low)
    if value_range.kind in ("uniform", "loguniform"):
        lo, hi = value_range.values
        return min(max(backward(point), lo), hi)  # exp(log(x)) may round a hair outside the range
    lo, hi = _discrete_bounds(value_range)
    index = int(min(max(math.floor(backward(point) + 0.5), lo), hi))
    return value_range.values[index] if value_range.kind == "choice" else index
