"""Model registry: `@register("name")` on a builder `(bundle: DataBundle, options: dict) -> HPSModel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import import_submodules
from tune_mtl.models.hps import HPSModel

if TYPE_CHECKING:  # only for the annotations: data never needs models at import
    from tune_mtl.data.base import DataBundle

ModelBuilder = Callable[["DataBundle", dict[str, Any]], HPSModel]

_BUILDERS: dict[str, ModelBuilder] = {}
_OPTIONS: dict[str, dict[str, Field]] = {}
_SEQUENTIAL: set[str] = set()
_SHARES: dict[str, Callable[[dict[str, Any]], bool]] = {}
_discovered = False


def register(
    name: str,
    options: dict[str, Field],
    sequential_encoder: bool = False,
    shares_parameters: Callable[[dict[str, Any]], bool] | None = None,
) -> Callable[[ModelBuilder], ModelBuilder]:
    """`options` declares the model's searchable dimensions (type, default, valid range).

    What a strategy may need to know before the model is built (checked before a search starts):
    `sequential_encoder` says the encoder is an `nn.Sequential` (Recon can split its layers);
    `shares_parameters(options)` says whether these options leave the encoder any parameters (default: yes).
    """

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        _BUILDERS[name] = fn
        _OPTIONS[name] = options
        if sequential_encoder:
            _SEQUENTIAL.add(name)
        if shares_parameters is not None:
            _SHARES[name] = shares_parameters
        return fn

    return wrap


def _discover() -> None:
    global _discovered
    if not _discovered:
        import_submodules(__name__, __path__, skip={"hps"})
        _discovered = True


def names() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def resolve(name: str) -> str:
    _discover()
    key = str(name).strip().lower().replace("-", "_")
    if key not in _BUILDERS:
        raise unknown_name("model", str(name), _BUILDERS)
    return key


def options(name: str) -> dict[str, Field]:
    return _OPTIONS[resolve(name)]


def has_sequential_encoder(name: str) -> bool:
    return resolve(name) in _SEQUENTIAL


def shares_parameters(name: str, options: dict[str, Any]) -> bool:
    """Whether the encoder built with `options` (defaults filled in for missing keys) has parameters."""
    key = resolve(name)
    rule = _SHARES.get(key)
    if rule is None:
        return True
    filled = {k: options.get(k, field.default) for k, field in _OPTIONS[key].items()}
    return rule(filled)


def build(name: str | None, bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    """Build `name` (default: the data set's default model) with checked, defaulted options."""
    key = resolve(name or bundle.default_model)
    return _BUILDERS[key](bundle, check_options(f"model.{key}", options, _OPTIONS[key]))


MLP_OPTIONS = {
    "shared_layers": Field(int, 3, low=0, high=64, help="number of shared Linear+ReLU layers"),
    "shared_width": Field(int, 64, low=1, help="width of the shared layers"),
    "task_layers": Field(int, 1, low=0, high=64, help="hidden layers per task head"),
    "task_width": Field(int, 32, low=1, help="width of the task layers"),
}


@register("mlp", MLP_OPTIONS, sequential_encoder=True, shares_parameters=lambda o: o["shared_layers"] > 0)
def _mlp(bundle: DataBundle, options: dict[str, Any]) -> HPSModel:
    from tune_mtl.models.mlp import build_mlp_hps

    if len(bundle.input_shape) != 1:
        raise UserError(f"model 'mlp' needs flat inputs; data set '{bundle.name}' has shape {bundle.input_shape}")
    return build_mlp_hps(
        bundle.input_shape[0],
        [task.out_dim for task in bundle.tasks],
        **options,
    )


__all__ = ["HPSModel", "build", "has_sequential_encoder", "names", "options", "register", "resolve",
           "shares_parameters"]
