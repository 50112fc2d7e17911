"""A trial's results reported from a thread of its own (search/background_reports.py): every result reaches Tune,
in order, one at a time, while the next epoch trains; a report's error or Tune's stop reaches the training
thread; and a trial Tune stops ends within one training step (a real Tune run)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from tune_mtl.search import ray_adapter
from tune_mtl.search.background_reports import BackgroundReports


class FakeTune:
    """Stands in for `ray.tune.report`: records each call's result, start and end; a report may raise."""

    def __init__(self, report_s: float = 0.0, raise_at: dict[int, BaseException] | None = None) -> None:
        self.calls: list[tuple[dict, float, float, bool]] = []
        self.report_s, self.raise_at = report_s, raise_at or {}
        self.gate = threading.Event()  # a report returns only once the gate is open (the driver's round trip)
        self.gate.set()

    def report(self, result, checkpoint=None):
        start = time.monotonic()
        assert self.gate.wait(10)
        time.sleep(self.report_s)
        number = len(self.calls) + 1
        self.calls.append((result, start, time.monotonic(), checkpoint is not None))
        if number in self.raise_at:
            raise self.raise_at[number]


@pytest.fixture
def fake_tune(monkeypatch):
    from ray import tune

    fake = FakeTune()
    monkeypatch.setattr(tune, "report", fake.report)
    return fake


def test_every_result_in_order_one_at_a_time_while_the_caller_goes_on(fake_tune, tmp_path):
    fake_tune.report_s = 0.01
    fake_tune.gate.clear()
    reports = BackgroundReports(None)
    for epoch in range(1, 6):
        folder = tmp_path / f"c{epoch}"
        folder.mkdir()
        reports.send({"epoch": epoch}, str(folder))
        if epoch == 1:  # send returned while Tune still holds the result: the next epoch trains meanwhile
            assert fake_tune.calls == []
            fake_tune.gate.set()
    reports.finish()
    assert [call[0]["epoch"] for call in fake_tune.calls] == [1, 2, 3, 4, 5]
    assert all(call[3] for call in fake_tune.calls), "each with its checkpoint"
    for before, after in itertools.pairwise(fake_tune.calls):
        assert after[1] >= before[2], "a report starts only after the previous one returned"
    assert not any(tmp_path.iterdir()), "each checkpoint folder is removed once Tune has it"


def test_a_report_s_error_is_raised_in_the_training_thread(fake_tune):
    fake_tune.raise_at = {2: OSError(28, "No space left on device")}
    reports = BackgroundReports(None)
    reports.send({"epoch": 1})
    reports.send({"epoch": 2})
    with pytest.raises(OSError, match="No space left"):
        reports.send({"epoch": 3})
    assert [call[0]["epoch"] for call in fake_tune.calls] == [1, 2]


def test_tune_stopping_the_trial_through_a_report_ends_it(fake_tune, tmp_path):
    fake_tune.raise_at = {2: SystemExit(0)}  # what Tune's report does when the trial is to stop
    reports = BackgroundReports(None)
    reports.send({"epoch": 1})
    reports.send({"epoch": 2})
    time.sleep(0.1)
    assert reports.stop_requested()
    folder = tmp_path / "c3"
    folder.mkdir()
    with pytest.raises(SystemExit):
        reports.send({"epoch": 3}, str(folder))
    assert not folder.exists(), "a checkpoint that will never be reported is removed"
    assert len(fake_tune.calls) == 2


def test_tune_s_stop_event_is_a_stop_request():
    event = threading.Event()
    reports = BackgroundReports(event)
    assert not reports.stop_requested()
    event.set()
    assert reports.stop_requested()


@pytest.mark.ray
def test_a_trial_tune_stops_ends_mid_epoch_not_at_its_end(tmp_path, ray_session):
    """Epochs of 50 steps of 20 ms; Tune stops the trial at its second result, while the third epoch trains: the
    trial ends there, not at the end of that epoch (the bound leaves Tune a second to decide, on a loaded CI)."""
    from ray import tune

    def stepping_trial(config):  # defined here: Ray ships it by value (tests is no package)
        from tune_mtl.search.background_reports import BackgroundReports
        from tune_mtl.search.ray_adapter import trial_stop_event

        reports, steps = BackgroundReports(trial_stop_event()), 0
        try:
            for epoch in range(1, 100):
                for _ in range(50):
                    if reports.stop_requested():
                        reports.finish()
                        raise SystemExit(0)
                    time.sleep(0.02)
                    steps += 1
                reports.send({"epoch": epoch, "steps": steps})
            reports.finish()
        finally:
            Path(config["marker"]).write_text(str(steps))

    marker = tmp_path / "steps"
    trainable = ray_adapter.trainable_waiting_for_its_thread(stepping_trial, timeout_s=30)
    results = tune.Tuner(trainable, param_space={"marker": str(marker)},
                         run_config=tune.RunConfig(storage_path=str(tmp_path), stop={"training_iteration": 2},
                                                   verbose=0)).fit()
    assert results[0].metrics["epoch"] == 2
    steps = int(marker.read_text())
    assert 100 <= steps < 150, f"{steps} steps: the stop came during epoch 3 and ended it there"


def test_settle_waits_for_the_report_in_flight_and_raises_nothing(fake_tune):
    fake_tune.report_s, fake_tune.raise_at = 0.2, {1: OSError("lost")}
    reports = BackgroundReports(None)
    reports.send({"epoch": 1})
    reports.settle()
    assert len(fake_tune.calls) == 1, "the report had returned"
