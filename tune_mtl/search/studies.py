"""Optuna side of the search: the study storage and the Tune searcher that drives it.

Two things Ray's `OptunaSearch` does not do on its own:
- Tune pickles the searcher (tuner.pkl, searcher-state-*.pkl) into the run folder, and with it the storage
  URL; a password in that URL would land in result files. `MaskedRDBStorage` pickles the URL masked and gets
  the real one back from this process's registry when unpickled (a resume passes --optuna-storage again).
- A driver killed between Optuna's `ask` and Tune's next experiment checkpoint leaves Optuna trials RUNNING
  that no Tune trial owns. `StudySearch` hands those out again to the next new Tune trials, so a resumed
  search ends with exactly one Optuna trial per Tune trial: none lost, none duplicated.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tune_mtl.core.errors import UserError
from tune_mtl.storage.secrets import is_masked, mask_url
from tune_mtl.core.keys import DIVERGED

_REAL_URLS: dict[str, str] = {}  # masked URL -> URL with its password, for this process only


class MaskedRDBStorage(optuna.storages.RDBStorage):
    def __init__(self, url: str, **kwargs) -> None:
        _REAL_URLS[mask_url(url)] = url
        super().__init__(url, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state["url"] = mask_url(self.url)
        return state

    def __setstate__(self, state) -> None:
        url = _REAL_URLS.get(state["url"], state["url"])
        if is_masked(url):
            raise UserError(f"the Optuna storage '{url}' needs its password: pass --optuna-storage again")
        super().__setstate__({**state, "url": url})


def open_storage(url: str) -> MaskedRDBStorage:
    try:
        return MaskedRDBStorage(url)
    except (ImportError, ModuleNotFoundError) as err:
        raise UserError(f"no database driver for the Optuna storage '{mask_url(url)}': {err}") from None
    except Exception as err:  # sqlalchemy's connection errors: name the (masked) URL, not a traceback
        raise UserError(f"cannot open the Optuna storage '{mask_url(url)}': {type(err).__name__}") from None


class StudySearch(OptunaSearch):
    def _setup_study(self, mode):
        super()._setup_study(mode)
        self._orphans = self._find_orphans()

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._orphans = self._find_orphans()

    def _find_orphans(self) -> list[int]:
        owned = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if t._trial_id not in owned]

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        if result and result.get(DIVERGED):
            # NaN metrics: Optuna refuses them as values and would leave the trial RUNNING; record it FAIL.
            result, error = None, True
        super().on_trial_complete(trial_id, result, error)

    def suggest(self, trial_id: str):
        orphans = getattr(self, "_orphans", None)
        if trial_id not in self._ot_trials and orphans:
            # Its parameters are already in the storage; Optuna hands the same values back.
            self._ot_trials[trial_id] = optuna.Trial(self._ot_study, orphans.pop(0))
        return super().suggest(trial_id)
