"""What a search optimises, resolved against a data set's tasks: one task's metric or Delta_m%.

Used by the trainer (to compute `val/objective` each epoch) and by the search driver (to check the names
before Ray starts); it holds no training code and no torch: the driver passes the tasks a data set declares
(`data.declaration.TaskDeclaration`), a trial its built tasks (`data.base.Task`), and both read the same
names and directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.data.declaration import TaskMetrics


@dataclass(frozen=True)
class Objective:
    """What a search optimises: one task's metric, or Delta_m% over the metrics that have baselines."""

    task: int | None  # None for delta_m
    metric: str
    mode: str  # min | max
    baselines: dict[str, float]  # "task/metric" -> single-task value
    higher_is_better: dict[str, bool]

    def value(self, metrics: dict[str, float], split: str, tasks: Sequence[TaskMetrics]) -> float:
        if self.task is None:
            return metrics[f"{split}/delta_m"]
        return metrics[f"{split}/{tasks[self.task].name}/{self.metric}"]


def metric_is_higher_better(task: TaskMetrics, metric: str) -> bool:
    """The direction the task's metric declares (its primary metric carries its own); undeclared is an error,
    never a silent 'minimise'."""
    if metric == task.primary.name:
        return task.primary.higher_is_better
    declared = task.metric_direction(metric)
    if declared is None:
        raise UserError(f"task '{task.name}' declares no direction (higher or lower is better) for its metric "
                        f"'{metric}'; its metric class must list it in `higher_is_better`")
    return declared


def resolve_objective(tasks: Sequence[TaskMetrics], objective: dict[str, Any]) -> Objective:
    """The metric a search optimises (default: task 0's primary metric), checked against the tasks."""
    by_name = {t.name: t for t in tasks}
    baselines = dict(objective.get("baselines") or {})
    directions = {}
    for key, value in baselines.items():
        baseline_task, _, baseline_metric = str(key).partition("/")
        if baseline_task not in by_name or baseline_metric not in by_name[baseline_task].metric_names:
            accepted = [f"{t.name}/{m}" for t in tasks for m in t.metric_names]
            raise unknown_name("baseline metric (task/metric)", str(key), accepted)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0:
            raise UserError(f"baseline 'objective.baselines.{key}' must be a non-zero number, got {value!r}")
        directions[key] = metric_is_higher_better(by_name[baseline_task], baseline_metric)
    if objective.get("metric") == "delta_m":
        if not baselines:
            raise UserError("objective metric 'delta_m' needs 'objective.baselines' ({'task/metric': value, ...})")
        return Objective(None, "delta_m", "min", baselines, directions)
    names = [t.name for t in tasks]
    task_name = objective.get("task")
    if task_name is not None and task_name not in names:
        raise unknown_name("objective task", task_name, names)
    index = 0 if task_name is None else names.index(task_name)
    task = tasks[index]
    metric = objective.get("metric") or task.primary.name
    metric_names = task.metric_names
    if metric not in metric_names:
        raise UserError(f"task '{task.name}' has no metric '{metric}'; accepted: {', '.join(metric_names)}, delta_m")
    mode = "max" if metric_is_higher_better(task, metric) else "min"
    return Objective(index, metric, mode, baselines, directions)
