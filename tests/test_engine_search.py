"""One real search through the new engine (Ray Tune + Optuna, toy data, 2 CPUs): strategies side by side in one
experiment, equal budgets, one score per trial everywhere, the cross-links, and a driver that never builds
the data set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from tune_mtl import data
from tune_mtl.cli import main
from tune_mtl.core.keys import AT_SCORE, OBJECTIVE, SCORE, SCORE_EPOCH, TEST_OBJECTIVE

pytestmark = pytest.mark.ray

SPACE = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 300},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": {"choice": [8, 16]}},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 3.0e-1]}},
    "training": {"batch_size": 32, "epochs": 3},
    "strategies": ["uniform", "random"],
    "search": {"num_samples": 3, "scheduler": "fifo", "seed": 7, "final": {"seeds": 0}},
}


def rows(trial: Path) -> list[dict]:
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]


def test_one_experiment_one_score_everywhere(tmp_path, ray_session, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the search driver built the data set")

    monkeypatch.setattr(data, "build", refuse)  # the driver's copy only: trials run in Ray's worker processes
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(SPACE))
    assert main(["search", "--config", str(config), "--storage-path", str(tmp_path), "--name", "run", "--quiet",
                 "--wandb-mode", "disabled"]) == 0
    out = capsys.readouterr().out
    assert "this is a random search of 3 trials" in out, "a budget below TPE's start-up is said up front"
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    trials = sorted(p.name for p in (run / "trials").iterdir() if p.is_dir())
    assert trials == ["random-1", "random-2", "random-3", "uniform-1", "uniform-2", "uniform-3"], "one experiment"

    storage = f"sqlite:///{run / 'optuna.db'}"
    studies = {s: optuna.load_study(study_name=s, storage=storage) for s in ("uniform", "random")}
    for strategy, study in studies.items():
        assert len(study.trials) == 3 == summary["strategies"][strategy]["trials"], "equal budgets"
        assert study.metric_names == ["best val mse of task0"]
        for trial in study.trials:
            name = trial.user_attrs["trial_name"]
            history = rows(run / "trials" / name)
            assert trial.user_attrs["tune_trial_id"] == history[-1]["trial_id"]
            assert trial.user_attrs["trial_folder"] == str(run / "trials" / name)
            assert trial.user_attrs["wandb_run"] == f"run/{name}"
            # The score against its definition, recomputed from the per-epoch history.
            best = min(history, key=lambda r: r[OBJECTIVE])
            last = history[-1]
            assert last[SCORE] == best[OBJECTIVE] and last[SCORE_EPOCH] == best["epoch"]
            assert last[AT_SCORE + TEST_OBJECTIVE] == best[TEST_OBJECTIVE]
            assert last[AT_SCORE + "val/task1/mse"] == best["val/task1/mse"]
            # Optuna, the summary and the trial agree on one number.
            assert trial.value == last[SCORE] == summary["strategies"][strategy]["scores"][name]
            assert trial.user_attrs["score_epoch"] == last[SCORE_EPOCH]
            checkpoint = max((run / "trials" / name).glob("checkpoint_*"))
            saved = json.loads((checkpoint / "score.json").read_text())
            assert saved["epoch"] == last[SCORE_EPOCH] and saved["value"] == last[SCORE]
            assert set(torch.load(checkpoint / "scored_model.pt")) == \
                set(torch.load(checkpoint / "trainer.pt", weights_only=False)["model"])
        best = summary["strategies"][strategy]["best"]
        assert best["val"] == min(t.value for t in study.trials) == study.best_value
        assert best["trial"] == study.best_trial.user_attrs["trial_name"]

    # Side by side: the first trials of both strategies were handed out before either finished, and ran in
    # different worker processes.
    first = {s: next(t for t in studies[s].trials if t.user_attrs["trial_name"] == f"{s}-1") for s in studies}
    assert first["random"].datetime_start < first["uniform"].datetime_complete
    assert first["uniform"].datetime_start < first["random"].datetime_complete
    assert rows(run / "trials" / "uniform-1")[0]["pid"] != rows(run / "trials" / "random-1")[0]["pid"]
    assert not math.isnan(summary["strategies"]["uniform"]["best"]["test"])
