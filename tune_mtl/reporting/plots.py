"""PNG plots of a run (matplotlib, Agg: no display needed): written by `launch.py report RUN_DIR` into
RUN_DIR/plots/. Works from the summary (itself read back from the run folder) and the Optuna studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from tune_mtl.storage.run_folder import RunFolder  # noqa: E402
from tune_mtl.storage.secrets import is_masked  # noqa: E402

MIN_TRIALS_FOR_IMPORTANCE = 2


def _objective_label(summary: dict[str, Any]) -> str:
    o = summary["objective"]
    return f"validation {o['metric']} of {o['task']} ({o['mode']})"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_per_strategy(summary: dict[str, Any], folder: Path) -> Path | None:
    done = [(name, s["best"]) for name, s in summary["strategies"].items() if s["best"]]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(done)), 3.5))
    ax.bar([n for n, _ in done], [b["val"] for _, b in done])
    ax.set_ylabel(_objective_label(summary))
    ax.set_title("best trial per strategy")
    ax.tick_params(axis="x", rotation=30)
    return _save(fig, folder / "best_per_strategy.png")


def learning_curves(summary: dict[str, Any], folder: Path) -> Path | None:
    done = [(name, s["best"]["curve"]) for name, s in summary["strategies"].items() if s["best"]]
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, curve in done:
        ax.plot(curve["epoch"], curve["val"], marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_objective_label(summary))
    ax.set_title("learning curves of the best trials")
    ax.legend()
    return _save(fig, folder / "learning_curves.png")


def pareto(summary: dict[str, Any], folder: Path) -> Path | None:
    if "pareto_front" not in summary:
        return None
    x, y = (o["key"] for o in summary["objectives"][:2])  # the first two objectives
    fig, ax = plt.subplots(figsize=(4.5, 4))
    others = summary["pareto_front"]["dominated"]
    ax.scatter([p[x] for p in others], [p[y] for p in others], color="lightgrey", label="dominated")
    points = sorted((p["values"][x], p["values"][y]) for p in summary["pareto_front"]["trials"])
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="C3", label="Pareto front")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title("Pareto front (last epoch)")
    ax.legend()
    return _save(fig, folder / "pareto_front.png")


def importances(summary: dict[str, Any], folder: Path) -> tuple[list[Path], list[str]]:
    import optuna

    storage = summary["optuna_storage"]
    if not summary.get("studies"):
        return [], ["parameter importances: this run has no Optuna study (PBT)"]
    if is_masked(storage):
        return [], ["parameter importances: the Optuna storage URL needs its password (open it with "
                    "optuna-dashboard instead)"]
    paths, skipped = [], []
    for experiment, name in summary["studies"].items():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            skipped.append(f"parameter importances of '{experiment}': the study does not exist yet")
            continue
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
            skipped.append(f"parameter importances of '{experiment}': {len(complete)} complete trial(s), "
                           f"needs {MIN_TRIALS_FOR_IMPORTANCE}")
            continue
        # A multi-objective study has no single value: rank parameters by the first objective.
        target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
        try:
            scores = optuna.importance.get_param_importances(study, target=target)
        except (RuntimeError, ValueError) as err:  # e.g. no parameter varied across the complete trials
            skipped.append(f"parameter importances of '{experiment}': {err}")
            continue
        fig, ax = plt.subplots(figsize=(5, 0.35 * len(scores) + 1.5))
        ax.barh(list(scores)[::-1], list(scores.values())[::-1])
        ax.set_xlabel("importance (fANOVA)")
        ax.set_title(f"parameter importances: {experiment}")
        paths.append(_save(fig, folder / f"importance_{experiment}.png"))
    return paths, skipped


def write_plots(summary: dict[str, Any], run: RunFolder) -> tuple[list[Path], list[str]]:
    """The plot files written, and why any plot was skipped."""
    folder = run.path / "plots"
    folder.mkdir(exist_ok=True)
    paths = [p for p in (best_per_strategy(summary, folder), learning_curves(summary, folder),
                         pareto(summary, folder)) if p]
    more, skipped = importances(summary, folder)
    return paths + more, skipped
