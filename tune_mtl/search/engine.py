"""Runs a search: ONE Ray Tune experiment for all strategies, driven by one Optuna study per strategy.

The parts, one job each:
- `plan`: the objective (from the data set's declared tasks: the driver never builds the data), the studies,
  their budgets, TPE's start-up, the notes printed before the search starts;
- `searcher`: the Tune searcher that serves every study in turn (equal budgets) through Optuna's ask/tell;
- `schedulers`: ASHA/HyperBand/PBT per strategy (a trial is compared only with its own strategy's trials);
- `experiment`: the Tuner, its width (as many trials at once as the cluster holds) and naming;
- `studies`: the Optuna storage; `tracking`: W&B from inside each trial; `progress`: the terminal;
- `final_stage`: the best configurations re-trained over fresh seeds (the verdict); `verdict_wandb`: the
  verdict's own W&B run, logged last.

`strategy_mode: categorical` runs one study in which the strategy is a searched choice with its own
conditional knobs, through the same searcher. All studies share one Optuna storage: SQLite under the run
folder by default, or `--optuna-storage` (a PostgreSQL/MySQL URL on a cluster).

A search stopped half-way (Ctrl-C, a killed driver) continues with `--resume RUN_DIR`: Tune restores the
experiment (finished trials kept, unfinished ones continued from their last checkpoint, those not yet
started start), and the searcher restores which Optuna trial belongs to which Tune trial.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.core.keys import SCORE
from tune_mtl.search.experiment import EXPERIMENT
from tune_mtl.search.experiment_state import put_back_cut_states
from tune_mtl.search.final_stage import FinalStageInterrupted
from tune_mtl.search.plan import (
    CATEGORICAL,
    budgets,
    paired,
    paired_draws_seed,
    plan_notes,
    resolve_search_objective,
    sampler_plan,
    sampler_seed,
    study_keys,
    uses_optuna,
)
from tune_mtl.search.spec import SearchSpec
from tune_mtl.storage.run_folder import RunFolder, is_url, new_run, open_run

SPEC_FILE = "search_space.yaml"


class SearchInterrupted(KeyboardInterrupt):
    """The user stopped the search (Ctrl-C); it is resumable. The message says how."""


@dataclass
class RunOptions:
    storage_path: str = "runs"
    name: str | None = None
    address: str | None = None
    wandb_mode: str | None = None  # online | offline | disabled; default: online iff WANDB_API_KEY is set
    wandb_project: str = "tune-mtl"
    verbose: int = 1  # 0: final table only; 1: progress; 2+: Tune's own tables as well
    optuna_storage: str | None = None  # an RDB URL; default: SQLite in the run folder

    def resolved_wandb_mode(self) -> str:
        if self.wandb_mode:
            return self.wandb_mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def study_name(run: RunFolder, key: str, own_storage: bool) -> str:
    # A shared database server holds many runs' studies: prefix them with the run name.
    return key if own_storage else f"{run.name}/{key}"


def objective_names(objective: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(result keys, modes, names for Optuna's dashboard) of what the studies are told."""
    if objective.get("objectives"):
        multi = objective["objectives"]
        return [o["key"] for o in multi], [o["mode"] for o in multi], [f"{o['key']} (last epoch)" for o in multi]
    return [SCORE], [objective["mode"]], [f"best val {objective['metric']} of {objective['task']}"]


def make_searcher(spec: SearchSpec, run: RunFolder, storage: Any, concurrency: int) -> Any:
    """The searcher over every study of the search, or None where Tune samples by itself (PBT)."""
    from tune_mtl.search.categorical_space import StrategyChoiceSpace, StrategySpace, paired_draws
    from tune_mtl.search.searcher import Objectives, StudySearcher, StudySetup

    if not uses_optuna(spec):
        return None
    setups = []
    for key, budget in budgets(spec).items():
        plan = sampler_plan(budget, concurrency)
        space = StrategyChoiceSpace(spec) if key == CATEGORICAL else StrategySpace(spec, key)
        enqueued = paired_draws(spec, plan.startup, paired_draws_seed(spec), key) if paired(spec) else ()
        setups.append(StudySetup(key, run.studies[key], space, budget, sampler_seed(spec, key), plan.startup,
                                 plan.constant_liar, enqueued))
    keys, modes, names = objective_names(run.objective)
    return StudySearcher(setups, storage, Objectives(keys, modes, names), run.experiment(EXPERIMENT), run.name)


def set_aside(run: RunFolder, experiment: str = EXPERIMENT) -> None:
    """An experiment folder Tune cannot restore (killed before its first snapshot) is moved away, so that
    its half-written trials are not counted with the fresh ones."""
    folder = Path(run.experiment(experiment))
    if not is_url(run.tune_storage) and folder.exists():
        shutil.move(str(folder), f"{folder}.aborted-{int(time.time())}")


