"""The search specification: a YAML search space plus command-line overrides, validated up front.

Every mistake (unknown key, wrong type, impossible range, unknown strategy or data set) becomes one
`UserError` naming the key, before Ray starts. See CONTRIBUTING.md for the YAML schema.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tune_mtl import data, models, strategies
from tune_mtl.core.errors import UserError, closest
from tune_mtl.core.options import Field, check_options, check_value
from tune_mtl.training.trial_config import OBJECTIVE_FIELDS, OPTIMIZER_FIELDS, TRAINING_FIELDS

if TYPE_CHECKING:
    from ray.tune.search.sample import Domain

REPO_ROOT = Path(__file__).resolve().parents[2]
SEARCH_SPACES = REPO_ROOT / "search_spaces"
DEFAULT_CONFIG = SEARCH_SPACES / "toy.yaml"
STRATEGY_KNOB_DIR = SEARCH_SPACES / "strategies"

RANGE_KINDS = ("uniform", "loguniform", "int", "logint", "choice")

SEARCH_FIELDS = {
    "num_samples": Field(int, 8, low=1, help="trials per strategy"),
    "scheduler": Field(str, "asha", choices=("asha", "hyperband", "pbt", "fifo"),
                       help="asha/hyperband stop bad trials early; pbt evolves the learning rate; fifo runs all"),
    "grace_period": Field(int, 2, low=1, help="ASHA: epochs before a trial can be stopped; PBT: epochs between "
                                              "perturbations"),
    "reduction_factor": Field(int, 2, low=2, help="ASHA/HyperBand: keep 1/reduction_factor at each rung"),
    "objectives": Field(list, None, help="multi-objective: validation metrics as 'task/metric' (Pareto front)"),
    "strategy_mode": Field(str, "separate", choices=("separate", "categorical"),
                           help="separate: one study per strategy; categorical: the strategy is a searched choice"),
    "max_failures": Field(int, 3, low=0, help="retries of a trial whose worker died (from its last checkpoint)"),
    # numpy (Optuna's TPE) and torch take 32-bit seeds.
    "seed": Field(int, 0, low=0, high=2**32 - 1, help="seed of the sampler and of every trial"),
    "max_concurrent_trials": Field(int, 0, low=0, help="0: as many as the resources allow"),
    "paired_startup": Field(bool, True, help="true: every strategy's study starts from the same random "
                            "configurations (common random numbers); false: an independent start per strategy"),
    "cpus_per_trial": Field(float, 1.0, low=0.01),
    "gpus_per_trial": Field(float, 0.0, low=0.0, help="fractions pack several trials on one GPU"),
    "final": Field(dict, None, help="final evaluation after the search: {seeds: 3, top_k: 1} (see FINAL_FIELDS)"),
}
# The final evaluation stage (search/final_stage.py): each strategy's top_k configurations re-trained with
# `seeds` fresh seeds; `seeds: 0` skips it.
FINAL_FIELDS = {
    "seeds": Field(int, 3, low=0, high=1000, help="fresh seeds per configuration (0: no final stage)"),
    "top_k": Field(int, 1, low=1, high=100, help="best configurations per strategy to re-train"),
}
# Deeper than any real search space; a YAML bomb nested 1,000 deep would otherwise overflow the recursion of
# the YAML composer, deepcopy or the validation below.
MAX_YAML_DEPTH = 20
TOP_LEVEL = {"dataset", "model", "optimizer", "training", "objective", "strategies", "strategy_knobs", "per_strategy",
             "search"}
# `per_strategy:` gives a strategy its own value or range for a shared training key (SLGrad's own lr range). The
# data set and the model stay the same for every strategy, and so do the epochs: they are the search's budget.
PER_STRATEGY_SECTIONS = ("optimizer", "training")
SAME_FOR_EVERY_STRATEGY = {("training", "epochs"): "epochs are the search's budget, the same for every strategy"}


@dataclass(frozen=True)
class Range:
    """A searchable value: `{kind: [low, high]}` or `{choice: [...]}`."""

    kind: str
    values: tuple[Any, ...]  # [low, high], or the choices: values their field or knob checked

    def to_tune(self) -> Domain:
        from ray import tune

        lo, hi = (self.values + (None, None))[:2]
        domains: dict[str, Callable[[], Domain]] = {
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "int": lambda: tune.randint(lo, hi + 1),  # inclusive in YAML, exclusive in Tune
            "logint": lambda: tune.lograndint(lo, hi + 1),
            "choice": lambda: tune.choice(list(self.values)),
        }
        return domains[self.kind]()

    def to_yaml(self) -> dict[str, list[Any]]:
        return {self.kind: list(self.values)}


def parse_value(key: str, raw: Any, check: Callable[[Any], Any]) -> Any:
    """A fixed value (checked) or a `Range` whose ends/choices are checked the same way."""
    if not isinstance(raw, dict):
        return check(raw)
    if len(raw) != 1 or next(iter(raw)) not in RANGE_KINDS:
        kinds = ", ".join(RANGE_KINDS)
        raise UserError(f"'{key}' must be a value or one of {{{kinds}: [...]}}, got {raw!r}")
    kind, values = next(iter(raw.items()))
    if not isinstance(values, list) or not values:
        raise UserError(f"'{key}.{kind}' must be a non-empty list, got {values!r}")
    if kind == "choice":
        return Range(kind, tuple(check(v) for v in values))
    if len(values) != 2:
        raise UserError(f"'{key}.{kind}' must be [low, high], got {values!r}")
    lo, hi = (check(v) for v in values)
    if kind in ("int", "logint") and not all(isinstance(v, int) for v in (lo, hi)):
        raise UserError(f"'{key}.{kind}' bounds must be integers, got {values!r}")
    if not lo < hi:
        raise UserError(f"'{key}.{kind}' needs low < high, got {values!r}")
    if kind.startswith("log") and lo <= 0:
        raise UserError(f"'{key}.{kind}' needs low > 0 on a log scale, got {values!r}")
    return Range(kind, (lo, hi))


def absolute_path(value: Any) -> Any:
    return str(Path(value).expanduser().resolve()) if isinstance(value, str) else value


def parse_section(where: str, raw: Any, fields: dict[str, Field], name_key: bool = False) -> dict[str, Any]:
    """Check every key of a section against its fields; values may be ranges; paths become absolute."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"'{where}' must be a mapping, got {raw!r}")
    allowed = dict(fields)
    if name_key:
        allowed["name"] = Field(str)
    check_options(where, {k: None for k in raw}, allowed)  # unknown keys, with the closest valid one
    out = {}
    for key, value in raw.items():
        if key == "name" and name_key:
            out[key] = value
            continue
        out[key] = parse_value(f"{where}.{key}", value, partial(check_value, where, key, fields[key]))
    for key, spec in fields.items():
        if spec.path and spec.default is not None and key not in out:
            out[key] = spec.default  # a relative default must be pinned to the launch directory too
        if spec.path and key in out:
            out[key] = absolute_path(out[key])
    return out


