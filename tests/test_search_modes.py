"""Searches beyond one study per strategy: multi-objective (Pareto front), the strategy as a categorical
choice with conditional knobs, HyperBand and PBT. Tiny toy searches on the session's shared Ray instance."""

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from ray import tune

from tune_mtl.cli import main
from tune_mtl.reporting.pareto import dominates
from tune_mtl.search.trainable import CHECKPOINT_FILE, load_checkpoint

TINY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": {"choice": [8, 16]}},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
    "training": {"batch_size": 32, "epochs": 2},
}


def search(tmp_path: Path, name: str, strategies: list, search_section: dict, *args: str) -> dict:
    config = tmp_path / f"{name}.yaml"
    config.write_text(yaml.safe_dump({**TINY, "strategies": strategies, "search": search_section}))
    rc = main(["search", "--config", str(config), "--storage-path", str(tmp_path), "--name", name, "--quiet",
               "--final-seeds", "0", "--wandb-mode", "disabled", *args])
    assert rc == 0
    return json.loads((tmp_path / name / "summary.json").read_text())


def last_rows(run: Path, strategy: str) -> list[dict]:
    folders = (run / "trials").glob(f"{strategy}-*")
    return [json.loads((d / "result.json").read_text().splitlines()[-1]) for d in folders]


@pytest.mark.ray
def test_multi_objective_search_reports_the_pareto_front(tmp_path, ray_session, capsys):
    summary = search(tmp_path, "mo", ["uniform"], {"num_samples": 4, "seed": 2}, "--objectives", "task0/mse,task1/mse")
    out = capsys.readouterr().out
    assert "asha compares trials on one metric" in out and "Pareto front over task0/mse (min), task1/mse (min)" in out

    keys = ["val/task0/mse", "val/task1/mse"]
    points = [[row[k] for k in keys] for row in last_rows(tmp_path / "mo", "uniform")]
    assert len(points) == 4 and all(row["epoch"] == 2 for row in last_rows(tmp_path / "mo", "uniform")), "FIFO"
    front = [[p["values"][k] for k in keys] for p in summary["pareto_front"]["trials"]]
    assert front and len(front) + len(summary["pareto_front"]["dominated"]) == 4
    assert not any(dominates(q, p, ["min", "min"]) for p in front for q in points)
    assert all(any(dominates(f, p, ["min", "min"]) for f in front) for p in points if p not in front)

    study = optuna.load_study(study_name="uniform", storage=summary["optuna_storage"])
    assert len(study.directions) == 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert sorted(t.values for t in study.trials) == sorted(points)


@pytest.mark.ray
def test_categorical_strategy_with_conditional_knobs_under_hyperband(tmp_path, ray_session):
    summary = search(tmp_path, "cat", ["uniform", "cagrad"],
                     # num_samples is per strategy: the one categorical study gets 2 x 3 trials.
                     {"num_samples": 3, "seed": 5, "scheduler": "hyperband", "max_concurrent_trials": 1},
                     "--strategy-mode", "categorical")
    study = optuna.load_study(study_name="categorical", storage=summary["optuna_storage"])
    assert len(study.trials) == 6
    configs = [json.loads((d / "params.json").read_text()) for d in (tmp_path / "cat" / "trials").iterdir()
               if d.is_dir()]
    assert len(configs) == 6
    for trial in study.trials:
        chosen = trial.params["strategy/name"]
        knobs = {k for k in trial.params if k.startswith("cagrad/")}
        assert knobs == ({"cagrad/alpha", "cagrad/rescale"} if chosen == "cagrad" else set())
    for config in configs:
        strategy = config["strategy"]
        if strategy["name"] == "cagrad":
            assert 0.1 <= strategy["alpha"] <= 0.9 and strategy["rescale"] in (0, 1, 2)
        else:
            assert set(strategy) == {"name"}
    names = {c["strategy"]["name"] for c in configs}
    assert set(summary["strategies"]) == names and sum(s["trials"] for s in summary["strategies"].values()) == 6


@pytest.mark.ray
def test_pbt_runs_without_optuna_and_is_set_up_to_mutate_the_learning_rate(tmp_path, ray_session, capsys):
    from ray.tune.schedulers import PopulationBasedTraining

    from tune_mtl.core.keys import SCORE
    from tune_mtl.search.engine import make_searcher
    from tune_mtl.search.schedulers import PerStrategyScheduler, make_scheduler
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import open_run

    summary = search(tmp_path, "pbt", ["uniform"], {"num_samples": 2, "seed": 1, "scheduler": "pbt",
                                                    "grace_period": 1})
    assert "PBT: the initial population is drawn at random by Tune (no Optuna study)" in capsys.readouterr().out
    assert summary["studies"] == {} and summary["strategies"]["uniform"]["trials"] == 2
    assert not (tmp_path / "pbt" / "optuna.db").exists()
    spec = load_spec(tmp_path / "pbt" / "search_space.yaml")
    per_strategy = make_scheduler(spec, SCORE, "min")
    assert isinstance(per_strategy, PerStrategyScheduler) and set(per_strategy.children) <= {"uniform"}
    scheduler = per_strategy.recipe.make()
    assert isinstance(scheduler, PopulationBasedTraining) and scheduler._perturbation_interval == 1
    mutations = scheduler._hyperparam_mutations
    assert set(mutations) == {"optimizer"} and "lr" in mutations["optimizer"]
    assert make_searcher(spec, open_run(tmp_path / "pbt"), None, 1) is None


def test_pbt_needs_a_learning_rate_range(tmp_path, capsys):
    config = tmp_path / "fixed_lr.yaml"
    config.write_text(yaml.safe_dump({**TINY, "optimizer": {"name": "adam", "lr": 0.01}}))
    assert main(["search", "--config", str(config), "--scheduler", "pbt", "--storage-path", str(tmp_path)]) == 2
    assert "'optimizer.lr' must be a" in capsys.readouterr().err


def test_a_search_space_without_ranges_is_refused(tmp_path, capsys):
    config = tmp_path / "fixed.yaml"
    config.write_text(yaml.safe_dump({"dataset": {"name": "toy_regression", "input_dim": 10},
                                      "strategies": ["uniform"]}))
    assert main(["search", "--config", str(config), "--storage-path", str(tmp_path)]) == 2
    assert "nothing to search for 'uniform'" in capsys.readouterr().err


def test_restored_trial_takes_the_learning_rate_of_its_new_config(tmp_path):
    """PBT hands a trial another trial's checkpoint with a perturbed lr: the config's lr must win."""
    from tune_mtl.training.trainer import Trainer

    config = {"dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 50},
              "optimizer": {"name": "adam", "lr": 0.01}, "training": {"epochs": 1}}
    trainer = Trainer(config)
    trainer.run_epoch()
    torch.save(trainer.state_dict(), tmp_path / CHECKPOINT_FILE)
    mutated = Trainer({**config, "optimizer": {"name": "adam", "lr": 0.05}})
    load_checkpoint(mutated, tune.Checkpoint.from_directory(str(tmp_path)))
    assert mutated.epoch == 1 and {g["lr"] for g in mutated.optimizer.param_groups} == {0.05}
