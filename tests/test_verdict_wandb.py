"""The verdict's W&B run, logged offline by the driver's child process and read back from wandb's own file
format (tests/wandb_files.py): its name, group and job type, its summary per strategy against scipy's Student-t
interval of the raw seed values, its table, one run (one folder) however often a resumed search logs it, and a
failure to log is one warning line, never an exception."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from tests.wandb_files import offline_run
from tune_mtl.reporting.verdict import compute_verdict, verdict_dict
from tune_mtl.search import tracking, verdict_wandb
from tune_mtl.storage.run_folder import new_run

METRICS = {"task0/mse": False, "task1/mse": False}
# Test mse per seed; mgda seed 2 diverged (no value), pcgrad seed 1 collapsed (a bad value that still counts).
VALUES = {"uniform": [1.0, 1.2, 1.1], "pcgrad": [1.6, 1.7, 1.5], "mgda": [0.95, 1.18, None]}


def records(values: dict[str, list[float | None]]) -> list[dict]:
    out = []
    for strategy, per_seed in values.items():
        for index, value in enumerate(per_seed):
            status = "diverged" if value is None else "collapsed" if (strategy, index) == ("pcgrad", 1) else "ok"
            value = math.nan if value is None else value
            out.append({"strategy": strategy, "candidate": 0, "seed_index": index, "seed": 10 + index,
                        "status": status, "val_objective": value, "objective": value,
                        "metrics": {} if math.isnan(value) else {"task0/mse": value, "task1/mse": 2 * value}})
    return out


def verdict_of(values: dict[str, list[float | None]]) -> dict:
    search = {s: {"trials": 4, "diverged": 1 if s == "mgda" else 0, "collapsed": 0} for s in values}
    return verdict_dict(compute_verdict(records(values), "min", METRICS, search_trials=search))


def offline_run_folder(tmp_path, mode: str = "offline"):
    run = new_run(str(tmp_path), "search-7")
    run.wandb_mode = mode
    return run


def test_verdict_run_summary_and_table(tmp_path):
    run = offline_run_folder(tmp_path)
    verdict = verdict_of(VALUES)
    assert verdict_wandb.log_verdict(run, verdict, "test mse of task0", {"final": {"seeds": 3}})

    logged = offline_run(run.path)
    meta = logged["run"]
    assert (meta.display_name, meta.run_group, meta.job_type, meta.project) == ("verdict", "search-7", "verdict",
                                                                                "tune-mtl")
    assert meta.run_id == tracking.run_id("search-7", "verdict")
    summary = logged["summary"]
    assert summary["test"] == "two-sided paired t-test over shared seeds, Holm-corrected, alpha 0.05"
    assert summary["objective"] == "test mse of task0" and summary["ranking"] == ["mgda", "uniform", "pcgrad"]
    for strategy, per_seed in VALUES.items():
        finished = [v for v in per_seed if v is not None]
        low, high = stats.t.interval(0.95, len(finished) - 1, loc=sum(finished) / len(finished),
                                     scale=stats.sem(finished))
        assert summary[f"{strategy}/mean"] == pytest.approx(sum(finished) / len(finished), rel=1e-12)
        assert (summary[f"{strategy}/ci_low"], summary[f"{strategy}/ci_high"]) == pytest.approx((low, high))
        doubled = [2 * v for v in finished]
        assert summary[f"{strategy}/task1/mse/mean"] == pytest.approx(sum(doubled) / len(doubled))
        assert summary[f"{strategy}/n"] == len(finished) and summary[f"{strategy}/seeds"] == 3
        assert summary[f"{strategy}/search_trials"] == 4
    assert [summary[f"{s}/rank"] for s in ("mgda", "uniform", "pcgrad")] == [1, 2, 3]
    assert (summary["mgda/final_diverged"], summary["mgda/search_diverged"]) == (1, 1)
    assert summary["pcgrad/final_collapsed"] == 1 and summary["uniform/final_collapsed"] == 0
    # Delta_m% against uniform's same seed: mgda on seeds 0 and 1 (both tasks move by the same ratio).
    expected = [100 * (m - u) / u for m, u in zip(VALUES["mgda"][:2], VALUES["uniform"][:2], strict=True)]
    assert summary["mgda/delta_m_pct"] == pytest.approx(sum(expected) / 2)
    assert summary["uniform/delta_m_pct"] == pytest.approx(0.0)
    # Paired t-test against the best (mgda), over the seeds both finished, Holm-corrected over 2 comparisons.
    raw = {s: stats.ttest_rel(VALUES[s][:2], VALUES["mgda"][:2]).pvalue for s in ("uniform", "pcgrad")}
    first, second = sorted(raw, key=raw.get)  # Holm's step-down over 2 tests: 2 p(1), then max(that, p(2))
    adjusted = {first: min(1.0, 2 * raw[first])}
    adjusted[second] = min(1.0, max(adjusted[first], raw[second]))
    for strategy in raw:
        assert summary[f"{strategy}/p_holm"] == pytest.approx(adjusted[strategy])
        assert summary[f"{strategy}/indistinguishable_from_best"] == (adjusted[strategy] >= 0.05)
    assert summary["mgda/indistinguishable_from_best"] and summary["mgda/vs_best"] == "best"

    # The table: one row per strategy in rank order, the same values as the summary.
    assert summary["verdict/_type"] == "table-file" and summary["verdict/nrows"] == 3
    folder = next(run.path.glob("wandb/offline-run-*"))
    table = json.loads((folder / "files" / summary["verdict/path"]).read_text())
    assert [row[0] for row in table["data"]] == ["mgda", "uniform", "pcgrad"]
    for row in table["data"]:
        cells = dict(zip(table["columns"], row, strict=True))
        for column in ("rank", "mean", "ci_low", "n", "delta_m_pct", "final_diverged", "task0/mse/ci_high"):
            assert cells[column] == pytest.approx(summary[f"{row[0]}/{column}"]), column


def test_logging_again_replaces_the_run_instead_of_adding_one(tmp_path):
    """A resumed search recomputes the verdict and logs it again: the same run id, one offline folder, the
    newest values."""
    run = offline_run_folder(tmp_path)
    assert verdict_wandb.log_verdict(run, verdict_of(VALUES), "test mse of task0", {})
    changed = {**VALUES, "uniform": [0.5, 0.6, 0.55]}
    assert verdict_wandb.log_verdict(run, verdict_of(changed), "test mse of task0", {})
    folders = list(run.path.glob("wandb/offline-run-*"))
    assert len(folders) == 1 and folders[0].name.endswith(tracking.run_id("search-7", "verdict"))
    summary = offline_run(run.path)["summary"]
    assert summary["uniform/mean"] == pytest.approx(0.55) and summary["ranking"][0] == "uniform"


def test_disabled_logs_nothing(tmp_path, capsys):
    run = offline_run_folder(tmp_path, mode="disabled")
    assert not verdict_wandb.log_verdict(run, verdict_of(VALUES), "test mse of task0", {})
    assert not (run.path / "wandb").exists() and capsys.readouterr().err == ""


@pytest.mark.parametrize("fault", ["child fails", "child hangs", "not JSON"])
def test_a_failure_to_log_is_one_warning_line(tmp_path, capsys, monkeypatch, fault):
    run = offline_run_folder(tmp_path)
    verdict = verdict_of(VALUES)
    timeout = verdict_wandb.LOG_TIMEOUT_S
    if fault == "child fails":
        run.wandb_mode = "no-such-mode"  # wandb.init refuses it in the child
    elif fault == "child hangs":
        timeout = 0.01
    else:
        verdict["strategies"]["uniform"]["objective"]["mean"] = math.nan
    assert not verdict_wandb.log_verdict(run, verdict, "test mse of task0", {}, timeout=timeout)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: the verdict was not logged to W&B (")
    assert f"launch.py search --resume {run.path}" in err and "Traceback" not in err


def test_summary_fields_are_the_table_columns():
    verdict = verdict_of(VALUES)
    columns, rows = verdict_wandb.wandb_table(verdict)
    summary = verdict_wandb.wandb_summary(verdict, "x")
    assert len(rows) == 3 and all(len(row) == len(columns) for row in rows)
    assert {f"{row[0]}/{c}" for row in rows for c in columns[1:]} == {k for k in summary if "/" in k and
                                                                       k.split("/")[0] in VALUES}


def test_the_search_discloses_own_ranges_in_the_verdict_runs_config(tmp_path, monkeypatch):
    """engine.log_verdict passes the fair-tuning disclosure (strategies with `per_strategy:` ranges) on to the
    verdict run's config, as summary.md shows it."""
    from tune_mtl.search import engine
    from tune_mtl.search.spec import load_spec

    sent = {}
    monkeypatch.setattr(verdict_wandb, "log_verdict",
                        lambda run, verdict, objective, config: sent.update(config) or True)
    run = offline_run_folder(tmp_path)
    run.objective = {"task": "task0", "metric": "mse", "mode": "min"}
    own = {"slgrad": {"optimizer.lr": {"own": "loguniform [0.0001, 0.001]", "shared": "loguniform [0.001, 0.1]"}}}
    engine.log_verdict(load_spec("search_spaces/toy.yaml"), run, verdict_of(VALUES), own)
    assert sent["own_ranges"] == own
