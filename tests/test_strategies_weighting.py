"""UW, DWA, GLS, GradNorm, SLGrad, OL-AUX, GCosim, Auto-Lambda: each one's defining property, then every one of
them through the real trainer (finite gradients, determinism, learning, the 1-task error)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from tune_mtl.core.errors import UserError
from tune_mtl.models.mlp import build_mlp_hps
from tune_mtl.strategies import build
from tune_mtl.strategies.base import StepContext
from tune_mtl.strategies.gradnorm import last_shared_layer
from tune_mtl.training.trainer import Trainer

STRATEGIES = ["uw", "dwa", "gls", "gradnorm", "slgrad", "olaux", "gcosim", "autolambda"]
AUXILIARY = {"slgrad", "olaux", "gcosim", "autolambda"}




def toy_trainer(name: str, params: dict | None = None, **dataset) -> Trainer:
    return Trainer({
        "dataset": {"name": "toy_regression", "num_tasks": 3, "input_dim": 20, **dataset},
        "strategy": {"name": name, **(params or {})},
        "training": {"batch_size": 32},
    })


def run_steps(trainer: Trainer, n: int) -> None:
    batches = iter(trainer.train_loader)
    for _ in range(n):
        trainer.train_step(next(batches))


def mlp_context(T: int = 3, B: int = 8, seed: int = 0, dtype=torch.float64) -> StepContext:
    torch.manual_seed(seed)
    model = build_mlp_hps(5, [1] * T, shared_layers=2, shared_width=6, task_layers=0, task_width=1).to(dtype)
    x, ys = torch.randn(B, 5, dtype=dtype), tuple(torch.randn(B, dtype=dtype) for _ in range(T))

    def compute_losses(batch):
        _, outputs = model(batch[0])
        return torch.stack([(o.reshape(-1) - y) ** 2 for o, y in zip(outputs, batch[1], strict=True)])

    return StepContext(compute_losses((x, ys)), model, model.shared_parameters(), model.task_parameters(), None,
                       0, 0, (x, ys), compute_losses)


# -- defining properties ------------------------------------------------------------------------------------


def test_uw_weights_are_exp_minus_log_variance_in_each_form():
    ctx = mlp_context()
    uw = build("uw", 3)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    s = uw.log_vars.detach().double()
    torch.testing.assert_close(uw.weights(ctx), 0.5 * torch.exp(-s))  # no task kinds: LibMTL's regression form
    ctx.task_kinds = ["classification", "regression", "segmentation"]
    torch.testing.assert_close(uw.weights(ctx), torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64) * torch.exp(-s))
    classification = build("uw", 3, {"form": "classification", "init": 0.0})
    torch.testing.assert_close(classification.weights(ctx), torch.ones(3).double())
    uw.backward(ctx)  # d/ds_t [c_t exp(-s_t) L_t + s_t / 2] = -c_t exp(-s_t) L_t + 1/2
    c = torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    expected = -c * torch.exp(-s) * ctx.task_losses.detach() + 0.5
    torch.testing.assert_close(uw.log_vars.grad.double(), expected, rtol=1e-5, atol=1e-6)


def test_dwa_follows_the_formula_and_is_uniform_for_two_epochs():
    dwa = build("dwa", 3, {"temperature": 2.0})
    ctx = mlp_context()
    assert dwa.weights(ctx).tolist() == [1.0, 1.0, 1.0]
    dwa.end_epoch(0, torch.tensor([1.0, 2.0, 4.0]))
    assert dwa.weights(ctx).tolist() == [1.0, 1.0, 1.0]
    dwa.end_epoch(1, torch.tensor([0.5, 2.0, 2.0]))
    ratios = [0.5 / 1.0, 2.0 / 2.0, 2.0 / 4.0]
    exps = [math.exp(r / 2.0) for r in ratios]
    expected = [3 * e / sum(exps) for e in exps]
    assert dwa.weights(ctx).tolist() == pytest.approx(expected, rel=1e-12)
    dwa.end_epoch(2, torch.tensor([0.5, 1.0, 1.0]))  # only the last two epochs count
    exps = [math.exp(r / 2.0) for r in (1.0, 0.5, 0.5)]
    assert dwa.weights(ctx).tolist() == pytest.approx([3 * e / sum(exps) for e in exps], rel=1e-12)
    assert float(dwa.weights(ctx).sum()) == pytest.approx(3.0)


def test_gls_gradient_is_the_gradient_of_the_geometric_mean():
    ctx = mlp_context()
    params = list(ctx.model.parameters())
    expected = torch.autograd.grad(ctx.task_losses.prod() ** (1 / 3), params, retain_graph=True)
    build("gls", 3).backward(ctx)
    for p, g in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def test_gradnorm_weights_move_stay_positive_and_sum_to_the_task_count():
    trainer = toy_trainer("gradnorm", {"alpha": 1.5, "weight_lr": 0.05})
    assert last_shared_layer(trainer.model.shared_parameters()) is trainer.model.encoder[-2].weight
    run_steps(trainer, 4)
    weights = trainer.strategy.task_weights.detach()
    assert not torch.allclose(weights, torch.ones(3))  # the seed's stayed at 1
    assert (weights > 0).all()
    assert float(weights.sum()) == pytest.approx(3.0, rel=1e-6)


def test_olaux_weights_change_after_n_steps_and_only_then():
    trainer = toy_trainer("olaux", {"N": 3, "beta": 0.5})
    strategy = trainer.strategy
    run_steps(trainer, 2)
    assert strategy.task_weights.tolist() == [1.0, 1.0, 1.0]
    run_steps(trainer, 1)
    weights = strategy.task_weights
    assert weights[0] == 1.0 and not torch.equal(weights[1:], torch.ones(2))  # the seed's never moved
    assert strategy.steps_in_window == 0 and torch.equal(strategy.alignment, torch.zeros(2))


def test_olaux_update_is_beta_times_the_main_auxiliary_gradient_inner_product():
    ctx = mlp_context()
    grads = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(ctx.task_losses[t], ctx.shared_params,
                                                                     retain_graph=True)]) for t in range(3)]
    expected = (1.0 + 0.2 * torch.stack([grads[1] @ grads[0], grads[2] @ grads[0]])).clamp_min(0)
    strategy = build("olaux", 3, {"N": 1, "beta": 0.2})
    strategy.backward(ctx)
    torch.testing.assert_close(strategy.task_weights[1:], expected, rtol=1e-10, atol=1e-12)
    shared_grad = torch.cat([p.grad.reshape(-1) for p in ctx.shared_params])
    torch.testing.assert_close(shared_grad, grads[0] + grads[1] + grads[2])  # this step used the old weights


def test_gcosim_drops_a_conflicting_auxiliary_gradient_and_keeps_an_aligned_one():
    theta = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    vectors = ([1.0, 0.0], [1.0, 1.0], [-1.0, 0.2])  # cos with the main gradient: 1, 0.71, -0.98
    g_main, g_aligned, g_conflict = (torch.tensor(v, dtype=torch.float64) for v in vectors)
    losses = torch.stack([(g @ theta).reshape(1) for g in (g_main, g_aligned, g_conflict)])  # [T=3, B=1]
    ctx = StepContext(losses, nn.Module(), [theta], [[], [], []], None, 0, 0, (None, ()), lambda b: None)
    logs = build("gcosim", 3).backward(ctx)
    torch.testing.assert_close(theta.grad, g_main + g_aligned)
    assert [logs[f"weight/{t}"] for t in range(3)] == [1.0, 1.0, 0.0]


def test_autolambda_weights_change():
    trainer = toy_trainer("autolambda", {"weight_lr": 1e-2})
    before = trainer.strategy.task_weights.detach().clone()
    run_steps(trainer, 2)
    after = trainer.strategy.task_weights.detach()
    assert not torch.allclose(after.double(), before.double()) and (after >= 0).all()


def test_autolambda_meta_gradient_matches_the_unrolled_validation_loss():
    """dL_val(theta - lr * sum_t lambda_t g_t) / dlambda by autograd through the whole virtual step."""
    from torch.func import functional_call

    ctx = mlp_context(B=6)
    val_targets = tuple(torch.randn(4, dtype=torch.float64) for _ in range(3))
    ctx.val_batch = (torch.randn(4, 5, dtype=torch.float64), val_targets)
    strategy = build("autolambda", 3, {"weight_init": 0.7, "virtual_lr": 0.3})
    lam = torch.full((3,), 0.7, dtype=torch.float64, requires_grad=True)
    params = dict(ctx.model.named_parameters())
    grads = torch.autograd.grad((lam * ctx.task_losses).sum(), list(params.values()), create_graph=True,
                                retain_graph=True)
    virtual = {n: p - 0.3 * g for (n, p), g in zip(params.items(), grads, strict=True)}
    _, outs = functional_call(ctx.model, virtual, (ctx.val_batch[0],))
    val_loss = ((outs[0].reshape(-1) - ctx.val_batch[1][0]) ** 2).mean()
    expected = torch.autograd.grad(val_loss, lam)[0]
    strategy.backward(ctx)
    torch.testing.assert_close(strategy.meta_gradient, expected, rtol=1e-8, atol=1e-12)


# -- every strategy through the trainer ---------------------------------------------------------------------


@pytest.mark.parametrize("name", STRATEGIES)
def test_one_step_leaves_a_finite_gradient_on_every_trainable_parameter(name):
    trainer = toy_trainer(name)
    trainer.train_step(next(iter(trainer.train_loader)))
    params = [p for p in trainer.model.parameters() if p.requires_grad] + trainer.strategy.parameters()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", STRATEGIES)
def test_same_seed_gives_identical_parameters(name):
    a, b = toy_trainer(name, num_samples=200), toy_trainer(name, num_samples=200)
    for trainer in (a, b):
        run_steps(trainer, 3)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", STRATEGIES)
def test_five_epochs_lower_the_main_task_training_loss(name):
    trainer = toy_trainer(name, num_samples=200)
    before = trainer.evaluate("train")["train/task0/loss"]
    for _ in range(5):
        trainer.train_epoch()
    assert trainer.evaluate("train")["train/task0/loss"] < before


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_single_task_data_set_is_refused_by_the_auxiliary_methods(name):
    if name in AUXILIARY:
        with pytest.raises(UserError, match="at least 2 tasks"):
            build(name, 1)
        with pytest.raises(UserError, match="at least 2 tasks"):
            toy_trainer(name, num_tasks=1)
    else:
        build(name, 1)


@pytest.mark.parametrize("name", STRATEGIES)
def test_resuming_from_a_checkpoint_continues_identically(name):
    straight, resumed = toy_trainer(name, num_samples=200), toy_trainer(name, num_samples=200)
    straight.train_epoch()  # DWA needs epochs in its history; the others their step state
    straight.train_epoch()
    resumed.load_state_dict(copy.deepcopy(straight.state_dict()))
    straight.train_epoch()
    resumed.train_epoch()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_learned_weights_keep_adams_moments_across_a_move_and_a_checkpoint():
    """The helper of GradNorm, Auto-Lambda, FAMO, FORUM and MOML: Adam written out in numpy, with a dtype move
    after the first step and a checkpoint round trip after the second; the moments must carry over both."""
    from tune_mtl.strategies.learned_weights import LearnedWeights

    lr, b1, b2, eps, decay = 0.1, 0.9, 0.999, 1e-8, 0.01
    grads = [np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -4.0]), np.array([-1.0, 2.0, 2.0])]
    w, m, v = np.array([0.2, -0.1, 0.4]), np.zeros(3), np.zeros(3)
    learned = LearnedWeights(torch.tensor(w, dtype=torch.float32), lr=lr, weight_decay=decay)
    for k, g in enumerate(grads, start=1):
        learned.step(torch.tensor(g))
        g = g + decay * w  # Adam's (L2) weight decay
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        w = w - lr * (m / (1 - b1**k)) / (np.sqrt(v / (1 - b2**k)) + eps)
        if k == 1:
            learned.to(torch.device("cpu"), torch.float64)
            assert learned.values.dtype == torch.float64 and learned.values.requires_grad
        if k == 2:
            values, optimizer = learned.state()
            learned = LearnedWeights(torch.zeros(3, dtype=torch.float64), lr=lr, weight_decay=decay)
            learned.load(values, optimizer)
    np.testing.assert_allclose(learned.detached().numpy(), w, rtol=1e-6, atol=1e-7)  # step 1 in float32
