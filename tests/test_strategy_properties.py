"""A property battery over the whole strategy registry (as torchjd tests all its aggregators with shared tests).

Every registered strategy runs a few real steps on a tiny float64 HPS model with squared losses:
* finite gradients on every trainable parameter, and the same gradients again under the same seed;
* a checkpoint round trip: state_dict() after step k, loaded into a fresh instance, gives the same step k+1;
* permutation of the tasks (of the auxiliary tasks where task 0 is the main task): every parameter receives
  the same gradient, where the method is permutation-equivariant;
* a common scale c of every loss: the gradients scale by c^k, with the degree k the method's formula gives
  (0: scale-invariant update, 1: the plain gradient's behaviour);
* every knob changes the computation.
Each property is DECLARED per strategy (a table below); a strategy missing from a table fails, so no property
is skipped silently, and a declared exemption carries its reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tune_mtl import strategies
from tune_mtl.models.hps import HPSModel
from tune_mtl.models.mlp import build_mlp_hps
from tune_mtl.strategies.base import Knob, StepContext, Strategy

T, B, DIM = 3, 8, 5
ALL = strategies.names()

# Knobs for the battery: a short warm-up, fewer inner iterations where the default is slow but not different.
BATTERY_KNOBS: dict[str, dict[str, Any]] = {
    "recon": {"warmup_steps": 2}, "stch": {"warmup_epochs": 1}, "forum": {"inner_steps": 2},
    "olaux": {"N": 1},
}

# -- the declarations ----------------------------------------------------------------------------------------
# Strategies whose task 0 is the main task: permutations move the auxiliary tasks only.
MAIN_TASK_FIXED = {name for name in ALL if strategies.get(name).needs_auxiliary_tasks}

NOT_PERMUTATION_EQUIVARIANT = {
    "random": "draws its weights at random: equivariant in distribution only, not for one seed",
    "pcgrad": "projects in a random order drawn per step: equivariant in distribution only",
    "graddrop": "draws a random sign mask per coordinate: equivariant in distribution only",
    "gradvac": "visits each task's partners in a random order drawn per step: equivariant in distribution only",
}
# The strategies that draw random numbers (each from its own generator, seeded by `setup`).
RANDOMISED = {"random", "pcgrad", "graddrop", "gradvac"}

_FAIRGRAD_ALPHA = strategies.get("fairgrad").knob_specs()["alpha"].default
# Degree k of homogeneity: losses c * L_t give gradients c^k * g (within the tolerance below); a pair gives
# the shared parameters' degree and the heads' degree.
SCALE_DEGREE: dict[str, float | tuple[float, float]] = {
    "uniform": 1, "dwa": 1, "gls": 1, "gradnorm": 1, "mgda": 1, "mgda-ub": 1, "pcgrad": 1, "cagrad": 1,
    "graddrop": 1, "gradvac": 1, "imtl-g": 1, "upgrad": 1, "dualproj": 1, "aligned-mtl": 1,
    "random": 1, "gcosim": 1, "recon": 1, "sdmgrad": 1, "excessmtl": 1,
    # G w = w^(-1/a): w scales by c^(-2a/(1+a)), the shared update w^T (c J) by c^((1-a)/(1+a)); each head
    # gets its own task's plain gradient (degree 1), as in every gradient-aggregation method here
    "fairgrad": ((1 - _FAIRGRAD_ALPHA) / (1 + _FAIRGRAD_ALPHA), 1),
    "stch": 0,  # weights 1/l_t (warm-up) and softmax(log(l/z)/mu)/l_t: gradients of log-losses
    "famo": 1,  # weights z_t / (c l_t) with c = sum z/l: the 1/l and the c cancel, the sum keeps the scale
    "nashmtl": 0,  # G alpha = 1/alpha: alpha scales by 1/c, so alpha^T (c J) does not move
    "db-mtl": 0,  # log-losses, then gradients rescaled to a norm that scales back out
    "slgrad": 1,  # sample weights are normalised to mean 1, the weighted loss keeps the scale
}
NOT_SCALE_HOMOGENEOUS = {
    "uw": "learned log-variances enter as exp(-s) L + s: the + s term does not scale",
    "imtl": "learned scales e^s L - s: the -s term does not scale (IMTL-H)",
    "imtl-l": "learned scales e^s L - s: the -s term does not scale",
    "moco": "the tracked gradient and its weight update mix step sizes with gradient magnitudes",
    "autolambda": "the meta step on the weights is a fixed-size SGD step on a scaled objective",
    "olaux": "the weight update beta * <g_main, g_aux> is quadratic in the scale and feeds back",
    "moml": "the virtual SGD step inner_lr * g moves the point at which the losses are evaluated",
    "forum": "the lower-level SGD steps and the constraint phi are not scale-free",
    "modo": "the weight step gamma * J J^T lambda on the simplex is quadratic in the scale",
}

# A knob whose effect needs a specific setting to show in a few steps: (strategy, knob) -> (alternative
# value, knobs to set alongside). Every other knob uses `alternative_value` with the battery's knobs.
KNOB_ALTERNATIVES: dict[tuple[str, str], tuple[Any, dict[str, Any]]] = {
    ("recon", "warmup_steps"): (4, {}),
    ("recon", "k"): (0, {}),
    ("recon", "threshold"): (-1.0, {"k": 1}),  # nothing conflicts at -1: another module is split
    ("recon", "base"): ("mgda", {}),
    ("sdmgrad", "niter"): (1, {}),  # 20 and more have converged on these small problems
    ("stch", "warmup_epochs"): (3, {}),
    ("olaux", "N"): (3, {}),
    ("nashmtl", "update_weights_every"): (2, {}),
    ("nashmtl", "max_norm"): (1e-3, {}),
    ("slgrad", "lookahead_lr"): (0.5, {"lookahead": True}),
    ("slgrad", "lookahead"): (True, {"lookahead_lr": 0.5}),
    ("gradvac", "beta"): (0.9, {}),
    ("uw", "form"): ("classification", {}),
    ("mgda", "normalization"): ("loss", {}),
    ("mgda-ub", "normalization"): ("loss", {}),
    ("cagrad", "rescale"): (2, {}),
    ("famo", "gamma"): (0.5, {}),
}
KNOBS_WITHOUT_EFFECT_HERE: dict[tuple[str, str], str] = {}


# -- the test bed --------------------------------------------------------------------------------------------
def tiny_model(seed: int = 0) -> HPSModel:
    torch.manual_seed(seed)
    return build_mlp_hps(DIM, [1] * T, shared_layers=2, shared_width=6, task_layers=1, task_width=3).double()


def make_batch(seed: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(B, DIM, generator=g, dtype=torch.float64), tuple(
        torch.randn(B, generator=g, dtype=torch.float64) * (t + 1) for t in range(T))


def loss_function(model: HPSModel, order: list[int], scale: float) -> Callable:
    """Per-sample squared losses [T, B]; row t is the original task order[t] (head and target permuted)."""

    def compute_losses(batch):
        x, targets = batch
        rep, outputs = model(x)
        return scale * torch.stack([(outputs[o].reshape(-1) - targets[o]) ** 2 for o in order])

    return compute_losses


def context(model: HPSModel, step: int, epoch: int, order: list[int], scale: float) -> StepContext:
    batch, val_batch = make_batch(step), make_batch(500 + step)
    compute_losses = loss_function(model, order, scale)
    x, targets = batch
    rep, outputs = model(x)
    losses = scale * torch.stack([(outputs[o].reshape(-1) - targets[o]) ** 2 for o in order])
    task_params = model.task_parameters()
    return StepContext(losses=losses, model=model, shared_params=model.shared_parameters(),
                       task_params=[task_params[o] for o in order], representation=rep, step=step, epoch=epoch,
                       batch=batch, compute_losses=compute_losses, val_batch=val_batch,
                       task_kinds=["regression"] * T)


def build(name: str, **knobs: Any) -> Strategy:
    return strategies.build(name, T, {**BATTERY_KNOBS.get(name, {}), **knobs})


def run(name: str, steps: int = 4, order: list[int] | None = None, scale: float = 1.0, knobs=None,
        strategy: Strategy | None = None, model: HPSModel | None = None, start: int = 0,
        lr: float = 0.05) -> list[torch.Tensor]:
    """`steps` steps (2 per epoch, `end_epoch` between), SGD on the model in between so that the trajectory
    moves; returns the flat gradient of every model parameter after each step (in parameter order)."""
    order = list(range(T)) if order is None else order
    model = tiny_model() if model is None else model
    if strategy is None:
        strategy = build(name, **(knobs or {}))
        strategy.setup(model, torch.device("cpu"))
    out = []
    for step in range(start, start + steps):
        epoch = step // 2
        model.zero_grad(set_to_none=True)
        for p in strategy.parameters():
            p.grad = None
        ctx = context(model, step, epoch, order, scale)
        strategy.backward(ctx)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
        out.append(torch.cat([g.reshape(-1) for g in grads]).detach().clone())
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= lr * p.grad
            for p in strategy.parameters():  # the trainer's optimizer steps the strategy's own parameters
                if p.grad is not None:
                    p -= lr * p.grad
        if step % 2 == 1:
            with torch.no_grad():
                strategy.end_epoch(epoch, ctx.losses.mean(dim=1).detach() / scale)
    return out


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6) -> bool:
    if a.shape != b.shape:  # a different parameter set (Recon's split) is a different computation
        return False
    return bool((a - b).norm() <= rtol * max(a.norm(), b.norm()) + 1e-12)


# -- the declarations cover the registry ---------------------------------------------------------------------
def test_every_strategy_declares_its_permutation_and_scale_properties():
    for name in ALL:
        assert (name in SCALE_DEGREE) != (name in NOT_SCALE_HOMOGENEOUS), f"{name}: declare its scale property"
    assert set(NOT_PERMUTATION_EQUIVARIANT) <= set(ALL)


# -- the battery ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_finite_gradients_on_every_parameter_and_the_same_under_the_same_seed(name):
    first, second = run(name), run(name)
    for a, b in zip(first, second, strict=True):
        assert torch.isfinite(a).all()
        assert torch.equal(a, b)
    assert any(a.norm() > 0 for a in first)


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_round_trip_gives_the_same_next_steps(name):
    model = tiny_model()
    strategy = build(name)
    strategy.setup(model, torch.device("cpu"))
    run(name, steps=3, strategy=strategy, model=model)
    saved = copy.deepcopy(strategy.state_dict())
    model_copy = copy.deepcopy(model)
    straight = run(name, steps=2, strategy=strategy, model=model, start=3)

    resumed_strategy = build(name)
    fresh_model = tiny_model(seed=1)  # a different start: everything the next steps need must come from the state
    resumed_strategy.setup(fresh_model, torch.device("cpu"))
    resumed_strategy.load_state_dict(copy.deepcopy(saved))
    if name == "recon":  # the split lives in the model, which the trainer checkpoints itself
        fresh_model = resumed_strategy.model
    fresh_model.load_state_dict(model_copy.state_dict())
    resumed = run(name, steps=2, strategy=resumed_strategy, model=fresh_model, start=3)
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_steps_leave_the_global_random_generator_alone(name):
    """Every draw comes from the strategy's own generator: a second search (or the model's dropout, the data
    loaders) in the same process draws the same numbers whatever the strategy did."""
    model = tiny_model()
    strategy = build(name)
    strategy.setup(model, torch.device("cpu"), seed=5)
    before = torch.get_rng_state()
    run(name, steps=3, strategy=strategy, model=model)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", sorted(RANDOMISED))
def test_the_trial_seed_given_to_setup_drives_the_random_draws(name):
    def steps(seed: int) -> list[torch.Tensor]:
        model = tiny_model()
        strategy = build(name)
        strategy.setup(model, torch.device("cpu"), seed=seed)
        return run(name, steps=3, strategy=strategy, model=model)

    assert all(torch.equal(a, b) for a, b in zip(steps(3), steps(3), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(steps(3), steps(4), strict=True))


@pytest.mark.parametrize("name", ALL)
def test_permuting_the_tasks_gives_every_parameter_the_same_gradient(name):
    if name in NOT_PERMUTATION_EQUIVARIANT:
        pytest.skip(NOT_PERMUTATION_EQUIVARIANT[name])  # declared, with its reason
    order = [0, 2, 1] if name in MAIN_TASK_FIXED else [2, 0, 1]
    for a, b in zip(run(name), run(name, order=order), strict=True):
        assert close(a, b), (a - b).norm() / a.norm()


@pytest.mark.parametrize("name", ALL)
def test_a_common_loss_scale_scales_the_gradients_by_the_declared_power(name):
    if name in NOT_SCALE_HOMOGENEOUS:
        pytest.skip(NOT_SCALE_HOMOGENEOUS[name])  # declared, with its reason
    c, degree = 7.0, SCALE_DEGREE[name]
    k_shared, k_heads = degree if isinstance(degree, tuple) else (degree, degree)
    knobs = {"max_norm": 0.0} if name == "nashmtl" else {}  # clipping to a fixed norm is not scale-free
    n_shared = sum(p.numel() for p in tiny_model().encoder.parameters())
    # One step: later steps would need the scaled run's parameters to follow the plain run's trajectory.
    (plain,), (scaled,) = run(name, knobs=knobs, steps=1), run(name, knobs=knobs, steps=1, scale=c)
    for part, k in ((slice(0, n_shared), k_shared), (slice(n_shared, None), k_heads)):
        assert close(plain[part] * c**k, scaled[part], rtol=1e-5), (plain[part] * c**k - scaled[part]).norm()


def alternative_value(knob: Knob) -> Any:
    """A valid value different from the default."""
    if knob.kind is bool:
        return not knob.default
    if knob.kind is str:
        return next(c for c in knob.choices if c != knob.default)
    d = knob.default
    for candidate in (d * 3 if d else 1, d / 3 if d else 0.5, knob.low, knob.high):
        if candidate is None:
            continue
        candidate = knob.kind(candidate)
        if candidate != d and (knob.low is None or candidate >= knob.low) and (
                knob.high is None or candidate <= knob.high):
            return candidate
    raise AssertionError(f"no alternative to {d}")


KNOB_CASES = [(name, key) for name in ALL for key in strategies.get(name).knob_specs()]


@pytest.mark.parametrize("name,knob", KNOB_CASES)
def test_every_knob_changes_the_computation(name, knob):
    if (name, knob) in KNOBS_WITHOUT_EFFECT_HERE:
        pytest.skip(KNOBS_WITHOUT_EFFECT_HERE[(name, knob)])
    if (name, knob) in KNOB_ALTERNATIVES:
        value, alongside = KNOB_ALTERNATIVES[(name, knob)]
    else:
        value, alongside = alternative_value(strategies.get(name).knob_specs()[knob]), {}
    base = run(name, steps=6, knobs=alongside)
    changed = run(name, steps=6, knobs={**alongside, knob: value})
    assert any(not close(a, b, rtol=1e-9) for a, b in zip(base, changed, strict=True)), \
        f"{name}: {knob}={value!r} gives the same gradients as the default"
