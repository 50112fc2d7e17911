"""The Pareto front (non-dominated points) of a multi-objective search."""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """a is at least as good as b on every objective and better on one."""
    signs = [1.0 if m == "min" else -1.0 for m in modes]
    a_, b_ = [s * x for s, x in zip(signs, a, strict=True)], [s * x for s, x in zip(signs, b, strict=True)]
    return all(x <= y for x, y in zip(a_, b_, strict=True)) and any(x < y for x, y in zip(a_, b_, strict=True))


def front(points: Sequence[Sequence[float]], modes: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (O(n^2): a search has hundreds of trials, not millions)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, modes) for j, q in enumerate(points) if j != i)]
