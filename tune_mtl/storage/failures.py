"""Storage failures in the middle of a search (a full disk, a database that stops answering) as one sentence.

They surface from deep inside Ray Tune or Optuna as whatever the layer below raised: `OSError(ENOSPC)` from a
file write, `sqlite3.OperationalError: database or disk is full`, SQLAlchemy's `OperationalError` wrapped in
Optuna's misleading "exceeding max length" `StorageInternalError`. `storage_failure` finds the cause in the
exception chain and names it; everything recorded before it is kept, so the sentence says how to continue.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# How a full disk reads inside error text that crossed a process boundary (a worker's error as a string).
DISK_FULL_TEXT = {"no space left on device": "No space left on device", "disk quota exceeded": "Disk quota exceeded",
                  "database or disk is full": "database or disk is full"}


def causes(err: BaseException) -> Iterator[BaseException]:
    """The exception and every cause/context below it, each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]


def reason(err: BaseException) -> str:
    """'No space left on device', 'Connection refused', 'database or disk is full': the OS's words for an
    errno, else the last clause of the first line that is not a traceback header."""
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    lines = [line for line in str(err).strip().splitlines() if line.strip() and not line.startswith("Traceback")]
    first = lines[0] if lines else type(err).__name__
    return first.rsplit(": ", 1)[-1].strip() or type(err).__name__


def storage_failure(err: BaseException) -> tuple[str, str] | None:
    """('disk', why) for a full disk, ('database', why) for a lost or failing database, None otherwise."""
    for cause in causes(err):
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return "disk", os.strerror(cause.errno)
        text = str(cause).lower()
        for phrase, words in DISK_FULL_TEXT.items():
            if phrase in text:
                return "disk", words
    for cause in causes(err):
        if type(cause).__name__ in ("OperationalError", "InterfaceError", "DisconnectionError"):
            return "database", reason(cause)
    return None


def failure_sentence(err: BaseException, run_dir: str | None, optuna_display_url: str) -> str | None:
    """One sentence for a storage failure (None for any other error): what failed, that nothing recorded is
    lost, and how to continue."""
    found = storage_failure(err)
    if found is None:
        return None
    kind, why = found
    resume = f"launch.py search --resume {run_dir}" if run_dir else "launch.py search --resume RUN_DIR"
    if kind == "disk":
        return (f"the disk filled up during the search ({why}); results recorded before it are kept: free space, "
                f"then continue with `{resume}`")
    return (f"the Optuna storage '{optuna_display_url}' stopped answering during the search ({why}); trials it "
            f"recorded are kept: bring the database back, then continue with `{resume}`")


class QuietStorageFailures(logging.Filter):
    """Drops Ray Tune's own logged traceback of a storage failure: the search ends with `failure_sentence`."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and storage_failure(error) is not None:
            return False
        message = str(record.msg).lower()  # Ray's syncer puts the traceback into the message text
        return not any(text in message for text in DISK_FULL_TEXT)


# Where Ray logs (with a traceback) the errors a searcher raises while it stops a trial, and failed uploads of
# results and checkpoints to the storage path.
TUNE_LOGGERS = ("ray.tune.execution.tune_controller", "ray.train._internal.syncer")


def quiet_tune_storage_failures() -> None:
    quiet = QuietStorageFailures()
    for name in TUNE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietStorageFailures) for f in logger.filters):
            logger.addFilter(quiet)
