"""A wrong cluster set-up is one clear error (exit code 2) within seconds, not a hang, and writes nothing."""

import time

import pytest

from tune_mtl.cli import main
from tune_mtl.search.cluster import check_resources
from tune_mtl.core.errors import UserError

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
    from tune_mtl.storage.run_folder import RunFolder
    from tune_mtl.search.engine import build_tuner, make_trainable
    from tune_mtl.search.spec import load_spec

    spec = load_spec(None, {"cpus_per_trial": 2, "gpus_per_trial": 0.25, "max_concurrent_trials": 3})
    assert make_trainable(spec)._resources.required_resources == {"CPU": 2.0, "GPU": 0.25}
    run = RunFolder(name="r", local=str(tmp_path), tune_storage=str(tmp_path), wandb_mode="disabled")
    tuner = build_tuner(spec, "uniform", run, {"task": "task0", "metric": "mse", "mode": "min"}, None, 0)
    assert tuner._local_tuner._tune_config.max_concurrent_trials == 3
