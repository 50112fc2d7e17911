"""The strategy interface shared by every task-weighting method.

A training step hands the strategy a `StepContext`; the strategy leaves `.grad` set on every trainable
parameter and the trainer then calls `optimizer.step()`. Three families plug into this one interface:

* `LossWeighting`: a weight per task from loss values or history, then one backward of the weighted sum.
* `GradientAggregation`: a function of the Jacobian J[T, P] of the task losses w.r.t. the shared parameters
  gives the shared gradient; every task head receives its own task's gradient.
* auxiliary-task / sample-weighting methods (task 0 is the main task), subclassing either of the above
  or `Strategy` directly.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tune_mtl.core.errors import UserError
from tune_mtl.strategies.declaration import StrategyDeclaration
from tune_mtl.strategies.knobs import Knob as Knob  # re-exported: strategy code and tests import them from here
from tune_mtl.strategies.knobs import StrategyKnobs as StrategyKnobs
from tune_mtl.strategies.knobs import knob as knob
from tune_mtl.strategies.learned_weights import LearnedWeights

log = logging.getLogger(__name__)

Batch = tuple[Tensor, tuple[Tensor, ...]]  # (inputs, one target tensor per task)


@dataclass
class StepContext:
    """Everything a strategy may need for one training step."""

    losses: Tensor  # [T, B] per-sample losses, graph attached
    model: nn.Module
    shared_params: list[nn.Parameter]
    task_params: list[list[nn.Parameter]]  # task_params[t]: parameters only task t uses
    representation: Tensor | None  # shared encoder output (graph attached), for MGDA-UB-style methods
    step: int
    epoch: int
    batch: Batch
    # Forward `batch` through `model` and return per-sample losses [T, B]; lets strategies re-evaluate
    # losses (look-ahead, validation gradients) without knowing the data set.
    compute_losses: Callable[[Batch], Tensor]
    val_batch: Batch | None = None  # a validation batch (for auxiliary-task methods: main task clean data)
    # Each task's kind (`data.base.Task.kind`: regression, classification, segmentation, ...), main task first;
    # None where the caller does not know them (UW then uses the regression form).
    task_kinds: list[str] | None = None

    @property
    def num_tasks(self) -> int:
        return self.losses.shape[0]

    @property
    def task_losses(self) -> Tensor:
        """[T] mean loss per task: the per-task objective every family starts from."""
        return self.losses.mean(dim=1)

    @property
    def all_task_params(self) -> list[nn.Parameter]:
        return [p for params in self.task_params for p in params]


class Strategy(ABC):
    """Base of every task-weighting strategy. A concrete strategy names its declaration in its class statement,
    `class CAGrad(GramianWeighting, declaration=declared.CAGRAD)`, and implements `backward` (or its family's
    method); its name, aliases, family, summary, knobs and needs all come from that declaration
    (`strategies/declarations.py`), which the search driver reads without importing this module (torch)."""

    declaration: ClassVar[StrategyDeclaration]
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = "other"
    summary: ClassVar[str] = ""
    # The knobs' declaration (a frozen dataclass in strategies/declarations.py; a subclass annotates
    # `knobs: <Its>Knobs` for the type checker) and this instance's values, read as `self.knobs.alpha`.
    Knobs: ClassVar[type[StrategyKnobs]] = StrategyKnobs
    knobs: StrategyKnobs
    needs_validation_batch: ClassVar[bool] = False
    needs_auxiliary_tasks: ClassVar[bool] = False  # task 0 main, at least one auxiliary task
    # Task weights (or logits) the strategy learns with its own Adam; `setup` moves them to the model's device.
    learned: LearnedWeights | None = None

    def __init_subclass__(cls, declaration: StrategyDeclaration | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if declaration is None:  # a family base class or a helper: no strategy of its own
            return
        if declaration.implementation != f"{cls.__module__}:{cls.__qualname__}":
            raise TypeError(f"{cls.__module__}:{cls.__qualname__} takes the declaration of strategy "
                            f"'{declaration.name}', which names {declaration.implementation} as its implementation")
        cls.declaration = declaration
        cls.name = declaration.name
        cls.aliases = declaration.aliases
        cls.family = declaration.family
        cls.summary = declaration.summary
        cls.Knobs = declaration.knobs
        cls.needs_validation_batch = declaration.needs_validation_batch
        cls.needs_auxiliary_tasks = declaration.needs_auxiliary_tasks

    def __init__(self, num_tasks: int, **params: Any) -> None:
        if num_tasks < 1:
            raise UserError(f"strategy '{self.name}' needs at least one task, got {num_tasks}")
        if self.needs_auxiliary_tasks and num_tasks < 2:
            raise UserError(
                f"strategy '{self.name}' weights auxiliary tasks against the main task (task 0) and needs "
                f"at least 2 tasks; this data set has {num_tasks}"
            )
        self.num_tasks = num_tasks
        self.knobs = self.Knobs.parse(self.name, params)
        # The strategy's own random stream (PCGrad's order, RLW's weights, GradDrop's mask...): seeded from the
        # trial seed in `setup`, checkpointed, and never the global generator, which the model, the data
        # loaders and other strategies in the same process also draw from.
        self.generator = torch.Generator().manual_seed(0)
        self._model_change_listeners: list[Callable[[], None]] = []

    @property
    def needs_shared_parameters(self) -> bool:
        """Needs per-task gradients of the shared parameters (with these knobs): a model whose encoder has none
        cannot run it."""
        return self.declaration.uses_shared_parameters(self.knobs)

    @classmethod
    def knob_specs(cls) -> dict[str, Knob]:
        """Every knob a user may set: its type, default, valid values and help (the catalogue, the YAML check)."""
        return cls.Knobs.specs()

    # -- a hook the trainer registers ---------------------------------------------------------------
    def on_model_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever this strategy changes the model's parameter set (Recon's layer split): the
        trainer rebuilds its optimizer over the new parameters (the replaced ones' moments cannot carry over)."""
        self._model_change_listeners.append(listener)

    def model_changed(self) -> None:
        """A strategy that replaced model parameters calls this right after the change."""
        for listener in self._model_change_listeners:
            listener()

    # -- hooks the trainer calls ------------------------------------------------------------------
    def setup(self, model: nn.Module, device: torch.device, seed: int = 0) -> None:
        """Called once after the model is built, before the optimizer is created: puts the strategy's random
        stream on `device`, seeded with the trial's `seed`. Overrides call `super().setup(model, device, seed)`."""
        self.generator = torch.Generator(device=device).manual_seed(seed)
        if self.learned is not None:
            self.learned.to(device)

    def parameters(self) -> list[nn.Parameter]:
        """Extra parameters the strategy learns (log-variances, task weights): the optimizer steps them."""
        return []

    @abstractmethod
    def backward(self, ctx: StepContext) -> dict[str, float]:
        """Set `.grad` on every model parameter (and on `parameters()`); return values worth logging."""

    def end_epoch(self, epoch: int, mean_task_losses: Tensor) -> None:  # noqa: B027 (optional hook, no-op default)
        """Called after each training epoch with the epoch's mean training loss per task."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (histories, EMAs, learned weights). A strategy that draws random numbers
        and overrides this keeps `random_state()` in it (the base's state holds it)."""
        return {"params": [p.detach().clone() for p in self.parameters()], **self.random_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.parameters(), state.get("params", []), strict=True):
                p.copy_(saved)
        self.load_random_state(state)

    def random_state(self) -> dict[str, Any]:
        """The random stream's position, so that a resumed trial draws what the uninterrupted one would."""
        return {"rng": self.generator.get_state(), "rng_device": self.generator.device.type}

    def load_random_state(self, state: dict[str, Any]) -> None:
        if "rng" not in state:
            return
        if state["rng_device"] != self.generator.device.type:
            # CPU and CUDA generators have different states: the stream cannot continue on another device kind.
            log.warning("strategy '%s': checkpoint drawn on %s, resumed on %s; the random stream restarts from "
                        "the trial seed", self.name, state["rng_device"], self.generator.device.type)
            return
        self.generator.set_state(state["rng"])


