"""`strategies.jacobian.task_jacobian`: both methods against independent references, the method rule, and the
fallback that only a batching error triggers (logged every time), while OOM and other errors propagate."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from tune_mtl.strategies import jacobian as jac

torch.set_num_threads(1)


class ItemInBackward(torch.autograd.Function):
    """Identity whose backward reads a value (`.item()`): data-dependent control flow, which autograd's vmap
    cannot batch ("Batching rule not implemented for aten::item")."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * (1.0 if grad.abs().sum().item() >= 0 else 0.0)


class RaisesInBackward(torch.autograd.Function):
    """Identity whose backward raises a given error (stands in for CUDA OOM and other failures)."""

    error: Exception = RuntimeError("boom")

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RaisesInBackward.error


def linear_case(seed: int = 0, T: int = 3, B: int = 5, n: int = 4, weight_op=None):
    """loss_t = mean_i ((x_i W^T)_t - y_it)^2 with a bias-free W [T, n]: dL_t/dW = row t only, equal to
    2/B sum_i (pred_it - y_it) x_i (the closed form the tests compare with). `weight_op` (identity-valued)
    wraps W, deep in the graph: a batched pass that fails there has already run the nodes above it."""
    g = torch.Generator().manual_seed(seed)
    W = nn.Parameter(torch.randn(T, n, generator=g, dtype=torch.float64))
    x, y = torch.randn(B, n, generator=g, dtype=torch.float64), torch.randn(B, T, generator=g, dtype=torch.float64)
    pred = x @ (W if weight_op is None else weight_op(W)).T
    losses = ((pred - y) ** 2).mean(dim=0)
    expected = torch.zeros(T, T * n, dtype=torch.float64)
    for t in range(T):
        expected[t, t * n : (t + 1) * n] = 2 / B * ((pred[:, t] - y[:, t]).detach() @ x)
    return losses, [W], expected


@pytest.mark.parametrize("method", ["batched", "loop", "auto"])
def test_jacobian_matches_the_closed_form(method):
    losses, params, expected = linear_case()
    torch.testing.assert_close(jac.task_jacobian(losses, params, method=method), expected)


def conv_case(seed: int = 1, T: int = 3):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, T)).double()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)

    def losses_of(flat_params: dict[str, torch.Tensor]) -> torch.Tensor:
        return (torch.func.functional_call(net, flat_params, (x,)) ** 2).mean(dim=0)

    named = dict(net.named_parameters())
    # Independent reference: torch.func's reverse-mode Jacobian of a pure function of the parameters.
    parts = torch.func.jacrev(losses_of)({k: v.detach() for k, v in named.items()})
    expected = torch.cat([parts[k].reshape(T, -1) for k in named], dim=1)
    return losses_of(named), list(named.values()), expected


@pytest.mark.parametrize("method", ["batched", "loop", "auto"])
def test_jacobian_of_a_conv_net_matches_torch_func_jacrev(method):
    losses, params, expected = conv_case()
    torch.testing.assert_close(jac.task_jacobian(losses, params, retain_graph=False, method=method), expected)


def test_unused_parameters_give_zero_columns():
    losses, params, expected = linear_case()
    unused = nn.Parameter(torch.ones(2, dtype=torch.float64))
    for method in ("batched", "loop"):
        J = jac.task_jacobian(losses, [*params, unused], method=method)
        torch.testing.assert_close(J, torch.cat([expected, torch.zeros(3, 2, dtype=torch.float64)], dim=1))


def test_retain_graph_keeps_the_graph_for_a_later_backward():
    for method in ("batched", "loop"):
        losses, params, _ = linear_case()
        jac.task_jacobian(losses, params, retain_graph=True, method=method)
        losses.sum().backward()  # would raise "backward through the graph a second time" if freed
    losses, params, _ = linear_case()
    jac.task_jacobian(losses, params, retain_graph=False, method="loop")
    with pytest.raises(RuntimeError, match="second time"):
        losses.sum().backward()


def test_unknown_method_is_rejected():
    losses, params, _ = linear_case()
    with pytest.raises(ValueError, match="method"):
        jac.task_jacobian(losses, params, method="vmap")


# -- the method rule ----------------------------------------------------------------------------------------
def test_rule_loops_for_convolutions_on_cpu_only():
    conv = list(nn.Conv2d(1, 2, 3).parameters())
    conv1d = list(nn.Conv1d(1, 2, 3).parameters())
    mlp = list(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).parameters())
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert jac.choose_method(conv, cpu) == "loop"
    assert jac.choose_method(conv1d, cpu) == "loop"
    assert jac.choose_method(mlp + conv, cpu) == "loop"
    assert jac.choose_method(mlp, cpu) == "batched"
    assert jac.choose_method(conv, cuda) == "batched"
    assert jac.choose_method(mlp, cuda) == "batched"


