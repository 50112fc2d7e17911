"""The Optuna storage of a search (the searcher over its studies is `search/searcher.py`).

Tune pickles the searcher (tuner.pkl, searcher-state-*.pkl) into the run folder, and with it the storage URL;
a password in that URL would land in result files. `MaskedRDBStorage` pickles the URL masked and gets the real
one back from the running search (`searching_with`) when unpickled (a resume passes --optuna-storage again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import optuna

from tune_mtl.core.errors import UserError
from tune_mtl.storage.secrets import is_masked, mask_url

# The storage of the search this process is running (with its password), set by `searching_with` for the
# search's duration only. Tune unpickles the searcher (and this storage) while it restores an experiment; the
# pickled URL is masked and may name the folder a run was copied from, so it is replaced by the running
# search's own. Scoped, not a process-wide registry: a second search in the same process sets its own.
_RUNNING: ContextVar[str | None] = ContextVar("tune_mtl_running_storage", default=None)


@contextmanager
def searching_with(url: str) -> Iterator[None]:
    token = _RUNNING.set(url)
    try:
        yield
    finally:
        _RUNNING.reset(token)


class MaskedRDBStorage(optuna.storages.RDBStorage):
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["url"] = mask_url(self.url)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = _RUNNING.get() or state["url"]
        if is_masked(url):
            raise UserError(f"the Optuna storage '{url}' needs its password: pass --optuna-storage again")
        super().__setstate__({**state, "url": url})


def open_storage(url: str) -> MaskedRDBStorage:
    try:
        return MaskedRDBStorage(url)
    except (ImportError, ModuleNotFoundError) as err:
        raise UserError(f"no database driver for the Optuna storage '{mask_url(url)}': {err}") from None
    except Exception as err:  # sqlalchemy's connection errors: name the (masked) URL, not a traceback
        raise UserError(f"cannot open the Optuna storage '{mask_url(url)}': {type(err).__name__}") from None
