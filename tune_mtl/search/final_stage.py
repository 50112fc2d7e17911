"""The final evaluation stage: after the search, each strategy's best configurations re-trained over fresh seeds.

Why: a search's per-strategy number is the best validation epoch of the luckiest trial of one seed, which is
where multi-task comparisons go wrong (Xin et al. and Kurin et al., NeurIPS 2022). Here every strategy's
top-k configurations (`search.final.top_k`, default 1) are re-trained with `search.final.seeds` fresh seeds
(default 3; `--final-seeds 0` skips the stage): the seed sets the model's initialisation, the data order and,
for generated data (the toy sets, unless `data_seed` is fixed), the data itself. Seed index i is the same seed
for every strategy, so the comparison is paired. Each final trial runs every epoch (no early stopping) and is
scored on the test split at the epoch its validation objective selects (keys.AT_SCORE).

The final trials are Ray Tune trials of ONE Tuner (the search's trainable, resources and FailureConfig, on
the same cluster, in parallel) in the experiment folder `<run>/final/`, so `launch.py report` reads them back.
A stage stopped before every final trial ended (Ctrl-C: `FinalStageInterrupted`; a killed driver) is not
marked finished, and `launch.py search --resume` restores it: ended trials kept as they are, the others
continued from their last checkpoint (a stage killed before its first snapshot starts afresh, its folder set
aside by the engine).
The verdict itself (intervals, paired test, Delta_m%) is `tune_mtl.reporting.verdict`.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tune_mtl.core.keys import SCORE, TRIAL_NAME
from tune_mtl.reporting import verdict as verdict_lib
from tune_mtl.reporting.summary import UNFINISHED
from tune_mtl.search import ray_adapter
from tune_mtl.search.experiment_state import SnapshotSearcher, put_back_cut_states
from tune_mtl.search.spec import Range, SearchSpec
from tune_mtl.storage.run_folder import RunFolder

if TYPE_CHECKING:  # imported where used at run time: Ray and the data registry are heavy
    from ray.tune import Tuner
    from ray.tune.search import Searcher

    from tune_mtl.data.declaration import TaskDeclaration

FINAL = "final"  # the Tune experiment folder of the final stage
# Final seeds are far from any search seed (every search trial runs with search.seed), so none repeats one.
FINAL_SEED_OFFSET = 1_000_000
FINAL_SEED_STRIDE = 1_000  # a different search.seed gives a different block of final seeds
NAME_PATTERN = re.compile(r"^final-(?P<strategy>.+)-c(?P<candidate>\d+)-s(?P<seed_index>\d+)$")


class FinalStageInterrupted(KeyboardInterrupt):
    """Tune stopped the final stage before every final trial ended (Ctrl-C): it is not marked finished, and
    `--resume` restores it (finished trials kept, the others continued from their checkpoints)."""


@dataclass(frozen=True)
class FinalOptions:
    seeds: int = 3
    top_k: int = 1

    @classmethod
    def from_spec(cls, spec: SearchSpec) -> FinalOptions:
        final = spec.search.get("final") or {}
        return cls(seeds=final.get("seeds", cls.seeds), top_k=final.get("top_k", cls.top_k))


def final_seeds(search_seed: int, count: int) -> list[int]:
    """The shared seeds of the final trials: seed index i is the same for every strategy (paired)."""
    return [FINAL_SEED_OFFSET + FINAL_SEED_STRIDE * search_seed + i for i in range(count)]


def trial_name(strategy: str, candidate: int, seed_index: int) -> str:
    return f"final-{strategy}-c{candidate}-s{seed_index}"


def top_configs(rows: list[dict[str, Any]], mode: str, k: int) -> dict[str, list[dict[str, Any]]]:
    """Each strategy's k best configurations by trial score (keys.SCORE of the last result), best first,
    from `reporting.summary.load_trials` rows; failed and unscored trials are left out."""
    scored: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for row in rows:
        last = row["history"][-1] if row["history"] else {}
        score = last.get(SCORE)
        if row["error"] or not isinstance(score, (int, float)) or not math.isfinite(score):
            continue
        scored.setdefault(row["config"]["strategy"]["name"], []).append((float(score), row["config"]))
    sign = 1.0 if mode == "min" else -1.0
    return {name: [c for _, c in sorted(items, key=lambda item: sign * item[0])[:k]] for name, items in scored.items()}


def final_trial_configs(best_configs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> list[dict[str, Any]]:
    """One trial config per (strategy, candidate, seed): the searched configuration with a fresh seed."""
    configs = []
    for strategy, candidates in best_configs.items():
        for candidate, config in enumerate(candidates):
            for seed_index, seed in enumerate(seeds):
                trial = copy.deepcopy(config)
                trial["seed"] = seed
                trial[TRIAL_NAME] = trial_name(strategy, candidate, seed_index)
                configs.append(trial)
    return configs


def fixed_configs_searcher(configs: list[dict[str, Any]]) -> Searcher:
    """A Tune searcher that hands out exactly `configs`, in order, then says it is finished (Tune's own
    generators only vary a param space; these configurations differ jointly)."""
    import pickle

    from ray.tune.search import Searcher

    class FixedConfigs(SnapshotSearcher):
        def __init__(self) -> None:
            super().__init__()
            self.configs, self.next = list(configs), 0

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            if self.next >= len(self.configs):
                # Ray annotates suggest as Optional[Dict] while documenting (and handling) FINISHED, a str.
                return Searcher.FINISHED  # type: ignore[return-value]
            self.next += 1
            return copy.deepcopy(self.configs[self.next - 1])

        def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as out:
                pickle.dump((self.configs, self.next), out)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as source:
                self.configs, self.next = pickle.load(source)

    return FixedConfigs()


def build_final_tuner(spec: SearchSpec, run: RunFolder, configs: list[dict[str, Any]], verbose: int = 0) -> Tuner:
    """One Tuner over every final trial, in parallel as the resources allow."""
    from ray import tune

    from tune_mtl.search.experiment import make_trainable
    from tune_mtl.search.experiment import trial_name as tune_trial_name
    from tune_mtl.search.progress import progress_callbacks

    search = spec.search
    # The same terminal as the search: a line per finished trial and the whole-stage line, grouped by
    # configuration ("final-<strategy>-c<k>", the trial name without its seed); Tune's own tables only with -v.
    per_configuration: dict[str, int] = {}
    for config in configs:
        key = str(config[TRIAL_NAME]).rsplit("-", 1)[0]
        per_configuration[key] = per_configuration.get(key, 0) + 1
    callbacks = progress_callbacks(per_configuration, spec.epochs, run.objective["mode"], verbose, "the scheduler",
                                   show_params=False)
    return tune.Tuner(
        make_trainable(spec),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=fixed_configs_searcher(configs),
            num_samples=len(configs),
            max_concurrent_trials=search["max_concurrent_trials"] or None,
            reuse_actors=True,
            trial_name_creator=tune_trial_name,
            trial_dirname_creator=tune_trial_name,
        ),
        run_config=tune.RunConfig(
            name=FINAL,
            storage_path=run.tune_storage,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=search["max_failures"]),
            stop={"training_iteration": spec.epochs},
            callbacks=[*callbacks, *ray_adapter.loggers_keeping_the_driver_s_own_log()],
            verbose=0 if verbose < 2 else min(verbose - 1, 3),
        ),
    )


def _declared(spec: SearchSpec) -> list[TaskDeclaration]:
    from tune_mtl import data

    fixed = {k: v for k, v in spec.dataset.items() if k != "name" and not isinstance(v, Range)}
    return data.declared_tasks(spec.dataset["name"], fixed)


def primary_metrics(spec: SearchSpec) -> tuple[dict[str, bool], dict[str, float]]:
    """Every task's primary metric ("task/metric" -> higher is better), and the chance level of the
    classification accuracies (1 / classes) below which a trial counts as collapsed."""
    higher, chance = {}, {}
    for task in _declared(spec):
        key = f"{task.name}/{task.primary.name}"
        higher[key] = task.primary.higher_is_better
        if task.kind == "classification" and task.primary.name == "accuracy" and task.out_dim > 1:
            chance[key] = 1.0 / task.out_dim
    return higher, chance


def records_from_rows(rows: list[dict[str, Any]], spec: SearchSpec, mode: str) -> list[dict[str, Any]]:
    """The verdict's records from the final experiment's trial rows (`reporting.summary.load_trials`)."""
    higher, chance = primary_metrics(spec)
    records = []
    for row in rows:
        match = NAME_PATTERN.match(str(row["config"].get(TRIAL_NAME, "")))
        if not match:
            continue
        records.append(verdict_lib.final_record(
            row["history"], mode, list(higher), strategy=match["strategy"], candidate=int(match["candidate"]),
            seed_index=int(match["seed_index"]), seed=int(row["config"]["seed"]), errored=bool(row["error"]),
            chance=chance))
    return sorted(records, key=lambda r: (r["strategy"], r["candidate"], r["seed_index"]))


def run_final_stage(spec: SearchSpec, run: RunFolder, best_configs: dict[str, list[dict[str, Any]]],
                    options: FinalOptions | None = None, verbose: int = 0) -> list[dict[str, Any]]:
    """Re-train `best_configs` (strategy -> configurations, best first) with fresh seeds; the records (one per
    final trial) for `reporting.verdict.compute_verdict`. [] when `seeds` is 0. Needs Ray connected (the
    search's cluster). A finished final stage is read back, not re-run (a resumed search)."""
    from ray import tune

    from tune_mtl.reporting.summary import load_trials
    from tune_mtl.search.experiment import driver_env, tune_env

    options = options or FinalOptions.from_spec(spec)
    if options.seeds == 0 or not best_configs:
        return []
    path = run.experiment(FINAL)
    if FINAL not in run.finished:
        chosen = {name: configs[: options.top_k] for name, configs in best_configs.items()}
        configs = final_trial_configs(chosen, final_seeds(spec.search["seed"], options.seeds))
        put_back_cut_states(path)
        if tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, _trainable(spec), resume_unfinished=True, resume_errored=True)
        else:
            tuner = build_final_tuner(spec, run, configs, verbose)
        with driver_env(tune_env(pending=len(configs))):
            tuner.fit()
        rows = load_trials(path)
        missing = unfinished(rows, [str(c[TRIAL_NAME]) for c in configs])
        if missing:  # Tune stopped on a Ctrl-C: not finished, so a --resume continues the stage
            raise FinalStageInterrupted(f"final trials not finished: {', '.join(missing)}")
        run.mark_finished(FINAL)
    else:
        rows = load_trials(path)
    return records_from_rows(rows, spec, run.objective["mode"])


