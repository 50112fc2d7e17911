"""Search results -> the per-strategy summary (best configuration, its validation and test objective at the
best validation epoch, failed trials) as a printed table, `summary.json` and `summary.md`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

OBJECTIVE = "val/objective"
TEST_OBJECTIVE = "test/objective"


def _best_epoch(history: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    rows = [r for r in history if isinstance(r.get(OBJECTIVE), (int, float)) and math.isfinite(r[OBJECTIVE])]
    if not rows:
        return None
    pick = min if mode == "min" else max
    return pick(rows, key=lambda r: r[OBJECTIVE])


def _error_reason(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).strip().splitlines()
    # Ray wraps the trial's exception; its last non-empty line names the real cause.
    return next((line.strip() for line in reversed(text) if line.strip()), type(error).__name__)


def trial_rows(result_grid) -> list[dict[str, Any]]:
    rows = []
    for result in result_grid:
        frame = result.metrics_dataframe
        history = frame.to_dict("records") if frame is not None else []
        rows.append(
            {
                "trial_id": (result.metrics or {}).get("trial_id") or Path(result.path).name,
                "path": result.path,
                "config": result.config,
                "history": history,
                "error": _error_reason(result.error),
            }
        )
    return rows


def strategy_summary(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    best = None
    for row in rows:
        epoch = _best_epoch(row["history"], mode)
        if epoch is None:
            continue
        better = best is None or (epoch[OBJECTIVE] < best["val"] if mode == "min" else epoch[OBJECTIVE] > best["val"])
        if better:
            best = {
                "val": epoch[OBJECTIVE],
                "test": epoch.get(TEST_OBJECTIVE),
                "epoch": int(epoch.get("epoch", epoch.get("training_iteration", 0))),
                "trial_id": row["trial_id"],
                "config": row["config"],
                "metrics": {k: v for k, v in epoch.items() if isinstance(k, str) and k.startswith(("val/", "test/"))},
            }
    failed = [{"trial_id": r["trial_id"], "reason": r["error"]} for r in rows if r["error"]]
    return {"best": best, "trials": len(rows), "failed": failed}


def summarise(results: dict[str, Any], objective: dict[str, Any], folder: Path, options) -> dict[str, Any]:
    """`objective`: {"task", "metric", "mode"} of what the search optimised."""
    from tune_mtl.search import optuna_storage_url

    mode = objective["mode"]
    return {
        "run_dir": str(folder),
        "objective": {"key": OBJECTIVE, **objective},
        "strategies": {name: strategy_summary(trial_rows(grid), mode) for name, grid in results.items()},
        "optuna_storage": optuna_storage_url(folder),
        "wandb": {"mode": options.resolved_wandb_mode(), "dir": str(folder / "wandb"), "project": options.wandb_project},
    }


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
    head = f"| strategy | best val objective ({mode}) | test objective | epoch | trials | failed | best configuration |"
    lines = [head, "|" + "---|" * 7]
    ranked = sorted(
        summary["strategies"].items(),
        key=lambda kv: (kv[1]["best"] is None,
                        (kv[1]["best"] or {}).get("val", 0) * (1 if mode == "min" else -1)),
    )
    for name, s in ranked:
        best = s["best"]
        if best is None:
            lines.append(f"| {name} | - | - | - | {s['trials']} | {len(s['failed'])} | (no trial finished an epoch) |")
            continue
        test = "-" if best["test"] is None else f"{best['test']:.5g}"
        lines.append(
            f"| {name} | {best['val']:.5g} | {test} | {best['epoch']} | {s['trials']} | {len(s['failed'])} | "
            f"{_short_config(best['config'])} |"
        )
    failures = [(n, f) for n, s in summary["strategies"].items() for f in s["failed"]]
    if failures:
        lines.append("\nFailed trials:")
        lines += [f"- {name} {f['trial_id']}: {f['reason']}" for name, f in failures]
    return "\n".join(lines)


def format_locations(summary: dict[str, Any]) -> str:
    run = summary["run_dir"]
    wandb = summary["wandb"]
    sync = f" (upload later: wandb sync {wandb['dir']}/offline-run-*)" if wandb["mode"] == "offline" else ""
    return "\n".join(
        [
            f"results (Ray Tune, TensorBoard files): {run}   tensorboard --logdir {run}",
            f"summary: {run}/summary.md, {run}/summary.json",
            f"Optuna study: {summary['optuna_storage']}   optuna-dashboard {summary['optuna_storage']}",
            f"W&B runs ({wandb['mode']}, project {wandb['project']}): {wandb['dir']}{sync}",
        ]
    )


def write_summary(summary: dict[str, Any], folder: Path) -> None:
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (folder / "summary.md").write_text(format_table(summary) + "\n\n" + format_locations(summary) + "\n")
