"""End-to-end searches through launch.py: real Ray Tune, Optuna (SQLite) and offline W&B; small and few."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from tests.wandb_files import offline_run
from tune_mtl.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray


def test_launch_search_two_strategies(tmp_path):
    cmd = [sys.executable, "launch.py", "search", "--strategies", "uniform,RLW", "--num-samples", "2",
           "--epochs", "2", "--storage-path", str(tmp_path), "--name", "e2e", "--quiet", "--wandb-mode", "offline"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]  # a clean exit, W&B included
    out = proc.stdout
    run = tmp_path / "e2e"
    table = [line for line in out.splitlines() if line.startswith("| uniform") or line.startswith("| random")]
    assert len(table) == 2, out
    assert "Optuna study: sqlite:///" in out and str(run / "wandb") in out

    summary = json.loads((run / "summary.json").read_text())
    assert summary["objective"] == {"key": "val/objective", "score": "score", "task": "task0", "metric": "mse",
                                    "mode": "min"}
    for strategy in ("uniform", "random"):
        s = summary["strategies"][strategy]
        assert s["trials"] == 2 and not s["failed"]
        assert s["best"]["val"] > 0 and s["best"]["test"] > 0
        assert s["best"]["config"]["strategy"]["name"] == strategy
        trial_dirs = [p for p in (run / "trials").glob(f"{strategy}-*") if p.is_dir()]
        assert len(trial_dirs) == 2
        for trial in trial_dirs:
            results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
            assert 1 <= len(results) <= 2 and "val/task1/mse" in results[-1]
            assert list(trial.glob("events.out.tfevents*")), "TensorBoard files from Tune"
        study = optuna.load_study(study_name=strategy, storage=summary["optuna_storage"])
        assert len(study.trials) == 2
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        assert {"optimizer/lr", "model/shared_width"} <= set(study.trials[0].params)
    # The default final stage: each strategy's best configuration re-trained over 3 fresh seeds, with a verdict.
    assert "Verdict" in out and summary["verdict"]
    final_dirs = [p for p in (run / "final").iterdir() if p.is_dir() and (p / "result.json").exists()]
    assert len(final_dirs) == 6, final_dirs
    runs = [p.name for p in (run / "wandb").glob("offline-run-*")]
    final_runs = [name for name in runs if "-final-" in name]
    verdict_runs = [name for name in runs if "-verdict-" in name]
    # One W&B run per trial, search and final alike, and the verdict's own run (search/verdict_wandb.py).
    assert len(runs) == 11 and len(final_runs) == 6 and len(verdict_runs) == 1, runs
    logged = offline_run(run, pattern="wandb/offline-run-*-verdict-*/run-*.wandb")
    assert (logged["run"].run_group, logged["run"].job_type) == ("e2e", "verdict")
    assert logged["summary"]["ranking"] == summary["verdict"]["ranking"]
    for strategy, row in summary["verdict"]["strategies"].items():
        assert logged["summary"][f"{strategy}/mean"] == pytest.approx(row["objective"]["mean"])
    assert yaml.safe_load((run / "search_space.yaml").read_text())["strategies"] == ["uniform", "random"]


def test_diverging_trial_fails_and_search_finishes(tmp_path, ray_session, capsys):
    config = tmp_path / "diverge.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": "toy_regression", "input_dim": 10},
        "optimizer": {"name": "sgd", "lr": {"choice": [1.0e-3, 10.0]}},  # SGD at lr 10 blows up within steps
        "training": {"epochs": 2, "batch_size": 64},
        "strategies": ["uniform"],
        "search": {"num_samples": 4, "scheduler": "fifo", "seed": 1, "final": {"seeds": 0}},
    }))
    rc = main(["search", "--config", str(config), "--storage-path", str(tmp_path), "--name", "div", "--quiet",
               "--wandb-mode", "disabled"])
    out = capsys.readouterr().out
    assert rc == 0
    summary = json.loads((tmp_path / "div" / "summary.json").read_text())["strategies"]["uniform"]
    lrs = [t.params["optimizer/lr"] for t in optuna.load_study(
        study_name="uniform", storage=f"sqlite:///{tmp_path / 'div' / 'optuna.db'}").trials]
    assert summary["trials"] == 4
    assert len(summary["failed"]) == lrs.count(10.0) >= 1
    assert all("non-finite" in f["reason"] for f in summary["failed"])
    assert summary["best"] is not None and summary["best"]["config"]["optimizer"]["lr"] == 1.0e-3
    assert "Failed trials:" in out and "non-finite" in out
