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
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
    TrialScheduler,
)

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

    from tune_mtl.search.spec import SearchSpec


def strategy_of(trial: Trial) -> str:
    return str(trial.config["strategy"]["name"])


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
        epochs = "training_iteration"
        if self.kind == "asha":
            return ASHAScheduler(time_attr=epochs, metric=self.metric, mode=self.mode, max_t=self.max_t,
                                 grace_period=min(self.grace_period, self.max_t),
                                 reduction_factor=self.reduction_factor)
        if self.kind == "hyperband":
            return HyperBandScheduler(time_attr=epochs, metric=self.metric, mode=self.mode, max_t=self.max_t,
                                      reduction_factor=self.reduction_factor)
        if self.kind == "pbt":
            return PopulationBasedTraining(time_attr=epochs, metric=self.metric, mode=self.mode,
                                           perturbation_interval=self.grace_period,
                                           hyperparam_mutations=self.mutations or {})
        return FIFOScheduler()  # type: ignore[no-untyped-call]


class _StrategyView:
    """The Tune controller as one child scheduler must see it: only its strategy's trials."""

    def __init__(self, controller: TuneController, strategy: str) -> None:
        self._controller, self._strategy = controller, strategy

    def get_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_trials()  # type: ignore[no-untyped-call]
                if strategy_of(t) == self._strategy]

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self._controller.get_live_trials()  # type: ignore[no-untyped-call]
                if strategy_of(t) == self._strategy]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)


class PerStrategyScheduler(TrialScheduler):
    def __init__(self, recipe: SchedulerRecipe) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.recipe = recipe
        self._metric = recipe.metric
        self.children: dict[str, TrialScheduler] = {}
        self._turn = 0  # which child picks first next time (children share the cluster fairly)

    @property
    def supports_buffered_results(self) -> bool:
        return self.recipe.kind in ("asha", "fifo")  # HyperBand and PBT decide on every single result

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # every child is made with the search's metric and mode

    def child(self, trial: Trial) -> TrialScheduler:
        strategy = strategy_of(trial)
        if strategy not in self.children:
            self.children[strategy] = self.recipe.make()
        return self.children[strategy]

    def _view(self, controller: TuneController, trial: Trial) -> Any:  # a TuneController to the child
        return _StrategyView(controller, strategy_of(trial))

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self.child(trial).on_trial_add(self._view(tune_controller, trial), trial)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        self.child(trial).on_trial_error(self._view(tune_controller, trial), trial)

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        return self.child(trial).on_trial_result(self._view(tune_controller, trial), trial, result)

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> None:
        self.child(trial).on_trial_complete(self._view(tune_controller, trial), trial, result)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        self.child(trial).on_trial_remove(self._view(tune_controller, trial), trial)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        # A strategy with pending trials but no child yet gets one.
        for trial in tune_controller.get_trials():  # type: ignore[no-untyped-call]
            if trial.status == Trial.PENDING:
                self.child(trial)
        names = sorted(self.children)
        for offset in range(len(names)):
            strategy = names[(self._turn + offset) % len(names)]
            view: Any = _StrategyView(tune_controller, strategy)
            chosen = self.children[strategy].choose_trial_to_run(view)
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


def make_scheduler(spec: SearchSpec, metric: str, mode: str) -> TrialScheduler:
    """The search's scheduler: FIFO for a multi-objective search (ASHA compares one metric), else one
    `search.scheduler` per strategy."""
    search = spec.search
    kind = "fifo" if search["objectives"] else search["scheduler"]
    if kind == "fifo":
        return FIFOScheduler()  # type: ignore[no-untyped-call]
    mutations = {"optimizer": {"lr": spec.optimizer["lr"].to_tune()}} if kind == "pbt" else None
    return PerStrategyScheduler(SchedulerRecipe(kind, metric, mode, spec.epochs, search["grace_period"],
                                                search["reduction_factor"], mutations))
