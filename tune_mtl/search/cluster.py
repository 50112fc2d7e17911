"""Connect to Ray (local or a cluster) and check, before any trial starts, that the cluster can run them.

Without these checks a wrong `--address` makes `ray.init` retry for a minute or more, and a trial asking for
more GPUs than any node has stays PENDING forever; both become one `UserError` within seconds instead.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from tune_mtl.core.errors import UserError

CONNECT_TIMEOUT_S = 3.0
# Addresses ray.init resolves itself (a running local instance, or a Ray Client URL with its own timeout).
NO_PROBE = ("auto", "local")


def probe(address: str) -> None:
    """A plain TCP connect to host:port, so that an unreachable address fails in seconds, not minutes."""
    if address in NO_PROBE or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address must be 'auto' or host:port of the Ray head node (GCS, usually :6379), "
                        f"got '{address}'")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"cannot reach the Ray cluster at '{address}' ({reason}); start it with `ray up "
                        f"cluster.yaml` or `ray start --head`, or leave out --address for a local Ray") from None


def connect(address: str | None) -> None:
    import ray

    if address:
        probe(address)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        # The dashboard needs ray[default] and is opt-in (`ray start --head --include-dashboard true`).
        ray.init(address=address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    except ConnectionError as err:
        raise UserError(f"cannot connect to the Ray cluster at '{address}': {str(err).splitlines()[0]}") from None


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


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
