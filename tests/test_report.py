"""`launch.py report RUN_DIR`: the summary re-computed from the run folder, the plots; and no secret (W&B key,
database password) in any file of the run folder or in the output."""

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tune_mtl.cli import main
from tune_mtl.reporting.plots import importances

WANDB_KEY = "secret-xyz"
DB_PASSWORD = "pw-8c1e77"


@pytest.mark.ray
def test_report_and_no_secret_anywhere(tmp_path, ray_session, capfd, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    # SQLite has no passwords; a URI filename takes (and ignores) one, which is all this test needs.
    optuna_url = f"sqlite:///file:{tmp_path / 'study.db'}?mode=rwc&password={DB_PASSWORD}&uri=true"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
        "training": {"batch_size": 32, "epochs": 2},
        "strategies": ["uniform"],
        "search": {"num_samples": 3, "seed": 0, "scheduler": "fifo", "final": {"seeds": 0}},
    }))
    run = tmp_path / "runs" / "secret"
    assert main(["search", "--config", str(config), "--storage-path", str(tmp_path / "runs"), "--name", "secret",
                 "--quiet", "--wandb-mode", "offline", "--optuna-storage", optuna_url,
                 "--objectives", "task0/mse,task1/mse"]) == 0
    searched = json.loads((run / "summary.json").read_text())
    assert searched["optuna_storage"] == optuna_url.replace(DB_PASSWORD, "***")
    assert searched["studies"] == {"uniform": "secret/uniform"}, "a shared database: studies named per run"
    assert list((run / "wandb").glob("offline-run-*"))

    (run / "summary.json").unlink()
    assert main(["report", str(run)]) == 0
    reported = json.loads((run / "summary.json").read_text())
    assert reported == {k: v for k, v in searched.items() if k != "notes"}, "the same summary, from the files"
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert {"trials_per_strategy.png", "learning_curves.png", "pareto_front.png"} <= plots
    # The study URL is masked in the run folder, so importances are skipped there, and say why (below).

    # A resume needs the password again: it is nowhere on disk.
    assert main(["search", "--resume", str(run)]) == 2

    output = capfd.readouterr()
    for secret in (WANDB_KEY, DB_PASSWORD):
        assert secret not in output.out + output.err
        leaks = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "study.db"
                 and secret.encode() in p.read_bytes()]
        assert not leaks, f"{secret} written to {leaks}"
    assert "needs its password" in output.out and "pass it again with --optuna-storage" in output.err


