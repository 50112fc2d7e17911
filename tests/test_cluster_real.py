"""A real two-node Ray cluster with token authentication (Ray 2.60's default), as `ray start` makes one.

A head (`ray start --head`) and a second raylet (`ray start --address`) run as separate processes from this
venv's `ray`, with a token; `launch.py search --address` finds the token in a file (RAY_AUTH_TOKEN_PATH) and
turns token mode on by itself. Mid-search the second raylet's processes are killed by PID; the search must
finish with every trial at its last epoch and exactly one Optuna trial per Tune trial. Without the token, or
with a wrong one, the search is one sentence naming the fix.

Everything here runs on ports and in a Ray temp folder of its own (so no other Ray on the machine, and no
`ray.init()` of another test, can see or attach to it), and only processes this test started are stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
pytestmark = pytest.mark.ray

EPOCHS = 6
# Epochs of about a second on a loaded 2-core machine, so that the kill lands while trials run.
SLOW_TOY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 8000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 16, "epochs": EPOCHS},
    "strategies": ["uniform"],
    "search": {"num_samples": 3, "scheduler": "fifo", "seed": 3, "max_failures": 3, "final": {"seeds": 0}},
}
# Fast node-death detection (Ray's defaults take ~30 s to declare a silent node dead).
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                      "health_check_failure_threshold": 4}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path) -> dict[str, str]:
    """A clean environment: no RAY_AUTH_MODE/RAY_ADDRESS from the caller, HOME of our own (~/.ray/auth_token)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "PYTHONPATH": str(ROOT),
            "WANDB_SILENT": "true", "RAY_USAGE_STATS_ENABLED": "0"}


class LocalCluster:
    """Nodes started with `ray start`, each in its own processes; stopped by PID, never with `ray stop`."""

    def __init__(self, home: Path, token: str) -> None:
        # Unix socket paths are limited to ~107 bytes: a short temp folder, not pytest's long tmp_path.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tmr-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**base_env(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        self.node_pids: dict[str, set[int]] = {}

    def ours(self) -> set[int]:
        """The daemons of this cluster (their command lines name its temp folder)."""
        mine = set()
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.temp_dir) in part for part in proc.info["cmdline"] or ()):
                mine.add(proc.pid)
        return mine

    def start_node(self, name: str, *args: str) -> None:
        before = self.ours()
        ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                 "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        subprocess.run([str(RAY), "start", *args, *ports, "--temp-dir", str(self.temp_dir), "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=120)
        self.node_pids[name] = self.ours() - before

    def start(self, head_cpus: int, worker_cpus: int) -> None:
        self.start_node("head", "--head", "--port", str(self.port), "--num-cpus", str(head_cpus),
                        "--include-dashboard", "false", "--dashboard-port", str(free_port()),
                        "--ray-client-server-port", str(free_port()),
                        "--system-config", json.dumps(FAST_HEALTH_CHECKS))
        self.start_node("worker", "--address", self.address, "--num-cpus", str(worker_cpus))

    def processes(self, name: str) -> list[psutil.Process]:
        """A node's daemons and everything they started (Ray's worker processes, which run the trials)."""
        found = []
        for pid in self.node_pids.get(name, ()):
            try:
                daemon = psutil.Process(pid)
                found += [daemon, *daemon.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        return found

    def running_a_trial(self, name: str) -> bool:
        """Some worker process of the node executes a task (Ray titles idle workers `ray::IDLE`)."""
        for proc in self.processes(name):
            try:
                title = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if title.startswith("ray::") and not title.startswith("ray::IDLE"):
                return True
        return False

    def kill(self, name: str) -> None:
        for proc in self.processes(name):
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.node_pids.pop(name, None)

    def stop(self) -> None:
        for name in list(self.node_pids):
            self.kill(name)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    token = secrets.token_hex(16)
    cluster = LocalCluster(home, token)
    try:
        cluster.start(head_cpus=1, worker_cpus=2)
        yield cluster, token
    finally:
        cluster.stop()


def search_command(cluster: LocalCluster, storage: Path, config: Path) -> list[str]:
    return [sys.executable, str(ROOT / "launch.py"), "search", "--config", str(config), "--address", cluster.address,
            "--storage-path", str(storage), "--name", "run", "--quiet", "--wandb-mode", "disabled"]


def history(trial_dir: Path) -> list[dict]:
    text = (trial_dir / "result.json").read_text() if (trial_dir / "result.json").exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def all_checkpointed(trials: Path) -> bool:
    """Every trial of the search has a checkpoint the driver has registered: its second checkpoint exists, and a
    trial reports (with its checkpoint) only once the driver has taken its previous report. A trial killed
    before its first checkpoint would start again from epoch 1, and the test would see no resumed trial."""
    folders = list(trials.glob("uniform-*"))
    return len(folders) == SLOW_TOY["search"]["num_samples"] and all(
        any(int(c.name.rsplit("_", 1)[1]) >= 1 for c in folder.glob("checkpoint_*")) for folder in folders)


def test_search_on_a_token_cluster_survives_losing_a_raylet(token_cluster, tmp_path):
    cluster, token = token_cluster
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(SLOW_TOY))
    token_file = tmp_path / "token"
    token_file.write_text(token)
    # The token in a file, RAY_AUTH_MODE unset: launch.py must find that the head wants it and send it.
    env = {**base_env(tmp_path / "client-home"), "RAY_AUTH_TOKEN_PATH": str(token_file)}
    storage = tmp_path / "runs"
    search = subprocess.Popen(search_command(cluster, storage, config), cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    killed = False
    try:
        deadline = time.monotonic() + 400
        while search.poll() is None and time.monotonic() < deadline:
            if not killed and all_checkpointed(storage / "run" / "trials") and cluster.running_a_trial("worker"):
                cluster.kill("worker")
                killed = True
            time.sleep(0.1)
        output, _ = search.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, output[-4000:]
    assert killed, "the second raylet was never seen running a trial"

    run = storage / "run"
    trial_dirs = sorted(p for p in (run / "trials").glob("uniform-*") if p.is_dir())
    assert len(trial_dirs) == SLOW_TOY["search"]["num_samples"]
    restarted = []
    for trial in trial_dirs:
        rows = history(trial)
        # Every epoch logged once, up to the last (the lost node's trials included: test_faults.py says why).
        assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)), trial.name
        assert not rows[-1].get("diverged")
        # A retried trial starts again at iteration 1 of its restore; its epochs continue from the checkpoint.
        restarted += [r["epoch"] for r in rows[1:] if r["iterations_since_restore"] == 1]
    assert restarted and min(restarted) > 1, "a trial of the lost node resumed from its checkpoint elsewhere"

    studies = json.loads((run / "run.json").read_text())["studies"]
    storage_url = f"sqlite:///{run / 'optuna.db'}"
    optuna_trials = [t for name in studies.values()
                     for t in optuna.load_study(study_name=name, storage=storage_url).trials]
    assert len(optuna_trials) == len(trial_dirs), "exactly one Optuna trial per Tune trial"
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in optuna_trials)
    assert sorted(t.user_attrs["trial_name"] for t in optuna_trials) == [d.name for d in trial_dirs]


