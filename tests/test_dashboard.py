"""`launch.py dashboard RUN_DIR` on a real finished run: both servers answer over HTTP with the run's trials
and studies, and Ctrl-C stops both."""

from __future__ import annotations

import itertools
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from tune_mtl.core.errors import UserError
from tune_mtl.core.keys import OBJECTIVE

ROOT = Path(__file__).resolve().parent.parent
STRATEGY = "uniform"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, ray_session):
    """A run folder as `launch.py search` leaves it: run.json, Tune's trial folders (with TensorBoard event
    files) named `<strategy>-<n>`, and an SQLite Optuna study with its objective named, from a real Tuner
    driven by Optuna (2 trials x 1 epoch)."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from tune_mtl.storage.run_folder import default_storage_url, new_run

    run = new_run(str(tmp_path_factory.mktemp("runs")), "tiny")
    url = default_storage_url(run.path)

    def trainable(config):
        from ray import tune as worker_tune

        worker_tune.report({OBJECTIVE: (config["lr"] - 0.01) ** 2})

    numbers = itertools.count(1)  # trial folders are named `<strategy>-<n>`, as the engine names them
    searcher = OptunaSearch(metric=OBJECTIVE, mode="min", study_name=STRATEGY, storage=optuna.storages.RDBStorage(url),
                            seed=0)
    tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-3, 1e-1)},
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=2, max_concurrent_trials=1,
                                    trial_dirname_creator=lambda trial: f"{STRATEGY}-{next(numbers)}"),
        run_config=tune.RunConfig(name=STRATEGY, storage_path=run.tune_storage, verbose=0),
    ).fit()
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.load_study(study_name=STRATEGY, storage=url).set_metric_names([OBJECTIVE])  # as the engine does
    run.studies = {STRATEGY: STRATEGY}
    run.save()
    return run


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def get_json(url: str):
    status, body = get(url)
    assert status == 200
    return json.loads(body)


def eventually(check, timeout_s: float = 90.0):
    """TensorBoard loads event files in the background: poll until `check()` is truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(1.0)


def refuses(url: str) -> bool:
    try:
        get(url)
    except (urllib.error.URLError, OSError):
        return True
    return False


class Lines:
    """The stdout of a running process, line by line, without blocking the test on a silent process."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.lines.put(line) for line in process.stdout], daemon=True).start()

    def until(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r} in {timeout_s} s; got: {self.seen}")


@pytest.mark.ray
def test_dashboard_serves_the_run_and_stops_on_ctrl_c(finished_run):
    process = subprocess.Popen([sys.executable, "launch.py", "dashboard", str(finished_run.path)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = Lines(process)
        tensorboard = lines.until("TensorBoard:", 240).split()[-1]
        optuna_ui = lines.until("Optuna dashboard:", 10).split()[-1]
        for url in (tensorboard, optuna_ui):
            assert url.startswith("http://127.0.0.1:")  # local only
            status, page = get(url)
            assert status == 200 and b"<html" in page.lower()

        # TensorBoard: one run per trial, named after it, with the objective's scalars.
        runs = eventually(lambda: set(get_json(tensorboard + "data/runs")) >= {f"{STRATEGY}/{STRATEGY}-1",
                                                                               f"{STRATEGY}/{STRATEGY}-2"})
        assert runs, get_json(tensorboard + "data/runs")
        tags = get_json(tensorboard + "data/plugin/scalars/tags")[f"{STRATEGY}/{STRATEGY}-1"]
        assert any(tag.endswith(OBJECTIVE) for tag in tags), tags

        # optuna-dashboard: the run's study, its 2 trials, the objective by name (not "Objective 0").
        studies = get_json(optuna_ui + "api/studies")["study_summaries"]
        study, = [s for s in studies if s["study_name"] == STRATEGY]
        detail = get_json(optuna_ui + f"api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 2
        assert detail["objective_names"] == [OBJECTIVE]  # the UI shows this name, not "Objective 0"

        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert process.wait(timeout=60) == 0
        assert refuses(tensorboard) and refuses(optuna_ui)  # both servers are gone with it
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()  # the servers get SIGTERM from the kernel when it dies (PR_SET_PDEATHSIG)


def test_dashboard_refuses_a_folder_that_is_not_a_run(tmp_path):
    from tune_mtl.reporting.dashboard import serve

    with pytest.raises(UserError, match="not a run folder"):
        serve(str(tmp_path))


def test_password_storage_needs_the_url_again(tmp_path):
    from tune_mtl.reporting.dashboard import optuna_url
    from tune_mtl.storage.run_folder import new_run

    run = new_run(str(tmp_path), "db")
    run.optuna_storage, run.studies = "postgresql://me:***@db.example/optuna", {"uniform": "db/uniform"}
    with pytest.raises(UserError, match="has a password"):
        optuna_url(run, None)
    with pytest.raises(UserError, match="is not this run's storage"):
        optuna_url(run, "postgresql://me:secret@other.example/optuna")
    assert optuna_url(run, "postgresql://me:secret@db.example/optuna") == "postgresql://me:secret@db.example/optuna"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_servers_stop_when_launch_py_is_killed(tmp_path):
    """SIGKILL leaves launch.py no chance to stop its servers; the kernel stops them instead."""
    import os

    parent = subprocess.Popen([sys.executable, "-c", """if True:
        import subprocess, sys, time
        from tune_mtl.reporting.dashboard import Server
        server = Server("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], 0, subprocess.DEVNULL)
        server.start()
        print(server.process.pid, flush=True)
        time.sleep(600)
    """], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)  # it runs
    parent.kill()
    parent.wait()
    gone = eventually(lambda: not Path(f"/proc/{child}").exists()
                      or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2], timeout_s=10)
    assert gone, f"server {child} outlived launch.py"


def test_what_starts_for_pbt_and_for_trials_on_s3(tmp_path):
    from tune_mtl.reporting.dashboard import optuna_url, plan
    from tune_mtl.storage.run_folder import new_run

    pbt = new_run(str(tmp_path), "pbt")  # PBT: no Optuna study
    servers, notes = plan(pbt, optuna_url(pbt, None), subprocess.DEVNULL)
    assert [s.name for s in servers] == ["TensorBoard"] and "no Optuna study" in notes[0]
    assert servers[0].command[1:3] == ["--logdir", pbt.tune_storage] and "127.0.0.1" in servers[0].command

    on_s3 = new_run(str(tmp_path), "s3")
    on_s3.tune_storage, on_s3.studies = "s3://bucket/runs/s3", {"uniform": "uniform"}
    servers, notes = plan(on_s3, optuna_url(on_s3, None), subprocess.DEVNULL)
    assert [s.name for s in servers] == ["Optuna dashboard"] and "local folders only" in notes[0]
    assert servers[0].command[1] == f"sqlite:///{on_s3.path / 'optuna.db'}"
