"""The define-by-run Optuna spaces of the search: what each Optuna trial samples, as a nested trial config.

`StrategySpace` (default, one study per strategy): the shared ranges (dataset, model, optimizer, training, in
that order), then that strategy's own knobs, named `strategy/<knob>` in Optuna.

`StrategyChoiceSpace` (`--strategy-mode categorical`, one study): the strategy is drawn first, then the shared
ranges, then only the chosen strategy's knobs, named `<strategy>/<knob>` in Optuna so that two strategies'
`alpha` keep separate distributions, and handed to the trial as `strategy.<knob>`.

`paired_draws` gives the start-up values of the shared ranges that every strategy's study starts from in a
paired search (`search.paired_startup`), whatever shape each strategy's knobs have.

Both spaces return only what they sampled (plus the strategy's fixed knobs); the fixed values of the search space
come from the Tuner's param space (`fixed_space`), which Tune merges with every suggestion. Classes rather
than closures: Tune pickles the searcher, and with it these spaces.
"""

from __future__ import annotations

from typing import Any

import optuna

from tune_mtl.search.spec import Range, SearchSpec

SECTIONS = ("dataset", "model", "optimizer", "training")


def suggest(trial: optuna.Trial, name: str, value: Range) -> Any:
    lo, hi = (value.values + (None, None))[:2]
    if value.kind == "choice":
        return trial.suggest_categorical(name, list(value.values))
    if value.kind in ("int", "logint"):
        return trial.suggest_int(name, lo, hi, log=value.kind == "logint")
    return trial.suggest_float(name, lo, hi, log=value.kind == "loguniform")


class SharedRanges:
    """The searched values every strategy shares, in a fixed order."""

    def __init__(self, spec: SearchSpec) -> None:
        self.ranges = [(s, k, v) for s in SECTIONS for k, v in getattr(spec, s).items() if isinstance(v, Range)]

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for section, key, value in self.ranges:
            config.setdefault(section, {})[key] = suggest(trial, f"{section}/{key}", value)
        return config


def paired_draws(spec: SearchSpec, count: int, seed: int) -> tuple[dict[str, Any], ...]:
    """`count` random draws of the shared ranges as Optuna params (`section/key`), the same for every study
    of a paired search (see `searcher.StudySetup.enqueued`)."""
    shared = SharedRanges(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(count):
        trial = study.ask()
        shared.sample(trial)
        draws.append(dict(trial.params))
    return tuple(draws)


def knob_values(trial: optuna.Trial, knobs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {knob: suggest(trial, f"{prefix}/{knob}", value) if isinstance(value, Range) else value
            for knob, value in knobs.items()}


class StrategySpace:
    """One strategy's study: the shared ranges, then its knobs."""

    def __init__(self, spec: SearchSpec, strategy: str) -> None:
        self.shared = SharedRanges(spec)
        self.strategy = strategy
        self.knobs = dict(spec.strategy_knobs.get(strategy, {}))

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        config = self.shared.sample(trial)
        config["strategy"] = {"name": self.strategy, **knob_values(trial, self.knobs, "strategy")}
        return config


class StrategyChoiceSpace:
    """One study for all strategies: the strategy is a categorical, its knobs are conditional on it."""

    def __init__(self, spec: SearchSpec) -> None:
        self.strategies = list(spec.strategies)
        self.shared = SharedRanges(spec)
        self.knobs = {s: dict(spec.strategy_knobs.get(s, {})) for s in self.strategies}

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        name = trial.suggest_categorical("strategy/name", self.strategies)
        config = self.shared.sample(trial)
        config["strategy"] = {"name": name, **knob_values(trial, self.knobs[name], name)}
        return config


def fixed_space(spec: SearchSpec) -> dict[str, Any]:
    """The param space's fixed values; the define-by-run spaces supply every range."""

    def fixed(section: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in section.items() if not isinstance(v, Range)}

    return {
        **{s: fixed(getattr(spec, s)) for s in SECTIONS},
        "objective": dict(spec.objective),
        "strategy": {},
        "seed": spec.search["seed"],
    }
