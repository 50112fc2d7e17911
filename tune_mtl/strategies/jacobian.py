"""The one place that computes per-task gradients.

`task_jacobian` gets J[T, P] either from ONE batched reverse pass (`is_grads_batched=True`: autograd vmaps
the backward over the T rows of the identity) or from a loop of T backward passes with `retain_graph`.
Which one is a rule on the parameters and the device (`choose_method`), measured with `bench/step_cost.py`
and `bench/libmtl_compare.py`:

* on CPU, when the parameters include a convolution kernel (a parameter with 3 or more dimensions), the
  loop: there the batching rules of convolution and max-pool backward materialise T-fold buffers, and the
  batched pass (plus its extra backward for the heads) took 1.1-1.3x the loop's time on the conv encoder at
  T = 2, 3, 10, and a full step 0.80-0.96x LibMTL's speed at T=3 against 1.03-1.12x with the loop;
* everywhere else (fully connected layers on CPU, any model on a GPU), the batched pass: T backward passes
  each pay the per-op overhead (Python dispatch, kernel launches) that one batched pass pays once (MLP on CPU:
  1.1x at T=3, 2.3x at T=10, about even at T=2; 1.4-7.8x on an H200 with torch 2.11).

The rule is a function of the model's parameters and device only, so a seeded run always takes the same
path and gives the same bits (a one-off timing would not: the two paths differ in the last bits).

If the batched pass hits an op without a batching rule (vmap's "Batching rule not implemented",
data-dependent control flow, ...), that one call falls back to the loop and logs a warning with the reason.
Every other error (CUDA out of memory above all) propagates: retrying a loop after an OOM would hide the
real problem and fail again, slower.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

Method = Literal["auto", "batched", "loop"]
LossesOf = Callable[[Any], Tensor]  # a batch -> its per-sample losses [T, B] (`StepContext.compute_losses`)
METHODS: tuple[str, ...] = ("auto", "batched", "loop")

# What autograd's vmap (torch/_vmap_internals + the C++ batched fallback) says when it cannot batch an op:
# "Batching rule not implemented for aten::item", "vmap: It looks like you're calling .item() ...",
# "vmap: We do not support batching operators that can output dynamic shape", "Batched grads are not
# supported with Nested Tensor". Matched on the message because torch raises a plain RuntimeError for them.
_BATCHING_ERROR = re.compile(r"batching rule|\bvmap\b|batched grads are not supported|batched tensor", re.IGNORECASE)


def is_batching_error(err: BaseException) -> bool:
    """True only for the errors a batched backward raises because some op cannot be batched."""
    if isinstance(err, torch.OutOfMemoryError) or not isinstance(err, (RuntimeError, NotImplementedError)):
        return False
    return _BATCHING_ERROR.search(str(err)) is not None


def has_convolution(params: Sequence[Tensor]) -> bool:
    """Whether `params` hold a convolution kernel: [out, in, *kernel] has 3+ dimensions, where linear weights,
    biases and norm scales have at most 2."""
    return any(p.dim() >= 3 for p in params)


def choose_method(params: Sequence[Tensor], device: torch.device) -> Literal["batched", "loop"]:
    """The per-task Jacobian method for these parameters on this device (the rule in the module docstring)."""
    return "loop" if device.type == "cpu" and has_convolution(params) else "batched"


def flatten_grads(grads: Sequence[Tensor | None], params: Sequence[Tensor], rows: int) -> Tensor:
    """Per-parameter [rows, *shape] gradients (None = unused) -> one [rows, P] matrix."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros(rows, *p.shape, device=p.device, dtype=p.dtype)).reshape(rows, -1)
            for g, p in zip(grads, params, strict=True)
        ],
        dim=1,
    )


def batched_jacobian(task_losses: Tensor, params: Sequence[Tensor], retain_graph: bool) -> Tensor:
    """J[T, P] from one reverse pass vmapped over the rows of the identity."""
    eye = torch.eye(task_losses.shape[0], device=task_losses.device, dtype=task_losses.dtype)
    grads = torch.autograd.grad(
        task_losses, params, grad_outputs=eye, is_grads_batched=True, retain_graph=retain_graph, allow_unused=True
    )
    return flatten_grads(grads, params, task_losses.shape[0])


def looped_jacobian(task_losses: Tensor, params: Sequence[Tensor], retain_graph: bool) -> Tensor:
    """J[T, P] from T reverse passes, the graph kept between them (and after the last one if asked)."""
    T = task_losses.shape[0]
    rows = []
    for t in range(T):
        grads = torch.autograd.grad(
            task_losses[t], params, retain_graph=retain_graph or t < T - 1, allow_unused=True
        )
        rows.append(flatten_grads([None if g is None else g.unsqueeze(0) for g in grads], params, 1))
    return torch.cat(rows, dim=0)


