"""Search results -> the per-strategy summary (best configuration, its score and test objective at the scored
epoch, failed trials; the Pareto front of a multi-objective search) as a printed table, `summary.json` and
`summary.md`.

One score per trial: a trial's score is keys.SCORE of its last result (its best validation objective; the
trainable reports it every epoch, with every metric of that epoch under keys.AT_SCORE). It is the number its
Optuna trial was told and the one Tune's best trial uses; a failed (diverged or errored) trial has none.

Everything is read back from the run folder (Tune's experiment snapshots and each trial's `result.json`),
not from the driver's memory, so `launch.py report RUN_DIR` gives the same summary after a crash.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from tune_mtl.core.keys import (
    AT_SCORE,
    DIVERGED,
    FAILURE_REASON,
    OBJECTIVE,
    SCORE,
    SCORE_EPOCH,
    TEST_OBJECTIVE,
    TRIAL_NAME,
)
from tune_mtl.reporting.own_ranges import disclosure_lines, saved_own_ranges
from tune_mtl.reporting.pareto import front
from tune_mtl.storage.run_folder import RunFolder, is_url

UNFINISHED = ("PENDING", "RUNNING", "PAUSED")
# Ray's warning for trials that have no result yet (e.g. a stopped search's trials that never started): the
# summary lists them as unfinished, so the warning only alarms.
UNSTARTED_TRIALS_LINE = "Failed to fetch metrics for"
PARETO_AT = "last epoch (the values each trial reported last: what the multi-objective study was told)"


class _Without(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


@contextmanager
def hide_log_lines(logger_name: str, needle: str) -> Iterator[None]:
    """Drop one logger's records that contain `needle`, for the duration of the block."""
    hidden = _Without(needle)
    logger = logging.getLogger(logger_name)
    logger.addFilter(hidden)
    try:
        yield
    finally:
        logger.removeFilter(hidden)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flagged(value: Any) -> bool:
    # A pandas row holds NaN where a result lacked the key, and numpy's bool where it had it.
    return isinstance(value, (bool, np.bool_)) and bool(value)