def weight_logs(weights: Tensor, prefix: str = "weight") -> dict[str, float]:
    return {f"{prefix}/{t}": float(w) for t, w in enumerate(weights.detach().flatten().tolist())}


class LossWeighting(Strategy):
    """A weight per task, then one backward of sum_t w_t * mean_i l_t(x_i). (Declared family: loss_weighting.)"""

    @abstractmethod
    def weights(self, ctx: StepContext) -> Tensor:
        """[T] task weights (may carry a graph when the weights are learned through the loss)."""

    def backward(self, ctx: StepContext) -> dict[str, float]:
        weights = self.weights(ctx)
        torch.autograd.backward((weights * ctx.task_losses).sum())
        return weight_logs(weights)


class GradientAggregation(Strategy):
    """Shared gradient = aggregate(J), J[T, P] the task-loss Jacobian of the shared parameters.

    Task heads get their own task's gradient (the head of task t only influences loss t, so the gradient of
    the summed losses is exactly that). (Declared family: gradient_aggregation; it needs shared parameters.)
    """

    @abstractmethod
    def aggregate(self, jacobian: Tensor) -> Tensor:
        """[T, P] -> [P]; subclasses keep this a function of J (and of their own state)."""

    def shared_update(self, jacobian: Tensor, task_losses: Tensor) -> Tensor:
        """The shared gradient; override where the method also looks at the loss values (MGDA's `loss`
        normalisation, MoCo's loss scaling)."""
        return self.aggregate(jacobian)

    def step_on_losses(self, ctx: StepContext, task_losses: Tensor) -> None:
        """Shared `.grad` from the Jacobian of `task_losses`; each head gets its own task's gradient."""
        from tune_mtl.strategies import jacobian as jac

        J, head_grads = jac.task_jacobian_and_head_grads(task_losses, ctx.shared_params, ctx.task_params,
                                                         retain_graph=False)
        jac.write_grads(ctx.shared_params, self.shared_update(J, task_losses))
        jac.set_grads(head_grads)

    def backward(self, ctx: StepContext) -> dict[str, float]:
        self.step_on_losses(ctx, ctx.task_losses)
        return self.logs()

    def logs(self) -> dict[str, float]:
        return {}


def gramian(jacobian: Tensor) -> Tensor:
    """G = J J^T accumulated in float64, whatever J's dtype: the T x T solvers downstream (inverse square
    roots, Newton steps, equal-projection systems) need the small eigenvalues that a float32 sum over millions
    of parameters rounds away (Aligned-MTL loses its equal singular values on ill-conditioned J otherwise)."""
    J = jacobian.double()
    return J @ J.T


class GramianWeighting(GradientAggregation):
    """Aggregators that only need the T x T Gramian G = J J^T: weights w(G), update w^T J (torchjd's shape)."""

    last_weights: Tensor | None = None  # the weights of the last aggregation, for the logs

    @abstractmethod
    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        """[T, T] Gramian (float64) -> [T] weights w; the update is w^T J."""

    def aggregate(self, jacobian: Tensor) -> Tensor:
        weights = self.weights_from_gramian(gramian(jacobian))
        self.last_weights = weights
        return weights.to(jacobian.dtype) @ jacobian

    def logs(self) -> dict[str, float]:
        return {} if self.last_weights is None else weight_logs(self.last_weights)