def check_tree(source: str, content: Any) -> None:
    """Every number finite and the nesting shallow, anywhere in a loaded YAML document (iterative: a deep
    document must not overflow this check either)."""
    todo: list[tuple[str, Any, int]] = [("", content, 0)]
    while todo:
        where, value, depth = todo.pop()
        if depth > MAX_YAML_DEPTH:
            raise UserError(f"{source} is nested deeper than {MAX_YAML_DEPTH} levels at '{where}'; a search space "
                            "needs a few")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"'{where}' in {source} must be a finite number, got {value!r}")
        if isinstance(value, dict):
            todo += [(f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            todo += [(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise UserError(f"config file '{path}' is not a regular file; give a search-space YAML file")
        shipped = ", ".join(sorted(p.name for p in SEARCH_SPACES.glob("*.yaml")))
        raise UserError(f"config file '{path}' does not exist; the shipped search spaces are: {shipped}")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        raise UserError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file '{path}' is not a UTF-8 text file; give a search-space YAML file") from None
    except RecursionError:
        raise UserError(f"config file '{path}' is nested too deeply to read; a search space needs a few "
                        "levels") from None
    except OSError as err:
        raise UserError(f"cannot read config file '{path}': {err.strerror or err}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise UserError(f"config file '{path}' must hold a mapping at the top level, got {type(content).__name__}")
    check_tree(f"config file '{path}'", content)
    return content


def default_knob_ranges(strategy: str) -> dict[str, Any]:
    """The shipped search ranges of a strategy's own knobs (search_spaces/strategies/<name>.yaml)."""
    for stem in (strategy, strategy.replace("-", "_")):
        path = STRATEGY_KNOB_DIR / f"{stem}.yaml"
        if path.is_file():
            return load_yaml(path)
    return {}


def parse_knobs(strategy: str, raw: Any) -> dict[str, Any]:
    knobs = strategies.knob_specs(strategy)
    where = f"strategy_knobs.{strategy}"
    if not isinstance(raw, dict):
        raise UserError(f"'{where}' must map knob names to values or ranges, got {raw!r}; strategy '{strategy}' "
                        f"has knobs: {', '.join(sorted(knobs)) or 'none'}")
    out = {}
    for key, value in raw.items():
        if key not in knobs:
            hint = closest(str(key), knobs)
            did = f" (did you mean '{hint}'?)" if hint else ""
            valid = ", ".join(sorted(knobs)) or "none"
            raise UserError(f"unknown key '{where}.{key}'{did}; strategy '{strategy}' has knobs: {valid}")
        out[key] = parse_value(f"{where}.{key}", value, partial(knobs[key].check, strategy, key))
    return out


def parse_per_strategy(raw: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """`per_strategy: {slgrad: {optimizer: {lr: {loguniform: [1.0e-4, 1.0e-3]}}}}`, checked like the shared
    sections; strategy names resolved (aliases too)."""
    if raw is None:
        return {}
    sections = ", ".join(PER_STRATEGY_SECTIONS)
    if not isinstance(raw, dict):
        raise UserError(f"'per_strategy' must map strategy names to their own {sections} values, got {raw!r}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, given in raw.items():
        try:
            strategy = strategies.resolve(str(name))
        except UserError as err:
            raise UserError(f"'per_strategy.{name}': {err}") from None
        where = f"per_strategy.{name}"
        if not isinstance(given, dict) or not given:
            raise UserError(f"'{where}' must map sections ({sections}) to that strategy's own values or ranges, "
                            f"got {given!r}")
        own: dict[str, dict[str, Any]] = {}
        for section, values in given.items():
            if section not in PER_STRATEGY_SECTIONS:
                hint = closest(str(section), PER_STRATEGY_SECTIONS)
                did = f" (did you mean '{hint}'?)" if hint else ""
                raise UserError(f"unknown key '{where}.{section}'{did}; a strategy can have its own values for "
                                f"{sections} only (the data set and the model are the same for every strategy)")
            for key in values if isinstance(values, dict) else ():
                if (section, key) in SAME_FOR_EVERY_STRATEGY:
                    raise UserError(f"'{where}.{section}.{key}' cannot differ between strategies: "
                                    f"{SAME_FOR_EVERY_STRATEGY[section, key]}; set it under '{section}'")
            fields = OPTIMIZER_FIELDS if section == "optimizer" else TRAINING_FIELDS
            own[section] = parse_section(f"{where}.{section}", values, fields)
        if strategy in out:
            raise UserError(f"'per_strategy' names strategy '{strategy}' twice ('{name}' is an alias)")
        out[strategy] = own
    return out


def parse_objectives(raw: Any) -> list[str] | None:
    """`task0/mse,task1/mse` (CLI) or a YAML list -> ['task0/mse', 'task1/mse']; tasks are checked later."""
    if raw is None:
        return None
    items = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UserError(f"'search.objectives' must be a list of 'task/metric' names, got {raw!r}")
    items = [i for i in items if i]
    bad = [i for i in items if i.count("/") != 1 or not all(i.split("/"))]
    if bad or len(items) < 2 or len(set(items)) != len(items):
        raise UserError(f"'search.objectives' needs at least two distinct 'task/metric' names, got {raw!r}")
    return items


@dataclass
class SearchSpec:
    config_path: Path
    dataset: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    objective: dict[str, Any]
    strategies: list[str]
    strategy_knobs: dict[str, dict[str, Any]]
    search: dict[str, Any]
    mode: str = "min"  # direction of the objective, from the data set's task
    extra: dict[str, Any] = field(default_factory=dict)
    # strategy -> section -> key -> its own value or Range, replacing the shared one for that strategy only
    per_strategy: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        epochs = self.training.get("epochs", TRAINING_FIELDS["epochs"].default)
        most: int = max(epochs.values) if isinstance(epochs, Range) else epochs  # checked as int by TRAINING_FIELDS
        return most

    def section(self, name: str, strategy: str | None = None) -> dict[str, Any]:
        """A shared section as `strategy` searches it: the shared values, with its own ones (`per_strategy`)
        in their place."""
        shared: dict[str, Any] = getattr(self, name)
        own = self.per_strategy.get(strategy, {}).get(name) if strategy else None
        return {**shared, **own} if own else shared

    def own_values(self, strategy: str) -> dict[tuple[str, str], Any]:
        """`(section, key) -> value or Range` of what `strategy` searches differently from the others."""
        return {(section, key): value for section, values in self.per_strategy.get(strategy, {}).items()
                for key, value in values.items()}

    def param_space(self, strategy: str) -> dict[str, Any]:
        """The nested Ray Tune param space of one strategy's search."""

        def tune_values(section: dict[str, Any]) -> dict[str, Any]:
            return {k: v.to_tune() if isinstance(v, Range) else v for k, v in section.items()}

        return {
            "dataset": tune_values(self.dataset),
            "model": tune_values(self.model),
            "optimizer": tune_values(self.section("optimizer", strategy)),
            "training": tune_values(self.section("training", strategy)),
            "objective": dict(self.objective),
            "strategy": {"name": strategy, **tune_values(self.strategy_knobs.get(strategy, {}))},
            "seed": self.search["seed"],
        }

    def describe(self) -> dict[str, Any]:
        """A plain, YAML-able copy (saved next to the results)."""

        def plain(section: dict[str, Any]) -> dict[str, Any]:
            return {k: v.to_yaml() if isinstance(v, Range) else v for k, v in section.items()}

        described = {
            "dataset": plain(self.dataset),
            "model": plain(self.model),
            "optimizer": plain(self.optimizer),
            "training": plain(self.training),
            "objective": self.objective,
            "strategies": self.strategies,
            "strategy_knobs": {s: plain(k) for s, k in self.strategy_knobs.items()},
            "search": self.search,
        }
        if self.per_strategy:
            described["per_strategy"] = {s: {section: plain(values) for section, values in own.items()}
                                         for s, own in self.per_strategy.items()}
        return described


def load_spec(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Read and validate a search space; `overrides` (from the CLI) win over the file."""
    path = Path(path) if path else DEFAULT_CONFIG
    raw = copy.deepcopy(load_yaml(path))
    check_options("", {k: None for k in raw}, {k: Field(object) for k in TOP_LEVEL})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}

    ds = raw.get("dataset") or {}
    if isinstance(ds, str):
        ds = {"name": ds}
    if not isinstance(ds, dict):
        raise UserError(f"'dataset' must be a data set name or a mapping, got {ds!r}")
    ds_name = data.resolve(ds.get("name", "toy_regression"))
    dataset = {"name": ds_name, **parse_section(f"dataset.{ds_name}", {k: v for k, v in ds.items() if k != "name"},
                                                 data.options(ds_name))}

    model_raw = raw.get("model") or {}
    if isinstance(model_raw, str):
        model_raw = {"name": model_raw}
    if not isinstance(model_raw, dict):
        raise UserError(f"'model' must be a model name or a mapping, got {model_raw!r}")
    model_name = model_raw.get("name") or data.default_model(ds_name)
    model = {"name": models.resolve(model_name),
             **parse_section(f"model.{model_name}", {k: v for k, v in model_raw.items() if k != "name"},
                             models.options(model_name))}

    optimizer = parse_section("optimizer", raw.get("optimizer"), OPTIMIZER_FIELDS, name_key=False)
    training = parse_section("training", raw.get("training"), TRAINING_FIELDS)
    if "epochs" in overrides:
        training["epochs"] = check_value("", "--epochs", Field(int, low=1), overrides["epochs"])
    objective = check_options("objective", raw.get("objective"), OBJECTIVE_FIELDS)

    names = overrides.get("strategies") or raw.get("strategies") or ["uniform"]
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not isinstance(names, list) or not names:
        raise UserError(f"'strategies' must be a non-empty list of strategy names, got {names!r}")
    canonical = list(dict.fromkeys(strategies.resolve(str(n)) for n in names))

    knob_raw = raw.get("strategy_knobs") or {}
    if not isinstance(knob_raw, dict):
        raise UserError(f"'strategy_knobs' must map strategy names to knob ranges, got {knob_raw!r}")
    knob_overrides = {strategies.resolve(str(k)): v or {} for k, v in knob_raw.items()}
    # Knobs of strategies outside this search are checked too: a misspelt one would otherwise wait unnoticed
    # for the day the strategy is added.
    for strategy, given in knob_overrides.items():
        parse_knobs(strategy, given)
    knobs = {s: parse_knobs(s, {**default_knob_ranges(s), **knob_overrides.get(s, {})}) for s in canonical}
    # Like the knobs: every strategy's own values are checked, those of the strategies searched are kept.
    per_strategy = {s: own for s, own in parse_per_strategy(raw.get("per_strategy")).items() if s in canonical}

    search_given = raw.get("search")
    if search_given is not None and not isinstance(search_given, dict):
        raise UserError(f"'search' must be a mapping of search options ({', '.join(sorted(SEARCH_FIELDS))}), "
                        f"got {search_given!r}")
    search_raw = dict(search_given or {})
    for key in ("num_samples", "seed", "cpus_per_trial", "gpus_per_trial", "max_concurrent_trials", "scheduler",
                "objectives", "strategy_mode"):
        if key in overrides:
            search_raw[key] = overrides[key]
    search_raw["objectives"] = parse_objectives(search_raw.get("objectives"))  # the CLI gives "a/m,b/m"
    search = check_options("search", search_raw, SEARCH_FIELDS)
    final = dict(search["final"] or {})
    if "final_seeds" in overrides:
        final["seeds"] = overrides["final_seeds"]
    search["final"] = check_options("search.final", final, FINAL_FIELDS)

    spec = SearchSpec(path, dataset, model, optimizer, training, objective, canonical, knobs, search,
                      per_strategy=per_strategy)
    check_strategies_fit(spec)
    return spec


def check_strategies_fit(spec: SearchSpec) -> None:
    """Each strategy against the data set's task count and the model (auxiliary tasks, Recon's encoder, a
    Jacobian over shared layers), so that a misfit is one sentence before Ray starts rather than an error in
    every trial."""
    check = getattr(strategies, "check_compatibility", None)
    if check is None:  # the registry predates the check
        return
    def lowest(section: dict[str, Any]) -> dict[str, Any]:
        # A searched value is checked at its low end (its first choice): shared_layers {int: [0, 2]} with a
        # Jacobian strategy fails every trial that draws 0. (The ends were checked against their fields.)
        return {k: v.values[0] if isinstance(v, Range) else v for k, v in section.items() if k != "name"}

    num_tasks = len(data.declared_tasks(spec.dataset["name"], lowest(spec.dataset)))
    model_options = lowest(spec.model)
    for strategy in spec.strategies:
        # Ranges' ends were checked by parse_knobs; the strategy's constructor takes values, not ranges.
        fixed_knobs = {k: v for k, v in spec.strategy_knobs.get(strategy, {}).items() if not isinstance(v, Range)}
        check(strategy, fixed_knobs, num_tasks, spec.model["name"], model_options)