def trial_score(row: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's score, its epoch and the metrics then (from its last result); None if failed or unscored."""
    last = row["history"][-1] if row["history"] else {}
    if row["error"] or not _finite(last.get(SCORE)):
        return None
    metrics = {k[len(AT_SCORE):]: v for k, v in last.items() if isinstance(k, str) and k.startswith(AT_SCORE)}
    return {"val": last[SCORE], "test": metrics.get(TEST_OBJECTIVE), "epoch": int(last.get(SCORE_EPOCH, 0)),
            "metrics": metrics}


def _error_reason(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # Ray wraps the trial's exception; its last non-empty line names the real cause.
    return lines[-1] if lines else "error"


def _read_error(trial: Any) -> str:  # a ray.tune Trial
    """The last line of the trial's error.txt, read from its storage (a folder or a URL: no Ray needed)."""
    import pyarrow.fs

    name = trial.run_metadata.error_filename or "error.txt"
    try:
        fs, folder = pyarrow.fs.FileSystem.from_uri(trial.path) if is_url(trial.path) else \
            (pyarrow.fs.LocalFileSystem(), trial.path)
        with fs.open_input_stream(f"{folder}/{name}") as stream:
            return _error_reason(stream.read().decode(errors="replace"))
    except (OSError, pyarrow.ArrowException):
        return "error (no error file)"


def _epoch_of(row: Mapping[str, Any]) -> float | None:
    for key in ("epoch", "training_iteration"):
        if _finite(row.get(key)):
            return float(row[key])
    return None  # a row without either (none of ours): kept, after the numbered ones


def one_row_per_epoch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trial's history with one row per epoch, in epoch order, the latest row of each kept.

    A resumed trial restarts from the newest checkpoint that Tune's last experiment snapshot recorded (one every
    `search.experiment.EXPERIMENT_SNAPSHOT_S` seconds), so the epochs it reported after that snapshot (its last
    one too, if it finished just before a crash) run again and append to its result file; the re-run rows are
    the ones its continuation built on."""
    latest: dict[float, dict[str, Any]] = {}
    unnumbered = []
    for row in history:
        epoch = _epoch_of(row)
        if epoch is None:
            unnumbered.append(row)
        else:
            latest[epoch] = row
    return [latest[epoch] for epoch in sorted(latest)] + unnumbered


def load_trials(experiment_path: str) -> list[dict[str, Any]]:
    """One row per Tune trial of an experiment: config, per-epoch history, status and failure reason."""
    from ray.tune import ExperimentAnalysis, Tuner

    if not Tuner.can_restore(experiment_path):
        return []
    with hide_log_lines("ray.tune.analysis.experiment_analysis", UNSTARTED_TRIALS_LINE):
        analysis = ExperimentAnalysis(experiment_path)
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        frame = frames.get(trial.trial_id, frames.get(str(trial.path)))  # keyed by id in Ray 2.60
        history = one_row_per_epoch(frame.to_dict("records")) if frame is not None and len(frame) else []
        last = history[-1] if history else {}
        if trial.status == "ERROR":
            error = _read_error(trial)
        elif _flagged(last.get(DIVERGED)):
            error = str(last.get(FAILURE_REASON))
        else:
            error = ""
        name = trial.config.get(TRIAL_NAME) or trial.trial_id
        rows.append({"trial_id": trial.trial_id, "name": name, "path": trial.path, "config": trial.config,
                     "status": trial.status, "history": history, "error": error})
    return rows


def _curve(history: list[dict[str, Any]]) -> dict[str, list[Any]]:
    rows = [r for r in history if _finite(r.get(OBJECTIVE))]
    return {"epoch": [int(r.get("epoch", r.get("training_iteration", 0))) for r in rows],
            "val": [r[OBJECTIVE] for r in rows], "test": [r.get(TEST_OBJECTIVE) for r in rows]}


def strategy_summary(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    best = None
    scores: dict[str, float | None] = {}
    for row in rows:
        score = trial_score(row)
        scores[row["name"]] = score["val"] if score else None
        if score is None:
            continue
        if best is None or (score["val"] < best["val"] if mode == "min" else score["val"] > best["val"]):
            best = {**score, "trial_id": row["trial_id"], "trial": row["name"], "config": row["config"],
                    "curve": _curve(row["history"])}  # curve: for the learning-curve plot
    failed = [{"trial_id": r["trial_id"], "trial": r["name"], "reason": r["error"]} for r in rows if r["error"]]
    unfinished = [r["name"] for r in rows if r["status"] in UNFINISHED]
    return {"best": best, "trials": len(rows), "failed": failed, "unfinished": unfinished, "scores": scores}


def pareto_front(rows: list[dict[str, Any]], objectives: list[dict[str, Any]]) -> dict[str, Any]:
    keys, modes = [o["key"] for o in objectives], [o["mode"] for o in objectives]
    candidates = [(r, r["history"][-1]) for r in rows if r["history"] and not r["error"]]
    candidates = [(r, last) for r, last in candidates if all(_finite(last.get(k)) for k in keys)]
    points = [[last[k] for k in keys] for _, last in candidates]
    on_front = sorted(front(points, modes), key=lambda i: points[i])
    return {
        "at": PARETO_AT,
        "trials": [
            {"strategy": candidates[i][0]["config"]["strategy"]["name"], "trial_id": candidates[i][0]["name"],
             "epoch": int(candidates[i][1].get("epoch", 0)), "values": dict(zip(keys, points[i], strict=True)),
             "config": candidates[i][0]["config"]}
            for i in on_front
        ],
        "dominated": [dict(zip(keys, p, strict=True)) for i, p in enumerate(points) if i not in on_front],
    }


def summarise_run(run: RunFolder, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a run from its trials (`load_trials` of its experiment, read once by the caller)."""
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_strategy.setdefault(row["config"]["strategy"]["name"], []).append(row)
    objective = {k: v for k, v in run.objective.items() if k != "objectives"}
    summary: dict[str, Any] = {
        "run_dir": run.local,
        "tune_storage": run.tune_storage,
        "objective": {"key": OBJECTIVE, "score": SCORE, **objective},
        "strategies": {name: strategy_summary(group, objective["mode"]) for name, group in by_strategy.items()},
        "optuna_storage": run.optuna_display_url(),
        "studies": run.studies,
        "wandb": {"mode": run.wandb_mode, "dir": str(run.path / "wandb"), "project": run.wandb_project},
    }
    own = saved_own_ranges(run.path)  # fair-tuning disclosure: strategies that searched their own ranges
    if own:
        summary["own_ranges"] = own
    if run.objective.get("objectives"):
        summary["objectives"] = run.objective["objectives"]
        summary["pareto_front"] = pareto_front(rows, run.objective["objectives"])
    return summary


# -- formatting --------------------------------------------------------------------------------------
def _short_config(config: dict[str, Any]) -> str:
    parts = []
    for section in ("optimizer", "model", "training", "strategy"):
        for key, value in (config.get(section) or {}).items():
            if key == "name":
                if section == "optimizer":
                    parts.append(f"optimizer={value}")
                continue
            if isinstance(value, float):
                value = f"{value:.3g}"
            parts.append(f"{key}={value}")
    return " ".join(parts)


def format_table(summary: dict[str, Any]) -> str:
    mode = summary["objective"]["mode"]
    head = (f"| strategy | best trial | score: best val objective ({mode}) | test objective | epoch | trials | "
            "failed | best configuration |")
    lines = [head, "|" + "---|" * 8]
    ranked = sorted(
        summary["strategies"].items(),
        key=lambda kv: (kv[1]["best"] is None,
                        (kv[1]["best"] or {}).get("val", 0) * (1 if mode == "min" else -1)),
    )
    for name, s in ranked:
        best = s["best"]
        if best is None:
            lines.append(f"| {name} | - | - | - | - | {s['trials']} | {len(s['failed'])} | (no trial scored) |")
            continue
        test = "-" if not _finite(best["test"]) else f"{best['test']:.5g}"
        lines.append(
            f"| {name} | {best.get('trial', best['trial_id'])} | {best['val']:.5g} | {test} | {best['epoch']} | "
            f"{s['trials']} | {len(s['failed'])} | "
            f"{_short_config(best['config'])} |"
        )
    if summary.get("own_ranges"):
        lines.append("\nOwn ranges (per_strategy in the search space):")
        lines += [f"- {line}" for line in disclosure_lines(summary["own_ranges"])]
    failures = [(n, f) for n, s in summary["strategies"].items() for f in s["failed"]]
    if failures:
        lines.append("\nFailed trials:")
        lines += [f"- {name} {f.get('trial', f['trial_id'])}: {f['reason']}" for name, f in failures]
    unfinished = [(n, t) for n, s in summary["strategies"].items() for t in s.get("unfinished", [])]
    if unfinished:
        lines.append(f"\nUnfinished trials ({len(unfinished)}; finish them with launch.py search --resume "
                     f"{summary['run_dir']}): " + ", ".join(f"{n} {t}" for n, t in unfinished))
    if "pareto_front" in summary:
        lines += ["", format_pareto(summary)]
    return "\n".join(lines)


def format_pareto(summary: dict[str, Any]) -> str:
    objectives = summary["objectives"]
    names = [f"{o['task']}/{o['metric']} ({o['mode']})" for o in objectives]
    lines = [f"Pareto front over {', '.join(names)}, at each trial's {summary['pareto_front']['at']}:",
             "| strategy | trial | epoch | " + " | ".join(names) + " | configuration |",
             "|" + "---|" * (len(names) + 4)]
    for point in summary["pareto_front"]["trials"]:
        values = " | ".join(f"{point['values'][o['key']]:.5g}" for o in objectives)
        lines.append(f"| {point['strategy']} | {point['trial_id']} | {point['epoch']} | {values} | "
                     f"{_short_config(point['config'])} |")
    return "\n".join(lines)


def format_locations(summary: dict[str, Any]) -> str:
    run = summary["run_dir"]
    results = summary.get("tune_storage", run)
    wandb = summary["wandb"]
    sync = (f" (browse offline: wandb leet {wandb['dir']}; upload later: wandb sync {wandb['dir']}/offline-run-*)"
            if wandb["mode"] == "offline" else "")
    lines = [
        f"results (Ray Tune, TensorBoard files): {results}   tensorboard --logdir {results}",
        f"summary: {run}/summary.md, {run}/summary.json   plots: launch.py report {run}",
        f"dashboards (TensorBoard + Optuna, Ctrl-C stops them): launch.py dashboard {run}",
    ]
    if summary.get("studies"):
        storage = summary["optuna_storage"]
        lines.append(f"Optuna study: {storage}   optuna-dashboard {storage}")
    lines.append(f"W&B runs ({wandb['mode']}, project {wandb['project']}): {wandb['dir']}{sync}")
    return "\n".join(lines)


def format_verdict(summary: dict[str, Any]) -> str:
    """The final stage's verdict table (reporting/verdict.py), or nothing when the run has none."""
    from tune_mtl.reporting.verdict import verdict_markdown

    verdict = summary.get("verdict")
    if not verdict:
        return ""
    o = summary["objective"]
    return ("Verdict (each strategy's best configuration re-trained over fresh seeds):\n"
            + verdict_markdown(verdict, objective_label=f"test {o['metric']} of {o['task']}") + "\n\n")


def write_summary(summary: dict[str, Any], run: RunFolder) -> None:
    files = {
        "summary.json": json.dumps(summary, indent=2, default=str),
        "summary.md": format_table(summary) + "\n\n" + format_verdict(summary) + format_locations(summary) + "\n",
    }
    for name, text in files.items():
        (run.path / name).write_text(text)
    if is_url(run.tune_storage):  # next to the trial results on the shared storage as well
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(run.tune_storage)
        for name, text in files.items():
            with fs.open_output_stream(f"{root}/{name}") as out:
                out.write(text.encode())
