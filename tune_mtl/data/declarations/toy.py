"""The synthetic toy benchmark (data/toy.py builds it): T regression or binary classification tasks."""

from __future__ import annotations

from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.data.declaration import DataSetDeclaration, TaskDeclaration, classification_task, regression_task

TASK_NOISE_VARIANCE = 3.5  # the seed's eps_t ~ N(0, 3.5) (variance, as in GradNorm's toy problem)
TASK_NOISE_STD = TASK_NOISE_VARIANCE**0.5

OPTIONS = {
    "num_tasks": Field(int, 2, low=1, help="number of tasks (task 0 is the main task)"),
    "input_dim": Field(int, 250, low=1, help="input dimension d"),
    "num_samples": Field(int, 1000, low=10, help="points before the 60/20/20 split"),
    "sigmas": Field(list, None, help="output scale per task (default 1.0 each)"),
    "noise": Field(float, 0.0, low=0.0, high=1.0, help="fraction of training labels replaced"),
    "noise_kind": Field(str, "constant", choices=("constant", "gaussian")),
    "noise_tasks": Field(str, "main", choices=("main", "all")),
    "data_seed": Field(int, None, help="seed of the generator (default: the trial seed)"),
    "task_noise_std": Field(float, TASK_NOISE_STD, low=0.0,
                            help="std of each task's generator noise eps_t (default sqrt(3.5): variance 3.5)"),
}


def declare_tasks(options: dict[str, Any], regression: bool) -> list[TaskDeclaration]:
    """task0..task{T-1}: MSE regression or binary classification (accuracy)."""
    names = [f"task{t}" for t in range(options["num_tasks"])]
    return [regression_task(name) if regression else classification_task(name, 2) for name in names]


def regression_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    return declare_tasks(options, regression=True)


def classification_tasks(options: dict[str, Any]) -> list[TaskDeclaration]:
    return declare_tasks(options, regression=False)


DECLARATIONS = (
    DataSetDeclaration(
        name="toy_regression",
        description="Synthetic regression tasks |sigma_t tanh((B + eps_t) . x)| (SLGrad/GradNorm toy), label noise "
                    "optional.",
        options=OPTIONS,
        tasks=regression_tasks,
        builder="tune_mtl.data.toy:toy_regression",
        default_model="mlp",
        aliases=("toy_reg", "toy"),
    ),
    DataSetDeclaration(
        name="toy_classification",
        description="Synthetic binary tasks 1[(B + eps_t) . x > 0] on the same generator, label noise optional.",
        options=OPTIONS,
        tasks=classification_tasks,
        builder="tune_mtl.data.toy:toy_classification",
        default_model="mlp",
        aliases=("toy_cls", "toy_clf"),
    ),
)