def test_importances_plot_and_skip(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, trials in (("many", 6), ("one", 1)):
        study = optuna.create_study(study_name=name, storage=storage)
        study.optimize(lambda t: t.suggest_float("lr", 0, 1) ** 2 + 0.01 * t.suggest_int("width", 1, 4),
                       n_trials=trials)
    summary = {"optuna_storage": storage, "studies": {"many": "many", "one": "one", "none": "missing"}}
    paths, skipped = importances(summary, tmp_path)
    assert [p.name for p in paths] == ["importance_many.png"] and Path(paths[0]).stat().st_size > 0
    assert any("'one': 1 complete trial(s), needs 2" in s for s in skipped)
    assert any("'none': the study does not exist" in s for s in skipped)


@pytest.mark.ray
def test_storage_url_is_passed_to_tune(tmp_path, ray_session, monkeypatch):
    """A URL --storage-path (s3://... on a cluster; file:// here) goes to Tune as is; the driver's own files
    stay in ./runs/<name>, and the summary is copied next to the trial results."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
        "training": {"batch_size": 32, "epochs": 1}, "strategies": ["uniform"],
        "search": {"num_samples": 2, "scheduler": "fifo", "final": {"seeds": 0}},
    }))
    url = f"file://{tmp_path / 'shared'}"
    assert main(["search", "--config", str(config), "--storage-path", url, "--name", "u", "--quiet",
                 "--wandb-mode", "disabled"]) == 0
    shared, local = tmp_path / "shared" / "u", tmp_path / "runs" / "u"
    assert sorted(p.parent.name for p in (shared / "trials").glob("*/result.json")) == ["uniform-1", "uniform-2"]
    assert (local / "optuna.db").exists() and not (local / "trials").exists()
    assert (shared / "summary.json").read_text() == (local / "summary.json").read_text()
    assert main(["report", str(local)]) == 0  # reads the trial results back through the URL
    assert json.loads((local / "summary.json").read_text())["strategies"]["uniform"]["trials"] == 2


@pytest.mark.ray
def test_an_errored_trial_is_listed_with_its_reason(tmp_path, ray_session):
    from ray import tune

    from tune_mtl.reporting.summary import load_trials, strategy_summary

    def explode(config):
        tune.report({"val/objective": 1.0, "epoch": 1})
        raise ValueError("boom: the strategy exploded")

    tune.Tuner(explode, param_space={"strategy": {"name": "uniform"}},
               run_config=tune.RunConfig(name="e", storage_path=str(tmp_path), verbose=0)).fit()
    rows = load_trials(str(tmp_path / "e"))
    assert [(r["status"], r["error"]) for r in rows] == [("ERROR", "ValueError: boom: the strategy exploded")]
    summary = strategy_summary(rows, "min")
    assert summary["failed"] == [{"trial_id": rows[0]["trial_id"], "trial": rows[0]["name"],
                                  "reason": "ValueError: boom: the strategy exploded"}]


@pytest.mark.ray
def test_epochs_a_resumed_trial_ran_again_count_once_with_the_values_of_the_re_run(tmp_path, ray_session):
    """A trial resumed from a checkpoint older than its last result appends those epochs again."""
    from ray import tune

    from tune_mtl.reporting.summary import load_trials, trial_score

    def rewound(config):
        for epoch, value in ((1, 0.9), (2, 0.8), (3, 0.7), (2, 0.6), (3, 0.5)):
            tune.report({"val/objective": value, "score": value, "epoch": epoch})

    tune.Tuner(rewound, run_config=tune.RunConfig(name="e", storage_path=str(tmp_path), verbose=0)).fit()
    [row] = load_trials(str(tmp_path / "e"))
    assert [(r["epoch"], r["val/objective"]) for r in row["history"]] == [(1, 0.9), (2, 0.6), (3, 0.5)]
    assert trial_score(row)["val"] == 0.5


def test_the_importance_method_named_on_the_plot_is_the_one_optuna_uses(tmp_path):
    from tune_mtl.reporting.plots import IMPORTANCE_METHOD

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 0, 1) ** 2 + 0.1 * t.suggest_int("width", 1, 4), n_trials=20)
    default = optuna.importance.get_param_importances(study)  # what Optuna computes when not told
    named = {"PED-ANOVA": optuna.importance.PedAnovaImportanceEvaluator,
             "fANOVA": optuna.importance.FanovaImportanceEvaluator}[IMPORTANCE_METHOD]
    assert optuna.importance.get_param_importances(study, evaluator=named()) == pytest.approx(default)


def test_verdict_and_search_plots_with_caveats(tmp_path):
    from tune_mtl.reporting.plots import caveats, final_seeds, learning_curves, trials_per_strategy
    from tune_mtl.reporting.verdict import compute_verdict, verdict_dict

    records = [{"strategy": s, "candidate": 0, "seed_index": i, "seed": i, "status": "ok", "val_objective": v,
                "objective": v, "metrics": {"task0/mse": v}} for s, base in (("uniform", 0.3), ("slgrad", 0.1))
               for i, v in enumerate([base, base + 0.01, base - 0.02])]
    verdict = verdict_dict(compute_verdict(records, "min", {"task0/mse": False}, num_samples=4))
    curve = {"epoch": [1, 2, 3], "val": [0.5, 0.3, 0.4], "test": [0.55, 0.35, 0.45]}
    summary = {"objective": {"task": "task0", "metric": "mse", "mode": "min"}, "verdict": verdict,
               "strategies": {s: {"scores": {f"{s}-1": 0.3, f"{s}-2": 0.5, f"{s}-3": None}, "trials": 3,
                                  "failed": [{"trial": f"{s}-3", "reason": "diverged"}],
                                  "best": {"val": 0.3, "epoch": 2, "curve": curve}} for s in ("uniform", "slgrad")}}
    assert any("random search" in c for c in caveats(summary))
    assert caveats({**summary, "verdict": None}) == [
        "one seed per configuration (no final stage): no error bars; re-run with --final-seeds N"]
    own = {"slgrad": {"optimizer.lr": {"own": {"loguniform": [5e-4, 4e-3]}, "shared": {"loguniform": [1e-4, 1e-2]}}}}
    disclosed = caveats({**summary, "own_ranges": own})[-1]  # unequal tuning said on every plot too
    assert disclosed.startswith("slgrad searched its own optimizer.lr loguniform [0.0005, 0.004] (the others: ")
    for plot in (trials_per_strategy, final_seeds, learning_curves):
        path = plot(summary, tmp_path)
        assert path is not None and path.stat().st_size > 0
    assert final_seeds({**summary, "verdict": None}, tmp_path) is None


def test_caveats_are_wrapped_inside_the_figure():
    """Long caveats (the own-range disclosure is ~170 characters) wrap instead of running off the figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from tune_mtl.reporting.plots import _caveat_box, _subplots

    own = {"slgrad": {"optimizer.lr": {"own": {"loguniform": [5e-4, 4e-3]}, "shared": {"loguniform": [1e-4, 1e-2]}}}}
    fig, _ = _subplots((4.5, 4.2))
    assert _caveat_box(fig, {"verdict": None, "own_ranges": own}) > 0
    renderer = FigureCanvasAgg(fig).get_renderer()
    for text in fig.texts:
        box = text.get_window_extent(renderer)
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y0 >= 0 and box.y1 <= fig.bbox.y1