def task_jacobian(
    task_losses: Tensor, params: Sequence[Tensor], retain_graph: bool = True, method: Method = "auto"
) -> Tensor:
    """J[t, :] = d task_losses[t] / d params, flattened: a [T, P] matrix.

    `method`: "auto" (the rule of `choose_method`), "batched" or "loop". A batched pass that meets an op
    without a batching rule falls back to the loop for this call and logs why; any other error propagates.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    params = list(params)
    if method == "auto":
        method = choose_method(params, task_losses.device)
    if method == "batched":
        try:
            # The graph is kept even when the caller does not need it afterwards: a pass that fails half-way
            # must leave the graph whole for the loop.
            return batched_jacobian(task_losses, params, retain_graph=True)
        except (RuntimeError, NotImplementedError) as err:
            if not is_batching_error(err):
                raise
            log.warning(
                "batched Jacobian unavailable (%s); this step uses a loop of %d backward passes",
                str(err).splitlines()[0] if str(err) else type(err).__name__, task_losses.shape[0],
            )
    return looped_jacobian(task_losses, params, retain_graph)



def task_jacobian_and_head_grads(
    task_losses: Tensor,
    shared_params: Sequence[Tensor],
    task_params: Sequence[Sequence[Tensor]],
    retain_graph: bool = True,
    method: Method = "auto",
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """J of `task_losses` w.r.t. the shared parameters, and (head parameter, gradient) pairs: for each task t
    the gradient of its own loss w.r.t. each trainable parameter of `task_params[t]` (zeros where unused).

    The head of task t only influences loss t, so the loop takes head t's gradient in the same backward pass
    as row t of J, as LibMTL's loop of `loss_t.backward()` does, instead of one more backward through the
    heads afterwards; the batched pass does that extra backward (`head_grads`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    shared = list(shared_params)
    heads = [[p for p in params if p.requires_grad] for params in task_params]
    T = task_losses.shape[0]
    if heads and len(heads) != T:
        raise ValueError(f"{len(heads)} task parameter groups for {T} task losses")
    chosen = choose_method(shared, task_losses.device) if method == "auto" else method
    if chosen == "batched" or not heads:
        J = task_jacobian(task_losses, shared, retain_graph=True if heads else retain_graph, method=chosen)
        return J, head_grads(task_losses, heads, retain_graph)
    rows, pairs = [], []
    for t in range(T):
        grads = torch.autograd.grad(
            task_losses[t], [*shared, *heads[t]], retain_graph=retain_graph or t < T - 1, allow_unused=True
        )
        rows.append(flatten_grads([None if g is None else g.unsqueeze(0) for g in grads[: len(shared)]], shared, 1))
        own_head = zip(heads[t], grads[len(shared) :], strict=True)
        pairs += [(p, torch.zeros_like(p) if g is None else g) for p, g in own_head]
    return torch.cat(rows, dim=0), pairs


def head_grads(
    task_losses: Tensor, heads: Sequence[Sequence[Tensor]], retain_graph: bool = True
) -> list[tuple[Tensor, Tensor]]:
    """(parameter, d task_losses[t] / d parameter) for every parameter of every `heads[t]`, from one backward
    of sum_t task_losses[t] (each head only influences its own loss)."""
    flat = [p for params in heads for p in params]
    if not flat:
        return []
    grads = torch.autograd.grad(task_losses.sum(), flat, retain_graph=retain_graph, allow_unused=True)
    return [(p, torch.zeros_like(p) if g is None else g) for p, g in zip(flat, grads, strict=True)]


def set_grads(pairs: Sequence[tuple[Tensor, Tensor]]) -> None:
    """Set (overwrite) `.grad` of each parameter from its (parameter, gradient) pair."""
    for p, g in pairs:
        p.grad = g

def write_grads(params: Sequence[Tensor], flat: Tensor) -> None:
    """Set (overwrite) `.grad` of `params` from one flat [P] vector."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"gradient has {flat.numel()} entries, parameters need {offset}")


def backward_heads(task_losses: Tensor, head_params: Sequence[Tensor], weights: Tensor | None = None) -> None:
    """Give each task head the gradient of its own (optionally weighted) loss; leaves shared grads alone."""
    head_params = [p for p in head_params if p.requires_grad]
    if not head_params:
        return
    total = task_losses.sum() if weights is None else (weights.detach() * task_losses).sum()
    grads = torch.autograd.grad(total, head_params, allow_unused=True)
    for p, g in zip(head_params, grads, strict=True):
        p.grad = torch.zeros_like(p) if g is None else g


# -- per-sample directional derivatives (SLGrad) -------------------------------------------------------------


class _LossesOf(nn.Module):
    """Holds `model` as a submodule so that `torch.func.functional_call` can substitute its parameters and
    buffers (by name, prefixed `model.`) while `compute_losses`, which calls `model` itself, runs."""

    def __init__(self, model: nn.Module, compute_losses: LossesOf) -> None:
        super().__init__()
        self.model = model
        self._compute_losses = compute_losses

    def forward(self, batch: Any) -> Tensor:
        return self._compute_losses(batch)


def functional_losses(model: nn.Module, compute_losses: LossesOf, batch: Any, overrides: dict[str, Tensor]) -> Tensor:
    """`compute_losses(batch)` with the named parameters in `overrides` substituted and every buffer replaced
    by a copy. The model keeps its mode: in train mode batch norm still normalises with the batch statistics,
    but it updates the running statistics of the copies, which are dropped, so the trainer's own forward pass
    stays the only one that moves them."""
    state = {f"model.{name}": buf.clone() for name, buf in model.named_buffers()}
    state.update({f"model.{name}": value for name, value in overrides.items()})
    losses: Tensor = torch.func.functional_call(_LossesOf(model, compute_losses), state, (batch,))
    return losses


def parameter_names(model: nn.Module, params: Sequence[Tensor]) -> list[str]:
    """The names under which `model` holds `params` (the keys `functional_losses` substitutes)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError(f"parameters {missing} are not parameters of the model")
    return [by_id[id(p)] for p in params]


def _floating_leaves(tree: Any) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree] if tree.is_floating_point() else []
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _floating_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _floating_leaves(item)]
    return []


