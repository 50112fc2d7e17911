"""Model registry: `@register("name")` on a builder `(bundle: DataBundle, options: dict) -> HPSModel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tune_mtl.core.errors import UserError, unknown_name
from tune_mtl.models.hps import HPSModel
from tune_mtl.core.options import Field, check_options
from tune_mtl.core.registry import import_submodules

_BUILDERS: dict[str, Callable[..., HPSModel]] = {}
_OPTIONS: dict[str, dict[str, Field]] = {}
_discovered = False


def register(name: str, options: dict[str, Field]):
    """`options` declares the model's searchable dimensions (type, default, valid range)."""

    def wrap(fn):
        _BUILDERS[name] = fn
        _OPTIONS[name] = options
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


def build(name: str | None, bundle, options: dict[str, Any]) -> HPSModel:
    """Build `name` (default: the data set's default model) with checked, defaulted options."""
    key = resolve(name or bundle.default_model)
    return _BUILDERS[key](bundle, check_options(f"model.{key}", options, _OPTIONS[key]))


MLP_OPTIONS = {
    "shared_layers": Field(int, 3, low=0, high=64, help="number of shared Linear+ReLU layers"),
    "shared_width": Field(int, 64, low=1, help="width of the shared layers"),
    "task_layers": Field(int, 1, low=0, high=64, help="hidden layers per task head"),
    "task_width": Field(int, 32, low=1, help="width of the task layers"),
}


@register("mlp", MLP_OPTIONS)
def _mlp(bundle, options: dict[str, Any]) -> HPSModel:
    from tune_mtl.models.mlp import build_mlp_hps

    if len(bundle.input_shape) != 1:
        raise UserError(f"model 'mlp' needs flat inputs; data set '{bundle.name}' has shape {bundle.input_shape}")
    return build_mlp_hps(
        bundle.input_shape[0],
        [task.out_dim for task in bundle.tasks],
        **options,
    )


__all__ = ["HPSModel", "build", "names", "options", "register", "resolve"]
