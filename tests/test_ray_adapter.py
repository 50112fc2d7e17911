"""The private Ray pieces of search/ray_adapter.py still exist and behave: fails loudly on an upgrade."""

from __future__ import annotations

import socket

from tune_mtl.search import ray_adapter


def test_the_private_pieces_import_and_answer(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token here
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert ray_adapter.local_token() is None
    monkeypatch.setenv("RAY_AUTH_TOKEN", "a" * 32)
    assert ray_adapter.local_token() == "a" * 32
    ray_adapter.reload_config()
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
