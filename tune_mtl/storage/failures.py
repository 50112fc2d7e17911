"""Storage failures in the middle of a search (a full disk, a database that stops answering) as one sentence.

They surface from deep inside Ray Tune or Optuna as whatever the layer below raised: `OSError(ENOSPC)` from a
file write, `sqlite3.OperationalError: database or disk is full`, SQLAlchemy's `OperationalError` wrapped in
Optuna's misleading "exceeding max length" `StorageInternalError`. `storage_failure` finds the cause in the
exception chain and names it; everything recorded before it is kept, so the sentence says how to continue.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator

DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DISK_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded")


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
    """The last clause of the first line: 'Connection refused', 'database or disk is full'."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return first.rsplit(": ", 1)[-1].strip() or type(err).__name__


def storage_failure(err: BaseException) -> tuple[str, str] | None:
    """('disk', why) for a full disk, ('database', why) for a lost or failing database, None otherwise."""
    for cause in causes(err):
        text = str(cause).lower()
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS or any(t in text for t in DISK_FULL_TEXT):
            return "disk", reason(cause)
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
        return error is None or storage_failure(error) is None


# Where Tune logs (with a traceback) the errors a searcher raises while it stops a trial.
TUNE_LOGGERS = ("ray.tune.execution.tune_controller",)


def quiet_tune_storage_failures() -> None:
    quiet = QuietStorageFailures()
    for name in TUNE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietStorageFailures) for f in logger.filters):
            logger.addFilter(quiet)
