"""W&B from inside the trial: what one trial's offline run holds, read back from wandb's own file format with an
independent reader (LevelDB log records of wandb's protobuf `Record`s), one service process for many runs, and
the offline fallback when the W&B server cannot be reached."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.wandb_files import offline_run, read_records
from tune_mtl.core.keys import TRACKING, TRIAL_NAME
from tune_mtl.search import tracking


@pytest.fixture(autouse=True)
def fresh_mode_cache():
    tracking.usable_mode.cache_clear()
    yield
    tracking.usable_mode.cache_clear()


def settings(folder: Path, mode: str = "offline") -> dict:
    return tracking.trial_settings(mode, "proj", "search-1", folder)


CONFIG = {"optimizer": {"name": "adam", "lr": 0.01}, "strategy": {"name": "pcgrad"}, "training": {"epochs": 3}}


def test_trial_run_holds_name_group_config_epochs_and_score(tmp_path):
    config = {**CONFIG, TRACKING: settings(tmp_path), TRIAL_NAME: "pcgrad-2"}
    logger = tracking.trial_logger(config[TRACKING], "pcgrad-2", "pcgrad", config)
    epochs = {1: {"val/objective": 0.5, "train/task0/loss": 1.5}, 2: {"val/objective": 0.25},
              3: {"val/objective": 0.375}}
    for step, metrics in epochs.items():
        logger.log(metrics, step=step)
    logger.summary({"score": 0.25, "score_epoch": 2})
    logger.close()

    logged = offline_run(tmp_path)
    run = logged["run"]
    assert (run.display_name, run.run_group, run.job_type, run.project) == ("pcgrad-2", "search-1", "pcgrad", "proj")
    assert list(run.tags) == ["pcgrad"]
    config_logged = {i.key: json.loads(i.value_json) for i in run.config.update if i.key != "_wandb"}
    assert config_logged == CONFIG  # the hyperparameters only: not the tracking settings or the trial name
    assert logged["history"] == epochs
    assert logged["summary"]["score"] == 0.25 and logged["summary"]["score_epoch"] == 2


def test_same_trial_keeps_its_run_id_and_trials_differ():
    assert tracking.run_id("search-1", "pcgrad-2") == tracking.run_id("search-1", "pcgrad-2")
    ids = {tracking.run_id(g, t) for g in ("search-1", "search-2") for t in ("pcgrad-2", "pcgrad-3")}
    assert len(ids) == 4


@pytest.mark.parametrize("given", [None, {"wandb_mode": "disabled", "project": "p", "group": "g", "dir": "x"}])
def test_disabled_logs_nothing(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)
    logger = tracking.trial_logger(given, "uniform-1", "uniform", CONFIG)
    logger.log({"val/objective": 1.0}, step=1)
    logger.close()
    assert type(logger) is tracking.TrialLogger and not list(tmp_path.rglob("*"))


def wandb_services(settle_s: float = 0.0) -> list[psutil.Process]:
    """This process's live wandb-core services; with settle_s, waits up to that long for exiting ones to go
    (wandb.teardown returns once the service has written and closed its runs, not once it has exited)."""
    deadline = time.monotonic() + settle_s
    while True:
        alive = []
        for proc in psutil.Process().children():  # a service may run helpers of its own below it
            try:
                if "wandb-core" in proc.name() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def stop_services() -> None:
    """This process as a fresh trial process: no wandb-core (earlier tests' runs keep theirs, as trials do)."""
    import wandb

    wandb.teardown()
    tracking.wait_for_service_exit()


def frozen_file(service: psutil.Process, folder: Path) -> list:
    """The records of folder's run as a kill of the service right now would leave them: the service is stopped
    (SIGSTOP: it can write nothing more) while the file is read, then resumed (SIGCONT) for the next run."""
    service.suspend()
    try:
        return read_records(next(folder.glob("wandb/offline-run-*/run-*.wandb")))
    finally:
        service.resume()


def test_one_service_for_the_runs_of_a_process_and_each_file_complete_at_close(tmp_path):
    """No process storm and no restart per trial: the first run starts this process's wandb-core and the next
    runs reuse it; and each run's file is complete the moment close() returns (Ray may end the trial's worker,
    and kill its children, right after): the service is frozen at once and the file read. Without the wait for
    the file, most of these runs are caught incomplete (10 of 12 when tried)."""
    stop_services()
    assert not wandb_services()
    first = None
    for n in range(12):
        logger = tracking.trial_logger(settings(tmp_path / str(n)), f"uniform-{n}", "uniform", CONFIG)
        logger.log({"val/objective": float(n)}, step=1)
        logger.summary({"score": float(n)})
        services = wandb_services()
        assert len(services) == 1 and services[0].pid == (first or services[0].pid)
        first = services[0].pid
        logger.close()
        records = frozen_file(services[0], tmp_path / str(n))
        kinds = [r.WhichOneof("record_type") for r in records]  # environment (system info) may come after exit
        assert "exit" in kinds and "history" in kinds and "summary" in kinds, f"run {n} incomplete at close: {kinds}"
        logger.close()  # twice is harmless (the trainable closes before its last report and again at the end)
        assert [s.pid for s in wandb_services()] == [first]  # kept for the next run
    stop_services()  # what the process's exit does (wandb's own atexit hook): the runs stay as they were
    for n in range(12):
        logged = offline_run(tmp_path / str(n))
        assert logged["history"] == {1: {"val/objective": float(n)}} and logged["summary"]["score"] == float(n)


def test_close_stops_the_service_where_it_cannot_see_the_file_written(tmp_path, monkeypatch):
    """No /proc (or a service that never showed the run's file open): the run is made complete the old way,
    by stopping the service, which writes out its runs before it exits."""
    monkeypatch.setattr(tracking, "files_open_in_services", lambda services=None: set())
    logger = tracking.trial_logger(settings(tmp_path), "uniform-1", "uniform", CONFIG)
    logger.log({"val/objective": 0.5}, step=1)
    logger.close()
    assert not wandb_services()  # the service has exited: close() waited for it
    records = read_records(next(tmp_path.glob("wandb/offline-run-*/run-*.wandb")))
    assert records[-1].WhichOneof("record_type") == "exit"


def test_exit_hook_closes_a_run_left_open(tmp_path):
    """A trial process that exits while Tune's stop has not let the trial's thread close its run: the exit hook
    (registered after wandb's own, so it runs first) finishes it, complete on disk."""
    logger = tracking.trial_logger(settings(tmp_path), "uniform-1", "uniform", CONFIG)
    logger.log({"val/objective": 0.5, "score": 0.5}, step=1)
    assert tracking.OPEN_LOGGERS == {logger}
    tracking.close_open_loggers()  # what atexit runs
    records = frozen_file(wandb_services()[0], tmp_path)
    assert any(r.WhichOneof("record_type") == "exit" for r in records)
    assert logger.closed and not tracking.OPEN_LOGGERS


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_unreachable_online_server_means_offline_with_one_warning(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    assert settings(tmp_path, "online")["wandb_mode"] == "offline"
    assert settings(tmp_path, "online")["wandb_mode"] == "offline"
    err = capsys.readouterr().err
    assert err.count("warning: W&B server") == 1 and "unreachable; logging offline instead" in err


def test_reachable_online_server_stays_online(monkeypatch, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert settings(tmp_path, "online")["wandb_mode"] == "online"
    assert settings(tmp_path, "offline")["wandb_mode"] == "offline"


def test_online_run_that_cannot_start_falls_back_to_offline(monkeypatch, tmp_path):
    """The server went away after the driver's check: the trial still logs everything, offline."""
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setattr(tracking, "TRIAL_INIT_TIMEOUT_S", 3.0)
    given = {"wandb_mode": "online", "project": "proj", "group": "search-1", "dir": str(tmp_path)}
    with pytest.warns(UserWarning, match="W&B online run of uniform-1 could not start.*logging it offline"):
        logger = tracking.trial_logger(given, "uniform-1", "uniform", CONFIG)
    logger.log({"val/objective": 0.5}, step=1)
    logger.close()
    assert offline_run(tmp_path)["history"] == {1: {"val/objective": 0.5}}


@pytest.mark.ray
def test_search_with_unreachable_online_wandb_logs_every_trial_offline(tmp_path, ray_session, monkeypatch, capsys):
    """Through the real engine: one warning, then each trial's own offline run (named by the trial, grouped by
    the search, with its epochs and score), and the run folder says offline."""
    from tune_mtl.cli import main

    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    rc = main(["search", "--strategies", "uniform", "--num-samples", "2", "--epochs", "2", "--scheduler", "fifo",
               "--final-seeds", "0", "--quiet", "--wandb-mode", "online", "--storage-path", str(tmp_path),
               "--name", "run"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    assert out.err.count("warning: W&B server") == 1
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["wandb_mode"] == "offline"
    runs = sorted(run.glob("wandb/offline-run-*"))
    assert len(runs) == 2
    logged = {}
    for folder in runs:  # one offline run per folder: read each on its own
        single = tmp_path / "one" / folder.name
        (single / "wandb").mkdir(parents=True)
        (single / "wandb" / folder.name).symlink_to(folder)
        content = offline_run(single)
        logged[content["run"].display_name] = content
    assert sorted(logged) == ["uniform-1", "uniform-2"]
    for content in logged.values():
        assert content["run"].run_group == "run" and content["run"].job_type == "uniform"
        assert sorted(content["history"]) == [1, 2]
        best = min(content["history"][e]["val/objective"] for e in (1, 2))
        assert content["summary"]["score"] == pytest.approx(best)


@pytest.mark.ray
def test_every_trial_of_a_reused_worker_keeps_its_run(tmp_path):
    """A search as a user runs it (launch.py: its own local Ray, shut down right after the search), one trial at a
    time, so that one worker runs every trial with one wandb-core: each trial's offline run, the last one's
    included, is complete (exit record), with every epoch Tune got and the trial's score in its summary."""
    import subprocess
    import sys

    from tests.wandb_files import every_offline_run

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "launch.py", "search", "--strategies", "uniform", "--num-samples", "4", "--epochs", "3",
           "--scheduler", "fifo", "--max-concurrent-trials", "1", "--final-seeds", "0", "--storage-path",
           str(tmp_path), "--name", "run", "--quiet", "--wandb-mode", "offline"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled", "WANDB_SILENT": "true"}
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged = every_offline_run(tmp_path / "run")
    trials = sorted(p for p in (tmp_path / "run" / "trials").glob("uniform-*") if p.is_dir())
    assert len(trials) == 4 and sorted(logged) == [f"uniform-{n}" for n in range(1, 5)]
    for trial in trials:
        results = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        run = logged[trial.name]
        assert run["closed"], f"{trial.name}: no exit record"
        assert sorted(run["history"]) == [r["training_iteration"] for r in results] == [1, 2, 3]
        assert run["summary"]["score"] == pytest.approx(results[-1]["score"])


class RecordingLogger(tracking.TrialLogger):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log(self, metrics, step):
        self.calls.append(("log", step))

    def summary(self, values):
        self.calls.append(("summary",))

    def close(self):
        self.calls.append(("close",))


def test_a_logger_opened_in_background_gets_every_call_once_open():
    opened, may_open = RecordingLogger(), threading.Event()

    def slow_open():
        assert may_open.wait(10)  # a process's first W&B run takes ~0.9 s
        return opened

    logger = tracking.LoggerOpenedInBackground(slow_open)  # returns while the opening still waits
    threading.Timer(0.1, may_open.set).start()
    logger.log({"val/objective": 1.0}, step=1)
    logger.summary({"score": 1.0})
    logger.close()
    assert opened.calls == [("log", 1), ("summary",), ("close",)]


def test_a_logger_that_cannot_open_fails_the_trial_at_its_first_call_once():
    def failing_open():
        raise RuntimeError("wandb.init timed out")

    logger = tracking.LoggerOpenedInBackground(failing_open)
    with pytest.raises(RuntimeError, match="timed out"):
        logger.log({"val/objective": 1.0}, step=1)
    logger.summary({"score": 1.0})  # the trial's `finally` then closes without raising it again
    logger.close()
