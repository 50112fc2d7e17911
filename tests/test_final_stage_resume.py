"""The final stage stopped and resumed, through `launch.py` in subprocesses as a user runs it: Ctrl-C (a real
SIGINT) while the final trials run stops the search resumable (exit 130, the resume command, no verdict yet); a
SIGKILL of the resumed driver (and its local Ray) during the final stage loses nothing; the last resume ends
with exactly strategies x top_k x seeds final trials, each at its last epoch, those finished before the kill
kept byte for byte (not re-run), and the verdict an uninterrupted final stage gives: every final trial is
re-trained here, without Ray, from the search's best configuration and its final seed (an independent
reference), and the verdict computed from those records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.launch_env import ctrl_c_when, finish_search, kill_when, start_new_search, start_search
from tune_mtl.core.keys import OBJECTIVE, SCORE, TEST_OBJECTIVE, TRACKING, TRIAL_NAME
from tune_mtl.reporting.verdict import compute_verdict, verdict_dict

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray

EPOCHS, SEEDS = 4, 2
STRATEGIES = ["uniform", "random"]
# Small batches: a few hundred steps per epoch, so that a signal lands while final trials run.
SPACE = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 3000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 4, "epochs": EPOCHS},
    "strategies": STRATEGIES,
    "search": {"num_samples": 2, "scheduler": "fifo", "seed": 4, "max_concurrent_trials": 2,
               "final": {"seeds": SEEDS}},
}
EXPECTED = sorted(f"final-{s}-c0-s{i}" for s in STRATEGIES for i in range(SEEDS))


def final_epochs(run: Path) -> dict[str, int]:
    """Result rows written so far per final trial folder."""
    return {result.parent.name: len([line for line in result.read_text().splitlines() if line.strip()])
            for result in (run / "final").glob("*/result.json")}


def one_finished_one_running(run: Path) -> bool:
    done = final_epochs(run)
    return any(n >= EPOCHS for n in done.values()) and any(1 <= n < EPOCHS for n in done.values())


def best_search_configs(run: Path) -> dict[str, dict]:
    """Each strategy's best search trial, read from the trials' own result files (not the summary)."""
    best: dict[str, tuple[float, dict]] = {}
    for folder in (run / "trials").iterdir():
        if not (folder / "result.json").is_file():
            continue
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        config = json.loads((folder / "params.json").read_text())
        strategy, score = config["strategy"]["name"], rows[-1][SCORE]
        if strategy not in best or score < best[strategy][0]:
            best[strategy] = (score, config)
    return {s: config for s, (_, config) in best.items()}


def retrained_here(config: dict) -> tuple[float, dict[str, float], float]:
    """(validation objective, test task metrics, test objective) at the best validation epoch, trained in this
    process without Ray."""
    from tune_mtl.training.trainer import Trainer

    trainer = Trainer({k: v for k, v in config.items() if k not in (TRACKING, TRIAL_NAME)})
    epochs = [trainer.run_epoch() for _ in range(EPOCHS)]
    best = min(epochs, key=lambda m: m[OBJECTIVE])  # the first of equals, as early stopping keeps it
    tasks = {f"task{t}/mse": best[f"test/task{t}/mse"] for t in range(2)}
    return best[OBJECTIVE], tasks, best[TEST_OBJECTIVE]


def test_final_stage_interrupted_then_killed_then_resumed(tmp_path):
    run, first = start_new_search(SPACE, tmp_path)
    out, err = ctrl_c_when(first, lambda: max(final_epochs(run).values(), default=0) >= 1,
                           "a final trial's first epoch")
    assert first.returncode == 130, out[-2000:] + err[-3000:]
    assert f"launch.py search --resume {run}" in err and "Traceback" not in err, err[-3000:]
    assert "Verdict" not in out, "no verdict from a final stage that did not finish"
    stopped_at = final_epochs(run)
    assert sum(stopped_at.values()) < len(EXPECTED) * EPOCHS, "stopped before the end"

    resume = ["--resume", str(run), "--quiet"]
    # Kill the resumed driver and its Ray mid-final-stage, once it has made progress of its own.
    kill_when(start_search(resume, tmp_path), lambda: one_finished_one_running(run)
              and sum(final_epochs(run).values()) > sum(stopped_at.values()),
              "a final trial finished and another running after the resume")
    finished = {name: (run / "final" / name / "result.json").read_text()
                for name, n in final_epochs(run).items() if n >= EPOCHS}
    assert finished and len(finished) < len(EXPECTED)

    third = finish_search(resume, tmp_path)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "Verdict" in third.stdout

    # Exactly the expected final trials: none lost, none doubled, each at its last epoch.
    folders = sorted(p.name for p in (run / "final").iterdir() if p.is_dir())
    assert folders == EXPECTED, "the same final trials, no duplicates"
    for name, text in finished.items():  # finished before the kill: kept as it was, not re-run
        assert (run / "final" / name / "result.json").read_text() == text, name
    best = best_search_configs(run)
    seeds = {}
    for name in EXPECTED:
        rows = [json.loads(line) for line in (run / "final" / name / "result.json").read_text().splitlines()]
        assert rows[-1]["epoch"] == EPOCHS and {r["epoch"] for r in rows} == set(range(1, EPOCHS + 1)), name
        params = json.loads((run / "final" / name / "params.json").read_text())
        strategy = params["strategy"]["name"]
        seeds[name] = params["seed"]
        expected_config = {k: v for k, v in best[strategy].items() if k not in ("seed", TRIAL_NAME)}
        assert {k: v for k, v in params.items() if k not in ("seed", TRIAL_NAME)} == expected_config, name
    assert len(set(seeds.values())) == SEEDS and all(
        seeds[f"final-uniform-c0-s{i}"] == seeds[f"final-random-c0-s{i}"] for i in range(SEEDS)), "paired seeds"

    # The verdict an uninterrupted final stage gives: each final trial re-trained here from its configuration.
    records = []
    for name in EXPECTED:
        strategy, index = name.split("-")[1], int(name.rsplit("-s", 1)[1])
        val, tasks, test = retrained_here({**best[strategy], "seed": seeds[name]})
        records.append({"strategy": strategy, "candidate": 0, "seed_index": index, "seed": seeds[name],
                        "status": "ok", "val_objective": val, "objective": test, "metrics": tasks})
    reference = verdict_dict(compute_verdict(records, "min", {"task0/mse": False, "task1/mse": False}))
    verdict = json.loads((run / "summary.json").read_text())["verdict"]
    assert verdict["ranking"] == reference["ranking"] and verdict["best"] == reference["best"]
    for strategy in STRATEGIES:
        got, want = verdict["strategies"][strategy], reference["strategies"][strategy]
        assert got["objective"]["n"] == SEEDS and got["seeds"] == SEEDS
        for key in ("mean", "low", "high"):
            assert got["objective"][key] == pytest.approx(want["objective"][key], rel=1e-4), (strategy, key)
            assert got["delta_m"][key] == pytest.approx(want["delta_m"][key], rel=1e-4, abs=1e-6), (strategy, key)
        assert got["vs_best"] == want["vs_best"]
        p = want.get("p_holm")
        assert (got.get("p_holm") is None) == (p is None or (isinstance(p, float) and math.isnan(p)))
