"""What every bench script shares: robust summaries of repeated timings, the environment a figure was taken
in (pinned torch, threads, machine load) and the raw JSON kept under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def summary(samples: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median, quartiles and inter-quartile range (times `scale`, e.g. 1e3 for ms) of repeated timings."""
    values = sorted(scale * s for s in samples)
    if len(values) == 1:
        q1 = med = q3 = values[0]
    else:
        q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": med, "q1": q1, "q3": q3, "iqr": q3 - q1, "n": len(values)}


def environment(command: Sequence[str] | None = None) -> dict[str, Any]:
    """The context a figure needs to be reproducible and judged: versions, threads, device, machine load."""
    return {
        "command": " ".join(command if command is not None else [Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save(report: dict[str, Any], name: str) -> Path:
    """Write `report` to bench/results/<name>-<UTC time>.json and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def fmt(stats: dict[str, float], digits: int = 2) -> str:
    """'median [q1-q3]' for tables."""
    return f"{stats['median']:.{digits}f} [{stats['q1']:.{digits}f}-{stats['q3']:.{digits}f}]"


class Stopwatch:
    """Wall-clock and CPU time of a block. CPU time is this thread's (`time.thread_time`): with one torch thread
    every op runs on it, and time spent waiting for a core that other processes hold is not counted, so it
    is the steadier figure on a loaded machine; wall time is what a user waits (and the only one on a GPU)."""

    def __init__(self, sync=None) -> None:
        self._sync = sync or (lambda: None)
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.wall, self.cpu = time.perf_counter() - self._wall, time.thread_time() - self._cpu


def describe(env: dict[str, Any]) -> str:
    """One line naming what a printed table was measured with."""
    load = "/".join(f"{x:.1f}" for x in env["load_average_1_5_15"])
    device = env["cuda_device"] or f"{env['cpu_count']} CPUs"
    return f"torch {env['torch']}, {env['threads']} thread(s), {device}, load average {load} ({env['time_utc']})"
