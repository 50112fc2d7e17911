"""FairGrad, SDMGrad, FAMO, DB-MTL, STCH, ExcessMTL, MoDo, MOML, FORUM, Recon: defining properties on random
inputs, then the trainer-level contract for each (finite grads, seeded determinism, learning, checkpoints)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from tune_mtl import strategies
from tune_mtl.core.errors import UserError
from tune_mtl.strategies.base import StepContext
from tune_mtl.strategies.db_mtl import DBMTL
from tune_mtl.strategies.fairgrad import fairgrad_weights
from tune_mtl.strategies.famo import FAMO
from tune_mtl.strategies.forum import solve_forum_qp
from tune_mtl.strategies.learned_weights import LearnedWeights
from tune_mtl.strategies.modo import MoDo
from tune_mtl.strategies.moml import MOML
from tune_mtl.strategies.recon import conflict_counts
from tune_mtl.strategies.sdmgrad import SDMGrad
from tune_mtl.strategies.stch import STCH, smooth_tchebycheff
from tune_mtl.strategies.stochastic_moo import project_to_simplex
from tune_mtl.training.trainer import Trainer

torch.set_num_threads(1)

NAMES = ["fairgrad", "sdmgrad", "famo", "db-mtl", "stch", "excessmtl", "modo", "moml", "forum", "recon"]
THREE_SHARED = {"name": "mlp", "shared_layers": 3, "shared_width": 8, "task_layers": 0}
KNOBS = {"recon": {"warmup_steps": 2, "k": 1}, "stch": {"warmup_epochs": 1}, "forum": {"inner_steps": 2}}


def config(name: str, model: dict | None = None, **knobs) -> dict:
    return {
        "dataset": {"name": "toy_regression", "num_tasks": 3, "input_dim": 20, "num_samples": 110},
        "model": model or {"name": "mlp", "shared_layers": 2, "shared_width": 16, "task_layers": 1, "task_width": 8},
        "optimizer": {"name": "adam", "lr": 1e-2},
        "strategy": {"name": name, **KNOBS.get(name, {}), **knobs},
        "training": {"batch_size": 32},
    }


def params_of(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def fake_ctx(task_losses: torch.Tensor, epoch: int = 0) -> StepContext:
    return StepContext(losses=task_losses.unsqueeze(1), model=torch.nn.Identity(), shared_params=[],
                       task_params=[], representation=None, step=0, epoch=epoch, batch=None,
                       compute_losses=None)


# -- defining properties ----------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_fairgrad_weights_solve_the_fairness_equation(alpha):
    g = torch.Generator().manual_seed(1)
    J = torch.randn(4, 30, generator=g, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [3.0], [0.5]])
    G = J @ J.T
    w = fairgrad_weights(G, alpha)
    assert (w > 0).all()
    target = w.pow(-1.0 / alpha)
    assert torch.allclose(G @ w, target, rtol=1e-6, atol=0)


def test_stch_tends_to_the_weighted_tchebycheff_max_when_mu_goes_to_zero():
    values = torch.tensor([0.3, -1.2, 0.29, 0.1])
    for mu in (1.0, 0.1, 1e-3):
        s = smooth_tchebycheff(values, mu)
        assert values.max() <= s <= values.max() + mu * np.log(4) + 1e-6
    # after warm-up the loss weights are T * softmax(log(l/z)/mu) / l: all on the worst normalised task
    strategy = STCH(3, mu=1e-4, warmup_epochs=0)
    strategy.loss_sum, strategy.loss_count = torch.tensor([1.0, 2.0, 4.0]), 1  # nadir z
    losses = torch.tensor([0.5, 1.5, 1.0])  # l/z = 0.5, 0.75, 0.25 -> task 1 is the max
    w = strategy.weights(fake_ctx(losses, epoch=1))
    assert torch.allclose(w, torch.tensor([0.0, 3 / 1.5, 0.0]), atol=1e-6)


def test_db_mtl_scaled_task_gradients_have_equal_norms():
    g = torch.Generator().manual_seed(2)
    strategy = DBMTL(3, beta=0.5, beta_sigma=0.5)
    for _ in range(3):
        J = torch.randn(3, 50, generator=g, dtype=torch.float64) * torch.tensor([[100.0], [1.0], [0.01]])
        scaled = strategy.scaled_gradients(J)
        norms = scaled.norm(dim=1)
        assert torch.allclose(norms, norms.max().expand(3), rtol=1e-6)
    fresh = DBMTL(3, beta=0.5)  # first step: EMA = (1 - beta) J, then every row scaled to the largest norm
    buf = 0.5 * J
    norms = buf.norm(dim=1, keepdim=True)
    assert torch.allclose(fresh.aggregate(J), (norms.max() / norms * buf).sum(0), rtol=1e-5, atol=1e-3)


def test_famo_moves_weight_to_the_task_whose_loss_fell_least():
    strategy = FAMO(3, w_lr=0.1, gamma=0.0)
    before = torch.tensor([1.0, 1.0, 1.0])
    after = torch.tensor([0.99, 0.5, 0.6])  # task 0 decreased least, task 1 most
    z0 = strategy.task_weights().clone()
    strategy.update(before, after)
    z1 = strategy.task_weights()
    assert z1[0] > z0[0] and z1[1] < z0[1] and z1[2] < z0[2]  # (Adam: first step moves each logit by lr)


def test_famo_model_gradient_is_that_of_the_weighted_log_losses():
    strategy = FAMO(2)
    strategy.learned = LearnedWeights(torch.tensor([0.3, -0.3]), lr=strategy.knobs.w_lr)
    x = torch.tensor([0.7, 2.0], requires_grad=True)
    ctx = fake_ctx(x * 1.0)
    ctx.batch = "b"
    (strategy.weights(ctx) * x).sum().backward()
    z = torch.softmax(strategy.logits.detach(), 0)
    c = (z / x.detach()).sum()
    assert torch.allclose(x.grad, z / (c * x.detach()))  # grad of sum z log l / c


def test_excessmtl_raises_the_weight_of_the_task_with_larger_excess_risk():
    strategy = strategies.build("excessmtl", 2, {"robust_step_size": 0.5})
    w = torch.zeros(2, requires_grad=True)
    scales = [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 3.0])]  # second step: task 1's gradient grows
    for scale in scales:
        losses = (scale * torch.stack([w.sum() + 1.0, w.sum() + 1.0]) * torch.tensor([1.0, 1.0])).unsqueeze(1)
        ctx = StepContext(losses=losses * (w + 1.0).unsqueeze(1), model=None, shared_params=[w], task_params=[[], []],
                          representation=None, step=0, epoch=0, batch=None, compute_losses=None)
        weights = strategy.weights(ctx)
    assert weights.sum() == pytest.approx(2.0) and weights[1] > weights[0]


def test_modo_and_sdmgrad_weights_stay_on_the_simplex_and_give_the_documented_update():
    g = torch.Generator().manual_seed(3)
    J1, J2, J3 = (torch.randn(3, 20, generator=g) for _ in range(3))
    modo = MoDo(3, gamma=0.5, rho=0.1)
    lam0 = modo.lambd.clone()
    d = modo.aggregate_pieces(J1, J2, J3)
    expected = project_to_simplex(lam0 - 0.5 * (J1 @ (J2.T @ lam0) + 0.1 * lam0))
    assert torch.allclose(modo.lambd, expected) and torch.allclose(d, expected @ J3)
    sdm = SDMGrad(3, lamda=0.3, niter=20)
    d = sdm.aggregate_pieces(J3, J1, J2)
    assert (sdm.w >= 0).all() and sdm.w.sum() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(d, (sdm.w.to(J3.dtype) @ J3 + 0.3 * J3.mean(0)) / 1.3, atol=1e-6)


def test_simplex_projection_matches_a_brute_force_qp():
    g = torch.Generator().manual_seed(4)
    from scipy.optimize import minimize

    for _ in range(5):
        v = torch.randn(5, generator=g, dtype=torch.float64) * 3
        p = project_to_simplex(v)
        ref = minimize(lambda w, v=v: ((w - v.numpy()) ** 2).sum(), np.full(5, 0.2), method="SLSQP",
                       bounds=[(0, None)] * 5,
                       constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}], options={"ftol": 1e-14}).x
        assert np.allclose(p.numpy(), ref, atol=1e-5)


def test_forum_qp_solution_is_feasible_and_no_worse_than_feasible_points():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(4, 12))
    M, pi, c = A @ A.T, rng.normal(size=3) * 0.5, 0.3
    w = solve_forum_qp(M, pi, c)
    obj = lambda v: v @ M @ v - c * v[-1]  # noqa: E731
    assert w[:3].sum() == pytest.approx(1.0, abs=1e-6) and w[-1] >= pi @ w[:3] - 1e-6 and (w >= 0).all()
    for _ in range(200):
        v = rng.dirichlet(np.ones(3))
        v = np.append(v, max(pi @ v, 0.0) + rng.exponential())
        assert obj(w) <= obj(v) + 1e-7


def test_moml_hypergradient_matches_finite_differences():
    trainer = Trainer(config("moml", inner_lr=0.5))
    batch = next(iter(trainer.train_loader))
    losses, rep, _ = trainer.forward_losses(batch)
    ctx = StepContext(losses, trainer.model, trainer.model.shared_parameters(), trainer.model.task_parameters(), rep,
                      0, 0, batch, trainer.compute_losses)
    strategy: MOML = trainer.strategy
    strategy.learned = LearnedWeights(torch.tensor([0.2, -0.1, 0.0]), lr=strategy.knobs.outer_lr)
    hyper = strategy.hypergradients(ctx)
    params = list(trainer.model.parameters())
    base = [p.detach().clone() for p in params]
    lower, upper = torch.arange(16), torch.arange(16, 32)

    def ul_losses(logits):  # UL losses after the virtual step w - lr * softmax(a)^T J_LL(w)
        with torch.no_grad():
            for p, b in zip(params, base, strict=True):
                p.copy_(b)
        ll = trainer.compute_losses((batch[0][lower], tuple(t[lower] for t in batch[1]))).mean(1)
        step = torch.autograd.grad((torch.softmax(logits, 0) * ll).sum(), params)
        with torch.no_grad():
            for p, s in zip(params, step, strict=True):
                p.sub_(0.5 * s)
            out = trainer.compute_losses((batch[0][upper], tuple(t[upper] for t in batch[1]))).mean(1)
            for p, b in zip(params, base, strict=True):
                p.copy_(b)
        return out.double()

    eps = 1e-3
    for j in range(3):
        e = torch.zeros(3)
        e[j] = eps
        fd = (ul_losses(strategy.logits.detach() + e) - ul_losses(strategy.logits.detach() - e)) / (2 * eps)
        assert torch.allclose(hyper[:, j].double(), fd, rtol=0.05, atol=1e-5)


def test_recon_scores_conflicts_per_layer_and_splits_exactly_the_top_k():
    J = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 1.0],
                      [-1.0, -1.0, 1.0, 1.0, 1.0, -1.0],
                      [1.0, 1.0, 1.0, 1.0, 0.0, -1.0]])
    blocks = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    assert conflict_counts(J, blocks, 0.0).tolist() == [2.0, 0.0, 2.0]
    # a constructed model: task losses that conflict on the first shared layer only
    trainer = Trainer(config("recon", THREE_SHARED, warmup_steps=1, k=1, threshold=0.0))
    recon = trainer.strategy
    enc = trainer.model.encoder
    first, third = enc[0].weight, enc[4].weight
    losses = torch.stack([first.sum() + third.sum(), -first.sum() + third.sum(), first.sum() + 2 * third.sum()])
    ctx = StepContext(losses.unsqueeze(1), trainer.model, trainer.model.shared_parameters(),
                      trainer.model.task_parameters(), None, 0, 0, None, None)
    recon._score(ctx)
    assert recon.scores.tolist() == [2.0, 0.0, 0.0]
    assert recon.chosen_modules() == [0]


def test_recon_rejects_non_sequential_encoders_and_itself_as_base():
    with pytest.raises(UserError):
        strategies.build("recon", 2, {"base": "recon"})
    with pytest.raises(UserError):
        strategies.build("recon", 2, {"base": "no-such-strategy"})

    class Odd(torch.nn.Module):
        encoder = None
    with pytest.raises(UserError, match="sequential"):
        strategies.build("recon", 2).setup(Odd(), torch.device("cpu"))


def test_recon_after_warmup_has_exactly_k_task_specific_modules():
    trainer = Trainer(config("recon", THREE_SHARED, warmup_steps=2, k=2))
    trainer.train_epoch()
    enc = trainer.model.encoder
    assert len(enc.split) == 2
    assert enc.split == trainer.strategy.chosen_modules()
    shared = {id(p) for p in trainer.model.shared_parameters()}
    for t, params in enumerate(trainer.model.task_parameters()):
        split_ids = {id(p) for i in enc.split for p in enc.layers[i][t].parameters()}
        assert split_ids <= {id(p) for p in params} and not split_ids & shared
    assert all(id(p) in {id(q) for g in trainer.optimizer.param_groups for q in g["params"]}
               for p in trainer.model.parameters())


def test_unknown_names_resolve_and_aliases():
    assert strategies.resolve("DBMTL") == "db-mtl" and strategies.resolve("db_mtl") == "db-mtl"


# -- the trainer-level contract, every strategy ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_one_step_leaves_finite_grad_on_every_trainable_parameter(name):
    trainer = Trainer(config(name, **({"warmup_steps": 1} if name == "recon" else {})))
    trainer.train_step(next(iter(trainer.train_loader)))
    for pname, p in trainer.model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    for p in trainer.strategy.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_parameters_and_training_lowers_the_main_loss(name):
    a, b = Trainer(config(name)), Trainer(config(name))
    start = a.evaluate("train")["train/task0/loss"]
    for _ in range(5):
        a.train_epoch()
    for _ in range(2):
        b.train_epoch()
    b_params = params_of(b)
    for _ in range(3):
        b.train_epoch()
    assert all(torch.equal(x, y) for x, y in zip(params_of(a), params_of(b), strict=True))
    assert a.evaluate("train")["train/task0/loss"] < 0.9 * start
    assert not all(torch.equal(x, y) for x, y in zip(b_params, params_of(b), strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_gives_the_same_parameters_and_next_steps(name):
    trainer = Trainer(config(name))
    trainer.train_epoch()
    trainer.train_epoch()  # recon: past its 2 warm-up steps, so the split is in the checkpoint
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    buffer.seek(0)
    resumed = Trainer(config(name))
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert all(torch.equal(x, y) for x, y in zip(params_of(trainer), params_of(resumed), strict=True))
    trainer.train_epoch()
    resumed.train_epoch()
    assert all(torch.equal(x, y) for x, y in zip(params_of(trainer), params_of(resumed), strict=True))
    if name == "recon":
        assert len(resumed.model.encoder.split) == 1
