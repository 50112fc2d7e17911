"""Builds and runs the searches: one Ray Tune `Tuner` per strategy, each with its own Optuna TPE study.

Why one search per strategy (not the strategy as one categorical parameter): each strategy gets the same
trial budget, and TPE's model of the learning rate is not blurred across strategies whose optima differ.
All studies live in one SQLite file under the run directory (`optuna-dashboard sqlite:///RUN/optuna.db`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tune_mtl.search_spec import SearchSpec

log = logging.getLogger(__name__)
OBJECTIVE = "val/objective"


@dataclass
class RunOptions:
    storage_path: str = "runs"
    name: str | None = None
    address: str | None = None
    wandb_mode: str | None = None  # online | offline | disabled; default: online iff WANDB_API_KEY is set
    wandb_project: str = "tune-mtl"
    verbose: int = 1

    def resolved_wandb_mode(self) -> str:
        if self.wandb_mode:
            return self.wandb_mode
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def run_dir(options: RunOptions) -> Path:
    name = options.name or datetime.now().strftime("search-%Y%m%d-%H%M%S")
    return Path(options.storage_path).expanduser().resolve() / name


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Per-epoch checkpoints of small trials trip Tune's "snapshotting too often"/"slow callback" warnings,
    # which drown the progress output without pointing at anything a user can fix.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "60")
    # Trials import tune_mtl from the installed package; the dashboard needs ray[default] and is opt-in.
    ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)


def optuna_storage_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'optuna.db'}"


def build_tuner(spec: SearchSpec, strategy: str, folder: Path, options: RunOptions, mode: str):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tune_mtl.tracking import wandb_callbacks
    from tune_mtl.trial import train_trial

    search = spec.search
    searcher = OptunaSearch(
        metric=OBJECTIVE,
        mode=mode,
        sampler=optuna.samplers.TPESampler(seed=search["seed"]),
        study_name=strategy,
        storage=optuna.storages.RDBStorage(optuna_storage_url(folder)),
    )
    if search["scheduler"] == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=spec.epochs,
            grace_period=min(search["grace_period"], spec.epochs),
            reduction_factor=search["reduction_factor"],
        )
    else:
        scheduler = FIFOScheduler()
    resources = {"cpu": search["cpus_per_trial"], "gpu": search["gpus_per_trial"]}
    return tune.Tuner(
        tune.with_resources(train_trial, resources),
        param_space=spec.param_space(strategy),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=search["num_samples"],
            max_concurrent_trials=search["max_concurrent_trials"] or None,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=strategy,
            storage_path=str(folder),
            callbacks=wandb_callbacks(options.resolved_wandb_mode(), options.wandb_project, folder),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=options.verbose,
        ),
    )


def resolve_search_objective(spec: SearchSpec) -> dict[str, str]:
    """Task, metric and min/max of the objective; builds the data set once (with its fixed options)."""
    from tune_mtl import data
    from tune_mtl.search_spec import Range
    from tune_mtl.train import resolve_objective

    options = {k: v for k, v in spec.dataset.items() if k != "name" and not isinstance(v, Range)}
    bundle = data.build(spec.dataset["name"], options, spec.search["seed"])
    objective = resolve_objective(bundle.tasks, spec.objective)
    task = "all (Delta_m%)" if objective.task is None else bundle.tasks[objective.task].name
    return {"task": task, "metric": objective.metric, "mode": objective.mode}


def run_search(spec: SearchSpec, options: RunOptions) -> dict[str, Any]:
    """Run every strategy's search; returns (and writes) the summary."""
    import yaml

    from tune_mtl.report import summarise, write_summary

    folder = run_dir(options)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search_space.yaml").write_text(yaml.safe_dump(spec.describe(), sort_keys=False))
    objective = resolve_search_objective(spec)
    init_ray(options.address)
    results = {}
    for strategy in spec.strategies:
        print(f"\n=== strategy {strategy}: {spec.search['num_samples']} trials x {spec.epochs} epochs ===", flush=True)
        results[strategy] = build_tuner(spec, strategy, folder, options, objective["mode"]).fit()
    summary = summarise(results, objective, folder, options)
    write_summary(summary, folder)
    return summary
