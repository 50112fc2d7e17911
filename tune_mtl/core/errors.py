"""User-facing errors: one sentence, exit code 2, no traceback (the CLI catches these)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user (config, CLI, data root). The message is shown as-is."""


def closest(value: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(value, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_name(kind: str, value: str, accepted: Iterable[str]) -> UserError:
    """`unknown strategy 'pcgard' (did you mean 'pcgrad'?); accepted: ...`."""
    accepted = sorted(set(accepted))
    hint = closest(value, accepted)
    did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
    return UserError(f"unknown {kind} '{value}'{did_you_mean}; accepted: {', '.join(accepted)}")
