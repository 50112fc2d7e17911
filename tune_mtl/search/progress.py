"""Terminal progress of a whole search (interface; the live view is built in issue 12).

The engine adds `progress_callbacks(...)` to its one Tuner's callbacks and runs Tune itself at verbose=0
unless the user asked for -v.
"""

from __future__ import annotations

from typing import Any


def progress_callbacks(budget: dict[str, int], epochs: int, mode: str, verbose: int) -> list[Any]:
    """Tune callbacks that print the search's progress.

    budget: trials per experiment (strategy name, or 'categorical') in this search; epochs: per trial;
    mode: 'min' or 'max' of the score; verbose: 0 quiet, 1 default, 2 Tune's own tables as well.
    """
    return []
