"""The one place that computes per-task gradients.

`task_jacobian` gets J[T, P] from ONE batched reverse pass (`is_grads_batched=True`: autograd vmaps the
backward over the T rows of the identity), not from T backward passes with `retain_graph`. If some op in the
graph has no batching rule, it falls back to the loop and says so once in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)
_fallback_reported = False


def flatten_grads(grads: Sequence[Tensor | None], params: Sequence[nn.Parameter], rows: int) -> Tensor:
    """Per-parameter [rows, *shape] gradients (None = unused) -> one [rows, P] matrix."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros(rows, *p.shape, device=p.device, dtype=p.dtype)).reshape(rows, -1)
            for g, p in zip(grads, params, strict=True)
        ],
        dim=1,
    )


def task_jacobian(
    task_losses: Tensor, params: Sequence[nn.Parameter], retain_graph: bool = True, batched: bool = True
) -> Tensor:
    """J[t, :] = d task_losses[t] / d params, flattened: a [T, P] matrix."""
    global _fallback_reported
    params = list(params)
    T = task_losses.shape[0]
    if batched:
        eye = torch.eye(T, device=task_losses.device, dtype=task_losses.dtype)
        try:
            grads = torch.autograd.grad(
                task_losses, params, grad_outputs=eye, is_grads_batched=True, retain_graph=retain_graph,
                allow_unused=True,
            )
            return flatten_grads(grads, params, T)
        except RuntimeError as err:  # an op without a vmap rule: fall back, once reported
            if not _fallback_reported:
                log.warning("batched Jacobian unavailable (%s); using a loop of %d backward passes", err, T)
                _fallback_reported = True
    rows = []
    for t in range(T):
        keep = retain_graph or t < T - 1
        grads = torch.autograd.grad(task_losses[t], params, retain_graph=keep, allow_unused=True)
        rows.append(flatten_grads([None if g is None else g.unsqueeze(0) for g in grads], params, 1))
    return torch.cat(rows, dim=0)


def write_grads(params: Sequence[nn.Parameter], flat: Tensor) -> None:
    """Set (overwrite) `.grad` of `params` from one flat [P] vector."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).to(p.dtype).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"gradient has {flat.numel()} entries, parameters need {offset}")


def backward_heads(task_losses: Tensor, head_params: Sequence[nn.Parameter], weights: Tensor | None = None) -> None:
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

    def __init__(self, model: nn.Module, compute_losses) -> None:
        super().__init__()
        self.model = model
        self._compute_losses = compute_losses

    def forward(self, batch):
        return self._compute_losses(batch)


def functional_losses(model: nn.Module, compute_losses, batch, overrides: dict[str, Tensor]) -> Tensor:
    """`compute_losses(batch)` with the named parameters in `overrides` substituted and every buffer replaced
    by a copy. The model keeps its mode: in train mode batch norm still normalises with the batch statistics,
    but it updates the running statistics of the copies, which are dropped, so the trainer's own forward pass
    stays the only one that moves them."""
    state = {f"model.{name}": buf.clone() for name, buf in model.named_buffers()}
    state.update({f"model.{name}": value for name, value in overrides.items()})
    return torch.func.functional_call(_LossesOf(model, compute_losses), state, (batch,))


def parameter_names(model: nn.Module, params: Sequence[nn.Parameter]) -> list[str]:
    """The names under which `model` holds `params` (the keys `functional_losses` substitutes)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError(f"parameters {missing} are not parameters of the model")
    return [by_id[id(p)] for p in params]


def _floating_leaves(tree) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree] if tree.is_floating_point() else []
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _floating_leaves(item)]
    if isinstance(tree, dict):
        return [leaf for item in tree.values() for leaf in _floating_leaves(item)]
    return []


def _replace_floating_leaves(tree, leaves: list[Tensor]):
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
    compute_losses,
    batch,
    params: Sequence[nn.Parameter],
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
                overrides[name] = fwAD.make_dual(p.detach(), torch.zeros_like(p))
            else:
                overrides[name] = fwAD.make_dual(values[i], direction[i].detach().to(values[i].dtype))
        data = [fwAD.make_dual(t.detach(), torch.zeros_like(t)) for t in _floating_leaves(batch)]
        out = functional_losses(model, compute_losses, _replace_floating_leaves(batch, data), overrides)
        losses, derivatives = fwAD.unpack_dual(out)
        if derivatives is None:  # the losses do not depend on `params`
            derivatives = torch.zeros_like(losses)
        return derivatives.clone(), losses.clone()
