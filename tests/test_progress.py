"""The search's terminal progress (tune_mtl/search/progress.py): the lines it prints, checked against figures
worked out by hand, on synthetic Tune trials and on a tiny real Tuner (ASHA, a diverged and an errored trial)."""

from __future__ import annotations

import io
import logging
import math
import os
import re

import pytest

from tune_mtl.core.keys import DIVERGED, FAILURE_REASON, SCORE, SCORE_EPOCH, TRIAL_NAME
from tune_mtl.search.progress import (
    LiveOutput,
    PlainOutput,
    QuietTuneLogs,
    SearchProgress,
    TrialView,
    eta_seconds,
    experiment_of,
    format_params,
    progress_callbacks,
    status_line,
    trial_line,
    view_of,
)


def view(name, status="TERMINATED", epochs_run=4, score=None, **kw):
    return TrialView(name=name, experiment=name.rsplit("-", 1)[0], strategy=name.rsplit("-", 1)[0],
                     status=status, epochs_run=epochs_run, score=score, **kw)


# -- pure formatting -------------------------------------------------------------------------------------
def test_eta_counts_finished_trials_as_their_whole_budget():
    # 2 strategies x 2 trials x 4 epochs = 16 trial-epochs. Done: a-1 stopped early after 2 epochs (counts 4,
    # its slot is free), a-2 ran 2 so far; b-1 pending. 6 done in 60 s -> 10 left take 100 s.
    views = [view("a-1", epochs_run=2), view("a-2", "RUNNING", 2), view("b-1", "PENDING", 0)]
    assert eta_seconds(views, {"a": 2, "b": 2}, 4, 60.0) == pytest.approx(100.0)
    assert eta_seconds([view("a-1", "RUNNING", 0)], {"a": 2}, 4, 60.0) is None  # nothing measured yet
    assert eta_seconds([view("a-1"), view("a-2")], {"a": 2}, 4, 60.0) == 0.0


def test_status_line_counts_per_strategy_and_best_by_mode():
    views = [view("a-1", score=0.5), view("a-2", "RUNNING", 2, score=0.2), view("b-1", "ERROR", 1),
             view("b-2", score=0.9)]
    line = status_line(views, {"a": 3, "b": 2, "c": 1}, 4, "min", 125.0)
    assert line.startswith("a 1/3 (1 running) | b 2/2 | c 0/1 | best 0.2 a-2 | 2:05 elapsed, ETA ")
    assert "best 0.9 b-2" in status_line(views, {"a": 3, "b": 2}, 4, "max", 125.0)
    assert "best -" in status_line([view("a-1", "RUNNING", 0)], {"a": 1}, 4, "min", 1.0)


@pytest.mark.parametrize("trial, reason", [
    (view("a-1", epochs_run=4), "completed"),
    (view("a-1", epochs_run=1), "stopped early by ASHA"),
    (view("a-1", epochs_run=2, diverged="loss is nan at epoch 2"), "diverged: loss is nan at epoch 2"),
    (view("a-1", "ERROR", 1, error="ValueError: boom"), "error: ValueError: boom"),
])
def test_trial_line_says_why_it_stopped(trial, reason):
    trial.score, trial.score_epoch = 0.012345678, 1
    trial.params = {"optimizer/lr": 0.001234, "model/width": 64}
    line = trial_line(trial, 4, "ASHA")
    assert line == f"a-1  score 0.012346 (epoch 1)  {trial.epochs_run}/4 epochs  {reason}  lr=0.001234 width=64"


def test_params_keep_their_section_only_when_names_clash():
    assert format_params({"optimizer/lr": 0.1, "strategy/alpha": 0.5}) == "lr=0.1 alpha=0.5"
    assert format_params({"optimizer/beta2": 0.99951}) == "beta2=0.9995"  # not rounded up to 1
    assert format_params({"model/width": 8, "strategy/width": 2}) == "model/width=8 strategy/width=2"


def test_experiment_of_trial_names():
    assert experiment_of("uniform-3", {"uniform": 2, "pcgrad": 2}) == "uniform"
    assert experiment_of("db-mtl-12", {"db-mtl": 2, "pcgrad": 2}) == "db-mtl"
    assert experiment_of("pcgrad-1", {"categorical": 4}) == "categorical"  # one study: every trial counts there


def tune_trial(name, status, result, params):
    from ray.tune.experiment import Trial

    trial = Trial("f", config={TRIAL_NAME: name, "strategy": {"name": name.rsplit("-", 1)[0]}},
                  evaluated_params=params, stub=True)
    trial.set_status(status)
    trial.update_last_result(result)
    return trial


