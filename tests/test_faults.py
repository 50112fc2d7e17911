"""Faults on one machine: a worker node dies mid-search (the driver killed mid-search: test_engine_resume.py).

Both run in subprocesses: one owns a multi-node `ray.cluster_utils.Cluster`, the other is killed with
SIGKILL; neither may collide with the session's shared Ray instance (tests/conftest.py).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.launch_env import launch_env

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray

# Epochs long enough (a few hundred steps) that a fault lands while trials run.
SLOW_TOY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 8000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 16, "epochs": 4},
}


def history(trial_dir: Path) -> list[dict]:
    text = (trial_dir / "result.json").read_text() if (trial_dir / "result.json").exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def trial_dirs(run: Path, strategy: str) -> list[Path]:
    return sorted(p for p in (run / "trials").glob(f"{strategy}-*") if p.is_dir())


def assert_one_optuna_trial_per_tune_trial(storage: str, study: str, configs: list[dict]) -> None:
    trials = optuna.load_study(study_name=study, storage=storage).trials
    assert len(trials) == len(configs), "no lost or extra Optuna trials"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.params["optimizer/lr"] for t in trials) == sorted(c["optimizer"]["lr"] for c in configs)


NODE_LOSS_SCRIPT = r"""
import sys, threading, time
from pathlib import Path
from ray.cluster_utils import Cluster
from tune_mtl.cli import main
from tune_mtl.search.cluster import connect

config, storage = sys.argv[1], Path(sys.argv[2])
# The head has no CPUs, so every trial runs on the worker node; fast health checks detect its loss quickly.
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0, "include_dashboard": False,
    "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                       "health_check_failure_threshold": 4}})
worker = cluster.add_node(num_cpus=2)
connect(cluster.address)  # what launch.py --address does; the search below then reuses the connection
codes = []
# The search runs in a thread: Ray starts (and kills) nodes only from the main thread.
search = threading.Thread(target=lambda: codes.append(main([
    "search", "--config", config, "--address", cluster.address, "--storage-path", str(storage), "--name", "run",
    "--quiet", "--wandb-mode", "disabled"])))
search.start()
killed = False
try:
    while search.is_alive() and not killed:
        if any(len(r.read_text().splitlines()) >= 2 for r in storage.glob("run/trials/uniform-*/result.json")):
            cluster.remove_node(worker, allow_graceful=False)
            cluster.add_node(num_cpus=2)  # the replacement node (an autoscaler would start one)
            killed = True
        time.sleep(0.05)
    search.join()
finally:
    import ray
    ray.shutdown()
    cluster.shutdown()
print("NODE_KILLED" if killed else "NODE_NOT_KILLED")
sys.exit(codes[0] if codes else 1)
"""


def test_worker_node_dies_and_its_trials_resume_elsewhere(tmp_path):
    config = tmp_path / "node_loss.yaml"
    config.write_text(yaml.safe_dump({
        **SLOW_TOY, "strategies": ["uniform"],
        "search": {"num_samples": 3, "scheduler": "fifo", "seed": 3, "max_failures": 3, "final": {"seeds": 0}},
    }))
    proc = subprocess.run([sys.executable, "-c", NODE_LOSS_SCRIPT, str(config), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=launch_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "NODE_KILLED" in proc.stdout

    run = tmp_path / "run"
    dirs = trial_dirs(run, "uniform")
    assert len(dirs) == 3
    restored = []
    for trial in dirs:
        rows = history(trial)
        # Resumed, never restarted, and every epoch logged once: a retried trial's log keeps the lines its driver
        # wrote since the last snapshot (ray_adapter.loggers_keeping_the_driver_s_own_log; Ray's own loggers
        # put the snapshot's copy back, and this test saw epochs 1, 3, 4 or an empty log).
        assert [r["epoch"] for r in rows] == [1, 2, 3, 4], trial.name
        assert not rows[-1].get("diverged")
        # After a retry Tune restarts iterations_since_restore at 1; the trainer's epoch continues.
        restored += [r["epoch"] for r in rows[1:] if r["iterations_since_restore"] == 1]
    assert restored and min(restored) > 1, "a killed trial resumed from its checkpoint, not from epoch 1"

    summary = json.loads((run / "summary.json").read_text())["strategies"]["uniform"]
    assert summary["trials"] == 3 and not summary["failed"] and not summary["unfinished"]
    configs = [json.loads((d / "params.json").read_text()) for d in dirs]
    assert_one_optuna_trial_per_tune_trial(f"sqlite:///{run / 'optuna.db'}", "uniform", configs)


def descendants(pid: int) -> list[int]:
    """Every process below pid (from /proc: no psutil in this venv)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def kill_process_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (its local Ray), by pid."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


