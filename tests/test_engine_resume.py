"""A search stopped and resumed, through `launch.py` in subprocesses as a user runs it: Ctrl-C (a real SIGINT)
stops it resumable with exit 130 and the resume command; a SIGKILL of the driver (and its local Ray) during
the resumed run loses nothing (an epoch reported after Tune's last snapshot runs again, to the same values); the
last resume finishes with every trial at its last epoch and exactly one COMPLETE Optuna trial per Tune trial
(none RUNNING, none lost, none doubled)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.launch_env import ctrl_c_when, finish_search, kill_when, launch_env, start_new_search, start_search

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray

# Epochs long enough (a few hundred steps) that a signal lands while trials run.
SPACE = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 6000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 16, "epochs": 4},
    "strategies": ["uniform", "random"],
    "search": {"num_samples": 2, "scheduler": "fifo", "seed": 4, "max_concurrent_trials": 2, "final": {"seeds": 0}},
}
STOP_WITHIN_S = 120  # a bound for the test not to hang, not a timing assertion


def epochs_reported(run: Path) -> dict[str, int]:
    out = {}
    for result in (run / "trials").glob("*/result.json"):
        out[result.parent.name] = len([line for line in result.read_text().splitlines() if line.strip()])
    return out


def test_ctrl_c_then_driver_kill_then_resume_loses_nothing(tmp_path):
    run, first = start_new_search(SPACE, tmp_path)
    _, err = ctrl_c_when(first, lambda: max(epochs_reported(run).values(), default=0) >= 2, "a trial's second epoch")
    assert first.returncode == 130, err[-3000:]
    assert f"launch.py search --resume {run}" in err and "Traceback" not in err, err[-3000:]
    stopped_at = epochs_reported(run)
    assert sum(stopped_at.values()) < 4 * 4, "stopped before the end"

    resume = ["--resume", str(run), "--quiet"]
    # Kill the resumed driver (and its Ray) once it has made progress of its own.
    kill_when(start_search(resume, tmp_path),
              lambda: sum(epochs_reported(run).values()) >= sum(stopped_at.values()) + 2, "progress after the resume")
    crashed = subprocess.run([sys.executable, "launch.py", "report", str(run)], cwd=ROOT, env=launch_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
    assert crashed.returncode == 0 and "| uniform |" in crashed.stdout, "report works on a crashed run"
    results = {path.parent.name: path.read_text() for path in (run / "trials").glob("*/result.json")}
    finished = {name: text for name, text in results.items()
                if text.strip() and json.loads(text.splitlines()[-1])["epoch"] == 4}

    third = finish_search(resume, tmp_path)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    trials = sorted(p.name for p in (run / "trials").iterdir() if p.is_dir())
    assert trials == ["random-1", "random-2", "uniform-1", "uniform-2"], "the same trials, no duplicates"
    continued = False
    for name in trials:
        rows = [json.loads(line) for line in (run / "trials" / name / "result.json").read_text().splitlines()]
        assert rows[-1]["epoch"] == 4 and {r["epoch"] for r in rows} == {1, 2, 3, 4}, name
        continued |= any(r["iterations_since_restore"] == 1 and r["epoch"] > 1 for r in rows)
    assert continued, "an interrupted trial continued from its checkpoint"
    for name, text in finished.items():
        # A trial finished before the kill keeps its results. The epochs it reported after Tune's last experiment
        # snapshot (one every EXPERIMENT_SNAPSHOT_S) run again from its checkpoint, which restores every RNG, so
        # they reproduce the values they had; the report reads one row per epoch.
        now = (run / "trials" / name / "result.json").read_text()
        assert now.startswith(text), name
        before = {row["epoch"]: row for row in map(json.loads, text.splitlines())}
        for again in map(json.loads, now[len(text):].splitlines()):
            assert again["iterations_since_restore"] <= again["epoch"] - 1, f"{name} re-ran from its checkpoint"
            for key in ("val/objective", "test/objective", "score"):
                assert again[key] == pytest.approx(before[again["epoch"]][key], rel=1e-9, abs=0), (name, key)

    storage = f"sqlite:///{run / 'optuna.db'}"
    summary = json.loads((run / "summary.json").read_text())["strategies"]
    for strategy in ("uniform", "random"):
        study = optuna.load_study(study_name=strategy, storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], "one per Tune trial, none RUNNING"
        assert sorted(t.user_attrs["trial_name"] for t in study.trials) == [f"{strategy}-1", f"{strategy}-2"]
        configs = {n: json.loads((run / "trials" / n / "params.json").read_text()) for n in trials
                   if n.startswith(strategy)}
        for trial in study.trials:
            name = trial.user_attrs["trial_name"]
            assert trial.params["optimizer/lr"] == configs[name]["optimizer"]["lr"]
            assert trial.value == summary[strategy]["scores"][name]
        assert summary[strategy]["trials"] == 2 and not summary[strategy]["unfinished"]
