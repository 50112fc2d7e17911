"""What a search will do, decided and checked before Ray starts: the objective (from the data set's declared
tasks, without building the data), the studies and their budgets, the TPE start-up, and the notes a user
should read before the first trial.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.reporting.own_ranges import disclosure_lines, own_ranges
from tune_mtl.search.spec import Range, SearchSpec

CATEGORICAL = "categorical"  # the study name (and budget key) of a categorical-strategy search
# TPE's start-up (random) trials: a quarter of a study's budget, at least MIN_STARTUP (TPE needs a few points
# to split into good and bad), at most Optuna's default of 10 (beyond that TPE learns nothing from more).
STARTUP_FRACTION = 0.25
MIN_STARTUP = 3
MAX_STARTUP = 10


def resolve_search_objective(spec: SearchSpec) -> dict[str, Any]:
    """Task, metric and min/max of the objective (and of each objective of a multi-objective search), checked
    against the tasks the data set declares for its fixed options: the data set itself is never built here."""
    from tune_mtl import data
    from tune_mtl.training.objective import resolve_objective

    options = {k: v for k, v in spec.dataset.items() if k != "name" and not isinstance(v, Range)}
    tasks = data.declared_tasks(spec.dataset["name"], options)
    main = resolve_objective(tasks, spec.objective)
    task = "all tasks" if main.task is None else tasks[main.task].name  # None: delta_m over all tasks
    objective: dict[str, Any] = {"task": task, "metric": main.metric, "mode": main.mode}
    if spec.search["objectives"]:
        objectives = []
        for item in spec.search["objectives"]:
            task, name = item.split("/")
            mode = resolve_objective(tasks, {"task": task, "metric": name}).mode
            objectives.append({"key": f"val/{task}/{name}", "task": task, "metric": name, "mode": mode})
        objective["objectives"] = objectives
    return objective


def uses_optuna(spec: SearchSpec) -> bool:
    return bool(spec.search["scheduler"] != "pbt")  # PBT draws its population with Tune's own sampler


def study_keys(spec: SearchSpec) -> list[str]:
    """One study per strategy, or one categorical study."""
    return list(spec.strategies) if spec.search["strategy_mode"] == "separate" else [CATEGORICAL]


def budgets(spec: SearchSpec) -> dict[str, int]:
    """Trials per study: `num_samples` per strategy, so the categorical study gets S x num_samples."""
    n = spec.search["num_samples"]
    return {key: n if key != CATEGORICAL else n * len(spec.strategies) for key in study_keys(spec)}


@dataclass(frozen=True)
class SamplerPlan:
    """How TPE spends one study's budget."""

    trials: int
    startup: int  # random start-up trials before TPE models the results (at most `trials`)
    needed_startup: int  # what the budget's start-up would be if it were large enough
    constant_liar: bool  # trials run concurrently: TPE pretends running trials did badly, so it spreads out

    @property
    def random_only(self) -> bool:
        return self.startup >= self.trials

    def describe(self) -> str:
        if self.random_only:
            return (f"this is a random search of {self.trials} trials: TPE models the results only after "
                    f"{self.needed_startup} random start-up trials; raise num_samples to at least "
                    f"{self.needed_startup + 1} for a guided search")
        liar = ", constant liar for concurrent trials" if self.constant_liar else ""
        return (f"TPE: {self.startup} random start-up trials, then {self.trials - self.startup} chosen by TPE "
                f"(multivariate{liar})")


def sampler_plan(trials: int, concurrency: int) -> SamplerPlan:
    startup = min(MAX_STARTUP, max(MIN_STARTUP, math.ceil(STARTUP_FRACTION * trials)))
    return SamplerPlan(trials=trials, startup=min(startup, trials), needed_startup=startup,
                       constant_liar=concurrency > 1)


def paired(spec: SearchSpec) -> bool:
    """`search.paired_startup` (default true): every strategy's study starts from the same start-up
    configurations of the shared ranges (common random numbers: the gap between two strategies' results is
    then theirs, not the luck of their draws; the README's old "PCGrad equals uniform" was this pairing without
    saying so). Unpaired: each study draws its own start-up. Meaningless for one categorical study."""
    return bool(spec.search.get("paired_startup", True)) and spec.search["strategy_mode"] == "separate"


def sampler_seed(spec: SearchSpec, study: str) -> int:
    """Paired: the search's seed for every study (its start-up is enqueued, see `paired`). Unpaired: a seed
    derived per study (stable across processes), so the studies' draws differ."""
    seed = int(spec.search["seed"])
    if paired(spec):
        return seed
    return (seed * 1_000_003 + zlib.crc32(study.encode())) % 2**31


def paired_draws_seed(spec: SearchSpec) -> int:
    """The seed of the shared start-up draws of a paired search. It must differ from the samplers' seed: TPE
    draws at random (from its own seed) while its start-up trials are still running, and with the same seed it
    would draw the enqueued configurations again, repeating a trial within a study."""
    return (int(spec.search["seed"]) * 1_000_003 + zlib.crc32(b"paired start-up")) % 2**31


def plan_notes(spec: SearchSpec) -> list[str]:
    """Check the scheduler/searcher combination before Ray starts; what the user should know about it."""
    search = spec.search
    scheduler, multi = search["scheduler"], bool(search["objectives"])
    for key in study_keys(spec):
        owners = spec.strategies if key == CATEGORICAL else [key]  # with their own values, if any
        shared = any(isinstance(v, Range) for owner in owners for s in ("dataset", "model", "optimizer", "training")
                     for v in spec.section(s, owner).values())
        knobs = spec.strategy_knobs.get(key, {})
        if not (shared or any(isinstance(v, Range) for v in knobs.values())
                or (key == CATEGORICAL and len(spec.strategies) > 1)):
            raise UserError(f"nothing to search for '{key}': every value of the search space is fixed; "
                            "make at least one a range, e.g. optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}")
    notes = disclosure_lines(own_ranges(spec.describe()))
    if spec.per_strategy and paired(spec):
        notes.append("paired start-up with own ranges: a strategy's own range takes each shared draw at the same "
                     "position (quantile) of its range, so the start-up trials stay paired")
    if scheduler == "pbt":
        if spec.per_strategy:
            raise UserError("scheduler 'pbt' draws one population over the shared ranges; 'per_strategy' ranges "
                            "need asha, hyperband or fifo")
        if multi:
            raise UserError("scheduler 'pbt' optimises one metric; drop --objectives or pick asha/hyperband/fifo")
        if search["strategy_mode"] != "separate":
            raise UserError("scheduler 'pbt' needs --strategy-mode separate (it cannot mutate a strategy choice "
                            "and its conditional knobs)")
        if not isinstance(spec.optimizer.get("lr"), Range) or spec.optimizer["lr"].kind == "choice":
            raise UserError("scheduler 'pbt' evolves the learning rate: 'optimizer.lr' must be a "
                            "{loguniform: [lo, hi]} or {uniform: [lo, hi]} range")
        notes.append("PBT: the initial population is drawn at random by Tune (no Optuna study); every "
                     f"{search['grace_period']} epoch(s) the worst trials of each strategy continue from a better "
                     "trial's checkpoint of the same strategy with a perturbed learning rate")
    elif multi and scheduler in ("asha", "hyperband"):
        notes.append(f"{scheduler} compares trials on one metric, so this multi-objective search runs every "
                     "trial to the end (FIFO)")
    return notes