# -- a UserError inside a trial: never retried, ends the search with its sentence ------------------------------
def test_user_error_inside_a_trial_is_not_retried_and_stops_the_search(tmp_path, ray_session):
    from ray import tune

    from tune_mtl.core.errors import UserError
    from tune_mtl.core.keys import USER_ERROR
    from tune_mtl.search.trainable import train_trial
    from tune_mtl.search.trial_errors import StopOnUserError, raise_trial_user_error, trial_user_error

    missing = tmp_path / "no-mnist-here"
    config = {"dataset": {"name": "multi_mnist", "root": str(missing), "train_size": 8, "val_size": 8,
                          "test_size": 8},
              "training": {"epochs": 3}, "strategy": {"name": "uniform"}}
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": 1}),
        param_space={**config, "seed": tune.randint(0, 1000)},
        tune_config=tune.TuneConfig(num_samples=4, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="user_error", storage_path=str(tmp_path), stop=StopOnUserError(),
                                  failure_config=tune.FailureConfig(max_failures=3), verbose=0),
    )
    results = tuner.fit()
    ran = [r for r in results if r.metrics]
    assert len(ran) == 1, "the first trial's error ended the experiment"
    assert all(r.error is None for r in results), "reported, not raised: Tune did not retry it"
    trial_dirs = sorted(p for p in (tmp_path / "user_error").iterdir() if p.is_dir())
    rows = history(trial_dirs[0]) if trial_dirs else []
    assert len(rows) == 1 and rows[0][USER_ERROR], "one result, no retries"
    message = trial_user_error(results)
    assert message and str(missing) in message
    with pytest.raises(UserError) as err:
        raise_trial_user_error(results)
    assert str(err.value) == message


# -- moved and copied run folders ------------------------------------------------------------------------
def snapshot_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def result_lines(run: Path) -> int:
    return sum(len(r.read_text().splitlines()) for r in run.glob("**/result.json"))


def start_three_trial_search(tmp_path: Path, run: Path, stderr: int) -> subprocess.Popen:
    """`launch.py search` of 3 trials x 3 slow epochs, one at a time, into the run folder `run`."""
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump({
        **SLOW_TOY, "training": {**SLOW_TOY["training"], "epochs": 3}, "strategies": ["uniform"],
        "search": {"num_samples": 3, "scheduler": "fifo", "seed": 3, "max_concurrent_trials": 1, "final": {"seeds": 0}},
    }))
    cmd = [sys.executable, "launch.py", "search", "--config", str(config), "--storage-path", str(run.parent),
           "--name", run.name, "--quiet", "--wandb-mode", "disabled"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True, env=launch_env(tmp_path))