def unfinished(rows: list[dict[str, Any]], expected: list[str]) -> list[str]:
    """The expected final trials that have not ended (never started, or running/pending/paused when Tune
    stopped); a trial that ended in an error after its retries has ended."""
    ended = {str(row["config"].get(TRIAL_NAME)) for row in rows if row["status"] not in UNFINISHED}
    return [name for name in expected if name not in ended]


def _trainable(spec: SearchSpec) -> Any:  # a Ray trainable (tune.with_resources), as make_trainable gives
    from tune_mtl.search.experiment import make_trainable

    return make_trainable(spec)


def load_final_records(spec: SearchSpec, run: RunFolder) -> list[dict[str, Any]]:
    """The final stage's records read back from the run folder ([] when it did not run)."""
    from tune_mtl.reporting.summary import load_trials

    return records_from_rows(load_trials(run.experiment(FINAL)), spec, run.objective["mode"])


def search_outcomes(rows: list[dict[str, Any]], spec: SearchSpec, mode: str) -> dict[str, dict[str, int]]:
    """Per strategy: the search's trials, how many diverged/errored and how many collapsed to chance."""
    higher, chance = primary_metrics(spec)
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        name = row["config"]["strategy"]["name"]
        record = verdict_lib.final_record(row["history"], mode, list(higher), strategy=name, candidate=0,
                                          seed_index=0, seed=0, errored=bool(row["error"]), chance=chance)
        counts = out.setdefault(name, {"trials": 0, "diverged": 0, "collapsed": 0})
        counts["trials"] += 1
        counts["diverged"] += record["status"] in (verdict_lib.DIVERGED, verdict_lib.ERROR)
        counts["collapsed"] += record["status"] == verdict_lib.COLLAPSED
    return out


def final_verdict(spec: SearchSpec, run: RunFolder, records: list[dict[str, Any]],
                  search_rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The verdict of a run: its final records, Delta_m% against the objective's baselines if it has them,
    else against `uniform`; the search's own trials counted per strategy."""
    from tune_mtl.search.plan import sampler_plan

    mode = run.objective["mode"]
    higher, _ = primary_metrics(spec)
    baselines = {k: v for k, v in (spec.objective.get("baselines") or {}).items() if k in higher} or None
    num_samples = spec.search["num_samples"]
    return verdict_lib.compute_verdict(
        records, mode, higher, baselines=baselines,
        search_trials=search_outcomes(search_rows, spec, mode) if search_rows else None,
        num_samples=num_samples, startup_trials=sampler_plan(num_samples, 1).startup)



def verdict_for_run(spec: SearchSpec, run: RunFolder, search_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON-safe verdict of a run (for summary.json / summary.md), or None when it has no final stage
    (skipped, or a multi-objective search: the Pareto front is its answer)."""
    if spec.search["objectives"]:
        return None
    records = load_final_records(spec, run)
    return verdict_lib.verdict_dict(final_verdict(spec, run, records, search_rows)) if records else None
