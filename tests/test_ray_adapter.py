"""The private Ray pieces of search/ray_adapter.py still exist and behave: fails loudly on an upgrade."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from launch_env import launch_env

from tune_mtl.search import ray_adapter


def test_the_private_pieces_import_and_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token here
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert ray_adapter.local_token() is None
    with monkeypatch.context() as token:
        token.setenv("RAY_AUTH_TOKEN", "a" * 32)
        assert ray_adapter.local_token() == "a" * 32
    # Ray caches its config and the token process-wide: re-read both without the token, or a later ray.init in
    # this process starts a cluster whose workers die before they run anything.
    ray_adapter.reload_config()
    assert ray_adapter.local_token() is None
    address = ray_adapter.recorded_head_address()
    assert address is None or ":" in address


def test_get_cluster_id_against_nothing_is_a_grpc_status():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert ray_adapter.ask_cluster_id(f"127.0.0.1:{port}", None, 1.0) == "UNAVAILABLE"


def test_a_tuner_s_search_algorithm_and_storage_paths_are_reachable(tmp_path):
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    search_alg = BasicVariantGenerator()
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=search_alg),
                       run_config=tune.RunConfig(storage_path=str(tmp_path)))
    assert ray_adapter.restored_search_alg(tuner) is search_alg
    assert ray_adapter.storage_fs_path(str(tmp_path / "run")) == str(tmp_path / "run")


def test_a_stopped_trial_ends_before_fit_returns(tmp_path, ray_session):
    """Tune stops the trial at its second result; its `finally` (3 s, as closing a W&B run takes a while) must be
    over when `fit` returns, or the driver's `ray.shutdown()` right after `fit` would kill the worker in the
    middle of it."""
    from ray import tune

    def stopped_trial_that_ends_slowly(config):  # defined here: Ray ships it by value (tests is no package)
        import time
        from pathlib import Path

        try:
            for step in range(1000):
                tune.report({"step": step})
        finally:
            time.sleep(config["ending_s"])
            Path(config["marker"]).write_text("ended")

    marker = tmp_path / "ended"
    trainable = ray_adapter.trainable_waiting_for_its_thread(stopped_trial_that_ends_slowly, timeout_s=30)
    tuner = tune.Tuner(trainable, param_space={"ending_s": 3.0, "marker": str(marker)},
                       run_config=tune.RunConfig(storage_path=str(tmp_path), stop={"training_iteration": 2},
                                                 verbose=0))
    results = tuner.fit()
    assert marker.exists()
    assert results[0].metrics["training_iteration"] == 2


IDLE_WORKERS = """
import time, psutil, ray
from tune_mtl.search.cluster import connect, disconnect

connect(None, prestart_workers={prestart})
time.sleep(4)  # Ray prestarts right after the driver connects
names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True) if p.is_running()]
print("idle workers:", sum(name.startswith("ray::IDLE") for name in names))
disconnect()
"""


@pytest.mark.parametrize("prestart", [False, True])
def test_a_new_local_ray_prestarts_idle_workers_only_when_asked(tmp_path, prestart):
    done = subprocess.run([sys.executable, "-c", IDLE_WORKERS.format(prestart=prestart)], cwd=tmp_path,
                          env=launch_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    idle = int(done.stdout.split("idle workers:")[1])
    assert (idle > 0) == prestart


LOCAL_RAY = """
import json, psutil, ray
from tune_mtl.search.cluster import connect, disconnect

