"""SLGrad: the JVP weights against a brute-force per-sample loop, the fallback, one step per batch, the scale."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from tune_mtl.models.hps import HPSModel
from tune_mtl.models.mlp import build_mlp_hps
from tune_mtl.strategies import build
from tune_mtl.strategies import slgrad as slgrad_module
from tune_mtl.strategies.base import StepContext
from tune_mtl.strategies.slgrad import normalised_sample_weights
from tune_mtl.training.trainer import Trainer


@pytest.fixture(autouse=True)
def _float64_one_thread():
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def squared_losses(model: nn.Module):
    def compute_losses(batch):
        x, targets = batch
        _, outputs = model(x)
        return torch.stack([(out.reshape(y.shape) - y) ** 2 for out, y in zip(outputs, targets, strict=True)])

    return compute_losses


def mlp_model(T: int) -> HPSModel:
    return build_mlp_hps(6, [1] * T, shared_layers=2, shared_width=8, task_layers=1, task_width=4)


def conv_bn_model(T: int) -> HPSModel:
    encoder = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Flatten(),
    )
    return HPSModel(encoder, [nn.Linear(2 * 4 * 4, 1) for _ in range(T)])


def make_batch(generator: torch.Generator, B: int, T: int, input_shape: tuple[int, ...]):
    targets = tuple(torch.randn(B, generator=generator) for _ in range(T))
    return torch.randn(B, *input_shape, generator=generator), targets


def step_context(model: HPSModel, batch, val_batch) -> StepContext:
    compute_losses = squared_losses(model)
    losses = compute_losses(batch)  # the trainer's forward: the one pass allowed to move batch-norm statistics
    return StepContext(
        losses=losses, model=model, shared_params=model.shared_parameters(), task_params=model.task_parameters(),
        representation=None, step=0, epoch=0, batch=batch, compute_losses=compute_losses, val_batch=val_batch,
    )


def brute_force_weights(model: HPSModel, ctx: StepContext) -> torch.Tensor:
    """The reference's way: a per-sample backward for every (task, sample), inner product, clamp, normalise."""
    val_model = copy.deepcopy(model)  # its own buffers: this extra forward must not touch the model's statistics
    val_loss = squared_losses(val_model)(ctx.val_batch)[0].mean()
    val_grad = torch.autograd.grad(val_loss, val_model.shared_parameters())
    T, B = ctx.losses.shape
    inner = torch.zeros(T, B)
    for t in range(T):
        for i in range(B):
            grads = torch.autograd.grad(ctx.losses[t, i], ctx.shared_params, retain_graph=True)
            inner[t, i] = sum((g * v).sum() for g, v in zip(grads, val_grad, strict=True))
    clamped = inner.clamp_min(0)
    return clamped / clamped.sum() * (T * B)


@pytest.mark.parametrize(
    "make_model, input_shape", [(mlp_model, (6,)), (conv_bn_model, (1, 8, 8))], ids=["mlp", "conv-batchnorm"]
)
def test_weights_match_brute_force_per_sample_gradients(make_model, input_shape):
    torch.manual_seed(0)
    T, B = 3, 7
    model = make_model(T).train()
    g = torch.Generator().manual_seed(1)
    ctx = step_context(model, make_batch(g, B, T, input_shape), make_batch(g, 5, T, input_shape))
    buffers_after_forward = {k: v.clone() for k, v in model.named_buffers()}
    expected = brute_force_weights(model, ctx)
    weighted = (expected * ctx.losses).mean(dim=1).sum()
    expected_grads = torch.autograd.grad(weighted, list(model.parameters()), retain_graph=True)

    strategy = build("slgrad", T)
    strategy.backward(ctx)

    assert (expected > 0).any() and (expected == 0).any()  # a real mix of kept and clamped samples
    torch.testing.assert_close(strategy.last_weights, expected, atol=1e-6, rtol=1e-6)
    for p, g_expected in zip(model.parameters(), expected_grads, strict=True):
        torch.testing.assert_close(p.grad, g_expected, atol=1e-6, rtol=1e-6)
    for name, value in model.named_buffers():  # running stats moved once (the trainer's forward), not 3 times
        assert torch.equal(value, buffers_after_forward[name]), name


def test_all_weights_clamped_to_zero_fall_back_to_uniform_and_warn_once(caplog):
    # prediction = h * a * x with x > 0: training targets far above, validation targets far below the
    # prediction, so every per-sample gradient opposes the validation gradient.
    model = HPSModel(nn.Linear(1, 1, bias=False), [nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)])
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    x = torch.rand(4, 1) + 0.5
    strategy = build("slgrad", 2)
    with caplog.at_level(logging.WARNING, logger=slgrad_module.__name__):
        for _ in range(2):
            model.zero_grad()
            ctx = step_context(model, (x, (torch.full((4,), 10.0), torch.full((4,), 10.0))),
                               (x, (torch.full((4,), -10.0), torch.full((4,), -10.0))))
            logs = strategy.backward(ctx)
            assert torch.equal(strategy.last_weights, torch.ones(2, 4))
            assert logs["uniform_fallback"] == 1.0
    warnings = [r for r in caplog.records if "clamped to zero" in r.getMessage()]
    assert len(warnings) == 1


