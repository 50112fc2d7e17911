import pytest
import torch

from tune_mtl.training.trainer import EpochInterrupted, Trainer, TrialDiverged

CONFIG = {
    "dataset": {"name": "toy_regression", "num_tasks": 2, "input_dim": 20},
    "optimizer": {"name": "adam", "lr": 3e-3},
    "training": {"batch_size": 32},
}


def params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


@pytest.mark.parametrize("strategy", ["uniform", "random"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_loss_goes_down(strategy, optimizer):
    lr = 3e-3 if optimizer == "adam" else 5e-2
    trainer = Trainer({**CONFIG, "strategy": strategy, "optimizer": {"name": optimizer, "lr": lr}})
    first = trainer.run_epoch()
    for _ in range(4):
        last = trainer.run_epoch()
    assert last["train/task0/loss"] < 0.5 * first["train/task0/loss"]
    assert last["val/objective"] == last["val/task0/mse"]
    assert {"test/task1/mae", "val/task1/loss", "strategy/weight/0", "epoch"} <= set(last)


def test_deterministic_under_seed():
    # One trainer per process in a search; the trainer seeds the process-wide RNGs at construction.
    a = Trainer({**CONFIG, "strategy": "random"})
    a.run_epoch()
    b = Trainer({**CONFIG, "strategy": "random"})
    b.run_epoch()
    assert torch.equal(params(a), params(b))
    c = Trainer({**CONFIG, "strategy": "random", "seed": 1})
    c.run_epoch()
    assert not torch.equal(params(a), params(c))


def test_resume_from_state_continues_exactly():
    straight = Trainer({**CONFIG, "strategy": "random"})
    straight.run_epoch(), straight.run_epoch()
    first = Trainer({**CONFIG, "strategy": "random"})
    first.run_epoch()
    state = first.state_dict()
    resumed = Trainer({**CONFIG, "strategy": "random", "seed": 0})
    torch.manual_seed(1234)  # the resumed process starts with other RNG state; the checkpoint restores it
    resumed.load_state_dict(state)
    assert resumed.epoch == 1
    resumed.run_epoch()
    assert torch.equal(params(straight), params(resumed))


def test_an_epoch_ends_at_the_first_step_its_caller_asks_it_to_stop():
    trainer = Trainer({**CONFIG, "strategy": "uniform"})
    before = params(trainer).clone()
    asked = []

    def stop_at_the_fourth_step():
        asked.append(trainer.step)
        return len(asked) == 4

    with pytest.raises(EpochInterrupted):
        trainer.run_epoch(stop_at_the_fourth_step)
    assert trainer.step == 3 and trainer.epoch == 0, "three steps trained, the epoch not counted"
    assert not torch.equal(params(trainer), before)


def test_divergence_raises_with_reason():
    trainer = Trainer({**CONFIG, "optimizer": {"name": "sgd", "lr": 10.0}})  # finite data, exploding steps
    with pytest.raises(TrialDiverged, match="non-finite at epoch 1"):
        for _ in range(3):
            trainer.run_epoch()


def test_classification_objective_is_maximised():
    trainer = Trainer({"dataset": {"name": "toy_classification", "input_dim": 10}})
    assert (trainer.objective.metric, trainer.objective.mode) == ("accuracy", "max")
    metrics = trainer.run_epoch()
    assert 0.0 <= metrics["val/objective"] <= 1.0


def test_delta_m_objective_against_baselines():
    baselines = {"task0/mse": 0.05, "task1/mae": 0.2}
    trainer = Trainer({**CONFIG, "objective": {"metric": "delta_m", "baselines": baselines}})
    assert trainer.objective.mode == "min"
    metrics = trainer.run_epoch()
    by_hand = 100 / 2 * ((metrics["val/task0/mse"] - 0.05) / 0.05 + (metrics["val/task1/mae"] - 0.2) / 0.2)
    assert metrics["val/delta_m"] == pytest.approx(by_hand)
    assert metrics["val/objective"] == metrics["val/delta_m"] and "test/delta_m" in metrics


@pytest.mark.parametrize(
    "objective,needle",
    [
        ({"metric": "delta_m"}, "needs 'objective.baselines'"),
        ({"baselines": {"task0/accuracy": 0.5}}, "unknown baseline metric"),
        ({"task": "task7"}, "unknown objective task"),
        ({"metric": "f1"}, "has no metric 'f1'"),
    ],
)
def test_bad_objective_is_a_clear_error(objective, needle):
    from tune_mtl.core.errors import UserError

    with pytest.raises(UserError, match=needle):
        Trainer({**CONFIG, "objective": objective})
