"""Checks a search runs before Ray starts: a strategy, its knobs, the data set's task count and the model must
fit together. Each mistake is one `UserError` sentence naming the configuration key to change; without this
check the same mistakes fail inside every trial (and are retried).

Everything here reads declarations (the strategy's, the model's): no strategy is instantiated and torch is never
imported, so the search driver runs it."""

from __future__ import annotations

from typing import Any

from tune_mtl import models
from tune_mtl.core.errors import UserError


def check_compatibility(
    strategy: str, knobs: dict[str, Any], num_tasks: int, model_name: str, model_options: dict[str, Any]
) -> None:
    """Raise `UserError` if `strategy` with `knobs` cannot train `model_name` (with `model_options`) on a data
    set of `num_tasks` tasks. Knob values are checked against their declared ranges too."""
    from tune_mtl import strategies

    key = strategies.resolve(strategy)
    declared = strategies.declaration(key)
    if declared.needs_auxiliary_tasks and num_tasks < 2:
        raise UserError(
            f"'strategy: {key}' weights auxiliary tasks against the main task (task 0) and needs a data set with "
            f"at least 2 tasks; 'dataset' gives {num_tasks}"
        )
    # Unknown knobs, values out of range, an unknown Recon base: one sentence each, from the knobs' parser.
    parsed = declared.parse_knobs(knobs)
    if declared.needs_sequential_encoder and not models.has_sequential_encoder(model_name):
        raise UserError(
            f"'strategy: {key}' splits layers of a sequential encoder and 'model: {models.resolve(model_name)}' "
            f"has none; use model 'mlp' or another strategy"
        )
    if declared.uses_shared_parameters(parsed) and not models.shares_parameters(model_name, model_options):
        raise UserError(
            f"'strategy: {key}' needs per-task gradients of the shared encoder, but 'model.shared_layers: 0' "
            f"leaves it no parameters; set 'model.shared_layers' to 1 or more or use a loss-weighting strategy"
        )