def _replace_floating_leaves(tree: Any, leaves: list[Tensor]) -> Any:
    """Inverse of `_floating_leaves`: the same structure with its floating tensors taken from `leaves` in order."""
    if isinstance(tree, Tensor):
        return leaves.pop(0) if tree.is_floating_point() else tree
    if isinstance(tree, (tuple, list)):
        return type(tree)(_replace_floating_leaves(item, leaves) for item in tree)
    if isinstance(tree, dict):
        return {key: _replace_floating_leaves(item, leaves) for key, item in tree.items()}
    return tree


def per_sample_directional_derivatives(
    model: nn.Module,
    compute_losses: LossesOf,
    batch: Any,
    params: Sequence[Tensor],
    direction: Sequence[Tensor],
    at: Sequence[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """D[t, i] = < d l_t(x_i) / d params, direction > for every task t and sample i of `batch`.

    All T*B inner products come from ONE forward-mode pass (a Jacobian-vector product: dual tensors of
    `torch.autograd.forward_ad` substituted through `torch.func.functional_call`) of the per-sample losses
    [T, B] in the direction `direction` (one tensor per parameter), instead of T*B backward passes. The
    derivative is taken at the current values of `params`, or at `at` (same shapes) for a look-ahead point;
    every other parameter is held fixed. Buffers are copied (see `functional_losses`), so batch norm in train
    mode uses this batch's statistics, exactly as in the forward pass whose per-sample gradients it matches.
    Returns (D [T, B], the per-sample losses [T, B] of that pass, without graph).

    Speed (toy MLP, B=64, T=2, CPU): the fixed parameters and the batch's floating tensors get explicit zero
    tangents; left as constants, forward AD gives them lazy zero tensors whose arithmetic runs through Python
    meta kernels (~7x slower). `torch.func.jvp` computes the same product through the same forward AD but took
    ~2x longer here (per-op wrapper overhead: 3.0 against 1.8 ms), hence the dual tensors directly.
    """
    from torch.autograd import forward_ad as fwAD

    make_dual: Callable[[Tensor, Tensor], Tensor] = fwAD.make_dual  # typed views of untyped torch functions
    unpack_dual: Callable[[Tensor], tuple[Tensor, Tensor | None]] = fwAD.unpack_dual

    named = list(model.named_parameters())  # one walk over the modules (the walks add up on small models)
    by_id = {id(p): name for name, p in named}
    if any(id(p) not in by_id for p in params):
        raise ValueError("every parameter given must be a parameter of the model")
    chosen = {id(p): i for i, p in enumerate(params)}
    values = [t.detach() for t in (params if at is None else at)]
    if len(values) != len(chosen) or len(direction) != len(chosen):
        raise ValueError("params, direction and at must have one tensor per parameter")
    with torch.no_grad(), fwAD.dual_level():  # forward mode only: no reverse graph is needed
        overrides = {}
        for name, p in named:
            i = chosen.get(id(p))
            if i is None:
                overrides[name] = make_dual(p.detach(), torch.zeros_like(p))
            else:
                overrides[name] = make_dual(values[i], direction[i].detach().to(values[i].dtype))
        data = [make_dual(t.detach(), torch.zeros_like(t)) for t in _floating_leaves(batch)]
        out = functional_losses(model, compute_losses, _replace_floating_leaves(batch, data), overrides)
        losses, derivatives = unpack_dual(out)
        if derivatives is None:  # the losses do not depend on `params`
            derivatives = torch.zeros_like(losses)
        return derivatives.clone(), losses.clone()
