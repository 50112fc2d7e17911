"""The Optuna storage of a search (the searcher over its studies is `search/searcher.py`).

Tune pickles the searcher (tuner.pkl, searcher-state-*.pkl) into the run folder, and with it the storage URL;
a password in that URL would land in result files. `MaskedRDBStorage` pickles the URL masked and gets the real
one back from this process's registry when unpickled (a resume passes --optuna-storage again).
"""

from __future__ import annotations

from typing import Any

import optuna

from tune_mtl.core.errors import UserError
from tune_mtl.storage.secrets import is_masked, mask_url

_REAL_URLS: dict[str, str] = {}  # masked URL -> URL with its password, for this process only
# The run folder's SQLite study this process opened last. A resumed run folder may have been moved or copied
# since Tune pickled its searcher: the pickled URL then names the ORIGINAL folder's optuna.db.
_OPENED_SQLITE: list[str] = []


class MaskedRDBStorage(optuna.storages.RDBStorage):
    def __init__(self, url: str, **kwargs: Any) -> None:
        _REAL_URLS[mask_url(url)] = url
        if url.startswith("sqlite"):
            _OPENED_SQLITE[:] = [url]
        super().__init__(url, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["url"] = mask_url(self.url)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        url = _REAL_URLS.get(state["url"], state["url"])
        if url.startswith("sqlite") and _OPENED_SQLITE:
            url = _OPENED_SQLITE[0]  # the study of the folder being resumed, never the one it was copied from
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