# -- running -------------------------------------------------------------------------------------------
def prepare_cluster(spec: SearchSpec, address: str | None) -> int:
    """Connect to Ray and check that a trial fits on a node, before anything is written; returns how many
    trials fit at once."""
    from tune_mtl.search.cluster import alive_nodes, check_resources, connect
    from tune_mtl.search.driver_imports import WHILE_RAY_STARTS, import_in_background
    from tune_mtl.search.experiment import cluster_slots, runs_a_trial_per_cpu

    import_in_background(WHILE_RAY_STARTS)
    connect(address, prestart_workers=runs_a_trial_per_cpu(spec.search, os.cpu_count() or 1))
    nodes = alive_nodes()
    check_resources(spec.search, nodes)
    return cluster_slots(spec.search, nodes)


def run_search(spec: SearchSpec, options: RunOptions) -> dict[str, Any]:
    """Start a new search; returns (and writes) the summary."""
    import yaml

    from tune_mtl.storage.secrets import mask_url

    objective = resolve_search_objective(spec)
    notes = plan_notes(spec)
    slots = prepare_cluster(spec, options.address)
    run = new_run(options.storage_path, options.name)
    run.wandb_mode, run.wandb_project = options.resolved_wandb_mode(), options.wandb_project
    run.optuna_storage = mask_url(options.optuna_storage or "")
    run.objective = objective
    (run.path / SPEC_FILE).write_text(yaml.safe_dump(spec.describe(), sort_keys=False))
    run.save()
    return execute(spec, run, options, options.optuna_storage, notes, slots, resume=False)


def resume_search(run_dir: str, options: RunOptions) -> dict[str, Any]:
    """Finish the search of RUN_DIR with its saved search space and options."""
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.secrets import is_masked, mask_url

    run = open_run(run_dir)
    spec = load_spec(run.path / SPEC_FILE)
    if options.wandb_mode:
        run.wandb_mode = options.wandb_mode
    optuna_url = options.optuna_storage or run.optuna_storage
    if is_masked(optuna_url):
        raise UserError(f"this run's Optuna storage '{run.optuna_storage}' has a password, which is not saved; "
                        "pass it again with --optuna-storage")
    if mask_url(optuna_url) != run.optuna_storage:
        raise UserError(f"--optuna-storage '{mask_url(optuna_url)}' is not this run's storage "
                        f"'{run.optuna_display_url()}'")
    notes = plan_notes(spec)
    slots = prepare_cluster(spec, options.address)
    return execute(spec, run, options, optuna_url, notes, slots, resume=True)


def print_plan(spec: SearchSpec, width: int, slots: int) -> None:
    print(f"search: {len(spec.strategies)} strategies x {spec.search['num_samples']} trials x {spec.epochs} "
          f"epochs, up to {width} trials at once ({slots} fit on the cluster)", flush=True)
    if not uses_optuna(spec):
        return
    for key, budget in budgets(spec).items():
        plan = sampler_plan(budget, width)
        print(f"  {key}: {plan.describe()}", flush=True)


def execute(spec: SearchSpec, run: RunFolder, options: RunOptions, optuna_url: str | None, notes: list[str],
            slots: int, resume: bool) -> dict[str, Any]:
    """`optuna_url`: --optuna-storage with its password, or None for the run folder's SQLite study."""
    from tune_mtl.search.studies import searching_with
    from tune_mtl.storage.run_folder import default_storage_url

    with searching_with(optuna_url or default_storage_url(run.path)):
        return run_experiment(spec, run, options, optuna_url, notes, slots, resume)


