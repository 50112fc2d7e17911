"""Every plug-in is declared once (torch-free: strategies/declarations.py, models/declarations.py,
data/declarations/) and implemented once: each declaration names an implementation that exists and takes its
names, knobs and flags from it, and every implementation has a declaration. What a declaration promises about
its implementation (a model's encoder has parameters, is sequential; a data set's built tasks) is checked on the
built object, not on the declaration itself."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import tune_mtl
from tune_mtl import data, models, strategies
from tune_mtl.core.metric_names import FAMILIES
from tune_mtl.core.metrics import metric_factory
from tune_mtl.data.base import LOSSES, Task
from tune_mtl.data.declaration import KINDS
from tune_mtl.strategies.base import GradientAggregation, LossWeighting, Strategy
from tune_mtl.strategies.declaration import StrategyDeclaration
from tune_mtl.strategies.declarations import DECLARATIONS as STRATEGY_DECLARATIONS

PACKAGE = Path(tune_mtl.__file__).parent


def package_modules(package: str, skip: set[str]) -> list[str]:
    path = PACKAGE / package
    return [f"tune_mtl.{package}.{m.name}" for m in pkgutil.iter_modules([str(path)]) if m.name not in skip]


# -- strategies ------------------------------------------------------------------------------------------------
def implemented_strategies() -> set[type[Strategy]]:
    """Every concrete Strategy class defined in the strategies package's modules."""
    found = set()
    for module_name in package_modules("strategies", skip=set()):
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Strategy) and cls.__module__ == module_name and not inspect.isabstract(cls):
                found.add(cls)
    return found


def test_every_declared_strategy_has_its_class_and_every_class_its_declaration():
    classes = implemented_strategies()
    declared = {strategies.get(name) for name in strategies.names()}
    assert declared == classes, f"declared without a class or a class without a declaration: {declared ^ classes}"
    assert len(strategies.names()) == len(STRATEGY_DECLARATIONS)


@pytest.mark.parametrize("name", strategies.names())
def test_a_strategy_class_takes_everything_from_its_declaration(name):
    declared, cls = strategies.declaration(name), strategies.get(name)
    assert cls.declaration is declared
    assert (cls.name, cls.aliases, cls.family, cls.summary) == (declared.name, declared.aliases, declared.family,
                                                                declared.summary)
    assert (cls.Knobs, cls.needs_validation_batch, cls.needs_auxiliary_tasks) == \
           (declared.knobs, declared.needs_validation_batch, declared.needs_auxiliary_tasks)
    # The declared family matches the family base class the implementation derives from (where it has one).
    for base, family in ((LossWeighting, "loss_weighting"), (GradientAggregation, "gradient_aggregation")):
        if issubclass(cls, base):
            assert declared.family == family, f"{name} subclasses {base.__name__} but declares {declared.family}"
    instance = strategies.build(name, 3)
    assert instance.needs_shared_parameters == declared.uses_shared_parameters(declared.parse_knobs({}))


def test_a_class_cannot_take_another_strategy_s_declaration():
    with pytest.raises(TypeError, match="names tune_mtl.strategies.cagrad:CAGrad"):
        class Impostor(Strategy, declaration=strategies.declaration("cagrad")):
            def backward(self, ctx):  # pragma: no cover - never instantiated
                return {}


def test_needs_shared_parameters_may_depend_on_the_knobs():
    imtl = strategies.declaration("imtl")
    assert imtl.uses_shared_parameters(imtl.parse_knobs({"mode": "hybrid"}))
    assert not imtl.uses_shared_parameters(imtl.parse_knobs({"mode": "loss"}))
    assert not strategies.build("imtl", 3, {"mode": "loss"}).needs_shared_parameters
    assert strategies.build("imtl-g", 3).needs_shared_parameters
    assert not strategies.build("imtl-l", 3).needs_shared_parameters


def test_a_declaration_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="family"):
        StrategyDeclaration(name="x", family="weighting", summary="", implementation="m:X")


# -- models ----------------------------------------------------------------------------------------------------
HELPER_MODULES = {"hps", "dense_heads", "declaration", "declarations"}


def test_every_model_module_builds_a_declared_model_and_every_declared_builder_exists():
    builder_modules = {models.declaration(name).builder.partition(":")[0] for name in models.names()}
    assert builder_modules == set(package_modules("models", skip=HELPER_MODULES))
    for name in models.names():
        assert callable(models.declaration(name).load())


