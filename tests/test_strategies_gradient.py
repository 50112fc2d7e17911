"""Gradient-aggregation strategies against their defining properties on random inputs.

References are computed independently (scipy SLSQP on the defining optimisation problem, closed forms), never
from the code under test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from tune_mtl import strategies
from tune_mtl.strategies.aligned_mtl import alignment_matrix
from tune_mtl.strategies.cagrad import cagrad_dual
from tune_mtl.strategies.imtl import imtl_g_weights
from tune_mtl.strategies.min_norm import min_norm_weights, project_simplex
from tune_mtl.strategies.nashmtl import nash_weights
from tune_mtl.strategies.pcgrad import pcgrad_coefficients
from tune_mtl.training.trainer import Trainer

MINE = [
    "mgda", "mgda-ub", "pcgrad", "cagrad", "graddrop", "gradvac", "imtl", "imtl-g", "imtl-l", "nashmtl",
    "aligned-mtl", "upgrad", "dualproj", "moco",
]
STATEFUL = ["gradvac", "nashmtl", "moco", "imtl"]


def random_jacobian(seed: int, T: int, P: int, spread: float = 0.0) -> torch.Tensor:
    """Float64 [T, P] with row norms spread over 10^-spread .. 10^spread."""
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(T, P, generator=g, dtype=torch.float64)
    return J * 10 ** (spread * (2 * torch.rand(T, 1, generator=g, dtype=torch.float64) - 1))


def slsqp_simplex(objective, gradient, T: int, starts: int = 3, seed: int = 0) -> np.ndarray:
    """Best of a few SLSQP runs on the simplex with tight tolerances."""
    rng = np.random.default_rng(seed)
    best = None
    for k in range(starts):
        x0 = np.full(T, 1.0 / T) if k == 0 else rng.dirichlet(np.ones(T))
        res = minimize(objective, x0, jac=gradient, method="SLSQP", bounds=[(0, 1)] * T,
                       constraints={"type": "eq", "fun": lambda x: x.sum() - 1, "jac": lambda x: np.ones(T)},
                       options={"ftol": 1e-16, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    return best.x


# -- MGDA ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T,spread", [(0, 3, 0.0), (1, 5, 0.0), (2, 4, 2.0), (3, 6, 2.0), (4, 8, 1.0)])
def test_mgda_matches_scipy_min_norm(seed, T, spread):
    J = random_jacobian(seed, T, 12, spread)
    G = (J @ J.T).numpy()
    scale = G.diagonal().max()  # SLSQP needs a unit-scale objective to reach 1e-5 on spread rows
    w_ref = slsqp_simplex(lambda w: w @ G @ w / scale, lambda w: 2 * G @ w / scale, T, seed=seed)
    # Polish the reference: refit exactly on its support (the solution of the equality-constrained QP there).
    support = np.flatnonzero(w_ref > 1e-9)
    kkt = np.block([[G[np.ix_(support, support)], np.ones((len(support), 1))], [np.ones((1, len(support))), 0]])
    w_support = np.linalg.solve(kkt, np.r_[np.zeros(len(support)), 1.0])[:-1]
    if (w_support > 0).all():
        w_ref = np.zeros(T)
        w_ref[support] = w_support
    d_ref = w_ref @ J.numpy()
    d = min_norm_weights(G) @ J.numpy()
    assert np.linalg.norm(d - d_ref) <= 1e-5 * np.linalg.norm(d_ref)


def test_mgda_two_tasks_closed_form():
    for seed in range(5):
        J = random_jacobian(seed, 2, 7, 1.0)
        g1, g2 = J[0], J[1]
        expected = float(((g2 - g1) @ g2 / (g1 - g2).pow(2).sum()).clamp(0, 1))
        w = min_norm_weights(J @ J.T)
        assert w[0] == pytest.approx(expected, abs=1e-10) and w[1] == pytest.approx(1 - expected, abs=1e-10)


@pytest.mark.parametrize("spread", [0.0, 1.0, 2.0])
def test_mgda_direction_is_a_common_descent_direction(spread):
    # The min-norm point d satisfies <g_t, d> >= |d|^2 for every task (its optimality condition), also when the
    # gradient norms differ by up to 1e4 (spread 2), where early-stopped Frank-Wolfe fails.
    for seed in range(20):
        J = random_jacobian(100 + seed, 2 + seed % 9, 30, spread)
        agg = strategies.build("mgda", J.shape[0])
        d = agg.aggregate(J)
        assert torch.all(J @ d >= d.dot(d) * (1 - 1e-6))
        assert agg.last_weights.sum().item() == pytest.approx(1.0) and (agg.last_weights >= 0).all()


def test_mgda_normalisation_l2_is_min_norm_of_unit_gradients():
    J = random_jacobian(7, 3, 10, 2.0)
    agg = strategies.build("mgda", 3, {"normalization": "l2"})
    coefficients = agg.combination(J, torch.ones(3, dtype=J.dtype))
    units = J / J.norm(dim=1, keepdim=True)
    d = coefficients @ J
    assert torch.all(units @ d >= d.dot(d) * (1 - 1e-6))


# -- PCGrad --------------------------------------------------------------------------------------------------
def test_pcgrad_removes_conflicts_between_two_tasks():
    for seed in range(10):
        J = random_jacobian(seed, 2, 6)
        if J[0] @ J[1] >= 0:
            J[1] = -J[1]  # force a conflict
        projected = pcgrad_coefficients(J @ J.T) @ J
        assert projected[0] @ J[1] >= -1e-6 and projected[1] @ J[0] >= -1e-6
        # Each projected gradient lost only its component along the *other* gradient.
        g0, g1 = J
        assert torch.allclose(projected[0], g0 - (g0 @ g1) / (g1 @ g1) * g1)


def test_pcgrad_without_conflict_is_the_plain_sum():
    J = torch.rand(4, 9, dtype=torch.float64)  # all entries positive: no pair conflicts
    assert torch.allclose(strategies.build("pcgrad", 4).aggregate(J), J.sum(dim=0))


def test_pcgrad_never_projects_a_gradient_onto_itself():
    torch.manual_seed(0)
    for seed in range(10):
        C = pcgrad_coefficients((J := random_jacobian(seed, 5, 8)) @ J.T)
        assert torch.all(C.diagonal() == 1)


# -- CAGrad --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T,alpha", [(0, 2, 0.5), (1, 3, 0.2), (2, 4, 0.8), (3, 6, 0.5), (4, 3, 0.95)])
def test_cagrad_matches_scipy_solve_of_its_dual(seed, T, alpha):
    J = random_jacobian(seed, T, 10, 0.5).numpy()
    G = J @ J.T
    b = np.full(T, 1.0 / T)
    c = alpha * np.sqrt(b @ G @ b)

    def F(w):
        return w @ G @ b + c * np.sqrt(w @ G @ w)

    def dF(w):
        return G @ b + c * G @ w / np.sqrt(w @ G @ w)

    w_ref = slsqp_simplex(F, dF, T, starts=4, seed=seed)
    w = cagrad_dual(G, alpha)
    assert F(w) <= F(w_ref) + 1e-10 * abs(F(w_ref))
    direction = lambda v: c * (v @ J) / np.linalg.norm(v @ J)  # noqa: E731
    assert np.linalg.norm(direction(w) - direction(w_ref)) <= 1e-4 * np.linalg.norm(b @ J + direction(w_ref))
    # The update itself: g0 + c g_w/|g_w| (rescale 0).
    agg = strategies.build("cagrad", T, {"alpha": alpha, "rescale": 0})
    d = agg.aggregate(torch.as_tensor(J)).numpy()
    assert np.allclose(d, b @ J + direction(w), rtol=1e-6, atol=1e-9)


def test_cagrad_alpha_zero_is_the_average_gradient():
    J = random_jacobian(5, 4, 9)
    for rescale in (0, 1, 2):
        d = strategies.build("cagrad", 4, {"alpha": 0.0, "rescale": rescale}).aggregate(J)
        assert torch.allclose(d, J.mean(dim=0))


# -- Nash-MTL ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T", [(0, 2), (1, 3), (2, 5), (3, 10)])
def test_nash_weights_solve_the_bargaining_equation(seed, T):
    J = random_jacobian(seed, T, 40, 1.0).numpy()
    G = J @ J.T
    G = G / np.linalg.norm(G)
    alpha = nash_weights(G, max_iter=50)
    assert np.all(alpha > 0)
    assert np.allclose(G @ alpha, 1 / alpha, rtol=1e-6)
    # Warm-started from another point it lands on the same (unique) solution.
    assert np.allclose(nash_weights(G, start=np.full(T, 3.0), max_iter=50), alpha, rtol=1e-6)


# -- IMTL ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T", [(0, 2), (1, 3), (2, 6)])
def test_imtl_g_equal_projections_on_unit_gradients(seed, T):
    J = random_jacobian(seed, T, 20, 1.0)
    a = imtl_g_weights(J @ J.T)
    d = a @ J
    projections = (J / J.norm(dim=1, keepdim=True)) @ d
    assert a.sum().item() == pytest.approx(1.0)
    assert torch.allclose(projections, projections[0].expand(T), rtol=1e-8)


def test_imtl_l_scale_gradient_is_that_of_its_loss():
    trainer = Trainer(toy_config("imtl-l"))
    batch = next(iter(trainer.train_loader))
    s = trainer.strategy.log_scales
    with torch.no_grad():
        s.copy_(torch.tensor([0.1, -0.2, 0.3]))
    losses = trainer.compute_losses(batch).mean(dim=1).detach()
    trainer.train_step(batch)
    expected = torch.tensor([0.1, -0.2, 0.3]).exp() * losses - 1  # d/ds (e^s L - s)
    assert torch.allclose(s.grad, expected, atol=1e-6)


# -- UPGrad, DualProj ----------------------------------------------------------------------------------------
def project_onto_dual_cone(J: np.ndarray, x: np.ndarray) -> np.ndarray:
    """argmin |y - x| subject to J y >= 0, straight from the definition (SLSQP in parameter space)."""
    res = minimize(lambda y: 0.5 * np.sum((y - x) ** 2), x, jac=lambda y: y - x, method="SLSQP",
                   constraints={"type": "ineq", "fun": lambda y: J @ y, "jac": lambda y: J},
                   options={"ftol": 1e-16, "maxiter": 1000})
    return res.x


@pytest.mark.parametrize("seed,T", [(0, 2), (1, 3), (2, 5)])
def test_upgrad_is_the_mean_of_dual_cone_projections(seed, T):
    J = random_jacobian(seed, T, 8, 0.5)
    d = strategies.build("upgrad", T).aggregate(J)
    assert torch.all(J @ d >= -1e-10 * J.norm() ** 2)  # conflicts with no task
    Jn = J.numpy()
    reference = np.mean([project_onto_dual_cone(Jn, g) for g in Jn], axis=0)
    assert np.allclose(d.numpy(), reference, atol=1e-6 * np.abs(Jn).max())


def test_dualproj_is_the_projection_of_the_mean():
    J = random_jacobian(3, 4, 6, 0.5)
    d = strategies.build("dualproj", 4).aggregate(J)
    reference = project_onto_dual_cone(J.numpy(), J.numpy().mean(axis=0))
    assert np.allclose(d.numpy(), reference, atol=1e-6 * J.abs().max().item())


# -- Aligned-MTL ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,T,P", [(0, 2, 10), (1, 3, 10), (2, 6, 30), (3, 6, 4)])
def test_aligned_mtl_aligned_matrix_has_equal_singular_values(seed, T, P):
    J = random_jacobian(seed, T, P, 1.0)  # P < T: rank-deficient Jacobian
    for scale in ("min", "median", "rmse"):
        singular = torch.linalg.svdvals(alignment_matrix(J @ J.T, scale) @ J)
        nonzero = singular[: min(T, P)]
        assert torch.allclose(nonzero, nonzero[0].expand_as(nonzero), rtol=1e-6)
        assert torch.all(singular[min(T, P):] < 1e-6 * nonzero[0])
    # "min" keeps the smallest singular value of J.
    assert torch.allclose(nonzero.new_tensor(0) + torch.linalg.svdvals(alignment_matrix(J @ J.T) @ J)[0],
                          torch.linalg.svdvals(J)[min(T, P) - 1])


# -- GradDrop, GradVac, MoCo ---------------------------------------------------------------------------------
def test_graddrop_keeps_one_sign_per_coordinate():
    torch.manual_seed(0)
    J = random_jacobian(1, 4, 200)
    d = strategies.build("graddrop", 4).aggregate(J)
    positive, negative = J.clamp(min=0).sum(dim=0), J.clamp(max=0).sum(dim=0)
    assert torch.all(torch.isclose(d, positive) | torch.isclose(d, negative))
    # Sign purity: a coordinate whose gradients all agree in sign keeps them all.
    same = (J > 0).all(dim=0) | (J < 0).all(dim=0)
    assert torch.allclose(d[same], J.sum(dim=0)[same])
    assert torch.allclose(strategies.build("graddrop", 4, {"leak": 1.0}).aggregate(J), J.sum(dim=0))


def test_gradvac_lifts_similarity_to_its_target():
    J = random_jacobian(2, 2, 10)
    if J[0] @ J[1] > 0:
        J[1] = -J[1]
    agg = strategies.build("gradvac", 2, {"beta": 0.1})
    agg.targets[:] = 0.5
    cosines = (J @ J.T / torch.outer(J.norm(dim=1), J.norm(dim=1)))[0, 1].item()
    agg.aggregate(J)
    from tune_mtl.strategies.gradvac import gradvac_coefficients

    C = gradvac_coefficients((J @ J.T).numpy(), np.full((2, 2), 0.5), 0.1, [[1], [0]])
    adjusted = torch.as_tensor(C) @ J
    for i, j in ((0, 1), (1, 0)):
        cos = adjusted[i] @ J[j] / (adjusted[i].norm() * J[j].norm())
        assert cos.item() == pytest.approx(0.5, abs=1e-9)
    assert agg.targets[0, 1] == pytest.approx(0.9 * 0.5 + 0.1 * cosines)


def test_moco_weights_converge_to_min_norm_of_a_fixed_gradient():
    # With a constant stochastic gradient, y_t -> h_t and projected gradient descent on lambda'YY'lambda
    # converges to the min-norm (MGDA) weights of Y.
    J = random_jacobian(4, 3, 10)
    agg = strategies.build("moco", 3, {"gamma": 0.5})
    for _ in range(3000):
        d = agg.aggregate(J)
    w = min_norm_weights(J @ J.T)
    assert np.allclose(agg.lam, w, atol=2e-3)
    assert torch.allclose(d, torch.as_tensor(agg.lam) @ J)


def test_project_simplex_is_the_euclidean_projection():
    rng = np.random.default_rng(0)
    for _ in range(5):
        v = rng.normal(size=5) * 2
        w = project_simplex(v)
        ref = slsqp_simplex(lambda x, v=v: 0.5 * np.sum((x - v) ** 2), lambda x, v=v: x - v, 5)
        assert np.allclose(w, ref, atol=1e-7)


# -- Through the trainer -------------------------------------------------------------------------------------
def toy_config(name: str, seed: int = 0) -> dict:
    return {"dataset": {"name": "toy_regression", "num_tasks": 3, "input_dim": 20},
            "strategy": {"name": name}, "training": {"batch_size": 32}, "seed": seed}


def test_every_strategy_is_registered_with_its_aliases():
    for alias, name in {"gsd": "graddrop", "gvac": "gradvac", "nash": "nashmtl", "nash-mtl": "nashmtl",
                        "amtl": "aligned-mtl", "alignedmtl": "aligned-mtl", "imtl-h": "imtl"}.items():
        assert strategies.resolve(alias) == name
    assert set(MINE) <= set(strategies.names())


@pytest.mark.parametrize("name", MINE)
def test_trainer_step_gives_finite_grads_and_is_deterministic(name):
    trainers = []
    for _ in range(2):  # the same seed twice: randomised strategies draw from their own generator, seeded by it
        trainer = Trainer(toy_config(name))
        trainers.append(trainer)
        for _, batch in zip(range(3), trainer.train_loader, strict=False):
            trainer.train_step(batch)
        trainable = [p for p in trainer.model.parameters() if p.requires_grad] + trainer.strategy.parameters()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    for p, q in zip(trainers[0].model.parameters(), trainers[1].model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", MINE)
def test_five_epochs_lower_the_main_task_training_loss(name):
    trainer = Trainer(toy_config(name))
    before = trainer.evaluate("train")["train/task0/loss"]
    for _ in range(5):
        trainer.train_epoch()
    assert trainer.evaluate("train")["train/task0/loss"] < 0.9 * before


@pytest.mark.parametrize("name", STATEFUL)
def test_state_dict_round_trip(name):
    trainer = Trainer(toy_config(name))
    batches = [batch for _, batch in zip(range(6), trainer.train_loader, strict=False)]
    for batch in batches[:3]:
        trainer.train_step(batch)
    saved = copy.deepcopy(trainer.state_dict())
    for batch in batches[3:]:
        trainer.train_step(batch)
    resumed = Trainer(toy_config(name))
    resumed.load_state_dict(saved)
    for batch in batches[3:]:
        resumed.train_step(batch)
    for p, q in zip(trainer.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert str(trainer.strategy.state_dict()) == str(resumed.strategy.state_dict())
