"""The one place that reaches past Ray's public API (tests/test_ray_adapter.py fails loudly on an upgrade).

Connecting to a token-protected cluster needs, before `ray.init`, what Ray 2.60 keeps internal: the address of
the head started last on this machine, its GetClusterId call (to tell "requires a token" and "wrong token"
from "nothing there" within seconds, instead of 20 InvalidAuthToken lines and a 30 s wait), its token loader,
and a re-read of its cached config after token mode is switched on. Resuming a moved run folder
(relocation.py) needs the search algorithm of a restored Tuner and Ray's storage-path parser. A trial that Tune
stops needs its training thread waited for (`trainable_waiting_for_its_thread`), and a trial reporting from a
thread of its own needs Tune's stop event (`trial_stop_event`). Tune's callback telemetry, which imports
wandb on the driver, is skipped (`without_callback_telemetry`), and so are two processes a new local Ray
starts for nothing, its API server without a dashboard and its autoscaler monitor
(`local_ray_without_idle_services`). A new local instance that will not run a trial on every CPU starts
without Ray's idle prestarted workers (`without_worker_prestart`). A trial retried after a lost node keeps the
log lines the driver wrote for it (`loggers_keeping_the_driver_s_own_log`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def trainable_waiting_for_its_thread(train_func: Callable[[dict[str, Any]], None], timeout_s: float) -> type[Any]:
    """Tune's class for the function trainable `train_func`, whose `cleanup` waits (at most `timeout_s`) for the
    trial's training thread to end.

    Ray's own cleanup only signals that thread (`session.finish(timeout=0)`), so a trial Tune stops (ASHA, the
    epoch limit) ran its `finally` (closing its W&B run) while its worker was already ending: with the driver's
    `ray.shutdown()` right after `fit`, Ray killed wandb-core before the last stopped trial's run was written
    (1 to 2 searches in 3 lost one, on 2 cores). Tune waits for a trial's `stop()` before `fit` returns, so
    waiting here makes that `finally` part of the trial. (Ray's thread wrapper re-raises the thread's exit in
    its own `join`: the plain `Thread.join` only waits.)"""
    from ray.train._internal.session import get_session
    from ray.tune.trainable.function_trainable import wrap_function

    class WaitingFunctionTrainable(wrap_function(train_func)):  # type: ignore[misc]
        def cleanup(self) -> None:
            session = get_session()
            thread = session.training_thread if session is not None and session.training_started else None
            super().cleanup()
            if thread is not None:
                threading.Thread.join(thread, timeout_s)

    WaitingFunctionTrainable.__name__ = WaitingFunctionTrainable.__qualname__ = train_func.__name__
    return WaitingFunctionTrainable


def without_callback_telemetry() -> None:
    """Ray Tune's usage telemetry counts the callbacks a search passes, by class: to have the classes to compare
    with, it imports the W&B, MLflow, Comet and Aim integrations on the driver, and wandb with them (~0.4 s
    before the first trial, on a driver that never logs to W&B itself). The count is skipped; nothing else
    reads it."""
    from ray.air._internal import usage

    usage.tag_callbacks = lambda callbacks: False


def trial_stop_event() -> threading.Event | None:
    """The event Tune sets when it stops the running trial (its session's; None outside a Tune trial). Tune
    replaces it for every trial a reused worker runs, so it is taken at the trial's start."""
    from ray.train._internal.session import get_session

    session = get_session()
    event = getattr(session, "stop_event", None)
    return event if isinstance(event, threading.Event) else None


@contextmanager
def local_ray_without_idle_services() -> Iterator[None]:
    """Inside: a new local Ray started by `ray.init(include_dashboard=False)` starts neither its API server nor
    its autoscaler monitor. Neither does anything for a search on one machine, and both cost it time:

    - the API server (the dashboard's head, which without the dashboard runs only Ray's usage-stats module):
      `ray.init` waits until it answers before it starts the raylet, ~0.5 s of every search's start on 2 cores;
      the dashboard and job submission need a `ray start` cluster anyway (docs/cluster.md). Ray copes with its
      absence as it does when that process fails to start.
    - the autoscaler monitor: a local instance is one node that never scales, and at `ray.shutdown()` the monitor
      ignores SIGTERM, so Ray waits its full second before killing it, at the end of every search.
    ~0.18 GB less memory too. Joining a running cluster starts neither process, inside or not."""
    from ray._private.node import Node

    original_api_server, original_monitor = Node.start_api_server, Node.start_monitor

    def start_api_server_for_a_dashboard(self: Any, *, include_dashboard: bool | None,
                                         raise_on_failure: bool) -> None:
        if include_dashboard is not False:
            original_api_server(self, include_dashboard=include_dashboard, raise_on_failure=raise_on_failure)

    # setattr: mypy refuses assignments to methods
    setattr(Node, "start_api_server", start_api_server_for_a_dashboard)  # noqa: B010
    setattr(Node, "start_monitor", lambda self: None)  # noqa: B010
    try:
        yield
    finally:
        setattr(Node, "start_api_server", original_api_server)  # noqa: B010
        setattr(Node, "start_monitor", original_monitor)  # noqa: B010


def without_worker_prestart() -> dict[str, Any]:
    """`ray.init` arguments that keep a *new local* Ray from prestarting one idle worker per CPU for its first
    driver (Ray's `prestart_worker_first_driver` system config, reachable only through the private
    `_system_config`; `ray.init` refuses it when joining a running cluster)."""
    return {"_system_config": {"prestart_worker_first_driver": False}}


def loggers_keeping_the_driver_s_own_log() -> list[Any]:
    """Tune's `result.json` and `progress.csv` loggers, except that a retried trial keeps the log this driver
    wrote.

    The driver writes a trial's log in its own staging folder and copies that folder to the run folder at each
    experiment snapshot. When a trial is retried (its node was lost), Ray's loggers copy the run folder's file
    back over the staging one: the copy of the last snapshot, which lacks the epochs reported since. Those lines
    were lost for good: tests/test_faults.py's node loss logged epochs 1, 3, 4 for a trial in 3 runs of 14, and
    the project's CI once saw a trial with an empty log. A log in the staging folder is this driver's,
    append-only, and so at least as new as any copy; the run folder's file is restored only where the staging
    one is missing or shorter (a resumed search, whose driver starts a new staging folder)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [_keeping_own_log(CSVLoggerCallback)(), _keeping_own_log(JsonLoggerCallback)()]


def _keeping_own_log(logger: type[Any]) -> type[Any]:
    from pathlib import Path

    import pyarrow.fs

    class KeepingOwnLog(logger):  # type: ignore[misc]
        def _restore_from_remote(self, file_name: str, trial: Any) -> None:
            local = Path(trial.local_path, file_name)
            if local.exists():
                synced = trial.storage.storage_filesystem.get_file_info(
                    Path(trial.storage.trial_fs_path, file_name).as_posix())
                if synced.type == pyarrow.fs.FileType.NotFound or local.stat().st_size >= synced.size:
                    return
            super()._restore_from_remote(file_name, trial)

    KeepingOwnLog.__name__ = KeepingOwnLog.__qualname__ = f"{logger.__name__}KeepingOwnLog"
    return KeepingOwnLog
