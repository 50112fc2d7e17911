"""`--strategy-mode categorical`: one Optuna study in which the strategy is itself a searched parameter.

A define-by-run space: the strategy is drawn first, then the shared ranges, then only the chosen strategy's
knobs (ranges from `SearchSpec.strategy_knobs`). Knobs are named `<strategy>/<knob>` in Optuna so that two
strategies' `alpha` keep separate distributions, and handed to the trial as `strategy/<knob>`.
A class rather than a closure: Tune pickles the searcher, and with it this space.
"""

from __future__ import annotations

from typing import Any

from tune_mtl.search.spec import Range, SearchSpec

SECTIONS = ("dataset", "model", "optimizer", "training")


def suggest(trial, name: str, value: Range) -> Any:
    lo, hi = (value.values + (None, None))[:2]
    if value.kind == "choice":
        return trial.suggest_categorical(name, list(value.values))
    if value.kind in ("int", "logint"):
        return trial.suggest_int(name, lo, hi, log=value.kind == "logint")
    return trial.suggest_float(name, lo, hi, log=value.kind == "loguniform")


class StrategyChoiceSpace:
    def __init__(self, spec: SearchSpec) -> None:
        self.strategies = list(spec.strategies)
        self.ranges = [(f"{s}/{k}", v) for s in SECTIONS for k, v in getattr(spec, s).items() if isinstance(v, Range)]
        self.knobs = {s: dict(spec.strategy_knobs.get(s, {})) for s in self.strategies}

    def __call__(self, trial) -> dict[str, Any]:
        name = trial.suggest_categorical("strategy/name", self.strategies)
        for key, value in self.ranges:
            suggest(trial, key, value)
        # Ray's wrapper records every suggest_* call as a config key; knobs go through the bare Optuna
        # trial under their per-strategy name and reach the config through the returned dict instead.
        bare = getattr(trial, "ot_trial", trial)
        return {
            f"strategy/{knob}": suggest(bare, f"{name}/{knob}", value) if isinstance(value, Range) else value
            for knob, value in self.knobs[name].items()
        }


def fixed_space(spec: SearchSpec) -> dict[str, Any]:
    """The param space's fixed values; the define-by-run space supplies every range."""

    def fixed(section: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in section.items() if not isinstance(v, Range)}

    return {
        **{s: fixed(getattr(spec, s)) for s in SECTIONS},
        "objective": dict(spec.objective),
        "strategy": {},
        "seed": spec.search["seed"],
    }
