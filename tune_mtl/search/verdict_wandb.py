"""The verdict in W&B: one run per search, next to its trials' runs.

The run: named and `job_type` "verdict", grouped by the search (the run folder's name, like its trials), in
the trials' project and mode (the entity is wandb's default, as for the trials). Its summary holds, per
strategy, `<strategy>/<field>` for every field of `strategy_fields` (rank, mean and 95% interval of the test
objective, seeds, Delta_m% and its interval, the paired test's verdict and Holm p-value, the diverged, errored
and collapsed counts of the final seeds and of the search, every task's primary metric with its interval),
plus the test's name, the ranking and the warnings; the same table is logged as a `wandb.Table` ("verdict").

When: once, by the search's driver, after summary.md/summary.json are written (the verdict is already safe on
disk). Where: in a child process (`python -m tune_mtl.search.verdict_wandb`, the payload on stdin) bounded by
`LOG_TIMEOUT_S`: the driver never imports wandb (its import, its service process, an online upload stay off
the driver), a hang cannot hold the search, and any failure is one warning line, never a failed search.

No duplicates: the run's id is derived from the search (`tracking.run_id(<search>, "verdict")`), so a resumed
search that recomputes the verdict continues the same W&B run and overwrites its summary (the newest table is
the summary's "verdict"); offline, the new run folder replaces the older folders of that id once it is
complete, so `wandb sync runs/<name>/wandb/offline-run-*` uploads one verdict run.

`launch.py report RUN_DIR` does NOT log to W&B: it re-writes the local summary files and may run on a crashed
or still-running search, whose partial verdict must not replace the one the search logs. To log the verdict
again (after a failure to log), run `launch.py search --resume RUN_DIR` on the finished search: it re-trains
nothing, recomputes the verdict and logs it to the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tune_mtl.search import tracking
from tune_mtl.storage.run_folder import RunFolder

RUN_NAME = "verdict"  # the W&B run's name and job type (trials are "<strategy>-<n>", final trials "final-...")
TABLE_KEY = "verdict"
LOG_TIMEOUT_S = 60.0  # the child's whole budget: an online start that fails falls back to offline well within it


# -- the verdict -> W&B values (pure) ---------------------------------------------------------------------
def strategy_fields(row: Mapping[str, Any], metrics: list[str]) -> dict[str, Any]:
    """One strategy's row of the verdict (`reporting.verdict.verdict_dict`) as flat W&B values; None where the
    verdict has no value (one seed: no interval; no reference: no Delta_m%)."""
    objective, delta = row["objective"], row["delta_m"]
    failures, search = row["final_failures"], row["search"]
    fields: dict[str, Any] = {
        "rank": row["rank"],
        "mean": objective["mean"], "ci_low": objective["low"], "ci_high": objective["high"],
        "n": objective["n"], "seeds": row["seeds"],
        "delta_m_pct": delta["mean"], "delta_m_ci_low": delta["low"], "delta_m_ci_high": delta["high"],
        "vs_best": row["vs_best"], "p_holm": row.get("p_holm"),
        "indistinguishable_from_best": row["vs_best"] in ("best", "indistinguishable"),
        "final_diverged": failures.get("diverged", 0), "final_errors": failures.get("error", 0),
        "final_collapsed": failures.get("collapsed", 0),
        "search_trials": search.get("trials"), "search_diverged": search.get("diverged"),
        "search_collapsed": search.get("collapsed"),
    }
    for metric in metrics:
        stats = row["metrics"][metric]
        fields.update({f"{metric}/mean": stats["mean"], f"{metric}/ci_low": stats["low"],
                       f"{metric}/ci_high": stats["high"]})
    return fields


def _order(verdict: Mapping[str, Any]) -> list[str]:
    """Ranked strategies first, then those without a finished seed (as the printed table)."""
    return list(verdict["ranking"]) + [n for n in verdict["strategies"] if n not in verdict["ranking"]]


def _metrics(verdict: Mapping[str, Any]) -> list[str]:
    rows = verdict["strategies"]
    return list(next(iter(rows.values()))["metrics"]) if rows else []


def wandb_summary(verdict: Mapping[str, Any], objective: str) -> dict[str, Any]:
    """The verdict run's summary: `<strategy>/<field>` per strategy and the verdict's own notes."""
    summary: dict[str, Any] = {
        "objective": objective, "mode": verdict["mode"], "test": verdict["test"], "interval": verdict["interval"],
        "best": verdict["best"], "ranking": list(verdict["ranking"]),
        "indistinguishable_from_best": list(verdict["indistinguishable_from_best"]),
        "delta_m_against": verdict["delta_m_against"], "warnings": list(verdict["warnings"]),
    }
    metrics = _metrics(verdict)
    for name in _order(verdict):
        summary.update({f"{name}/{k}": v for k, v in strategy_fields(verdict["strategies"][name], metrics).items()})
    return summary


def wandb_table(verdict: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of the verdict table: a strategy per row, in rank order."""
    metrics = _metrics(verdict)
    rows = [(name, strategy_fields(verdict["strategies"][name], metrics)) for name in _order(verdict)]
    columns = ["strategy", *(rows[0][1] if rows else [])]
    return columns, [[name, *fields.values()] for name, fields in rows]


