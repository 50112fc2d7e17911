"""PostgreSQL as the Optuna storage, against a real server started here (tests/postgres_server.py): a search, the
server stopping mid-search (one sentence, bounded time), and a resume once it is back. The password comes
from the environment, never from the command line, and must not reach any file or output.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.launch_env import launch_env
from tests.postgres_server import PASSWORD, remove_server, start_server
from tests.test_faults import kill_process_tree
from tune_mtl.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.ray
SERVER_STOP_LIMIT_S = 120  # the search must end this soon after the database goes away (it takes ~20-30 s)

SLOW_TOY = {
    "dataset": {"name": "toy_regression", "input_dim": 10, "num_samples": 8000},
    "model": {"name": "mlp", "shared_layers": 1, "shared_width": 16},
    "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-2]}},
    "training": {"batch_size": 16, "epochs": 3},
    "strategies": ["uniform"],
    "search": {"num_samples": 4, "scheduler": "fifo", "seed": 3, "max_concurrent_trials": 1, "final": {"seeds": 0}},
}


@pytest.fixture(scope="module")
def postgres():
    try:
        server = start_server()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    yield server
    remove_server(server)


def files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_server_stops_mid_search_then_resume_finishes(tmp_path, postgres):
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(SLOW_TOY))
    run = tmp_path / "run"
    cmd = [sys.executable, "launch.py", "search", "--config", str(config), "--storage-path", str(tmp_path),
           "--name", "run", "--quiet", "--wandb-mode", "disabled"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=launch_env(tmp_path, TUNE_MTL_OPTUNA_STORAGE=postgres.url))
    try:
        deadline = time.monotonic() + 300
        while not any(len(r.read_text().splitlines()) >= 2 for r in run.glob("**/result.json")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no trial reported two epochs"
            time.sleep(0.05)
        postgres.stop("immediate")
        stopped = time.monotonic()
        out, err = proc.communicate(timeout=SERVER_STOP_LIMIT_S)
    finally:
        if proc.poll() is None:
            kill_process_tree(proc)
        postgres.start()
    assert time.monotonic() - stopped < SERVER_STOP_LIMIT_S
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("launch.py: error: the Optuna storage 'postgresql://tune:***@127.0.0.1"), last
    assert "stopped answering" in last and f"--resume {run}" in last
    assert [line for line in err.splitlines() if line.startswith("launch.py")] == [last], "one sentence"

    resumed = subprocess.run([sys.executable, "launch.py", "search", "--resume", str(run), "--quiet"], cwd=ROOT,
                             capture_output=True, text=True, timeout=400,
                             env=launch_env(tmp_path, TUNE_MTL_OPTUNA_STORAGE=postgres.url))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    studies = json.loads((run / "run.json").read_text())["studies"]
    assert list(studies.values()) == ["run/uniform"], "a shared server's studies carry the run name"
    study = optuna.load_study(study_name="run/uniform", storage=postgres.url)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4, states
    assert optuna.trial.TrialState.RUNNING not in states, "no Optuna trial left RUNNING"
    for text in (out, err, resumed.stdout, resumed.stderr):
        assert PASSWORD not in text
    assert files_holding(run, PASSWORD) == [], "the password reached a file"


def test_password_from_a_file_and_a_wrong_password(tmp_path, postgres, capsys):
    """--optuna-storage-file keeps the password off the command line; a wrong one is one sentence before Ray."""
    secret = tmp_path / "storage-url"
    secret.write_text(postgres.url.replace(PASSWORD, "not-the-password") + "\n")
    rc = main(["search", "--optuna-storage-file", str(secret), "--storage-path", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "cannot connect to the Optuna storage 'postgresql://tune:***@127.0.0.1" in err
    assert "not-the-password" not in err and not (tmp_path / "runs").exists()


def test_missing_driver_names_the_module(tmp_path, capsys):
    rc = main(["search", "--optuna-storage", "postgresql+psycopg2://u:pw@127.0.0.1:5432/db",
               "--storage-path", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "'psycopg2'" in err and "pip install 'psycopg2-binary'" in err and ":pw@" not in err
