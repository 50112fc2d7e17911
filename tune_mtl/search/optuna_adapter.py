"""The one place that reaches past Optuna's public API (tests/test_optuna_adapter.py fails loudly on an upgrade).

Re-handing a RUNNING Optuna trial after a driver restart (searcher.py) needs a live `optuna.Trial` for a trial
that was asked in an earlier process. Optuna's public API has `study.ask()` (always a new trial) and
`study.tell(number, ...)`, but nothing that returns a `Trial` object for an existing RUNNING trial, so its
storage id is read from the frozen trial and the `Trial` is rebuilt from it, as Optuna itself does inside
`study.ask`.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def storage_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its per-study `number`)."""
    return int(trial._trial_id)


def reattach(study: optuna.Study, trial_storage_id: int) -> optuna.Trial:
    """A live `Trial` of an existing (RUNNING) trial: suggesting its parameters again returns the stored values."""
    return optuna.Trial(study, trial_storage_id)
