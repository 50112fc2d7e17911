"""Offline W&B runs read back from wandb's own file format with an independent reader (LevelDB log records of
wandb's protobuf `Record`s), for the tests of trial and verdict logging."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

BLOCK, HEADER = 32768, 7  # LevelDB log format: 32 KiB blocks of records with a 7-byte header (crc, length, type)
FULL, LAST = 1, 4


def read_records(path: Path) -> list:
    """Every protobuf Record of a `.wandb` file (a ':W&B' file header, then LevelDB log records)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    records, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        pending += raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key_of(item) -> str:
    return item.key or "/".join(item.nested_key)


ONE_RUN = "wandb/offline-run-*/run-*.wandb"


def closed_records(folder: Path, wait_s: float = 20.0, pattern: str = ONE_RUN) -> list:
    """The records of the one offline run under folder/wandb (the one `pattern` matches), once wandb-core has
    written its exit record: `run.finish()` returns when the service has the run's last message, and the
    service writes the file shortly after (asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        files = list(folder.glob(pattern))
        records = read_records(files[0]) if len(files) == 1 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            assert len(files) == 1, files
            return records
        time.sleep(0.1)


def offline_run(folder: Path, pattern: str = ONE_RUN) -> dict:
    """The one offline run under folder/wandb (the one `pattern` matches): its run record, history rows by step
    and final summary."""
    run, history, summary, _ = parse_records(closed_records(folder, pattern=pattern))
    return {"run": run, "history": history, "summary": summary}


def parse_records(records: Iterable[Any]) -> tuple[Any, dict, dict, bool]:
    """(the run record, history rows by step, the final summary, whether an exit record was written)."""
    run, history, summary, closed = None, {}, {}, False
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "history":
            row = {key_of(i): json.loads(i.value_json) for i in record.history.item}
            history[record.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind == "summary":
            summary.update({key_of(i): json.loads(i.value_json) for i in record.summary.update})
        closed = closed or kind == "exit"
    return run, history, summary, closed


def every_offline_run(folder: Path) -> dict[str, dict]:
    """Every offline run under folder/wandb, by display name, as it is on disk now (no waiting): its history rows
    by step, final summary and whether wandb-core wrote its exit record (the run was closed completely)."""
    runs: dict[str, dict] = {}
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        run, history, summary, closed = parse_records(read_records(path))
        name = run.display_name if run is not None else path.name
        assert name not in runs, f"two offline runs named {name}"
        runs[name] = {"history": history, "summary": summary, "closed": closed, "path": path}
    return runs