@pytest.mark.parametrize(("client_env", "message"), [
    ({}, "requires an authentication token and this machine has none; set RAY_AUTH_TOKEN"),
    ({"RAY_AUTH_TOKEN": "0" * 32}, "rejected the authentication token from RAY_AUTH_TOKEN; set RAY_AUTH_TOKEN"),
])
def test_missing_or_wrong_token_is_one_sentence(token_cluster, tmp_path, client_env, message):
    cluster, _ = token_cluster
    env = {**base_env(tmp_path), **client_env}  # HOME without ~/.ray/auth_token
    proc = subprocess.run(search_command(cluster, tmp_path / "runs", ROOT / "search_spaces" / "toy.yaml"),
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and cluster.address in lines[0], proc.stderr[-2000:]
    assert "InvalidAuthToken" not in proc.stdout + proc.stderr and not (tmp_path / "runs" / "run").exists()


def test_local_search_with_rays_default_token_auth(tmp_path):
    """No RAY_AUTH_MODE (a user's shell): the local Ray runs with Ray's default token authentication, made
    explicit by launch.py: the search connects to it, and Ray's "Token authentication is enabled" line is gone."""
    home = tmp_path / "home"  # no ~/.ray/auth_token yet: Ray makes one
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), "search", "--strategies", "uniform",
                           "--num-samples", "1", "--epochs", "1", "--final-seeds", "0",
                           "--storage-path", str(tmp_path / "runs"), "--name", "run", "--quiet",
                           "--wandb-mode", "disabled"],
                          cwd=ROOT, env=base_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (home / ".ray" / "auth_token").is_file()
    assert "InvalidAuthToken" not in proc.stderr and "Token authentication is enabled" not in proc.stderr
