"""The final evaluation stage on a tiny toy search, called directly: one Tuner re-trains each strategy's
configuration over fresh, shared seeds; each record is the test value at the validation-selected epoch, checked
against the same configuration trained in this process by the Trainer (no Ray)."""

from __future__ import annotations

import math

import pytest
import yaml

from tune_mtl.core.keys import OBJECTIVE, TEST_OBJECTIVE
from tune_mtl.reporting.verdict import compute_verdict, verdict_markdown
from tune_mtl.search.final_stage import FinalOptions, final_seeds, final_verdict, load_final_records, run_final_stage
from tune_mtl.search.spec import load_spec
from tune_mtl.storage.run_folder import new_run

EPOCHS = 3


def tiny_spec(tmp_path, **search):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
        "training": {"batch_size": 32, "epochs": EPOCHS},
        "strategies": ["uniform", "pcgrad"],
        "search": {"num_samples": 2, "seed": 4, **search},
    }))
    return load_spec(config)


def trial_config(strategy: str, lr: float) -> dict:
    return {"dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 200},
            "model": {"name": "mlp"}, "optimizer": {"name": "adam", "lr": lr},
            "training": {"batch_size": 32, "epochs": EPOCHS}, "objective": {}, "strategy": {"name": strategy},
            "seed": 4}


def trained_here(config: dict, seed: int) -> tuple[float, float]:
    """(validation, test) objective at the best validation epoch, trained in this process."""
    from tune_mtl.training.trainer import Trainer

    trainer = Trainer({**config, "seed": seed})
    epochs = [trainer.run_epoch() for _ in range(EPOCHS)]
    best = min(epochs, key=lambda m: m[OBJECTIVE])
    return best[OBJECTIVE], best[TEST_OBJECTIVE]


def test_final_seeds_are_shared_fresh_and_depend_on_the_search_seed():
    assert final_seeds(4, 3) == final_seeds(4, 3)
    assert len(set(final_seeds(4, 3))) == 3 and 4 not in final_seeds(4, 3)
    assert set(final_seeds(4, 3)).isdisjoint(final_seeds(5, 3))


def test_final_seeds_key_and_cli_override(tmp_path):
    assert tiny_spec(tmp_path).search["final"] == {"seeds": 3, "top_k": 1}
    assert tiny_spec(tmp_path, final={"seeds": 5}).search["final"]["seeds"] == 5
    assert FinalOptions.from_spec(tiny_spec(tmp_path, final={"seeds": 0})).seeds == 0


@pytest.mark.ray
def test_final_stage_retrains_over_shared_seeds(tmp_path, ray_session):
    spec = tiny_spec(tmp_path, final={"seeds": 2})
    run = new_run(str(tmp_path / "runs"), "final")
    run.objective = {"task": "task0", "metric": "mse", "mode": "min"}
    best = {"uniform": [trial_config("uniform", 0.01)], "pcgrad": [trial_config("pcgrad", 0.02)]}
    records = run_final_stage(spec, run, best)
    assert [(r["strategy"], r["seed_index"]) for r in records] == [
        ("pcgrad", 0), ("pcgrad", 1), ("uniform", 0), ("uniform", 1)]
    seeds = final_seeds(4, 2)
    assert all(r["seed"] == seeds[r["seed_index"]] for r in records), "seed index i: the same seed everywhere"
    assert all(r["status"] == "ok" for r in records)
    # Independent reference: the same configuration and seed trained here, without Ray.
    for record in records:
        lr = 0.01 if record["strategy"] == "uniform" else 0.02
        val, test = trained_here(trial_config(record["strategy"], lr), record["seed"])
        assert record["val_objective"] == pytest.approx(val, rel=1e-5)
        assert record["objective"] == pytest.approx(test, rel=1e-5)
    # Read back from the run folder (what `launch.py report` does): the same records; not re-run.
    assert load_final_records(spec, run) == records
    assert run_final_stage(spec, run, best) == records
    verdict = final_verdict(spec, run, records)
    assert set(verdict["ranking"]) == {"uniform", "pcgrad"}
    assert verdict["delta_m_against"] == "uniform"
    assert "paired t-test" in verdict_markdown(verdict)
    assert run_final_stage(spec, run, best, FinalOptions(seeds=0)) == []


def test_verdict_of_no_records_is_empty():
    verdict = compute_verdict([], "min", {"task0/mse": False})
    assert verdict["ranking"] == [] and verdict["best"] is None and not math.isnan(len(verdict["warnings"]))
