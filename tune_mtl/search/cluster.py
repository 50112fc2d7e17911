"""Connect to Ray (local or a cluster) and check, before any trial starts, that the cluster can run them.

Left to itself, `ray.init` turns a wrong `--address` into a minute of retries: an unreachable head, a head that
requires an authentication token (Ray 2.60 turns token authentication on by default) when this machine has none
or a wrong one (20 `InvalidAuthToken` lines, then a plain "cannot connect" after 20-30 s), `--address auto` with
no cluster on the machine (79 s, or an unrelated Ray instance it happens to find). Here each of those is one
`UserError` within seconds, found by asking the head's GCS for its cluster id (one gRPC call with a deadline)
before `ray.init` runs. A trial asking for more GPUs than any node has would stay PENDING forever; that too
is one `UserError` (`check_resources`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from tune_mtl.core.errors import UserError
from tune_mtl.search import ray_adapter

CONNECT_TIMEOUT_S = 3.0
ADDRESS_ENV = "RAY_ADDRESS"  # what `ray job submit` sets for the job it runs, and what Ray itself reads
AUTH_MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = "~/.ray/auth_token"
START_HINT = "start one with `ray start --head` (or `ray up cluster.yaml`), or leave out --address for a local Ray"
TOKEN_HINT = (f"set {TOKEN_ENV} to the cluster's token (`ray get-auth-token` on the head node prints it) or copy "
              f"the head's {DEFAULT_TOKEN_FILE} to this machine")


@dataclass(frozen=True)
class Target:
    """Where `ray.init` connects: `address` as Ray takes it, `gcs` the head's host:port to check (None: start a
    new local Ray), `said` how the user gave it (for messages)."""

    address: str
    gcs: str | None
    said: str


# -- which address --------------------------------------------------------------------------------------
def split_host_port(address: str, said: str, default_port: int | None = None) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    if not colon and default_port is not None:
        host, port = address, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"{said} must be 'auto' or host:port of the Ray head node (GCS, usually :6379), "
                        f"got '{address}'")
    return host, int(port)


def recorded_cluster() -> str | None:
    """The head started last with `ray start` on this machine (Ray's own record, in its temp folder)."""
    return ray_adapter.recorded_head_address()


def resolve(address: str | None) -> Target:
    """The address the user gave (or RAY_ADDRESS, as Ray reads it), checked for its form; nothing contacted."""
    said = "--address"
    if address in (None, "", "auto") and os.environ.get(ADDRESS_ENV):
        # As Ray reads it: RAY_ADDRESS stands for a missing address or 'auto' (a `ray job submit` job has it).
        address, said = os.environ[ADDRESS_ENV], ADDRESS_ENV
    if not address or address == "local":
        return Target("local", None, said)  # a new Ray on this machine, never one started by someone else
    if address.startswith(("http://", "https://")):
        raise UserError(f"{said} '{address}' is a Ray dashboard/job-server URL (what `ray job submit --address` "
                        "takes); a search needs the head node's GCS address host:port (usually :6379) or 'auto'")
    if address.startswith("ray://"):  # Ray Client: the head's client server, port 10001 by default
        split_host_port(address.removeprefix("ray://"), said, default_port=10001)
        return Target(address, None, said)
    if address == "auto":
        found = recorded_cluster()
        if not found:
            raise UserError(f"{said} auto found no Ray cluster started on this machine with `ray start`; "
                            f"{START_HINT}")
        split_host_port(found, "the recorded Ray cluster address")
        return Target(found, found, f"{said} auto ({found})")
    split_host_port(address, said)
    return Target(address, address, said)


# -- is the head there, and does it take this machine's token -------------------------------------------
def probe_tcp(host: str, port: int, said: str) -> None:
    """A plain TCP connect, so that an unreachable address fails in seconds, not minutes."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot reach the Ray cluster at '{host}:{port}' ({reason}, from {said}); "
                        f"{START_HINT}") from None


def ask_cluster_id(gcs: str, token: str | None) -> str | None:
    """One GetClusterId call to the GCS (what every Ray client does first): None if it answered, else the
    gRPC status name (UNAUTHENTICATED: a token is required, or this one is wrong)."""
    return ray_adapter.ask_cluster_id(gcs, token, CONNECT_TIMEOUT_S)


def token_source() -> str:
    """Where Ray reads this machine's token from, in its own order of precedence (for messages)."""
    if os.environ.get(TOKEN_ENV):
        return TOKEN_ENV
    if os.environ.get(TOKEN_PATH_ENV):
        return os.environ[TOKEN_PATH_ENV]
    return DEFAULT_TOKEN_FILE


def local_token() -> str | None:
    """This machine's Ray token (RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), read by
    Ray's own loader so that what is checked here is exactly what `ray.init` will send."""
    return ray_adapter.local_token()


def use_token_auth() -> None:
    """Send the token from now on. Ray reads its auth mode from the environment (process-wide by Ray's design)
    and never turns token mode on by itself for an explicit address; its cached config must be re-read."""
    os.environ[AUTH_MODE_ENV] = "token"
    ray_adapter.reload_config()


def check_head(gcs: str, said: str) -> None:
    """The head answers, and takes this machine's token if it requires one (then token mode is turned on)."""
    host, port = split_host_port(gcs, said)
    probe_tcp(host, port, said)
    status = ask_cluster_id(gcs, None)
    if status is None:
        return
    if status != "UNAUTHENTICATED":
        raise UserError(f"'{gcs}' ({said}) answers but not as a Ray head node's GCS ({status}); "
                        "give the port of `ray start --head --port` (default 6379)")
    token = local_token()
    if token is None:
        raise UserError(f"the Ray cluster at '{gcs}' requires an authentication token and this machine "
                        f"has none; {TOKEN_HINT}")
    if ask_cluster_id(gcs, token) == "UNAUTHENTICATED":
        raise UserError(f"the Ray cluster at '{gcs}' rejected the authentication token from "
                        f"{token_source()}; {TOKEN_HINT}")
    if os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        use_token_auth()


def check_client_server(target: Target) -> None:
    host, port = split_host_port(target.address.removeprefix("ray://"), target.said, default_port=10001)
    probe_tcp(host, port, target.said)


# -- connecting ---------------------------------------------------------------------------------------------
_connected_here = False  # whether `connect` (not a caller, e.g. a test's shared Ray) made this process's Ray


def connect(address: str | None, prestart_workers: bool = True) -> None:
    """Connect this process to Ray: a new local instance without an address, else the given cluster.
    `prestart_workers=False`: a new local instance does not prestart one idle worker per CPU (for a search
    that never runs a trial on every CPU, those workers would idle, ~80 MB each, for the whole search)."""
    global _connected_here
    import ray

    target = resolve(address)
    if target.gcs:
        check_head(target.gcs, target.said)
    elif target.address.startswith("ray://"):
        check_client_server(target)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    if target.address == "local" and AUTH_MODE_ENV not in os.environ:
        # Ray's own default for a new local instance, said explicitly: token authentication on (its token in
        # ~/.ray/auth_token, made if missing), without the line Ray prints when it picks the mode itself. The
        # cached config must follow the environment, or this process would connect without the token.
        use_token_auth()
    try:
        # The dashboard needs ray[default] and is opt-in (`ray start --head --include-dashboard true`).
        extra = ray_adapter.without_worker_prestart() if target.address == "local" and not prestart_workers else {}
        with ray_adapter.local_ray_without_idle_services():
            ray.init(address=target.address, include_dashboard=False, configure_logging=False, log_to_driver=False,
                     **extra)
    except Exception as err:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, AuthenticationError...
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"cannot connect to the Ray cluster at '{target.address}' ({target.said}): {first}") from None
    _connected_here = True


