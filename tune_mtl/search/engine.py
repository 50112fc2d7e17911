"""Builds and runs the searches: Ray Tune `Tuner`s driven by Optuna studies.

Default (`strategy_mode: separate`): one Tuner and one Optuna TPE study per strategy. Each strategy gets the
same trial budget, and TPE's model of the learning rate is not blurred across strategies whose optima
differ. `strategy_mode: categorical` runs one study in which the strategy is a searched choice with its own
conditional knobs (`tune_mtl.search.categorical_space`). All studies share one Optuna storage: SQLite under the
run folder by default, or `--optuna-storage` (a PostgreSQL/MySQL URL on a cluster).

A search killed half-way continues with `--resume RUN_DIR`: experiments that finished are not rerun, the
one that was running is restored with `Tuner.restore` (finished trials kept, unfinished ones continued
from their last checkpoint), those not yet started start.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.core.keys import OBJECTIVE
from tune_mtl.storage.run_folder import RunFolder, is_url, new_run, open_run
from tune_mtl.search.spec import Range, SearchSpec

CATEGORICAL = "categorical"  # the experiment (and study) name of a categorical-strategy search
SPEC_FILE = "search_space.yaml"
# How often Tune snapshots the experiment (what --resume restores); Ray's default adapts up to minutes.
EXPERIMENT_SNAPSHOT_S = "5"


@dataclass
class RunOptions:
    storage_path: str = "runs"
    name: str | None = None
    address: str | None = None
    wandb_mode: str | None = None  # online | offline | disabled; default: online iff WANDB_API_KEY is set
    wandb_project: str = "tune-mtl"
    verbose: int = 1
    optuna_storage: str | None = None  # an RDB URL; default: SQLite in the run folder

    def resolved_wandb_mode(self) -> str:
        if self.wandb_mode:
            return self.wandb_mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"


# -- what to optimise ----------------------------------------------------------------------------------
def resolve_search_objective(spec: SearchSpec) -> dict[str, Any]:
    """Task, metric and min/max of the objective (and of each objective of a multi-objective search);
    builds the data set once (with its fixed options) to check the task and metric names."""
    from tune_mtl import data
    from tune_mtl.training.objective import resolve_objective

    options = {k: v for k, v in spec.dataset.items() if k != "name" and not isinstance(v, Range)}
    bundle = data.build(spec.dataset["name"], options, spec.search["seed"])
    main = resolve_objective(bundle.tasks, spec.objective)
    task = "all tasks" if main.task is None else bundle.tasks[main.task].name  # None: delta_m over all tasks
    objective: dict[str, Any] = {"task": task, "metric": main.metric, "mode": main.mode}
    if spec.search["objectives"]:
        objectives = []
        for item in spec.search["objectives"]:
            task, name = item.split("/")
            mode = resolve_objective(bundle.tasks, {"task": task, "metric": name}).mode
            objectives.append({"key": f"val/{task}/{name}", "task": task, "metric": name, "mode": mode})
        objective["objectives"] = objectives
    return objective


def experiments(spec: SearchSpec) -> list[str]:
    return list(spec.strategies) if spec.search["strategy_mode"] == "separate" else [CATEGORICAL]


def plan_notes(spec: SearchSpec) -> list[str]:
    """Check the scheduler/searcher combination before Ray starts; what the user should know about it."""
    search = spec.search
    scheduler, multi = search["scheduler"], bool(search["objectives"])
    shared = any(isinstance(v, Range) for s in ("dataset", "model", "optimizer", "training")
                 for v in getattr(spec, s).values())
    for experiment in experiments(spec):
        knobs = spec.strategy_knobs.get(experiment, {})
        if not (shared or any(isinstance(v, Range) for v in knobs.values())
                or (experiment == CATEGORICAL and len(spec.strategies) > 1)):
            raise UserError(f"nothing to search for '{experiment}': every value of the search space is fixed; "
                            "make at least one a range, e.g. optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}")
    notes = []
    if scheduler == "pbt":
        if multi:
            raise UserError("scheduler 'pbt' optimises one metric; drop --objectives or pick asha/hyperband/fifo")
        if search["strategy_mode"] != "separate":
            raise UserError("scheduler 'pbt' needs --strategy-mode separate (it cannot mutate a strategy choice "
                            "and its conditional knobs)")
        if not isinstance(spec.optimizer.get("lr"), Range) or spec.optimizer["lr"].kind == "choice":
            raise UserError("scheduler 'pbt' evolves the learning rate: 'optimizer.lr' must be a "
                            "{loguniform: [lo, hi]} or {uniform: [lo, hi]} range")
        notes.append("PBT: the initial population is drawn at random by Tune (no Optuna study); every "
                     f"{search['grace_period']} epoch(s) the worst trials continue from a better trial's "
                     "checkpoint with a perturbed learning rate")
    elif multi and scheduler in ("asha", "hyperband"):
        notes.append(f"{scheduler} compares trials on one metric, so this multi-objective search runs every "
                     "trial to the end (FIFO)")
    return notes


def study_name(run: RunFolder, experiment: str, own_storage: bool) -> str:
    # A shared database server holds many runs' studies: prefix them with the run name.
    return experiment if own_storage else f"{run.name}/{experiment}"


# -- the parts of a Tuner --------------------------------------------------------------------------------
def make_scheduler(spec: SearchSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, PopulationBasedTraining

    search = spec.search
    kind = "fifo" if search["objectives"] else search["scheduler"]
    if kind == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=spec.epochs,
                             grace_period=min(search["grace_period"], spec.epochs),
                             reduction_factor=search["reduction_factor"])
    if kind == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=spec.epochs,
                                  reduction_factor=search["reduction_factor"])
    if kind == "pbt":
        return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=search["grace_period"],
                                       hyperparam_mutations={"optimizer": {"lr": spec.optimizer["lr"].to_tune()}})
    return FIFOScheduler()


def make_searcher(spec: SearchSpec, experiment: str, objective: dict[str, Any], storage, name: str):
    """An Optuna searcher on `storage`, or None where Tune samples by itself (PBT)."""
    import optuna

    from tune_mtl.search.categorical_space import StrategyChoiceSpace
    from tune_mtl.search.studies import StudySearch

    if spec.search["scheduler"] == "pbt":
        return None
    multi = objective.get("objectives")
    space = StrategyChoiceSpace(spec) if experiment == CATEGORICAL else None
    return StudySearch(
        space=space,
        metric=[o["key"] for o in multi] if multi else OBJECTIVE,
        mode=[o["mode"] for o in multi] if multi else objective["mode"],
        sampler=optuna.samplers.TPESampler(seed=spec.search["seed"]),
        study_name=name,
        storage=storage,
    )


def param_space(spec: SearchSpec, experiment: str) -> dict[str, Any]:
    from tune_mtl.search.categorical_space import fixed_space

    return fixed_space(spec) if experiment == CATEGORICAL else spec.param_space(experiment)


def make_trainable(spec: SearchSpec):
    from ray import tune

    from tune_mtl.search.trainable import train_trial

    search = spec.search
    return tune.with_resources(train_trial, {"cpu": search["cpus_per_trial"], "gpu": search["gpus_per_trial"]})


def build_tuner(spec: SearchSpec, experiment: str, run: RunFolder, objective: dict[str, Any], searcher,
                verbose: int = 1):
    from ray import tune

    from tune_mtl.search.tracking import wandb_callbacks

    search = spec.search
    single = not objective.get("objectives")
    return tune.Tuner(
        make_trainable(spec),
        param_space=param_space(spec, experiment),
        tune_config=tune.TuneConfig(
            # A multi-objective searcher carries its own metric list; Tune's own metric is single-valued.
            metric=OBJECTIVE if single else None,
            mode=objective["mode"] if single else None,
            search_alg=searcher,
            scheduler=make_scheduler(spec),
            num_samples=search["num_samples"],
            max_concurrent_trials=search["max_concurrent_trials"] or None,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=run.tune_storage,
            callbacks=wandb_callbacks(run.wandb_mode, run.wandb_project, run.path),
            # PBT copies other trials' checkpoints: keep enough that they still exist when it does.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if search["scheduler"] == "pbt" else 2),
            # Retries cover lost workers and nodes; a diverged trial ends normally (see trial.py).
            failure_config=tune.FailureConfig(max_failures=search["max_failures"]),
            # Trials end by themselves after their epochs; saying so also keeps PBT from exploiting a trial
            # at its last epoch, which would restart it from another checkpoint again and again.
            stop={"training_iteration": spec.epochs},
            verbose=verbose,
        ),
    )


def restore_tuner(spec: SearchSpec, experiment: str, run: RunFolder):
    from ray import tune

    return tune.Tuner.restore(run.experiment(experiment), make_trainable(spec), resume_unfinished=True,
                              resume_errored=True, param_space=param_space(spec, experiment))


def set_aside(run: RunFolder, experiment: str) -> None:
    """An experiment folder Tune cannot restore (killed before its first snapshot) is moved away, so that
    its half-written trials are not counted with the fresh ones."""
    folder = Path(run.experiment(experiment))
    if not is_url(run.tune_storage) and folder.exists():
        shutil.move(str(folder), f"{folder}.aborted-{int(time.time())}")


# -- running -------------------------------------------------------------------------------------------
def prepare_cluster(spec: SearchSpec, address: str | None) -> None:
    """Connect to Ray and check that a trial fits on a node, before anything is written."""
    from tune_mtl.search.cluster import alive_nodes, check_resources, connect

    connect(address)
    check_resources(spec.search, alive_nodes())


def run_search(spec: SearchSpec, options: RunOptions) -> dict[str, Any]:
    """Start a new search; returns (and writes) the summary."""
    import yaml

    from tune_mtl.storage.secrets import mask_url

    objective = resolve_search_objective(spec)
    notes = plan_notes(spec)
    prepare_cluster(spec, options.address)
    run = new_run(options.storage_path, options.name)
    run.wandb_mode, run.wandb_project = options.resolved_wandb_mode(), options.wandb_project
    run.optuna_storage = mask_url(options.optuna_storage or "")
    run.objective = objective
    (run.path / SPEC_FILE).write_text(yaml.safe_dump(spec.describe(), sort_keys=False))
    run.save()
    return execute(spec, run, options, options.optuna_storage, notes, resume=False)


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
    prepare_cluster(spec, options.address)
    return execute(spec, run, options, optuna_url, notes, resume=True)


def execute(spec: SearchSpec, run: RunFolder, options: RunOptions, optuna_url: str | None, notes: list[str],
            resume: bool) -> dict[str, Any]:
    """`optuna_url`: --optuna-storage with its password, or None for the run folder's SQLite study."""
    from ray import tune

    from tune_mtl.reporting.summary import summarise_run, write_summary
    from tune_mtl.storage.run_folder import default_storage_url
    from tune_mtl.search.studies import open_storage

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_SNAPSHOT_S)
    # Per-epoch checkpoints of small trials trip Tune's "snapshotting too often"/"slow callback" warnings,
    # which drown the progress output without pointing at anything a user can fix.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "60")
    for note in notes:
        print(f"note: {note}", flush=True)
    uses_optuna = spec.search["scheduler"] != "pbt"
    storage = open_storage(optuna_url or default_storage_url(run.path)) if uses_optuna else None
    run.studies = {e: study_name(run, e, not optuna_url) for e in experiments(spec)} if storage else {}
    run.save()
    for experiment in experiments(spec):
        if experiment in run.finished:
            print(f"\n=== {experiment}: finished before, kept as it is ===", flush=True)
            continue
        print(f"\n=== {experiment}: {spec.search['num_samples']} trials x {spec.epochs} epochs ===", flush=True)
        if resume and tune.Tuner.can_restore(run.experiment(experiment)):
            tuner = restore_tuner(spec, experiment, run)
        else:
            set_aside(run, experiment)
            searcher = make_searcher(spec, experiment, run.objective, storage, run.studies.get(experiment))
            tuner = build_tuner(spec, experiment, run, run.objective, searcher, options.verbose)
        tuner.fit()
        run.mark_finished(experiment)
    summary = summarise_run(run, experiments(spec))
    summary["notes"] = notes
    write_summary(summary, run)
    return summary
