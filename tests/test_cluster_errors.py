"""A wrong cluster set-up is one clear error (exit code 2) within seconds, not a hang, and writes nothing."""

import socket
import time

import pytest

from tune_mtl.cli import main
from tune_mtl.core.errors import UserError
from tune_mtl.search.cluster import check_resources

TINY = ["--strategies", "uniform", "--num-samples", "2", "--epochs", "1", "--quiet", "--wandb-mode", "disabled"]


def node(cpus, gpus=0.0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_unreachable_address_fails_fast(tmp_path, capsys):
    start = time.monotonic()
    rc = main(["search", *TINY, "--address", "127.0.0.1:1", "--storage-path", str(tmp_path), "--name", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - start < 20
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_malformed_address_is_a_user_error(tmp_path, capsys):
    assert main(["search", *TINY, "--address", "headnode", "--storage-path", str(tmp_path)]) == 2
    assert "host:port" in capsys.readouterr().err


def search_with(tmp_path, *address: str) -> int:
    return main(["search", *TINY, *address, "--storage-path", str(tmp_path), "--name", "x"])


@pytest.fixture
def no_recorded_cluster(tmp_path, monkeypatch):
    """A Ray temp folder of our own: no `ray start` record (ray_current_cluster) unless a test writes one."""
    ray_tmp = tmp_path / "raytmp"
    (ray_tmp / "ray").mkdir(parents=True)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return ray_tmp / "ray"


@pytest.mark.parametrize(("address", "message"), [
    ("http://127.0.0.1:8265", "--address 'http://127.0.0.1:8265' is a Ray dashboard/job-server URL"),
    ("https://head:8265", "is a Ray dashboard/job-server URL (what `ray job submit --address` takes)"),
    ("ray://127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1' (Connection refused, from --address)"),
    ("127.0.0.1:99999", "--address must be 'auto' or host:port"),
])
def test_wrong_kind_of_address_is_one_sentence(tmp_path, capsys, no_recorded_cluster, address, message):
    start = time.monotonic()
    rc = search_with(tmp_path, "--address", address)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 20 and not (tmp_path / "x").exists()


def test_auto_without_a_started_cluster_says_so(tmp_path, capsys, no_recorded_cluster):
    assert search_with(tmp_path, "--address", "auto") == 2
    err = capsys.readouterr().err
    assert "--address auto found no Ray cluster started on this machine with `ray start`" in err
    assert not (tmp_path / "x").exists()


def test_auto_with_a_stale_record_says_the_cluster_is_gone(tmp_path, capsys, no_recorded_cluster):
    (no_recorded_cluster / "ray_current_cluster").write_text("127.0.0.1:1")  # left by a stopped `ray start`
    assert search_with(tmp_path, "--address", "auto") == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1' (Connection refused, from --address auto" in \
        capsys.readouterr().err


def test_ray_address_variable_is_read_and_named(tmp_path, capsys, no_recorded_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # exported for `ray job submit`, not a GCS
    assert search_with(tmp_path) == 2
    assert "RAY_ADDRESS 'http://127.0.0.1:8265' is a Ray dashboard/job-server URL" in capsys.readouterr().err


def test_auto_takes_ray_address_first(tmp_path, capsys, no_recorded_cluster, monkeypatch):
    """As in Ray, and what a `ray job submit` job relies on: RAY_ADDRESS is where 'auto' points."""
    (no_recorded_cluster / "ray_current_cluster").write_text("127.0.0.1:2")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert search_with(tmp_path, "--address", "auto") == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1' (Connection refused, from RAY_ADDRESS)" in \
        capsys.readouterr().err


def test_a_port_that_is_not_a_ray_head_is_named(tmp_path, capsys, no_recorded_cluster):
    with socket.socket() as server:  # accepts connections, never speaks gRPC
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert search_with(tmp_path, "--address", f"127.0.0.1:{port}") == 2
    assert f"'127.0.0.1:{port}' (--address) answers but not as a Ray head node's GCS" in capsys.readouterr().err


@pytest.mark.parametrize(("search", "message"), [
    ({"cpus_per_trial": 1.0, "gpus_per_trial": 2.0}, "--gpus-per-trial 2 is more than any node"),
    ({"cpus_per_trial": 16.0, "gpus_per_trial": 0.0}, "--cpus-per-trial 16 is more than any node"),
    ({"cpus_per_trial": 1.0, "gpus_per_trial": 1.5}, "a fraction below 1 or a whole number"),
])
def test_trial_must_fit_on_one_node(search, message):
    # 8 GPUs in the cluster, but no single node has 2: Tune places a trial on one node, so it would hang.
    nodes = [node(8, 1), node(8, 1), node(4), node(64, 8, alive=False)]
    with pytest.raises(UserError, match=message):
        check_resources(search, [n for n in nodes if n["Alive"]])
    check_resources({"cpus_per_trial": 2.0, "gpus_per_trial": 0.25}, nodes)  # fractional GPUs fit


@pytest.mark.ray
def test_gpus_per_trial_on_a_cpu_cluster_fails_before_any_trial(tmp_path, ray_session, capsys):
    start = time.monotonic()
    rc = main(["search", *TINY, "--gpus-per-trial", "1", "--storage-path", str(tmp_path), "--name", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - start < 20
    assert "--gpus-per-trial 1 is more than any node of the Ray cluster offers (largest: 0 GPUs" in err
    assert not (tmp_path / "x").exists()


def test_trial_resources_and_concurrency_reach_tune(tmp_path):
    """--cpus-per-trial, fractional --gpus-per-trial and --max-concurrent-trials end up in what Tune schedules."""
    from tune_mtl.search.experiment import build_tuner, make_trainable
    from tune_mtl.search.spec import load_spec

    spec = load_spec(None, {"cpus_per_trial": 2, "gpus_per_trial": 0.25, "max_concurrent_trials": 3})
    assert make_trainable(spec).default_resource_request({}).required_resources == {"CPU": 2.0, "GPU": 0.25}
    objective = {"task": "task0", "metric": "mse", "mode": "min"}
    tuner = build_tuner(spec, str(tmp_path), objective, None, [], {}, total_trials=4, tune_verbose=0)
    assert tuner._local_tuner._tune_config.max_concurrent_trials == 3