def test_copied_and_moved_runs_resume_in_place(tmp_path):
    """A search killed mid-way; a copy of its folder is resumed (the original must not change: before, the
    copy's Optuna trials and its new trials' checkpoints went into the original), then the original is moved
    and resumed where it now is."""
    import shutil

    run = tmp_path / "original" / "run"
    proc = start_three_trial_search(tmp_path, run, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    try:
        while result_lines(run) < 4:  # the first trial done (3 epochs), the second one started
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the search never got going"
            time.sleep(0.05)
    finally:
        kill_process_tree(proc)
    assert str(tmp_path) not in (run / "run.json").read_text(), "no absolute path in run.json"

    copy = tmp_path / "copy" / "run"
    shutil.copytree(run, copy)
    before = snapshot_bytes(run)
    resumed = subprocess.run([sys.executable, "launch.py", "search", "--resume", str(copy), "--quiet"], cwd=ROOT,
                             capture_output=True, text=True, timeout=400, env=launch_env(tmp_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    changed = sorted(k for k in set(before) | set(snapshot_bytes(run)) if before.get(k) != snapshot_bytes(run).get(k))
    assert changed == [], "resuming the copy wrote into the original"

    moved = tmp_path / "moved" / "run"
    moved.parent.mkdir()
    run.rename(moved)
    again = subprocess.run([sys.executable, "launch.py", "search", "--resume", str(moved), "--quiet"], cwd=ROOT,
                           capture_output=True, text=True, timeout=400, env=launch_env(tmp_path))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    for folder in (copy, moved):
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["strategies"]["uniform"]["trials"] == 3
        assert not summary["strategies"]["uniform"]["failed"] and not summary["strategies"]["uniform"]["unfinished"]
        trials = optuna.load_study(study_name="uniform", storage=f"sqlite:///{folder / 'optuna.db'}").trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3, "no trial lost or RUNNING"
        assert len(list(folder.glob("*/uniform-*"))) == 3, "every trial folder inside this run folder"

    # Damage the copy: `report` still summarises what is readable; `--resume` names what is missing.
    record = (copy / "run.json").read_text()
    (copy / "run.json").write_text(record[: len(record) // 2])
    (copy / "optuna.db").unlink()
    report = subprocess.run([sys.executable, "launch.py", "report", str(copy)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=launch_env(tmp_path))
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert "| uniform |" in report.stdout and "Traceback" not in report.stderr
    assert "run.json' is damaged" in report.stderr and "optuna.db' is missing" in report.stderr
    assert not (copy / "optuna.db").exists(), "report did not create an empty study"
    damaged = subprocess.run([sys.executable, "launch.py", "search", "--resume", str(copy)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120, env=launch_env(tmp_path))
    assert damaged.returncode == 2 and "run.json' is damaged" in damaged.stderr.strip().splitlines()[-1]


# -- a full disk ------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs (root can mount here); skipped where mounting is not allowed."""
    from tests.tmpfs import mount_tmpfs, unmount

    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "size=20m"):
        pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
    yield disk
    unmount(disk)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    # Unbuffered writes: a buffered file would raise ENOSPC again when it is closed (it did, now and then).
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 16))
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_is_one_sentence_and_resume_keeps_every_finished_trial(tmp_path, small_disk):
    run = small_disk / "run"
    proc = start_three_trial_search(tmp_path, run, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while result_lines(run) < 4:  # the first trial finished, the second one running
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the search never got going"
            time.sleep(0.05)
        finished = {d.name: history(d) for d in run.glob("*/uniform-*") if len(history(d)) == 3}
        filler = fill(small_disk)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_process_tree(proc)
    assert finished, "a trial had finished before the disk filled"
    assert proc.returncode == 2, out[-2000:] + err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("launch.py: error: the disk filled up during the search (No space left on device)"), last
    assert f"launch.py search --resume {run}" in last

    filler.unlink()  # space returns
    resumed = subprocess.run([sys.executable, "launch.py", "search", "--resume", str(run), "--quiet"], cwd=ROOT,
                             capture_output=True, text=True, timeout=400, env=launch_env(tmp_path))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for name, rows in finished.items():
        assert history(next(run.glob(f"*/{name}"))) == rows, "a result recorded before the disk filled changed"
    summary = json.loads((run / "summary.json").read_text())["strategies"]["uniform"]
    assert summary["trials"] == 3 and not summary["failed"] and not summary["unfinished"]
    best_before = min(min(r["val/objective"] for r in rows) for rows in finished.values())
    assert summary["best"]["val"] <= best_before, "the best of the finished trials is kept"
    trials = optuna.load_study(study_name="uniform", storage=f"sqlite:///{run / 'optuna.db'}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3


@pytest.mark.parametrize("error,expected", [
    (OSError(28, "Error writing bytes to file"), ("disk", "No space left on device")),
    (RuntimeError("Traceback (most recent call last):\nOSError: [Errno 28] No space left on device"),
     ("disk", "No space left on device")),
    (__import__("sqlite3").OperationalError("database or disk is full"), ("disk", "database or disk is full")),
    (ValueError("x"), None),
    (OSError(2, "No such file or directory"), None),
])
def test_storage_failure_is_found_in_the_exception_chain(error, expected):
    from tune_mtl.storage.failures import storage_failure

    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("An exception is raised during the commit ... exceeding max length") from inner
    except RuntimeError as outer:
        assert storage_failure(outer) == expected


def test_lost_database_names_the_masked_url_and_how_to_resume():
    from tune_mtl.storage.failures import failure_sentence

    class OperationalError(Exception):  # the name SQLAlchemy and the DB-API drivers use
        pass

    sentence = failure_sentence(OperationalError("connection failed: Connection refused"), "/r/run",
                                "postgresql://u:***@h/db")
    assert sentence == ("the Optuna storage 'postgresql://u:***@h/db' stopped answering during the search "
                        "(Connection refused); trials it recorded are kept: bring the database back, then continue "
                        "with `launch.py search --resume /r/run`")