def test_view_of_a_tune_trial():
    trial = tune_trial("pcgrad-7", "TERMINATED",
                       {SCORE: 0.25, SCORE_EPOCH: 2, "training_iteration": 3},
                       {"optimizer/lr": 0.01, TRIAL_NAME: "pcgrad-7", "strategy/name": "pcgrad"})
    got = view_of(trial, {"uniform": 1, "pcgrad": 1})
    assert (got.name, got.experiment, got.status, got.epochs_run, got.score, got.score_epoch) == \
        ("pcgrad-7", "pcgrad", "TERMINATED", 3, 0.25, 2)
    assert got.params == {"optimizer/lr": 0.01}  # bookkeeping keys are not searched values
    failed = tune_trial("pcgrad-8", "TERMINATED", {SCORE: math.nan, DIVERGED: True, FAILURE_REASON: "nan loss",
                                                   "training_iteration": 1}, {})
    got = view_of(failed, {"pcgrad": 2})
    assert got.score is None and got.diverged == "nan loss"


def test_the_final_stage_shows_no_parameters():
    # Its configurations are fixed (every value would print): the trial name says what it is.
    trial = tune_trial("final-uniform-c0-s1", "TERMINATED", {SCORE: 0.5, SCORE_EPOCH: 1, "training_iteration": 1},
                       {"optimizer/lr": 0.01, "seed": 1000001})
    shown = SearchProgress({"final-uniform-c0": 3}, 1, "min", show_params=False).view(trial)
    assert shown.params == {} and shown.experiment == "final-uniform-c0"
    assert SearchProgress({"final-uniform-c0": 3}, 1, "min").view(trial).params  # the search's lines keep them


# -- the outputs -----------------------------------------------------------------------------------------
def drive(reporter, trials, finished):
    """What Tune does: experiment start, a heartbeat, trials completing, the end."""
    reporter.setup(stop=None, num_samples=len(trials), total_num_samples=len(trials))
    reporter.on_step_end(iteration=1, trials=trials)
    for trial in finished:
        reporter.on_trial_complete(iteration=1, trials=trials, trial=trial)
    reporter.on_experiment_end(trials=trials)


def two_trials():
    return [tune_trial("a-1", "TERMINATED", {SCORE: 0.5, SCORE_EPOCH: 1, "training_iteration": 1}, {}),
            tune_trial("a-2", "TERMINATED", {SCORE: 0.25, SCORE_EPOCH: 2, "training_iteration": 2}, {})]


def test_plain_output_prints_whole_lines():
    stream = io.StringIO()
    trials = two_trials()
    drive(SearchProgress({"a": 2}, 2, "min", "ASHA", PlainOutput(stream)), trials, trials)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[search] a 2/2 | best 0.25 a-2 | ")  # the first heartbeat
    assert lines[1] == "a-1  score 0.5 (epoch 1)  1/2 epochs  stopped early by ASHA"
    assert lines[2].startswith("[search] a 2/2")  # a log file gets the status after each finished trial
    assert lines[3] == "a-2  score 0.25 (epoch 2)  2/2 epochs  completed"
    assert lines[4].startswith("[search] a 2/2") and len(lines) == 5  # the end does not repeat it
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_live_output_draws_on_a_terminal():
    from rich.console import Console

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=200)
    trials = two_trials()
    drive(SearchProgress({"a": 2}, 2, "min", "ASHA", LiveOutput(console)), trials, trials)
    text = stream.getvalue()
    assert "a-1  score 0.5 (epoch 1)  1/2 epochs  stopped early by ASHA" in text
    assert "\x1b[" in text  # the live line is redrawn in place
    last = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text.rstrip().splitlines()[-1])
    assert last.startswith("a 2/2 | best 0.25 a-2 | ")  # the last state stays on screen once the live line goes


def test_the_callback_pickles_with_the_experiment():
    """Tune pickles its callbacks into tuner.pkl; a live rich display (locks, a thread) must not go with them."""
    import cloudpickle
    from rich.console import Console

    live = SearchProgress({"a": 2}, 2, "min", "ASHA", LiveOutput(Console(file=io.StringIO(), force_terminal=True)))
    live.setup()
    try:
        copy = cloudpickle.loads(cloudpickle.dumps(live))
    finally:
        live.on_experiment_end(trials=[])
    assert (copy.budget, copy.epochs, copy.mode, copy.scheduler) == ({"a": 2}, 2, "min", "ASHA")
    assert isinstance(copy.output, PlainOutput)  # made again for where it is loaded (pytest: not a terminal)
    assert cloudpickle.loads(cloudpickle.dumps(SearchProgress({"a": 1}, 1, "min"))).output is None  # quiet stays


