"""A UserError raised inside a trial (a data root missing on a worker node, a strategy that cannot run on the
model) is a configuration error: every retry would repeat it, and the remaining trials would too.

The trainable reports it once, as its last result under keys.USER_ERROR, and returns instead of raising (Tune
retries raised errors up to max_failures). `StopOnUserError` then ends the whole experiment, and the driver
turns the sentence back into a UserError (`raise_trial_user_error`): exit 2, the same sentence, no retries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ray.tune.stopper import Stopper

from tune_mtl.core.errors import UserError
from tune_mtl.core.keys import DIVERGED, FAILURE_REASON, OBJECTIVE, SCORE, SCORE_EPOCH, USER_ERROR


def user_error_result(message: str) -> dict[str, Any]:
    """The last result of a trial that hit a UserError: flagged like a diverged trial (Optuna records it as
    FAIL), with NaN scores so that Tune's metric check still finds its keys."""
    return {USER_ERROR: message, DIVERGED: True, FAILURE_REASON: message, OBJECTIVE: math.nan, SCORE: math.nan,
            SCORE_EPOCH: 0}


class StopOnUserError(Stopper):
    """Stops the trial that reported a UserError, and with it the experiment."""

    def __init__(self) -> None:
        self.message: str | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get(USER_ERROR):
            self.message = self.message or str(result[USER_ERROR])
            return True
        return False

    def stop_all(self) -> bool:
        return self.message is not None


def trial_user_error(results: Iterable[Any]) -> str | None:
    """The sentence of the first trial of a `ResultGrid` that ended on a UserError, if any."""
    for result in results:
        message = (result.metrics or {}).get(USER_ERROR)
        if message:
            return str(message)
    return None


def raise_trial_user_error(results: Iterable[Any]) -> None:
    message = trial_user_error(results)
    if message:
        raise UserError(message)
