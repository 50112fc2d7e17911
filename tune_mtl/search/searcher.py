"""The Tune searcher of a whole search: every Optuna study of the search behind one Ray Tune experiment.

Design. A multi-strategy search is ONE Tune experiment (one `Tuner`), so trials of every strategy run at the
same time and the cluster fills. Each strategy still keeps its own Optuna study (TPE's model of, say, the
learning rate is not blurred across strategies whose optima differ) and its own budget. This searcher, written
on Ray's public `Searcher` API (suggest / on_trial_complete / save / restore), holds those studies and talks
to them only through Optuna's ask/tell API:

- `suggest` serves the studies in turn: the next Tune trial goes to the study with the fewest trials handed
  out so far that still has budget, so every strategy gets `num_samples` trials and they start interleaved
  (Tune's own num_samples is the sum of the budgets). The Optuna trial is asked, its define-by-run space
  (`categorical_space`) samples a nested config, and the trial is named `<strategy>-<n>`
  (config[keys.TRIAL_NAME]; Tune's trial folder, the W&B run and the Optuna trial share that name).
- `on_trial_complete` tells the study the trial's score (keys.SCORE: its best validation objective, the same
  number the summary shows), or FAIL for an error or a diverged trial, and links the Optuna trial to its Tune
  trial (user attributes: Tune trial id, folder, W&B run, scored epoch).
- Categorical mode (the strategy is a searched choice) is the same searcher with one study.

Resume guarantee (exactly one COMPLETE/FAIL Optuna trial per Tune trial, none lost, none duplicated). Tune
saves this searcher's state (which Tune trial owns which Optuna trial, what each study has handed out) with
every experiment snapshot, atomically with its trials. A driver killed between an `ask` and the next snapshot
leaves Optuna trials RUNNING that no restored Tune trial owns: `restore` finds them and `suggest` hands them
out again first (Optuna returns the values already stored for them), so they are neither lost nor repeated.
A trial told twice (it completed after the last snapshot and Tune runs its end again) is told once.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from tune_mtl.core.keys import DIVERGED, SCORE_EPOCH, TRIAL_NAME
from tune_mtl.search.experiment_state import SnapshotSearcher
from tune_mtl.search.optuna_adapter import reattach, storage_id

# User attributes that link an Optuna trial to the other views of the same trial.
TUNE_TRIAL_ID, TRIAL_FOLDER, WANDB_RUN, SCORE_EPOCH_ATTR = "tune_trial_id", "trial_folder", "wandb_run", "score_epoch"
TRIAL_NAME_ATTR = "trial_name"


@dataclass(frozen=True)
class StudySetup:
    """One study of the search: its key (strategy or 'categorical'), storage name, space and sampler."""

    key: str
    study_name: str
    space: Callable[[Any], dict[str, Any]]  # define-by-run: Optuna trial -> nested config
    budget: int
    seed: int
    startup: int
    constant_liar: bool
    # Paired start-up (common random numbers): the shared ranges' values of the first trials, the same for
    # every study; enqueued into a new study, so each strategy starts from the same configurations (its own
    # knobs still drawn by its sampler).
    enqueued: tuple[dict[str, Any], ...] = ()

    def sampler(self) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():  # multivariate/group are "experimental" in Optuna's wording only
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group=True: multivariate TPE over the conditional (define-by-run) spaces, one group per shape.
            return optuna.samplers.TPESampler(n_startup_trials=self.startup, multivariate=True, group=True,
                                              constant_liar=self.constant_liar, seed=self.seed)


@dataclass
class Handed:
    """A Tune trial's Optuna trial."""

    key: str
    number: int
    trial_id: int  # Optuna's storage id (to rebuild a `Trial` after a restore)
    name: str


@dataclass
class Objectives:
    """What the studies are told: keys.SCORE, or the last-epoch values of a multi-objective search."""

    keys: list[str]
    modes: list[str]
    names: list[str]  # shown by optuna-dashboard instead of "Objective 0"

    @property
    def directions(self) -> list[optuna.study.StudyDirection]:
        return [optuna.study.StudyDirection.MINIMIZE if m == "min" else optuna.study.StudyDirection.MAXIMIZE
                for m in self.modes]


@dataclass
class _State:
    handed_out: dict[str, int] = field(default_factory=dict)  # study key -> trials asked (budget spent)
    named: dict[str, int] = field(default_factory=dict)  # strategy -> trials named so far
    live: dict[str, Handed] = field(default_factory=dict)  # Tune trial id -> its Optuna trial


