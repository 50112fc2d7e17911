"""The define-by-run Optuna spaces of the search: what each Optuna trial samples, as a nested trial config.

`StrategySpace` (default, one study per strategy): the shared ranges (dataset, model, optimizer, training, in
that order), then that strategy's own knobs, named `strategy/<knob>` in Optuna. A strategy with its own value
for a shared key (`per_strategy:` in the search space) samples its own range under the same name
(`optimizer/lr`: its study is its own), or gets its fixed value.

`StrategyChoiceSpace` (`--strategy-mode categorical`, one study): the strategy is drawn first, then the shared
ranges, then only the chosen strategy's knobs, named `<strategy>/<knob>` in Optuna so that two strategies'
`alpha` keep separate distributions, and handed to the trial as `strategy.<knob>`. A strategy's own range for
a shared key is conditional in the same way: `<strategy>/optimizer/lr`, sampled only when it is drawn.

`paired_draws` gives the start-up values of the shared ranges that every strategy's study starts from in a
paired search (`search.paired_startup`), whatever shape each strategy's knobs have; a strategy's own range gets
the same draws carried to the same position of its range (`unit_cube`).

Both spaces return only what they sampled (plus the strategy's fixed knobs and fixed own values); the fixed values
of the search space come from the Tuner's param space (`fixed_space`), which Tune merges with every suggestion
(the suggestion wins). Classes rather than closures: Tune pickles the searcher, and with it these spaces.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import optuna

from tune_mtl.search.spec import Range, SearchSpec
from tune_mtl.search.unit_cube import position, value_at

SECTIONS = ("dataset", "model", "optimizer", "training")


def suggest(trial: optuna.Trial, name: str, value: Range) -> Any:
    lo, hi = (value.values + (None, None))[:2]
    if value.kind == "choice":
        return trial.suggest_categorical(name, list(value.values))
    if value.kind in ("int", "logint"):
        return trial.suggest_int(name, lo, hi, log=value.kind == "logint")
    return trial.suggest_float(name, lo, hi, log=value.kind == "loguniform")


class SharedRanges:
    """The searched values of the shared sections, in a fixed order, as `strategy` searches them (with its own
    values in place of the shared ones; `own_prefix` names its own ranges in a study several strategies share)."""

    def __init__(self, spec: SearchSpec, strategy: str | None = None, own_prefix: str = "") -> None:
        own = spec.own_values(strategy) if strategy else {}
        self.ranges: list[tuple[str, str, Range, str]] = []
        self.fixed: list[tuple[str, str, Any]] = []  # own fixed values: the param space holds the shared ones
        for section in SECTIONS:
            for key, value in spec.section(section, strategy).items():
                name = f"{own_prefix}{section}/{key}" if (section, key) in own else f"{section}/{key}"
                if isinstance(value, Range):
                    self.ranges.append((section, key, value, name))
                elif (section, key) in own:
                    self.fixed.append((section, key, value))

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        config: dict[str, Any] = {}
        for section, key, value in self.fixed:
            config.setdefault(section, {})[key] = value
        for section, key, value, name in self.ranges:
            config.setdefault(section, {})[key] = suggest(trial, name, value)
        return config


def paired_draws(spec: SearchSpec, count: int, seed: int, strategy: str | None = None) -> tuple[dict[str, Any], ...]:
    """`count` random draws of the shared ranges as Optuna params (`section/key`), the same for every study
    of a paired search (see `searcher.StudySetup.enqueued`). For `strategy`, a key it has its own range for
    takes the shared draw's position in the shared range, carried to its own range (`unit_cube`); a key
    with no shared draw (fixed for the others) takes a position drawn from `seed`, the same for every strategy
    that ranges over it. Either way the start-up stays paired: same draw, same quantile."""
    shared = SharedRanges(spec)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(count):
        trial = study.ask()
        shared.sample(trial)
        draws.append(dict(trial.params))
    if strategy is None or not spec.own_values(strategy):
        return tuple(draws)
    return tuple(own_draw(spec, strategy, draw, index, seed) for index, draw in enumerate(draws))


def own_draw(spec: SearchSpec, strategy: str, draw: dict[str, Any], index: int, seed: int) -> dict[str, Any]:
    """Start-up draw number `index` of the shared ranges, as `strategy` with its own values takes it."""
    carried = dict(draw)
    for (section, key), own in spec.own_values(strategy).items():
        name = f"{section}/{key}"
        if not isinstance(own, Range):
            carried.pop(name, None)  # its fixed value is not searched
            continue
        # A stream of its own per draw and key (not per strategy): strategies that range over the same key
        # get the same jitter, so their start-ups are paired with each other too.
        rng = np.random.default_rng([seed, index, zlib.crc32(name.encode())])
        jitter, fresh = rng.random(2)
        shared = getattr(spec, section).get(key)
        where = position(shared, draw[name], float(jitter)) if isinstance(shared, Range) else float(fresh)
        carried[name] = value_at(own, where)
    return carried


def knob_values(trial: optuna.Trial, knobs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {knob: suggest(trial, f"{prefix}/{knob}", value) if isinstance(value, Range) else value
            for knob, value in knobs.items()}


class StrategySpace:
    """One strategy's study: the shared ranges, then its knobs."""

    def __init__(self, spec: SearchSpec, strategy: str) -> None:
        self.shared = SharedRanges(spec, strategy)
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
        self.shared = {s: SharedRanges(spec, s, own_prefix=f"{s}/") for s in self.strategies}
        self.knobs = {s: dict(spec.strategy_knobs.get(s, {})) for s in self.strategies}

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        name = trial.suggest_categorical("strategy/name", self.strategies)
        config = self.shared[name].sample(trial)
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
