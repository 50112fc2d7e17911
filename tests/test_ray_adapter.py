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