class StudySearcher(SnapshotSearcher):
    def __init__(self, setups: list[StudySetup], storage: optuna.storages.BaseStorage | None,
                 objectives: Objectives, experiment_path: str, wandb_group: str) -> None:
        single = len(objectives.keys) == 1
        super().__init__(metric=objectives.keys[0] if single else None, mode=objectives.modes[0] if single else None)
        self._setups = {s.key: s for s in setups}
        self._storage = storage
        self._objectives = objectives
        self._experiment_path = experiment_path.rstrip("/")
        self._wandb_group = wandb_group
        self._state = _State(handed_out={s.key: 0 for s in setups})
        self._orphans: dict[str, list[int]] = {}  # study key -> RUNNING Optuna trial ids no Tune trial owns
        self._studies: dict[str, optuna.Study] = {}
        self._trials: dict[str, optuna.Trial] = {}

    # Tune pickles the searcher (tuner.pkl): the studies and live Optuna trials are rebuilt from the storage.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_studies": {}, "_trials": {}}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        return True  # the spaces and objectives were given at construction; Tune's param space holds fixed values

    # -- the studies ------------------------------------------------------------------------------------
    def study(self, key: str) -> optuna.Study:
        if key not in self._studies:
            setup = self._setups[key]
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per study
            study = optuna.create_study(study_name=setup.study_name, storage=self._storage,
                                        sampler=setup.sampler(), directions=self._objectives.directions,
                                        load_if_exists=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self._objectives.names)
            if not study.trials:  # a new study (a resumed one has its start-up already)
                for params in setup.enqueued:
                    study.enqueue_trial(params, skip_if_exists=False)
            self._studies[key] = study
        return self._studies[key]

    def budget_left(self) -> dict[str, int]:
        return {k: s.budget - self._state.handed_out.get(k, 0) for k, s in self._setups.items()}

    def _next_study(self) -> str | None:
        """The study with the fewest trials handed out that still has budget (ties: in the spec's order)."""
        open_keys = [k for k, left in self.budget_left().items() if left > 0]
        return min(open_keys, key=lambda k: self._state.handed_out[k]) if open_keys else None

    # -- Tune's searcher API ----------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        key = self._next_study()
        if key is None:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel string
        study = self.study(key)
        orphans = self._orphans.get(key)
        # An orphan's parameters are already stored: suggesting them again returns the same values.
        trial = reattach(study, orphans.pop(0)) if orphans else study.ask()
        config = self._setups[key].space(trial)
        strategy = config["strategy"]["name"]
        self._state.named[strategy] = self._state.named.get(strategy, 0) + 1
        name = f"{strategy}-{self._state.named[strategy]}"
        config[TRIAL_NAME] = name
        for attr, value in ((TUNE_TRIAL_ID, trial_id), (TRIAL_NAME_ATTR, name),
                            (TRIAL_FOLDER, f"{self._experiment_path}/{name}"),
                            (WANDB_RUN, f"{self._wandb_group}/{name}")):
            trial.set_user_attr(attr, value)
        self._state.handed_out[key] += 1
        self._state.live[trial_id] = Handed(key, trial.number, storage_id(trial), name)
        self._trials[trial_id] = trial
        return config

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        handed = self._state.live.pop(trial_id, None)
        trial = self._trials.pop(trial_id, None)
        if handed is None:
            return
        study = self.study(handed.key)
        if study.trials[handed.number].state.is_finished():
            return  # told before a driver restart: once is enough
        values = None if error or not result or result.get(DIVERGED) else self.values(result)
        if values is not None and result is not None and SCORE_EPOCH in result:
            (trial or reattach(study, handed.trial_id)).set_user_attr(SCORE_EPOCH_ATTR, int(result[SCORE_EPOCH]))
        # NaN or missing values: Optuna would refuse them and leave the trial RUNNING; record it FAIL.
        study.tell(handed.number, values, state=TrialState.FAIL if values is None else TrialState.COMPLETE)

    def values(self, result: dict[str, Any]) -> float | list[float] | None:
        values = [result.get(k) for k in self._objectives.keys]
        finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if len(finite) != len(values):
            return None
        return finite[0] if len(finite) == 1 else finite

    # -- resume -----------------------------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        # Written beside and renamed over: a full disk fails the write, never leaves a truncated state behind.
        partial = f"{checkpoint_path}.partial"
        with open(partial, "wb") as out:
            pickle.dump(self._state, out)
        os.replace(partial, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        try:
            with open(checkpoint_path, "rb") as source:
                self._state = pickle.load(source)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            # Unreadable (cut short by a full disk before writes were atomic): the studies know the same.
            self._state = self.state_from_studies()
        self._trials = {}
        self.find_orphans()

    def state_from_studies(self) -> _State:
        """The searcher's state rebuilt from the Optuna storage: budgets spent, trial names given, and which
        Tune trial owns each RUNNING Optuna trial (the user attributes set in `suggest`)."""
        state = _State(handed_out={key: 0 for key in self._setups})
        for key in self._setups:
            for trial in self.study(key).get_trials(deepcopy=False):
                if trial.state == TrialState.WAITING:
                    continue  # an enqueued start-up configuration not asked for yet
                state.handed_out[key] += 1
                name = str(trial.user_attrs.get(TRIAL_NAME_ATTR, ""))
                strategy, _, number = name.rpartition("-")
                if number.isdigit():
                    state.named[strategy] = max(state.named.get(strategy, 0), int(number))
                owner = trial.user_attrs.get(TUNE_TRIAL_ID)
                if trial.state == TrialState.RUNNING and owner:
                    state.live[str(owner)] = Handed(key, trial.number, storage_id(trial), name)
        return state

    def find_orphans(self) -> None:
        owned = {(h.key, h.number) for h in self._state.live.values()}
        self._orphans = {}
        for key in self._setups:
            running = self.study(key).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            self._orphans[key] = [storage_id(t) for t in running if (key, t.number) not in owned]
