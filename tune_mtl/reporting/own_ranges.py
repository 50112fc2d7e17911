"""Fair-tuning disclosure: which strategies searched their own range for a shared key (`per_strategy:`).

Unequal tuning is where multi-task comparisons go wrong (Xin et al., NeurIPS 2022): a strategy given its own
learning-rate range was tuned differently from the others, and every table that compares it must say so. Read
from the search space as saved in the run folder (`search_space.yaml`, `SearchSpec.describe()`), so the plan
printed before a search, the summary and `launch.py report` say the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tune_mtl.storage.run_folder import SPEC_FILE

NOTE = "unequal tuning: compare it with the others knowing that (Xin et al., NeurIPS 2022)"


def own_ranges(space: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """strategy -> 'section.key' -> {'own': its value or range, 'shared': what the other strategies search}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for strategy, sections in (space.get("per_strategy") or {}).items():
        if strategy not in (space.get("strategies") or [strategy]):
            continue
        for section, values in (sections or {}).items():
            for key, value in (values or {}).items():
                shared = (space.get(section) or {}).get(key)
                out.setdefault(strategy, {})[f"{section}.{key}"] = {"own": value, "shared": shared}
    return out


def _shown(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        kind, values = next(iter(value.items()))
        return f"{kind} {values}"
    return "the default" if value is None else str(value)


def disclosure_lines(own: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One sentence per strategy with its own values, e.g. 'slgrad searched its own optimizer.lr loguniform
    [0.0001, 0.001] (the others: loguniform [0.0001, 0.01]); unequal tuning: ...'."""
    lines = []
    for strategy, keys in own.items():
        parts = [f"{key} {_shown(v['own'])} (the others: {_shown(v['shared'])})" for key, v in keys.items()]
        lines.append(f"{strategy} searched its own {', '.join(parts)}; {NOTE}")
    return lines


def saved_own_ranges(run_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """`own_ranges` of the search space saved in a run folder; none when it is missing or unreadable (a
    damaged run folder is still reported on)."""
    try:
        space = yaml.safe_load((run_dir / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return own_ranges(space) if isinstance(space, dict) else {}