def test_quiet_and_verbose(monkeypatch):
    from tune_mtl.search.progress import tune_output_env

    for name in ("RAY_AIR_NEW_OUTPUT", "TUNE_PRINT_ALL_TRIAL_ERRORS"):
        monkeypatch.delenv(name, raising=False)
    quiet, = progress_callbacks({"a": 1}, 1, "min", verbose=0)
    assert isinstance(quiet, SearchProgress) and quiet.output is None
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ  # the driver sets Tune's environment around `fit`, not here
    # Tune's legacy reporter (silent at verbose 0) and no traceback per failed trial below -v.
    assert tune_output_env(0) == {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
    assert tune_output_env(2) == {"RAY_AIR_NEW_OUTPUT": "1", "TUNE_PRINT_ALL_TRIAL_ERRORS": "1"}
    assert progress_callbacks({"a": 1}, 1, "min", verbose=2) == []  # -v: Tune's own reporter prints
    default, = progress_callbacks({"a": 1}, 1, "min", verbose=1)
    assert isinstance(default.output, PlainOutput)  # pytest's stdout is not a terminal


def test_tune_log_filter():
    keep = QuietTuneLogs().filter

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune.tune", level, "tune.py", 1, msg, None, None)

    assert not keep(record(logging.INFO, "Wrote the latest version of all result files"))
    assert not keep(record(logging.ERROR, "Trials did not complete: %s"))
    assert keep(record(logging.WARNING, "Experiment has been interrupted, but the most recent state was saved."))
    assert keep(record(logging.ERROR, "Experiment state snapshotting failed:"))


# -- a tiny real Tuner -----------------------------------------------------------------------------------
def run_tiny_tuner(storage: str, verbose: int) -> None:
    """Four trials, one at a time, so that ASHA (grace 1, factor 2) deterministically stops `a-2` at its first
    rung (its 0.9 is worse than the 0.1 of `a-1`, the only value recorded there); `a-3` diverges, `a-4` raises."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    kinds = [("a-1", "ok", 0.1), ("a-2", "ok", 0.9), ("a-3", "diverge", 0.2), ("a-4", "error", 0.3)]

    def trainable(config):  # defined here: Ray's workers cannot import this test module
        from ray import tune as worker_tune

        _, kind, x = config["case"]
        for epoch in range(1, 5):
            if kind == "error":
                raise ValueError("boom in the trainable")
            if kind == "diverge" and epoch == 2:
                worker_tune.report({SCORE: math.nan, DIVERGED: True, FAILURE_REASON: "loss is nan at epoch 2"})
                return
            worker_tune.report({SCORE: x, SCORE_EPOCH: 1, "val/objective": x})

    from tune_mtl.search.experiment import driver_env
    from tune_mtl.search.progress import tune_output_env

    tuner = tune.Tuner(
        trainable,
        param_space={"case": tune.grid_search(kinds),
                     TRIAL_NAME: tune.sample_from(lambda spec: spec.config["case"][0])},
        tune_config=tune.TuneConfig(metric=SCORE, mode="min", max_concurrent_trials=1,
                                    scheduler=ASHAScheduler(time_attr="training_iteration", max_t=4,
                                                            grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(name="tiny", storage_path=storage, verbose=0,  # as the engine runs Tune below -v
                                  callbacks=progress_callbacks({"a": 4}, 4, "min", verbose, "ASHA"),
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )
    with driver_env(tune_output_env(verbose)):  # as the engine runs `fit`
        tuner.fit()


@pytest.mark.ray
def test_real_tuner_lines(ray_session, tmp_path, capsys):
    run_tiny_tuner(str(tmp_path), verbose=1)
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("a-")]
    assert [line.split("  ")[0] for line in lines] == ["a-1", "a-2", "a-3", "a-4"]
    assert lines[0].endswith("4/4 epochs  completed  case=('a-1', 'ok', 0.1)")
    assert "1/4 epochs  stopped early by ASHA" in lines[1]
    assert "diverged: loss is nan at epoch 2" in lines[2]
    assert "error: ValueError: boom in the trainable (traceback: " in lines[3]
    error_file = re.search(r"\(traceback: (\S+error\.txt)\)", lines[3]).group(1)
    assert "boom in the trainable" in open(error_file).read()  # the line points at the real traceback
    assert "Traceback" not in out + err  # and Tune does not print it on the terminal
    assert out.splitlines()[-1].startswith("[search] a 4/4 | best 0.1 a-1 | ")
    # Tune's start-up box and its TensorBoard hint (pointing into Ray's temporary folder) are gone.
    assert "tensorboard --logdir" not in out and "Configuration for experiment" not in out
    assert "Trials did not complete" not in out + err


@pytest.mark.ray
def test_real_tuner_quiet(ray_session, tmp_path, capsys):
    """-q: the same four trials (one of them failing) print nothing at all; the CLI prints the final table."""
    run_tiny_tuner(str(tmp_path), verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err and "Trials did not complete" not in err, (out, err)
