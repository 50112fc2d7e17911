"""The one Ray Tune experiment of a search: its Tuner (trainable, param space, searcher, scheduler, names,
callbacks), how wide it runs, and the driver-only Tune settings it needs.

Width. Ray Tune keeps only ONE trial pending at a time when a search algorithm drives it
(`TUNE_MAX_PENDING_TRIALS_PG` defaults to 1 for a custom searcher), so a 16-slot cluster would start its
trials one by one and, with `reuse_actors`, hand each new trial to the worker that just finished: 2-3 trials
at once on 16 slots. `fit` therefore lets as many trials be pending as the cluster holds (or
`--max-concurrent-trials`, which also caps the running ones). Tune reads these settings from the environment
when its controller starts: they are set for the `fit` call only and restored afterwards, so no other code in
the process (and no trial: Ray's workers get their environment from the raylet, not from the driver) sees them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ray.tune.stopper import Stopper

from tune_mtl.core.keys import SCORE, TRACKING, TRIAL_NAME
from tune_mtl.search import ray_adapter
from tune_mtl.search.spec import SearchSpec

if TYPE_CHECKING:
    from ray.tune import Tuner
    from ray.tune.experiment import Trial
    from ray.tune.search import Searcher

EXPERIMENT = "trials"  # the Tune experiment folder of a search: <run>/trials/<strategy>-<n>/
# How often Tune snapshots the experiment (what --resume restores); Ray's default adapts up to minutes.
EXPERIMENT_SNAPSHOT_S = "5"
# How long a stopped trial's worker waits for the trial to finish its own ending (its W&B run closed and written:
# tracking.py bounds that at 10 s, then 10 s more for its fallback) before Tune may end the worker.
TRIAL_THREAD_WAIT_S = 30.0


def trial_name(trial: Trial) -> str:
    """`<strategy>-<n>` as the searcher named it; PBT (Tune's own sampler) numbers by Tune's trial counter."""
    name = trial.config.get(TRIAL_NAME)
    if name:
        return str(name)
    counter = trial.trial_id.rsplit("_", 1)[-1]
    return f"{trial.config['strategy']['name']}-{int(counter) + 1 if counter.isdigit() else counter}"


def cluster_slots(search: dict[str, Any], nodes: list[dict[str, Any]]) -> int:
    """How many trials fit on the nodes that are up at once (a trial lives on one node)."""
    slots = 0
    for node in nodes:
        fits = []
        for key, want in (("CPU", search["cpus_per_trial"]), ("GPU", search["gpus_per_trial"])):
            if want > 0:
                fits.append(math.floor(node["Resources"].get(key, 0.0) / want + 1e-9))
        slots += min(fits) if fits else 0
    return max(slots, 1)


def runs_a_trial_per_cpu(search: dict[str, Any], cpus: int) -> bool:
    """Whether a search may run a trial on each of `cpus` CPUs at once (one CPU per trial, no GPU, no lower
    `--max-concurrent-trials`): only then does each worker that a new local Ray prestarts (one per CPU, idle
    until given an actor) get a trial. At one trial at a time the search was no slower without them and 80 MB
    lighter per idle worker (bench/overhead.py, BENCHMARKS.md)."""
    cap = search["max_concurrent_trials"]
    return search["cpus_per_trial"] <= 1 and not search["gpus_per_trial"] and (not cap or cap >= cpus)


def concurrency(search: dict[str, Any], slots: int, total_trials: int) -> int:
    cap = search["max_concurrent_trials"] or slots
    return max(1, min(cap, total_trials))


@contextmanager
def driver_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block and put the previous values back."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def quiet_tune() -> Iterator[None]:
    """For a search's `fit`: Tune's "Resume experiment with: Tuner.restore(path=...)" after a Ctrl-C names an
    API, not a command (the engine prints `launch.py search --resume RUN_DIR`), and its "Failed to fetch
    metrics" lists trials that never started (the summary lists them as unfinished)."""
    from tune_mtl.reporting.summary import UNSTARTED_TRIALS_LINE, hide_log_lines

    with hide_log_lines("ray.tune.tune", "Tuner.restore("), \
            hide_log_lines("ray.tune.analysis.experiment_analysis", UNSTARTED_TRIALS_LINE):
        yield


def tune_env(pending: int) -> dict[str, str]:
    return {
        "TUNE_MAX_PENDING_TRIALS_PG": str(pending),  # see the module docstring
        "TUNE_GLOBAL_CHECKPOINT_S": EXPERIMENT_SNAPSHOT_S,
        # Per-epoch checkpoints of small trials trip Tune's "snapshotting too often" warning, which drowns the
        # progress output without pointing at anything a user can fix.
        "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    }


def param_space(spec: SearchSpec, tracking: dict[str, Any], optuna: bool) -> dict[str, Any]:
    """Fixed values (the searcher's suggestions are merged in by Tune); PBT: Tune samples the ranges itself,
    one grid entry per strategy so that each strategy gets num_samples trials."""
    from ray import tune

    from tune_mtl.search.categorical_space import fixed_space

    if optuna:
        return {**fixed_space(spec), TRACKING: tracking}
    per_strategy = [spec.param_space(s) for s in spec.strategies]
    space = {k: v for k, v in per_strategy[0].items() if k != "strategy"}
    return {**space, "strategy": tune.grid_search([p["strategy"] for p in per_strategy]), TRACKING: tracking}


def stopper(epochs: int) -> Stopper:
    """Trials end by themselves after their epochs; saying so also keeps PBT from exploiting a trial at its
    last epoch (which would restart it from another checkpoint again and again). A UserError inside a trial
    (reported under keys.USER_ERROR, see trial_errors.py) ends the whole experiment: every trial would repeat it."""
    from ray.tune.stopper import CombinedStopper

    from tune_mtl.search.trial_errors import StopOnUserError

    return CombinedStopper(EpochLimit(epochs), StopOnUserError())


class EpochLimit(Stopper):
    """Stops a trial once its result says it reached `epochs` (Tune's `training_iteration`, which a restored
    trial continues from its checkpoint). Not Tune's MaximumIterationStopper: that counts the results it has
    seen in its own pickled dict, so after a driver kill and a resume the results a killed run reported count
    again, and a restarted trial was stopped short of its last epoch (seen: done at epoch 3 of 4)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return int(result.get("training_iteration", 0)) >= self.epochs

    def stop_all(self) -> bool:
        return False


def make_trainable(spec: SearchSpec) -> Any:
    from ray import tune

    from tune_mtl.search.driver_imports import import_tensorboardx_without_torch
    from tune_mtl.search.trainable import train_trial

    import_tensorboardx_without_torch()  # Tune's TensorBoard callback runs here, on the driver: no torch for it
    ray_adapter.without_callback_telemetry()  # nor wandb
    search = spec.search
    trainable = ray_adapter.trainable_waiting_for_its_thread(train_trial, TRIAL_THREAD_WAIT_S)
    return tune.with_resources(trainable, {"cpu": search["cpus_per_trial"], "gpu": search["gpus_per_trial"]})


def build_tuner(spec: SearchSpec, storage_path: str, objective: dict[str, Any], searcher: Searcher | None,
                callbacks: list[Any], tracking: dict[str, Any], total_trials: int, tune_verbose: int) -> Tuner:
    from ray import tune

    from tune_mtl.search.relocation import relocatable
    from tune_mtl.search.schedulers import make_scheduler

    search = spec.search
    single = not objective.get("objectives")
    pbt = searcher is None
    return tune.Tuner(
        make_trainable(spec),
        param_space=param_space(spec, tracking, optuna=not pbt),
        tune_config=tune.TuneConfig(
            # A multi-objective searcher carries its own metric list; Tune's own metric is single-valued.
            metric=SCORE if single else None,
            mode=objective["mode"] if single else None,
            # Wrapped so that a resumed copy of the run creates its new trials in the copy (relocation.py);
            # the wrapper applies the concurrency cap itself (Tune ignores it for a SearchGenerator).
            search_alg=relocatable(searcher, search["max_concurrent_trials"] or None) if searcher else None,
            scheduler=make_scheduler(spec, SCORE, objective["mode"]),
            # PBT: num_samples repeats the grid over strategies; a searcher: every study's budget in all.
            num_samples=search["num_samples"] if pbt else total_trials,
            max_concurrent_trials=(search["max_concurrent_trials"] or None) if pbt else None,
            reuse_actors=True,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage_path,
            callbacks=[*callbacks, *ray_adapter.loggers_keeping_the_driver_s_own_log()],
            # PBT copies other trials' checkpoints: keep enough that they still exist when it does.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if pbt else 2),
            # Retries cover lost workers and nodes; a diverged trial ends normally (see trainable.py).
            failure_config=tune.FailureConfig(max_failures=search["max_failures"]),
            stop=stopper(spec.epochs),
            verbose=tune_verbose,
        ),
    )


def restore_tuner(spec: SearchSpec, experiment_path: str, tracking: dict[str, Any]) -> Tuner:
    from ray import tune

    from tune_mtl.search.relocation import relocate

    tuner = tune.Tuner.restore(experiment_path, make_trainable(spec), resume_unfinished=True, resume_errored=True,
                               param_space=param_space(spec, tracking, optuna=spec.search["scheduler"] != "pbt"))
    relocate(tuner, experiment_path)  # the run folder may be a moved or copied one
    return tuner