def tiny_bundle(shape: tuple[int, ...]) -> SimpleNamespace:
    from tune_mtl.data.declaration import classification_task, segmentation_task

    dense = [segmentation_task(2)] if len(shape) == 3 else []  # a dense task where the model takes images
    tasks = [Task.from_declaration(t) for t in (*dense, classification_task("cls", 2))]
    return SimpleNamespace(name="tiny", input_shape=shape, tasks=tasks, default_model="mlp")


SHAPES = {"mlp": (6,), "multilenet": (1, 28, 28), "lenet": (3, 32, 32), "resnet18": (3, 32, 32),
          "resnet_dilated": (3, 32, 32), "segnet": (3, 32, 32), "unet": (3, 32, 32)}
SMALL = {"resnet18": {"width": 0.125, "depth": 10}, "resnet_dilated": {"width": 4, "layers": 18, "aspp_channels": 4},
         "segnet": {"width_multiplier": 0.05}, "unet": {"width": 4, "depth": 2}}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_model_declaration_tells_the_truth_about_the_built_encoder(name):
    assert set(SHAPES) == set(models.names())
    declared = models.declaration(name)
    model = models.build(name, tiny_bundle(SHAPES[name]), SMALL.get(name, {}))
    assert isinstance(model.encoder, nn.Sequential) == declared.sequential_encoder
    has_parameters = any(True for _ in model.encoder.parameters())
    assert declared.shares_parameters({k: f.default for k, f in declared.options.items()}) == has_parameters


def test_an_mlp_without_shared_layers_has_no_shared_parameters_as_declared():
    model = models.build("mlp", tiny_bundle((6,)), {"shared_layers": 0})
    assert not any(True for _ in model.encoder.parameters())
    assert not models.shares_parameters("mlp", {"shared_layers": 0})


def test_declared_depths_are_the_ones_the_builders_build():
    from tune_mtl.models import resnet, resnet_dilated

    assert set(models.options("resnet18")["depth"].choices) == set(resnet.BLOCKS)
    assert set(models.options("resnet_dilated")["layers"].choices) == set(resnet_dilated.ARCHITECTURES)


# -- data sets -------------------------------------------------------------------------------------------------
DATA_HELPERS = {"base", "declaration", "declarations", "npy_dense"}


def test_every_data_module_builds_a_declared_data_set_and_every_declared_builder_exists():
    builder_modules = {data.declaration(name).builder.partition(":")[0] for name in data.names()}
    assert builder_modules == set(package_modules("data", skip=DATA_HELPERS))
    for name in data.names():
        declared = data.declaration(name)
        assert callable(declared.load_builder())
        assert declared.prepare is None or callable(declared.load_prepare())
        assert declared.default_model is None or models.resolve(declared.default_model) == declared.default_model


def test_every_task_kind_has_its_loss_and_every_metric_family_its_accumulator():
    assert set(LOSSES) == set(KINDS)
    for family in FAMILIES.values():
        metric = metric_factory(family, 3)()
        assert metric.names == family.names
        assert {m: metric.direction(m) for m in metric.names} == dict(family.higher_is_better)


@pytest.mark.parametrize("name", ["toy_regression", "toy_classification"])
def test_a_built_data_set_has_the_declared_tasks_and_they_train(name):
    options = {"num_tasks": 3, "input_dim": 4, "num_samples": 20}
    bundle = data.build(name, options, seed=0)
    declared = data.declared_tasks(name, options)
    assert [(t.name, t.kind, t.out_dim, t.primary, t.metric_names) for t in bundle.tasks] == \
           [(t.name, t.kind, t.out_dim, t.primary, t.metric_names) for t in declared]
    # The runtime task's loss is its kind's: per-sample, the same as the reference formula.
    x, targets = bundle.train[torch.arange(5)]
    for task, y in zip(bundle.tasks, targets, strict=True):
        pred = torch.randn(5, task.out_dim)
        expected = ((pred[:, 0] - y) ** 2 if task.kind == "regression"
                    else -torch.log_softmax(pred, dim=1)[torch.arange(5), y.long()])
        assert torch.allclose(task.loss(pred, y), expected, atol=1e-6)


def test_a_runtime_task_is_its_declaration_with_the_loss_and_metric_of_its_kind():
    for name in data.names():
        for declared in data.declared_tasks(name, {}):
            task = Task.from_declaration(declared)
            assert (task.name, task.kind, task.out_dim, task.primary) == \
                   (declared.name, declared.kind, declared.out_dim, declared.primary)
            assert task.loss is LOSSES[declared.kind]
            assert task.metric_names == declared.metric_names
