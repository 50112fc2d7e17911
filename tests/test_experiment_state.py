"""Tune's experiment state cut short by a full disk does not stop a resume: every snapshot keeps a complete copy
(written beside and renamed over), and a resume puts it back over a state file that no longer parses."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import optuna
import pytest

from tests.launch_env import finish_search, kill_when, start_new_search
from tune_mtl.search.experiment_state import (
    STATE_GLOB,
    copy_of,
    keep_complete_copy,
    put_back_complete_states,
    state_file,
)

STATE = {"trial_data": ["a trial"], "runner_data": {"x": 1}, "stats": {"start_time": 1.0}}


def write_state(folder: Path, session: str, text: str) -> Path:
    path = state_file(folder, session)
    path.write_text(text)
    return path


def test_a_snapshot_keeps_a_complete_copy_that_tune_does_not_read_as_a_state(tmp_path):
    state = write_state(tmp_path, "s1", json.dumps(STATE))
    keep_complete_copy(tmp_path, "s1")
    assert json.loads(copy_of(state).read_text()) == STATE
    assert not fnmatch.fnmatch(copy_of(state).name, STATE_GLOB), "Tune would take the copy for a session's state"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([state.name, copy_of(state).name]), "no leftovers"


def test_a_copy_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path):
    state = write_state(tmp_path, "s1", json.dumps(STATE))
    keep_complete_copy(tmp_path, "s1")
    state.unlink()  # the next copy fails (as on a full disk): nothing half-written replaces the good one
    keep_complete_copy(tmp_path, "s1")
    assert json.loads(copy_of(state).read_text()) == STATE
    assert sorted(p.name for p in tmp_path.iterdir()) == [copy_of(state).name]


def test_a_resume_puts_the_copy_back_over_a_cut_state_only(tmp_path):
    whole = json.dumps(STATE)
    cut = write_state(tmp_path, "s1", whole)
    keep_complete_copy(tmp_path, "s1")
    cut.write_text(whole[: len(whole) // 2])  # the disk filled up during Tune's next write
    fine = write_state(tmp_path, "s2", json.dumps({**STATE, "stats": {"start_time": 2.0}}))
    keep_complete_copy(tmp_path, "s2")
    fine.write_text(json.dumps({**STATE, "stats": {"start_time": 3.0}}))  # newer than its copy, and whole

    assert put_back_complete_states(tmp_path) == [cut.name]
    assert json.loads(cut.read_text()) == STATE
    assert json.loads(fine.read_text())["stats"]["start_time"] == 3.0, "a state that parses is left as it is"


SPACE = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 6000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 16, "epochs": 3},
    "strategies": ["uniform"],
    "search": {"num_samples": 3, "scheduler": "fifo", "seed": 4, "max_concurrent_trials": 1, "final": {"seeds": 0}},
}


def finished_trials(run: Path) -> dict[str, str]:
    out = {}
    for result in (run / "trials").glob("*/result.json"):
        if len([line for line in result.read_text().splitlines() if line.strip()]) == 3:
            out[result.parent.name] = result.read_text()
    return out


@pytest.mark.ray
def test_a_search_killed_with_its_state_cut_short_resumes_and_loses_nothing(tmp_path):
    run, driver = start_new_search(SPACE, tmp_path)
    kill_when(driver, lambda: len(finished_trials(run)) >= 1 and copy_of_exists(run), "a finished trial")
    finished = finished_trials(run)
    [state] = (run / "trials").glob(STATE_GLOB)
    text = state.read_text()
    state.write_text(text[: len(text) // 2])  # as a full disk leaves it

    resumed = finish_search(["--resume", str(run), "--quiet"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Tune's {state.name} was cut short" in resumed.stdout
    assert sorted(finished_trials(run)) == ["uniform-1", "uniform-2", "uniform-3"]
    for name, result in finished.items():  # finished before the kill: kept as it was, not trained again
        assert finished_trials(run)[name] == result, name
    study = optuna.load_study(study_name="uniform", storage=f"sqlite:///{run / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def copy_of_exists(run: Path) -> bool:
    return any((run / "trials").glob(".complete-experiment_state-*.json"))
