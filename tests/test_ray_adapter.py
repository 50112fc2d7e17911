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
