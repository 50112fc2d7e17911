"""What a strategy declares without torch: its names, family, summary, knobs, what it needs of the data set and
the model, and where its implementation lives.

The registry (`tune_mtl.strategies`) reads only these declarations (`strategies/declarations.py`), so the
search driver resolves names, validates knobs and checks a strategy against the data set and the model without
importing torch; `strategies.get`/`build` import the implementation module on demand, inside trials. The
implementation class takes all of it from its declaration (`class CAGrad(GramianWeighting,
declaration=declared.CAGRAD)`), so nothing is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tune_mtl.core.registry import load_object
from tune_mtl.strategies.knobs import Knob, StrategyKnobs

FAMILIES = ("loss_weighting", "gradient_aggregation", "auxiliary", "sample_weighting", "architecture")


@dataclass(frozen=True)
class StrategyDeclaration:
    name: str  # canonical: lower case, '-' between words
    family: str  # one of FAMILIES (what `launch.py strategies` groups by)
    summary: str  # one line for `launch.py strategies`
    implementation: str  # "module:Class", imported only when a trial builds the strategy
    aliases: tuple[str, ...] = ()  # the names other code bases use (LibMTL's, the seeds')
    knobs: type[StrategyKnobs] = StrategyKnobs
    needs_validation_batch: bool = False  # the trainer hands it a validation batch every step
    needs_auxiliary_tasks: bool = False  # task 0 is the main task; it needs at least one auxiliary task
    # Needs per-task gradients of the shared parameters, so a model whose encoder has none cannot run it: a
    # flag, or a rule on the parsed knobs where the knobs decide (IMTL-L never looks at a gradient).
    needs_shared_parameters: bool | Callable[[Any], bool] = False
    needs_sequential_encoder: bool = False  # rewires the encoder's layers (Recon): needs an nn.Sequential one

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"strategy '{self.name}': family '{self.family}' is not one of {', '.join(FAMILIES)}")

    def parse_knobs(self, given: Mapping[str, Any]) -> StrategyKnobs:
        """The knobs from user values; one `UserError` for an unknown or invalid one."""
        return self.knobs.parse(self.name, given)

    def knob_specs(self) -> dict[str, Knob]:
        return self.knobs.specs()

    def uses_shared_parameters(self, knobs: StrategyKnobs) -> bool:
        rule = self.needs_shared_parameters
        return rule(knobs) if callable(rule) else rule

    def load(self) -> type[Any]:
        """The implementation class (imports its module, and with it torch)."""
        cls: type[Any] = load_object(self.implementation)
        return cls
