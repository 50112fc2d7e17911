"""The private Optuna access of search/optuna_adapter.py still works: fails loudly when an upgrade breaks it."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from tune_mtl.search.optuna_adapter import reattach, storage_id


def test_a_running_trial_is_reattached_with_its_stored_values(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=url)
    asked = study.ask()
    lr = asked.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.ask()  # a second trial: storage ids and numbers must not be confused
    frozen = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))[0]
    assert storage_id(frozen) == storage_id(asked)
    again = reattach(optuna.load_study(study_name=study.study_name, storage=url), storage_id(frozen))
    assert again.number == asked.number
    assert again.suggest_float("lr", 1e-4, 1e-1, log=True) == lr  # the stored value, not a new draw
    study.tell(again.number, 0.5)
    assert study.trials[asked.number].state == TrialState.COMPLETE and len(study.trials) == 2