connect(None, prestart_workers=False)
names = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True) if p.is_running()]
answer = ray.get(ray.remote(lambda: 42).remote())
disconnect()
print(json.dumps({"names": names, "answer": answer}))
"""


def test_a_new_local_ray_starts_without_its_idle_api_server_and_autoscaler_monitor(tmp_path):
    done = subprocess.run([sys.executable, "-c", LOCAL_RAY], cwd=tmp_path, env=launch_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    local = json.loads(done.stdout.strip().splitlines()[-1])
    assert local["answer"] == 42
    assert any("raylet" in name for name in local["names"]) and any("gcs_server" in name for name in local["names"])
    idle = ("dashboard/dashboard.py", "autoscaler/_private/monitor.py")
    assert not [name for name in local["names"] if any(path in name for path in idle)]


@pytest.mark.parametrize(("search", "fills"), [
    ({"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": None}, True),
    ({"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 16}, True),
    ({"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": 1}, False),
    ({"cpus_per_trial": 2, "gpus_per_trial": 0, "max_concurrent_trials": None}, False),
    ({"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent_trials": None}, False),
])
def test_only_a_search_with_a_trial_per_cpu_wants_prestarted_workers(search, fills):
    from tune_mtl.search.experiment import runs_a_trial_per_cpu

    assert runs_a_trial_per_cpu(search, cpus=16) == fills


def retried_trial(tmp_path):
    """A real Tune trial with a checkpoint (what Ray's loggers look at before they restore its log)."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    storage = StorageContext(storage_path=str(tmp_path / "runs"), experiment_dir_name="trials",
                             trial_dir_name="uniform-1")
    trial = Trial("train_trial", config={}, storage=storage, stub=True)
    trial.relative_logdir = "uniform-1"
    (tmp_path / "checkpoint").mkdir()
    trial.run_metadata.checkpoint_manager.register_checkpoint(
        _TrainingResult(checkpoint=Checkpoint(str(tmp_path / "checkpoint")), metrics={"epoch": 1}))
    return trial


def epoch_lines(epochs: int | None) -> str:
    return "".join(json.dumps({"epoch": e}) + "\n" for e in range(1, (epochs or 0) + 1))


@pytest.mark.parametrize(("staged", "synced", "kept"), [
    (2, 1, 2),  # a retry after a lost node: the run folder's copy is a snapshot behind the driver's own log
    (2, None, 2),  # never synced yet
    (0, 0, 0),
    (None, 2, 2),  # a resumed search: a new driver, no log of its own yet
    (1, 3, 3),  # cannot be this driver's own newer log: the longer copy is restored
])
def test_a_retried_trial_keeps_the_log_its_driver_wrote(tmp_path, ray_session, staged, synced, kept):
    trial = retried_trial(tmp_path)
    assert trial.checkpoint is not None  # Ray's loggers restore the run folder's copy only then
    staging, run = Path(trial.local_path), Path(trial.path)
    assert staging != run
    for folder, epochs in ((staging, staged), (run, synced)):
        folder.mkdir(parents=True, exist_ok=True)
        for log in ("result.json", "progress.csv"):
            if epochs is not None:
                (folder / log).write_text(epoch_lines(epochs))
    for callback in ray_adapter.loggers_keeping_the_driver_s_own_log():  # each restores before its first line
        callback.log_trial_result(1, trial, {"epoch": 99})
        callback.log_trial_end(trial)
    for log in ("result.json", "progress.csv"):
        lines = (staging / log).read_text().splitlines()
        # the kept log, then the new result (after a header, in a CSV file begun anew)
        assert lines[:kept] == epoch_lines(kept).splitlines() and lines[kept:-1] in ([], ["epoch"]), (log, lines)
        assert "99" in lines[-1]


def test_the_search_and_its_final_stage_log_through_those_loggers(tmp_path):
    from tune_mtl.search.experiment import build_tuner
    from tune_mtl.search.final_stage import build_final_tuner
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import RunFolder

    spec = load_spec(None, {})
    objective = {"task": "task0", "metric": "mse", "mode": "min"}
    run = RunFolder(name="run", local=str(tmp_path), tune_storage=str(tmp_path), objective=objective)
    for tuner in (build_tuner(spec, str(tmp_path), objective, None, [], {}, total_trials=4, tune_verbose=0),
                  build_final_tuner(spec, run, [])):
        names = sorted(type(c).__name__ for c in tuner._local_tuner._run_config.callbacks)
        assert [n for n in names if "Logger" in n] == ["CSVLoggerCallbackKeepingOwnLog",
                                                       "JsonLoggerCallbackKeepingOwnLog"]
