"""Early stopping per strategy: one ASHA / HyperBand / PBT instance per strategy behind one Tune scheduler.

All strategies run in one Tune experiment, but a trial must only be compared with trials of its own strategy:
a strategy that starts slowly (its rung values worse at epoch 2) must not be stopped by a faster one, and PBT
must copy checkpoints only within a strategy (its population is the strategy's trials). `PerStrategyScheduler`
is written on Ray's public `TrialScheduler` API: it keeps one child scheduler per strategy (made on the first
trial of that strategy) and hands each event to the child of the trial's strategy. Children that choose
which trial to run (HyperBand, PBT) see only their own strategy's trials through `_StrategyView`.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
    TrialScheduler,
)


def strategy_of(trial: Trial) -> str:
    return trial.config["strategy"]["name"]


@dataclass(frozen=True)
class SchedulerRecipe:
    """How to make one strategy's scheduler (picklable: Tune pickles the scheduler with the experiment)."""

    kind: str  # asha | hyperband | pbt | fifo
    metric: str
    mode: str
    max_t: int
    grace_period: int
    reduction_factor: int
    mutations: dict[str, Any] | None = None  # PBT: the hyperparameters it perturbs

    def make(self) -> TrialScheduler:
        common = {"time_attr": "training_iteration", "metric": self.metric, "mode": self.mode}
        if self.kind == "asha":
            return ASHAScheduler(**common, max_t=self.max_t, grace_period=min(self.grace_period, self.max_t),
                                 reduction_factor=self.reduction_factor)
        if self.kind == "hyperband":
            return HyperBandScheduler(**common, max_t=self.max_t, reduction_factor=self.reduction_factor)
        if self.kind == "pbt":
            return PopulationBasedTraining(**common, perturbation_interval=self.grace_period,
                                           hyperparam_mutations=self.mutations)
        return FIFOScheduler()


class _StrategyView:
    """The Tune controller as one child scheduler must see it: only its strategy's trials."""

    def __init__(self, controller, strategy: str) -> None:
        self._controller, self._strategy = controller, strategy

    def get_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_trials() if strategy_of(t) == self._strategy]

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_live_trials() if strategy_of(t) == self._strategy]

    def __getattr__(self, name: str):
        return getattr(self._controller, name)


class PerStrategyScheduler(TrialScheduler):
    def __init__(self, recipe: SchedulerRecipe) -> None:
        super().__init__()
        self.recipe = recipe
        self._metric = recipe.metric
        self.children: dict[str, TrialScheduler] = {}
        self._turn = 0  # which child picks first next time (children share the cluster fairly)

    @property
    def supports_buffered_results(self) -> bool:
        return self.recipe.kind in ("asha", "fifo")  # HyperBand and PBT decide on every single result

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # every child is made with the search's metric and mode

    def child(self, trial: Trial) -> TrialScheduler:
        strategy = strategy_of(trial)
        if strategy not in self.children:
            self.children[strategy] = self.recipe.make()
        return self.children[strategy]

    def _view(self, controller, trial: Trial) -> _StrategyView:
        return _StrategyView(controller, strategy_of(trial))

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self.child(trial).on_trial_add(self._view(tune_controller, trial), trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.child(trial).on_trial_error(self._view(tune_controller, trial), trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        return self.child(trial).on_trial_result(self._view(tune_controller, trial), trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.child(trial).on_trial_complete(self._view(tune_controller, trial), trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self.child(trial).on_trial_remove(self._view(tune_controller, trial), trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        for trial in tune_controller.get_trials():  # a strategy with pending trials but no child yet
            if trial.status == Trial.PENDING:
                self.child(trial)
        names = sorted(self.children)
        for offset in range(len(names)):
            strategy = names[(self._turn + offset) % len(names)]
            chosen = self.children[strategy].choose_trial_to_run(_StrategyView(tune_controller, strategy))
            if chosen is not None:
                self._turn = (self._turn + offset + 1) % len(names)
                return chosen
        return None

    def debug_string(self) -> str:
        return "; ".join(f"{name}: {child.debug_string()}" for name, child in sorted(self.children.items()))

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as out:
            pickle.dump(self.__dict__, out)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as source:
            self.__dict__.update(pickle.load(source))


def make_scheduler(spec, metric: str, mode: str) -> TrialScheduler:
    """The search's scheduler: FIFO for a multi-objective search (ASHA compares one metric), else one
    `search.scheduler` per strategy."""
    search = spec.search
    kind = "fifo" if search["objectives"] else search["scheduler"]
    if kind == "fifo":
        return FIFOScheduler()
    mutations = {"optimizer": {"lr": spec.optimizer["lr"].to_tune()}} if kind == "pbt" else None
    return PerStrategyScheduler(SchedulerRecipe(kind, metric, mode, spec.epochs, search["grace_period"],
                                                search["reduction_factor"], mutations))
