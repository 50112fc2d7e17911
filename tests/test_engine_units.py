"""The search engine's parts without a Ray cluster: the searcher over the studies (equal budgets, naming,
links, resume), the per-strategy scheduler, TPE's start-up plan and the pairing of start-up draws, and the
data sets' task declarations (what the driver checks instead of building the data)."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_mtl import data
from tune_mtl.core.keys import DIVERGED, SCORE, SCORE_EPOCH, TRIAL_NAME
from tune_mtl.search.categorical_space import StrategyChoiceSpace, StrategySpace, paired_draws
from tune_mtl.search.plan import paired, paired_draws_seed, sampler_plan, sampler_seed
from tune_mtl.search.schedulers import PerStrategyScheduler, SchedulerRecipe
from tune_mtl.search.searcher import Objectives, StudySearcher, StudySetup
from tune_mtl.search.spec import load_spec

TINY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": {"choice": [8, 16, 32]}},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
    "training": {"batch_size": 32, "epochs": 2},
    "strategies": ["uniform", "cagrad", "random"],
}


def spec_of(tmp_path, **search):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, "search": {"seed": 3, **search}}))
    return load_spec(path)


def searcher_for(spec, storage, budget=3, categorical=False, startup=10):
    if categorical:
        setups = [StudySetup("categorical", "categorical", StrategyChoiceSpace(spec), budget, 0, startup, False)]
    else:
        enqueued = paired_draws(spec, min(startup, budget), paired_draws_seed(spec)) if paired(spec) else ()
        setups = [StudySetup(s, s, StrategySpace(spec, s), budget, sampler_seed(spec, s), startup, False, enqueued)
                  for s in spec.strategies]
    return StudySearcher(setups, storage, Objectives([SCORE], ["min"], ["best val mse"]), "/runs/x/trials", "x")


def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


# -- the searcher --------------------------------------------------------------------------------------
def test_studies_are_served_in_turn_with_equal_budgets_and_named_trials(tmp_path):
    spec = spec_of(tmp_path)
    searcher = searcher_for(spec, storage_url(tmp_path), budget=3)
    configs = [searcher.suggest(f"t{i}") for i in range(9)]
    assert searcher.suggest("t9") is searcher.FINISHED
    assert [c["strategy"]["name"] for c in configs] == ["uniform", "cagrad", "random"] * 3
    assert [c[TRIAL_NAME] for c in configs[:3]] == ["uniform-1", "cagrad-1", "random-1"]
    assert configs[-1][TRIAL_NAME] == "random-3"
    assert {"alpha", "rescale"} <= set(configs[1]["strategy"]) and set(configs[0]["strategy"]) == {"name"}
    for i in range(len(configs)):
        searcher.on_trial_complete(f"t{i}", {SCORE: float(i), SCORE_EPOCH: 2})
    for strategy in spec.strategies:
        study = optuna.load_study(study_name=strategy, storage=storage_url(tmp_path))
        assert len(study.trials) == 3 and all(t.state.name == "COMPLETE" for t in study.trials)
        assert study.metric_names == ["best val mse"]
        attrs = study.trials[0].user_attrs
        assert attrs["trial_name"] == f"{strategy}-1" and attrs["trial_folder"] == f"/runs/x/trials/{strategy}-1"
        assert attrs["wandb_run"] == f"x/{strategy}-1" and attrs["score_epoch"] == 2
        assert attrs["tune_trial_id"] == f"t{spec.strategies.index(strategy)}"
    assert optuna.load_study(study_name="random", storage=storage_url(tmp_path)).trials[2].value == 8.0


def test_no_study_repeats_a_configuration_while_its_start_up_is_still_running(tmp_path):
    # Concurrent trials: TPE asks for trial 4 before the 3 enqueued start-up trials have finished, so it draws
    # at random from its own seed; that draw must not be the first enqueued configuration again.
    spec = spec_of(tmp_path)
    searcher = searcher_for(spec, storage_url(tmp_path), budget=6, startup=3)
    configs = [searcher.suggest(f"t{i}") for i in range(18)]
    for strategy in spec.strategies:
        own = [c for c in configs if c["strategy"]["name"] == strategy]
        lrs = [c["optimizer"]["lr"] for c in own]
        assert len(set(lrs)) == len(lrs), f"{strategy} repeats a configuration: {lrs}"


def test_diverged_errored_and_twice_told_trials(tmp_path):
    spec = spec_of(tmp_path, strategy_mode="categorical")
    searcher = searcher_for(spec, storage_url(tmp_path), budget=4, categorical=True)
    for i in range(4):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {SCORE: math.nan, DIVERGED: True})
    searcher.on_trial_complete("t1", None, error=True)
    searcher.on_trial_complete("t2", {SCORE: 0.5, SCORE_EPOCH: 1})
    searcher.on_trial_complete("t2", {SCORE: 0.1, SCORE_EPOCH: 1})  # Tune never does; a restart might
    searcher.on_trial_complete("t3", {SCORE: math.nan})  # no finite score: FAIL, never left RUNNING
    trials = optuna.load_study(study_name="categorical", storage=storage_url(tmp_path)).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "FAIL"]
    assert trials[2].value == 0.5


def test_asked_but_unsnapshotted_trials_are_handed_out_again_after_a_restore(tmp_path):
    """A driver killed after Optuna's ask but before Tune's snapshot: the orphan is reused, not lost or doubled."""
    spec = spec_of(tmp_path, paired_startup=False)
    searcher = searcher_for(spec, storage_url(tmp_path), budget=2)
    first = [searcher.suggest(f"t{i}") for i in range(3)]  # uniform-1, cagrad-1, random-1
    searcher.save(str(tmp_path / "state.pkl"))  # Tune's snapshot: these three exist
    lost = [searcher.suggest(f"t{i}") for i in (3, 4)]  # uniform-2, cagrad-2: asked, then the driver dies

    restarted = searcher_for(spec, storage_url(tmp_path), budget=2)
    restarted.restore(str(tmp_path / "state.pkl"))
    again = [restarted.suggest(f"n{i}") for i in range(3)]
    assert restarted.suggest("n3") is restarted.FINISHED
    assert [c[TRIAL_NAME] for c in again] == ["uniform-2", "cagrad-2", "random-2"]
    assert again[:2] == lost, "the orphans' stored values come back"
    for i, trial_id in enumerate(["t0", "t1", "t2"]):
        restarted.on_trial_complete(trial_id, {SCORE: 1.0 + i})
    for i in range(3):
        restarted.on_trial_complete(f"n{i}", {SCORE: 2.0 + i})
    for strategy in spec.strategies:
        trials = optuna.load_study(study_name=strategy, storage=storage_url(tmp_path)).trials
        assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials), strategy
    assert first[0]["optimizer"]["lr"] != again[0]["optimizer"]["lr"]


def test_an_unreadable_searcher_state_is_rebuilt_from_the_studies(tmp_path):
    """A state file cut short by a full disk (0 bytes): the budget spent, the names given and which Tune trial
    owns which Optuna trial come back from the studies' own records; enqueued start-up trials not yet asked for
    (WAITING) are not counted as spent."""
    spec = spec_of(tmp_path)  # paired: 3 start-up configurations enqueued per study
    searcher = searcher_for(spec, storage_url(tmp_path), budget=3, startup=3)
    for i in range(6):  # two trials per strategy
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {SCORE: 1.0})
    (tmp_path / "state.pkl").write_bytes(b"")

    restarted = searcher_for(spec, storage_url(tmp_path), budget=3, startup=3)
    restarted.restore(str(tmp_path / "state.pkl"))
    assert restarted.budget_left() == {s: 1 for s in spec.strategies}
    restarted.on_trial_complete("t3", {SCORE: 2.0})  # uniform-2, owned by Tune trial t3 before the restart
    uniform = optuna.load_study(study_name="uniform", storage=storage_url(tmp_path)).trials
    assert [t.state.name for t in uniform[:2]] == ["COMPLETE", "COMPLETE"]
    assert [restarted.suggest(f"n{i}")[TRIAL_NAME] for i in range(3)] == ["uniform-3", "cagrad-3", "random-3"]
    assert restarted.suggest("n3") is restarted.FINISHED


def test_the_searcher_state_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import pickle

    searcher = searcher_for(spec_of(tmp_path), storage_url(tmp_path), budget=2)
    searcher.suggest("t0")
    path = tmp_path / "state.pkl"
    searcher.save(str(path))
    good = path.read_bytes()
    searcher.suggest("t1")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pickle, "dump", disk_full)
    with pytest.raises(OSError):
        searcher.save(str(path))
    assert path.read_bytes() == good  # the last complete state survives a failed save


# -- TPE start-up and pairing ----------------------------------------------------------------------------
@pytest.mark.parametrize(("trials", "startup", "random_only"),
                         [(1, 1, True), (3, 3, True), (4, 3, False), (8, 3, False), (30, 8, False), (100, 10, False)])
def test_startup_is_sized_from_the_budget(trials, startup, random_only):
    plan = sampler_plan(trials, concurrency=1)
    assert (plan.startup, plan.random_only, plan.constant_liar) == (startup, random_only, False)
    assert ("this is a random search of" in plan.describe()) == random_only
    assert sampler_plan(trials, concurrency=4).constant_liar


def test_the_sampler_is_multivariate_with_the_planned_startup_and_liar():
    sampler = StudySetup("uniform", "uniform", None, 8, 5, 3, True).sampler()
    assert sampler._n_startup_trials == 3 and sampler._multivariate and sampler._constant_liar


@pytest.mark.parametrize("paired", [True, False])
def test_paired_startup_gives_strategies_the_same_start(tmp_path, paired):
    spec = spec_of(tmp_path, paired_startup=paired)
    searcher = searcher_for(spec, storage_url(tmp_path), budget=3)
    configs = [searcher.suggest(f"t{i}") for i in range(9)]
    shared = [[(c["optimizer"]["lr"], c["model"]["shared_width"]) for c in configs[i::3]] for i in range(3)]
    # cagrad's extra knobs do not shift its shared draws: paired means the same start for every strategy.
    assert (shared[0] == shared[1] == shared[2]) == paired
    assert len({sampler_seed(spec, s) for s in spec.strategies}) == (1 if paired else 3)


# -- early stopping per strategy -------------------------------------------------------------------------
class FakeTrial:
    def __init__(self, trial_id: str, strategy: str) -> None:
        self.trial_id, self.config, self.status = trial_id, {"strategy": {"name": strategy}}, "RUNNING"


class FakeController:
    def __init__(self, trials) -> None:
        self.trials = trials

    def get_trials(self):
        return self.trials


def rung_decisions(scheduler) -> list[str]:
    """Fast strategy 'a' fills the first rung with good values, then slow strategy 'b' reaches it."""
    fast = [FakeTrial(f"a{i}", "a") for i in range(4)]
    slow = [FakeTrial(f"b{i}", "b") for i in range(4)]
    controller = FakeController(fast + slow)
    for trial in fast + slow:
        scheduler.on_trial_add(controller, trial)
    for i, trial in enumerate(fast):
        scheduler.on_trial_result(controller, trial, {"training_iteration": 1, SCORE: 0.10 + 0.01 * i})
    return [scheduler.on_trial_result(controller, t, {"training_iteration": 1, SCORE: 1.0 + 0.1 * i})
            for i, t in enumerate(slow)]


def test_asha_compares_a_trial_only_with_its_own_strategy():
    recipe = SchedulerRecipe("asha", SCORE, "min", max_t=4, grace_period=1, reduction_factor=2)
    per_strategy = rung_decisions(PerStrategyScheduler(recipe))
    # Within 'b' alone: its first trial sets the rung, the worse ones after it fall below the cut (1/2 kept).
    assert per_strategy[0] == TrialScheduler.CONTINUE and TrialScheduler.STOP in per_strategy[1:]
    # The reference: one ASHA over both strategies stops every slow trial on the fast one's rung values.
    shared = rung_decisions(ASHAScheduler(time_attr="training_iteration", metric=SCORE, mode="min", max_t=4,
                                          grace_period=1, reduction_factor=2))
    assert shared == [TrialScheduler.STOP] * 4
    scheduler = PerStrategyScheduler(recipe)
    rung_decisions(scheduler)
    assert set(scheduler.children) == {"a", "b"}


def test_a_strategy_view_shows_a_child_only_its_trials():
    scheduler = PerStrategyScheduler(SchedulerRecipe("hyperband", SCORE, "min", 4, 1, 2))
    trials = [FakeTrial("a0", "a"), FakeTrial("b0", "b")]
    for t in trials:
        t.status = "PENDING"
    controller = FakeController(trials)
    for t in trials:
        scheduler.on_trial_add(controller, t)
    chosen = {scheduler.choose_trial_to_run(controller).trial_id for _ in range(2)}
    assert chosen == {"a0", "b0"}, "the children take turns"


# -- a head node without the data ------------------------------------------------------------------------
def test_declared_tasks_match_the_built_data_set():
    for name in ("toy_regression", "toy_classification"):
        options = {"num_tasks": 3, "input_dim": 4, "num_samples": 20}
        built = data.build(name, options, seed=0).tasks
        declared = data.declared_tasks(name, options)
        assert [(t.name, t.kind, t.out_dim, t.primary, t.metric_names) for t in declared] == \
               [(t.name, t.kind, t.out_dim, t.primary, t.metric_names) for t in built]


def test_the_driver_resolves_the_objective_without_building_the_data(tmp_path, monkeypatch):
    from tune_mtl.search.plan import resolve_search_objective

    def refuse(*args, **kwargs):
        raise AssertionError("the driver built the data set")

    monkeypatch.setattr(data, "build", refuse)
    objective = resolve_search_objective(spec_of(tmp_path, objectives=["task0/mse", "task1/mae"]))
    assert objective["task"] == "task0" and objective["mode"] == "min"
    assert [o["key"] for o in objective["objectives"]] == ["val/task0/mse", "val/task1/mae"]


# -- the storage a restored searcher reconnects to --------------------------------------------------------
def test_an_unpickled_storage_reconnects_to_the_running_search_s_own(tmp_path):
    # Tune unpickles the searcher (and its storage) when it restores an experiment. A run folder copied since
    # must use its own optuna.db, never the original's; outside a search nothing is redirected.
    import pickle

    from tune_mtl.search.studies import open_storage, searching_with

    original, copy = f"sqlite:///{tmp_path / 'original.db'}", f"sqlite:///{tmp_path / 'copy.db'}"
    pickled = pickle.dumps(open_storage(original))
    with searching_with(copy):
        assert pickle.loads(pickled).url == copy
    assert pickle.loads(pickled).url == original  # the next search in this process is not redirected


def test_the_epoch_limit_reads_the_trial_s_iteration_not_a_count_of_results():
    # Tune's MaximumIterationStopper counted results in its own pickled state: after a resume, results of the
    # killed run counted again and a restarted trial stopped at epoch 3 of 4. The limit reads the result.
    import pickle

    from tune_mtl.search.experiment import EpochLimit

    limit = EpochLimit(4)
    assert not any(limit("t", {"training_iteration": i}) for i in (1, 2, 3))
    restored = pickle.loads(pickle.dumps(limit))
    assert [restored("t", {"training_iteration": i}) for i in (1, 2, 3, 4)] == [False, False, False, True]