def test_uniform_weights_give_exactly_the_plain_mean_loss_gradient(monkeypatch):
    torch.manual_seed(0)
    T, B = 2, 6
    g = torch.Generator().manual_seed(2)
    batch, val_batch = make_batch(g, B, T, (6,)), make_batch(g, 4, T, (6,))
    model = mlp_model(T)
    reference = copy.deepcopy(model)
    build("uniform", T).backward(step_context(reference, batch, val_batch))

    def constant_derivatives(model, compute_losses, batch, params, direction, at=None):
        return torch.full((T, B), 0.5), None  # a constant: every weight becomes 1

    monkeypatch.setattr(slgrad_module.jac, "per_sample_directional_derivatives", constant_derivatives)
    strategy = build("slgrad", T)
    logs = strategy.backward(step_context(model, batch, val_batch))
    assert torch.equal(strategy.last_weights, torch.ones(T, B))
    assert logs["weight/0"] == pytest.approx(1.0) and logs["weight/1"] == pytest.approx(1.0)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-12, rtol=1e-12)


def test_normalisation_gives_mean_one_over_all_entries():
    weights, fell_back = normalised_sample_weights(torch.tensor([[2.0, -1.0, 0.0], [1.0, 5.0, -5.0]]))
    assert not fell_back
    torch.testing.assert_close(weights, torch.tensor([[2.0, 0.0, 0.0], [1.0, 5.0, 0.0]]) * 6 / 8)
    assert weights.mean() == pytest.approx(1.0)


@pytest.mark.parametrize("lookahead", [False, True], ids=["default", "lookahead"])
def test_exactly_one_optimizer_step_per_batch(lookahead):
    params = {} if not lookahead else {"lookahead": True}
    assert build("slgrad", 2).knobs.lookahead is False  # off by default
    trainer = Trainer({
        "dataset": {"name": "toy_regression", "num_tasks": 2, "input_dim": 10, "num_samples": 100},
        "strategy": {"name": "slgrad", **params},
        "optimizer": {"name": "sgd", "lr": 0.05, "beta1": 0.0},
        "training": {"batch_size": 16, "val_batch_size": 16},
    })
    steps = []
    original_step = trainer.optimizer.step
    trainer.optimizer.step = lambda *a, **k: (steps.append(1), original_step(*a, **k))[1]
    batches = iter(trainer.train_loader)
    for n in range(1, 3):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.train_step(next(batches))
        assert len(steps) == n
        for p, old in zip(trainer.model.parameters(), before, strict=True):  # theta - lr * grad, nothing else
            torch.testing.assert_close(p.detach(), old - 0.05 * p.grad, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("make_model, input_shape", [(mlp_model, (6,)), (conv_bn_model, (1, 8, 8))],
                         ids=["mlp", "conv-batchnorm"])
def test_lookahead_weights_are_the_brute_force_weights_at_the_virtual_point(make_model, input_shape):
    """theta' = theta - lookahead_lr * grad_shared sum_t wbar_t L_t(theta) (wbar = 1 at the first step, the previous
    batch's mean weights after): the reference moves a copy of the model there and repeats the per-sample loop."""
    torch.manual_seed(0)
    T, B, lr = 3, 7, 0.3
    model = make_model(T).train()
    g = torch.Generator().manual_seed(2)
    strategy = build("slgrad", T, {"lookahead": True, "lookahead_lr": lr})
    for _ in range(2):
        ctx = step_context(model, make_batch(g, B, T, input_shape), make_batch(g, 5, T, input_shape))
        previous = torch.ones(T) if strategy.task_weights is None else strategy.task_weights.clone()
        moved = copy.deepcopy(model)
        step_grads = torch.autograd.grad((previous * ctx.task_losses).sum(), ctx.shared_params, retain_graph=True)
        with torch.no_grad():
            for p, grad in zip(moved.shared_parameters(), step_grads, strict=True):
                p -= lr * grad
        moved_ctx = step_context(copy.deepcopy(moved), ctx.batch, ctx.val_batch)
        expected = brute_force_weights(moved_ctx.model, moved_ctx)
        at_theta = brute_force_weights(model, ctx)
        assert not torch.allclose(expected, at_theta, atol=1e-3)  # the look-ahead changes the weights here
        strategy.backward(ctx)
        torch.testing.assert_close(strategy.last_weights, expected, atol=1e-6, rtol=1e-6)
        with torch.no_grad():  # the trainer's step, so that the second batch starts elsewhere
            for p in model.parameters():
                p -= 0.1 * p.grad
                p.grad = None
