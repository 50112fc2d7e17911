"""What a model family declares without torch: its options, what a strategy may need to know before the model
is built, and where its builder lives.

The registry (`tune_mtl.models`) reads only these declarations (`models/declarations.py`), so the search driver
validates `model:` options and checks strategies against the model without importing torch; `models.build`
imports the builder module on demand, inside trials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tune_mtl.core.options import Field
from tune_mtl.core.registry import load_object


def always(options: dict[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class ModelDeclaration:
    name: str
    options: dict[str, Field]  # the model's searchable dimensions (type, default, valid range)
    builder: str  # "module:function", a `(bundle: DataBundle, options: dict) -> HPSModel`, imported in trials
    aliases: tuple[str, ...] = ()
    # The encoder is an `nn.Sequential` (Recon can split its layers).
    sequential_encoder: bool = False
    # Whether these options (defaults filled in) leave the encoder any parameters (a Jacobian strategy needs some).
    shares_parameters: Callable[[dict[str, Any]], bool] = field(default=always)

    def load(self) -> Callable[..., Any]:
        """The builder function (imports its module, and with it torch)."""
        builder: Callable[..., Any] = load_object(self.builder)
        return builder
