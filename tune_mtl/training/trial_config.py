"""Configuration of one trial (a concrete point of the search space) and its validation.

A trial config is a nested dict, the same shape as the YAML search space once every range is sampled:

    {"dataset": {"name": ..., <data set options>}, "model": {"name": ..., <model options>},
     "optimizer": {"name": "adam", "lr": ..., "beta1": ..., "beta2": ..., "weight_decay": ...},
     "training": {"batch_size": ..., "val_batch_size": ..., "epochs": ...},
     "strategy": {"name": ..., <strategy knobs>}, "objective": {"task": 0, "metric": None}, "seed": 0}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tune_mtl import data, models, strategies
from tune_mtl.core.errors import UserError
from tune_mtl.core.options import Field, check_options

OPTIMIZER_FIELDS = {
    "name": Field(str, "adam", choices=("adam", "sgd"), help="torch.optim.Adam or torch.optim.SGD"),
    "lr": Field(float, 1e-3, low=1e-12, high=10.0, help="learning rate"),
    "beta1": Field(float, 0.9, low=0.0, high=0.9999, help="Adam beta1; SGD momentum"),
    "beta2": Field(float, 0.999, low=0.0, high=0.99999, help="Adam beta2"),
    "weight_decay": Field(float, 0.0, low=0.0, high=1.0),
}
TRAINING_FIELDS = {
    "batch_size": Field(int, 32, low=1),
    "val_batch_size": Field(int, 64, low=1, help="validation batch for auxiliary-task strategies"),
    "epochs": Field(int, 10, low=1),
    "eval_batch_size": Field(int, 256, low=1, help="batch size of the per-epoch evaluation"),
    "num_workers": Field(int, 0, low=0, help="data-loader worker processes"),
}
OBJECTIVE_FIELDS = {
    "task": Field(str, None, help="task name the search optimises (default: the main task, task 0)"),
    "metric": Field(str, None, help="metric of that task (default: its primary metric), or 'delta_m'"),
    "baselines": Field(dict, None, help="single-task results {'task/metric': value} for Delta_m%"),
}


def _named_section(section: str, value: Any, default_name: str | None) -> tuple[object, dict[str, Any]]:
    """`name` or `{name: ..., <options>}` -> (the name as written, the options). The name may be any YAML value
    (null, a number): the registries' `resolve` reads it as text and rejects what it does not know."""
    if value is None:
        return default_name, {}
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, dict):
        raise UserError(f"'{section}' must be a name or a mapping with a 'name' key, got {value!r}")
    rest = dict(value)
    return rest.pop("name", default_name), rest


@dataclass
class TrialConfig:
    dataset: str
    dataset_options: dict[str, Any]
    model: str
    model_options: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    strategy: str
    strategy_params: dict[str, Any]
    objective: dict[str, Any]
    seed: int

    @classmethod
    def parse(cls, config: dict[str, Any]) -> TrialConfig:
        """Validate a concrete trial config (every value fixed) and fill in defaults."""
        known = {"dataset", "model", "optimizer", "training", "strategy", "objective", "seed"}
        check_options("", {k: None for k in config}, {k: Field(object) for k in known})
        ds_name, ds_opts = _named_section("dataset", config.get("dataset"), "toy_regression")
        ds_key = data.resolve(str(ds_name))
        ds_opts = check_options(f"dataset.{ds_key}", ds_opts, data.options(ds_key))
        model_name, model_opts = _named_section("model", config.get("model"), None)
        st_name, st_params = _named_section("strategy", config.get("strategy"), "uniform")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"'seed' must be a non-negative integer, got {seed!r}")
        return cls(
            dataset=ds_key,
            dataset_options=ds_opts,
            model=models.resolve(str(model_name)) if model_name else "",
            model_options=model_opts,
            optimizer=check_options("optimizer", config.get("optimizer"), OPTIMIZER_FIELDS),
            training=check_options("training", config.get("training"), TRAINING_FIELDS),
            strategy=strategies.resolve(str(st_name)),
            strategy_params=dict(st_params),
            objective=check_options("objective", config.get("objective"), OBJECTIVE_FIELDS),
            seed=seed,
        )