def disconnect() -> None:
    """Stop the local Ray instance `connect` started (or leave the cluster it joined), now rather than at
    interpreter exit: Ray's exit hook sleeps 0.5 s first, and the search is over once its results are written.
    A Ray this module did not start (a caller's, e.g. a test's shared instance) is left running."""
    global _connected_here
    if not _connected_here:
        return
    import ray

    _connected_here = False
    ray.shutdown()


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]


def check_resources(search: dict[str, Any], nodes: list[dict[str, Any]]) -> None:
    """One trial must fit on one node (Tune places a trial's resources on a single node)."""
    cpus, gpus = search["cpus_per_trial"], search["gpus_per_trial"]
    if gpus > 1 and gpus != int(gpus):
        raise UserError(f"--gpus-per-trial must be a fraction below 1 or a whole number, got {gpus}")
    biggest = {key: max((n["Resources"].get(key, 0.0) for n in nodes), default=0.0) for key in ("CPU", "GPU")}
    for key, want, flag in (("CPU", cpus, "--cpus-per-trial"), ("GPU", gpus, "--gpus-per-trial")):
        if want > biggest[key]:
            raise UserError(
                f"{flag} {want:g} is more than any node of the Ray cluster offers (largest: {biggest[key]:g} "
                f"{key}s on {len(nodes)} node(s)); lower it, or on an autoscaling cluster keep min_workers >= 1 "
                f"for a node type that has them"
            )
