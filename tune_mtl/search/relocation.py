"""Resuming a moved or copied run folder writes into that folder, never into the original.

`Tuner.restore(path)` moves the restored trials to `path`, but Ray Tune 2.60 keeps the search algorithm's
pickled `Experiment`, whose storage is the folder the search first ran in: every trial created after the
restore (the budget not yet started) was written into the ORIGINAL run folder. `RelocatableSearch` creates
those trials under the folder it was restored from (`relocate`).

Use: `TuneConfig(search_alg=relocatable(searcher, max_concurrent), max_concurrent_trials=None)` (the search
algorithm applies the concurrency limit itself: Tune ignores max_concurrent_trials for a SearchGenerator),
and after `Tuner.restore(path, ...)` call `relocate(tuner, path)`.
"""

from __future__ import annotations

import copy
from pathlib import PurePosixPath
from typing import Any

from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator


class RelocatableSearch(SearchGenerator):
    """A SearchGenerator whose new trials go to the experiment folder it was last restored from."""

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(searcher)
        self.experiment_path: str | None = None  # set by `relocate`; None: where the experiment began

    def create_trial_if_possible(self, experiment_spec: dict[str, Any]) -> Any:
        storage = experiment_spec.get("storage")
        if self.experiment_path and storage is not None and storage.experiment_fs_path != self.experiment_path:
            experiment_spec = {**experiment_spec, "storage": moved_storage(storage, self.experiment_path)}
            if self._experiment is not None:  # and for the trials after it
                self._experiment.spec["storage"] = experiment_spec["storage"]
        return super().create_trial_if_possible(experiment_spec)


def moved_storage(storage: Any, experiment_fs_path: str) -> Any:
    """A copy of a Tune StorageContext pointing at another experiment folder on the same file system (what
    Tune does itself for the trials it restores)."""
    moved = copy.copy(storage)
    path = PurePosixPath(experiment_fs_path)
    moved.storage_fs_path = str(path.parent)
    moved.experiment_dir_name = path.name
    return moved


def relocatable(searcher: Searcher, max_concurrent: int | None) -> RelocatableSearch:
    limited = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent) if max_concurrent else searcher
    return RelocatableSearch(limited)


def relocate(tuner: Any, experiment_path: str) -> None:
    """After `Tuner.restore(experiment_path)` (a folder or URL): new trials go there (no-op for other search
    algorithms)."""
    from tune_mtl.search import ray_adapter

    search_alg = ray_adapter.restored_search_alg(tuner)
    if isinstance(search_alg, RelocatableSearch):
        search_alg.experiment_path = ray_adapter.storage_fs_path(experiment_path)