@pytest.mark.parametrize(("case", "chosen"), [(linear_case, "batched"), (conv_case, "loop")])
def test_auto_runs_the_chosen_method(monkeypatch, case, chosen):
    calls = []
    for name in ("batched_jacobian", "looped_jacobian"):
        real = getattr(jac, name)
        monkeypatch.setattr(jac, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    losses, params, expected = case()
    torch.testing.assert_close(jac.task_jacobian(losses, params), expected)
    assert calls == [{"batched": "batched_jacobian", "loop": "looped_jacobian"}[chosen]]


# -- fallback only for batching errors ------------------------------------------------------------------------
def test_batching_error_falls_back_to_the_loop_and_logs_each_time(caplog):
    caplog.set_level(logging.WARNING, logger=jac.__name__)
    for call in range(2):  # logged on every fallback, not once per process
        losses, params, expected = linear_case(seed=call, weight_op=ItemInBackward.apply)
        J = jac.task_jacobian(losses, params, retain_graph=False, method="batched")
        torch.testing.assert_close(J, expected)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("Batching rule not implemented" in r.getMessage() for r in warnings)
    assert all("loop of 3 backward passes" in r.getMessage() for r in warnings)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (vmap)"),
        RuntimeError("boom"),
        ValueError("vmap: not a RuntimeError"),
    ],
    ids=["oom", "runtime", "value"],
)
@pytest.mark.parametrize("method", ["batched", "loop"])
def test_other_errors_propagate_without_fallback(monkeypatch, caplog, error, method):
    caplog.set_level(logging.WARNING, logger=jac.__name__)
    monkeypatch.setattr(RaisesInBackward, "error", error)
    losses, params, _ = linear_case()
    with pytest.raises(type(error)) as raised:
        jac.task_jacobian(RaisesInBackward.apply(losses), params, method=method)
    assert raised.value is error
    assert not caplog.records


def test_batching_error_classifier():
    assert jac.is_batching_error(RuntimeError("Batching rule not implemented for aten::item. We could not ..."))
    assert jac.is_batching_error(RuntimeError("vmap: We do not support batching operators with dynamic shape"))
    assert jac.is_batching_error(RuntimeError("Batched grads are not supported with Nested Tensor."))
    assert jac.is_batching_error(NotImplementedError("Batching rule not implemented for aten::foo"))
    assert not jac.is_batching_error(torch.OutOfMemoryError("CUDA out of memory (vmap)"))
    assert not jac.is_batching_error(RuntimeError("Trying to backward through the graph a second time"))
    assert not jac.is_batching_error(ValueError("vmap"))


# -- Jacobian plus head gradients (what a gradient-aggregation step takes) ------------------------------------
def hps_case(conv: bool, T: int = 3, seed: int = 2):
    """A shared encoder and one head per task; head 2 holds a frozen and an unused parameter. Reference: each
    loss's full gradient from torch.func.jacrev (the head of task t must get d loss_t / d head_t only)."""
    torch.manual_seed(seed)
    encoder = (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 5)) if conv
               else nn.Sequential(nn.Linear(6, 5), nn.Tanh()))
    heads = nn.ModuleList(nn.Linear(5, 1) for _ in range(T))
    frozen, unused = nn.Parameter(torch.ones(1), requires_grad=False), nn.Parameter(torch.ones(4))
    heads[2].register_parameter("frozen", frozen)
    heads[2].register_parameter("unused", unused)
    net = nn.ModuleDict({"encoder": encoder, "heads": heads}).double()
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64) if conv else torch.randn(4, 6, dtype=torch.float64)

    def losses_of(state):
        rep = torch.func.functional_call(net.encoder, {k[8:]: v for k, v in state.items() if k.startswith("encoder.")},
                                         (x,))
        outs = [torch.func.functional_call(h, {k.split(".", 2)[2]: v for k, v in state.items()
                                               if k.startswith(f"heads.{t}.")}, (rep,)) for t, h in enumerate(heads)]
        return torch.stack([((o - 0.3 * t) ** 2).mean() for t, o in enumerate(outs)]) + state["heads.2.frozen"].sum()

    state = dict(net.named_parameters())
    full = torch.func.jacrev(losses_of)({k: v.detach() for k, v in state.items()})
    shared = list(net.encoder.parameters())
    J = torch.cat([full[f"encoder.{k}"].reshape(T, -1) for k, _ in net.encoder.named_parameters()], dim=1)
    head_ref = {id(p): full[f"heads.{t}.{k}"][t] for t, h in enumerate(heads) for k, p in h.named_parameters()}
    return losses_of(state), shared, [list(h.parameters()) for h in heads], J, head_ref, (frozen, unused)


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("method", ["auto", "batched", "loop"])
def test_jacobian_and_head_grads_match_torch_func(conv, method):
    losses, shared, task_params, J_ref, head_ref, (frozen, unused) = hps_case(conv)
    J, pairs = jac.task_jacobian_and_head_grads(losses, shared, task_params, retain_graph=False, method=method)
    torch.testing.assert_close(J, J_ref)
    got = {id(p): g for p, g in pairs}
    assert id(frozen) not in got  # frozen parameters get no gradient
    expected = {k: v for k, v in head_ref.items() if k != id(frozen)}
    assert got.keys() == expected.keys()
    for key, g in got.items():
        torch.testing.assert_close(g, expected[key])
    torch.testing.assert_close(got[id(unused)], torch.zeros(4, dtype=torch.float64))
    jac.set_grads(pairs)
    assert all(p.grad is g for p, g in pairs)


def test_loop_takes_head_gradients_in_its_own_passes(monkeypatch):
    """The loop needs exactly T backward passes (none more for the heads); the batched path one plus one."""
    calls = []
    real = torch.autograd.grad
    for conv, method, passes in ((True, "loop", 3), (False, "batched", 2)):
        losses, shared, task_params, *_ = hps_case(conv=conv)
        calls.clear()
        with monkeypatch.context() as patch:
            patch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
            jac.task_jacobian_and_head_grads(losses, shared, task_params, method=method)
        assert len(calls) == passes


def test_head_groups_must_match_the_tasks():
    losses, shared, task_params, *_ = hps_case(conv=False)
    with pytest.raises(ValueError, match="task parameter groups"):
        jac.task_jacobian_and_head_grads(losses, shared, task_params[:2])