def run_experiment(spec: SearchSpec, run: RunFolder, options: RunOptions, optuna_url: str | None,
                   notes: list[str], slots: int, resume: bool) -> dict[str, Any]:
    from ray import tune

    from tune_mtl.reporting.summary import load_trials, summarise_run, write_summary
    from tune_mtl.search import experiment as exp
    from tune_mtl.search.progress import progress_callbacks, tune_output_env
    from tune_mtl.search.studies import open_storage
    from tune_mtl.search.tracking import trial_settings
    from tune_mtl.search.trial_errors import raise_trial_user_error
    from tune_mtl.storage.run_folder import default_storage_url

    for note in notes:
        print(f"note: {note}", flush=True)
    total = sum(budgets(spec).values())
    width = exp.concurrency(spec.search, slots, total)
    print_plan(spec, width, slots)
    storage = open_storage(optuna_url or default_storage_url(run.path)) if uses_optuna(spec) else None
    run.studies = {k: study_name(run, k, not optuna_url) for k in study_keys(spec)} if storage else {}
    tracking = trial_settings(run.wandb_mode, run.wandb_project, run.name, run.path)
    run.wandb_mode = tracking["wandb_mode"]  # offline if online W&B was unreachable (tracking.usable_mode)
    run.save()
    experiment_path = run.experiment(EXPERIMENT)
    if resume:
        put_back_cut_states(experiment_path)
    if resume and tune.Tuner.can_restore(experiment_path):
        tuner = exp.restore_tuner(spec, experiment_path, tracking)
    else:
        set_aside(run)
        budget = budgets(spec) if storage else {s: spec.search["num_samples"] for s in spec.strategies}
        scheduler = {"asha": "ASHA", "hyperband": "HyperBand", "pbt": "PBT"}.get(spec.search["scheduler"], "FIFO")
        callbacks = progress_callbacks(budget, spec.epochs, run.objective["mode"], options.verbose, scheduler)
        tuner = exp.build_tuner(spec, run.tune_storage, run.objective, make_searcher(spec, run, storage, width),
                                callbacks, tracking, total,
                                tune_verbose=0 if options.verbose < 2 else min(options.verbose - 1, 3))
    # Tune reads these in the driver while the Tuner runs, fresh or restored; set for `fit` only.
    env = {**exp.tune_env(pending=width), **tune_output_env(options.verbose)}
    with exp.driver_env(env), exp.quiet_tune():
        results = tuner.fit()
    # A configuration error inside a trial: exit 2 with its sentence.
    raise_trial_user_error([results[i] for i in range(len(results))])
    del results  # read back from the run folder instead, like `launch.py report`
    rows = load_trials(run.experiment(EXPERIMENT))
    summary = summarise_run(run, rows)
    summary["notes"] = notes
    if stopped_early(summary, total):
        write_summary(summary, run)
        raise resumable(run)
    try:
        verdict = final_evaluation(spec, run, rows, options.verbose)
    except FinalStageInterrupted:
        write_summary(summary, run)  # the search's summary; the verdict comes when the final stage ends
        raise resumable(run) from None
    if verdict:
        summary["verdict"] = verdict
    write_summary(summary, run)
    if verdict:  # last, once the summary files hold it: a failure to log is a warning (search/verdict_wandb.py)
        log_verdict(spec, run, verdict, summary.get("own_ranges") or {})
    return summary


def log_verdict(spec: SearchSpec, run: RunFolder, verdict: dict[str, Any],
                own_ranges: dict[str, Any]) -> None:
    """The verdict's own W&B run, beside the trials' runs (search/verdict_wandb.py). Its config discloses the
    strategies that searched ranges of their own (`per_strategy:`), as summary.md does: unequal tuning."""
    from dataclasses import asdict

    from tune_mtl.search.final_stage import FinalOptions
    from tune_mtl.search.verdict_wandb import log_verdict as log_to_wandb

    objective = run.objective
    config = {"objective": objective, "final": asdict(FinalOptions.from_spec(spec)),
              "num_samples": spec.search["num_samples"], "seed": spec.search["seed"], "own_ranges": own_ranges}
    log_to_wandb(run, verdict, f"test {objective['metric']} of {objective['task']}", config)


def resumable(run: RunFolder) -> SearchInterrupted:
    return SearchInterrupted(f"the search stopped before its end; continue it with: "
                             f"launch.py search --resume {run.path}")


def final_evaluation(spec: SearchSpec, run: RunFolder, rows: list[dict[str, Any]],
                     verbose: int) -> dict[str, Any] | None:
    """After the search (its trials: `rows`): each strategy's best configuration(s) re-trained over fresh, shared
    seeds, scored on the test split at the validation-selected epoch (search/final_stage.py); the verdict, or
    None when `search.final.seeds` is 0 or the search is multi-objective (its Pareto front is the answer)."""
    from ray import tune

    from tune_mtl.search import experiment as exp
    from tune_mtl.search.final_stage import FINAL, FinalOptions, run_final_stage, top_configs, verdict_for_run
    from tune_mtl.search.progress import tune_output_env

    final = FinalOptions.from_spec(spec)
    if final.seeds == 0 or spec.search["objectives"]:
        return None
    best = top_configs(rows, run.objective["mode"], final.top_k)
    if verbose:
        print(f"final stage: the best {final.top_k} configuration(s) of {len(best)} strategies x {final.seeds} "
              "fresh seeds, scored on the test split at the validation-selected epoch", flush=True)
    if FINAL not in run.finished and not tune.Tuner.can_restore(run.experiment(FINAL)):
        set_aside(run, FINAL)  # killed before the final stage's first snapshot: start it afresh
    with exp.driver_env(tune_output_env(verbose)), exp.quiet_tune():
        run_final_stage(spec, run, best, final, verbose)
    return verdict_for_run(spec, run, rows)


def stopped_early(summary: dict[str, Any], total: int) -> bool:
    """Trials still unfinished, or fewer than the budget: Tune stopped on an interrupt (Ctrl-C/SIGUSR1)."""
    strategies = summary["strategies"].values()
    return any(s.get("unfinished") for s in strategies) or sum(s["trials"] for s in strategies) < total