# -- the driver: hand it to a child process ---------------------------------------------------------------
def payload(run: RunFolder, verdict: Mapping[str, Any], objective: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """What the child needs: where and how to log (the trials' settings), the summary and the table."""
    columns, rows = wandb_table(verdict)
    return {"settings": tracking.trial_settings(run.wandb_mode, run.wandb_project, run.name, run.path),
            "config": dict(config), "summary": wandb_summary(verdict, objective), "columns": columns, "rows": rows}


def child_env() -> dict[str, str]:
    """The driver's environment (W&B's own variables included), with this checkout importable."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def log_verdict(run: RunFolder, verdict: Mapping[str, Any], objective: str, config: Mapping[str, Any],
                timeout: float = LOG_TIMEOUT_S) -> bool:
    """Log the verdict to its W&B run in a child process; False (after one warning line on stderr) when it
    could not, and when W&B is disabled (silently)."""
    if run.wandb_mode == "disabled":
        return False
    try:
        text = json.dumps(payload(run, verdict, objective, config), allow_nan=False)
        done = subprocess.run([sys.executable, "-m", __name__], input=text, capture_output=True, text=True,
                              timeout=timeout, env=child_env(), check=False)
        reason = "" if done.returncode == 0 else last_line(done.stderr) or f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        reason = f"no answer within {timeout:g} s"
    except (OSError, ValueError, TypeError) as err:  # TypeError, ValueError: not JSON (NaN, a numpy value)
        reason = f"{type(err).__name__}: {err}"
    if reason:
        print(f"warning: the verdict was not logged to W&B ({reason}); summary.md and summary.json hold it, and "
              f"`launch.py search --resume {run.path}` logs it again", file=sys.stderr, flush=True)
    return not reason


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- the child: the W&B run ---------------------------------------------------------------------------------
def write_run(given: Mapping[str, Any]) -> Path | None:
    """Open (or continue) the verdict run, set its summary, log the table, close it; offline, the older
    folders of the same run id go once the new one is complete. Returns the offline run folder, if any."""
    import wandb

    settings = given["settings"]
    logger = tracking.trial_logger(settings, RUN_NAME, RUN_NAME, dict(given["config"]))
    if not isinstance(logger, tracking.WandbTrialLogger):
        return None
    run = logger.run
    run.summary.update(given["summary"])
    run.log({TABLE_KEY: wandb.Table(columns=given["columns"], data=given["rows"])})
    folder = Path(run.dir).parent if run.offline else None  # <dir>/wandb/offline-run-<time>-<id>/files
    logger.close()
    if folder is not None:
        for older in folder.parent.glob(f"offline-run-*-{run.id}"):
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)
    return folder


def main() -> int:
    write_run(json.load(sys.stdin))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
