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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tune_mtl.core.errors import UserError

Batch = tuple[Tensor, tuple[Tensor, ...]]  # (inputs, one target tensor per task)


@dataclass(frozen=True)
class Knob:
    """One hyperparameter of a strategy: its default and the values that are valid at all.

    Which part of the valid range is worth *searching* lives in `search_spaces/strategies.yaml`.
    """

    default: Any
    kind: type = float  # float, int, bool or str
    low: float | None = None  # inclusive bounds of the valid values (numbers only)
    high: float | None = None
    choices: tuple | None = None  # for str knobs
    help: str = ""

    def check(self, strategy: str, name: str, value: Any) -> Any:
        where = f"strategy '{strategy}' hyperparameter '{name}'"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if self.choices and value not in self.choices:
                raise UserError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        if self.kind is int and float(value) != int(value):
            raise UserError(f"{where} must be an integer, got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise UserError(f"{where} must lie in [{self.low}, {self.high}], got {value!r}")
        return self.kind(value)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"default": self.default, "type": self.kind.__name__, "help": self.help}
        if self.low is not None or self.high is not None:
            out["valid"] = [self.low, self.high]
        if self.choices:
            out["choices"] = list(self.choices)
        return out


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
    extras: dict[str, Any] = field(default_factory=dict)

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


class Strategy:
    """Base of every task-weighting strategy. Subclasses set the class attributes and `backward`."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = "other"
    summary: ClassVar[str] = ""
    knobs: ClassVar[dict[str, Knob]] = {}
    needs_validation_batch: ClassVar[bool] = False
    needs_auxiliary_tasks: ClassVar[bool] = False  # task 0 main, at least one auxiliary task
    # Needs per-task gradients of the shared parameters: a model whose encoder has none cannot run it.
    needs_shared_parameters: ClassVar[bool] = False
    # Set to True when the strategy changed the model's parameters (Recon's layer split): the trainer then
    # rebuilds the optimizer before its next step and resets the flag.
    parameters_changed: bool = False

    def __init__(self, num_tasks: int, **params: Any) -> None:
        if num_tasks < 1:
            raise UserError(f"strategy '{self.name}' needs at least one task, got {num_tasks}")
        if self.needs_auxiliary_tasks and num_tasks < 2:
            raise UserError(
                f"strategy '{self.name}' weights auxiliary tasks against the main task (task 0) and needs "
                f"at least 2 tasks; this data set has {num_tasks}"
            )
        unknown = set(params) - set(self.knobs)
        if unknown:
            from tune_mtl.core.errors import unknown_name

            raise unknown_name(f"hyperparameter of strategy '{self.name}'", sorted(unknown)[0], self.knobs)
        self.num_tasks = num_tasks
        self.params = {k: knob.check(self.name, k, params.get(k, knob.default)) for k, knob in self.knobs.items()}
        for key, value in self.params.items():
            setattr(self, key, value)

    # -- hooks the trainer calls ------------------------------------------------------------------
    def setup(self, model: nn.Module, device: torch.device) -> None:
        """Called once after the model is built, before the optimizer is created."""

    def parameters(self) -> list[nn.Parameter]:
        """Extra parameters the strategy learns (log-variances, task weights): the optimizer steps them."""
        return []

    def backward(self, ctx: StepContext) -> dict[str, float]:
        """Set `.grad` on every model parameter (and on `parameters()`); return values worth logging."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, mean_task_losses: Tensor) -> None:
        """Called after each training epoch with the epoch's mean training loss per task."""

    def state_dict(self) -> dict[str, Any]:
        """Strategy state to checkpoint (histories, EMAs, learned weights)."""
        return {"params": [p.detach().clone() for p in self.parameters()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.parameters(), state.get("params", []), strict=True):
                p.copy_(saved)


def weight_logs(weights: Tensor, prefix: str = "weight") -> dict[str, float]:
    return {f"{prefix}/{t}": float(w) for t, w in enumerate(weights.detach().flatten().tolist())}


class LossWeighting(Strategy):
    """A weight per task, then one backward of sum_t w_t * mean_i l_t(x_i)."""

    family = "loss_weighting"

    def weights(self, ctx: StepContext) -> Tensor:
        """[T] task weights (may carry a graph when the weights are learned through the loss)."""
        raise NotImplementedError

    def backward(self, ctx: StepContext) -> dict[str, float]:
        weights = self.weights(ctx)
        (weights * ctx.task_losses).sum().backward()
        return weight_logs(weights)


class GradientAggregation(Strategy):
    """Shared gradient = aggregate(J), J[T, P] the task-loss Jacobian of the shared parameters.

    Task heads get their own task's gradient (the head of task t only influences loss t, so the gradient of
    the summed losses is exactly that).
    """

    family = "gradient_aggregation"
    needs_shared_parameters = True

    def aggregate(self, jacobian: Tensor) -> Tensor:
        """[T, P] -> [P]; subclasses keep this a function of J (and of their own state)."""
        raise NotImplementedError

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

    def weights_from_gramian(self, gramian: Tensor) -> Tensor:
        raise NotImplementedError

    def aggregate(self, jacobian: Tensor) -> Tensor:
        self.last_weights = self.weights_from_gramian(gramian(jacobian))
        return self.last_weights.to(jacobian.dtype) @ jacobian

    def logs(self) -> dict[str, float]:
        weights = getattr(self, "last_weights", None)
        return {} if weights is None else weight_logs(weights)
