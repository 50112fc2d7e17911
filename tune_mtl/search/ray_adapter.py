"""The one place that reaches past Ray's public API (tests/test_ray_adapter.py fails loudly on an upgrade).

Connecting to a token-protected cluster needs, before `ray.init`, what Ray 2.60 keeps internal: the address of
the head started last on this machine, its GetClusterId call (to tell "requires a token" and "wrong token"
from "nothing there" within seconds, instead of 20 InvalidAuthToken lines and a 30 s wait), its token loader,
and a re-read of its cached config after token mode is switched on. Resuming a moved run folder
(relocation.py) needs the search algorithm of a restored Tuner and Ray's storage-path parser.
"""

from __future__ import annotations

from typing import Any


def recorded_head_address() -> str | None:
    from ray._private.utils import read_ray_address

    address = read_ray_address()
    return str(address) if address else None


def ask_cluster_id(gcs: str, token: str | None, timeout_s: float) -> str | None:
    """None if the GCS at `gcs` answered GetClusterId, else the gRPC status name."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(gcs) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)  # type: ignore[no-untyped-call]
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
        try:
            stub.GetClusterId(request, timeout=timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            return str(err.code().name)
    return None


def local_token() -> str | None:
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the environment may have changed since Ray first looked
    if not loader.has_token(ignore_auth_mode=True):
        return None
    return str(loader.get_raw_token(ignore_auth_mode=True))


def reload_config() -> None:
    """Ray caches its config (auth mode included) on first use; re-read it from the environment."""
    from ray._raylet import Config  # type: ignore[attr-defined]

    Config.initialize("")


def restored_search_alg(tuner: Any) -> Any:
    """The search algorithm a `Tuner.restore` rebuilt (Ray 2.60 keeps the restored TuneConfig internal)."""
    return tuner._local_tuner._tune_config.search_alg


def storage_fs_path(path_or_url: str) -> str:
    """The filesystem path Ray's storage uses for a folder or URL (`s3://b/x` -> `b/x`)."""
    from ray.train._internal.storage import get_fs_and_path

    return str(get_fs_and_path(path_or_url, None)[1])
