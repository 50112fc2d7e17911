"""Tune's experiment state, kept resumable through a disk that fills up while Tune writes it.

Tune writes `experiment_state-<session>.json` in place (its controller's `save_to_dir`), so a disk that fills up
during that write leaves the file cut short, and `Tuner.restore` then fails ("Failed to restore the run state")
while every finished trial is still on disk: tests/test_faults.py's full-disk test hit it now and then, whenever
that file was the write that met the full disk. Tune saves the searcher right after that file, in the same
snapshot, so the searcher keeps a copy of it (`keep_complete_copy`: written beside and renamed over, never
truncated); a resume puts the copy back over a state file that no longer parses (`put_back_complete_states`).

The copy is the last snapshot that was written whole: a trial that finished after it is restored by Tune from its
last checkpoint (at its last epoch, so it ends without training again), and the searcher's own state, written
atomically, hands out again what it had asked but Tune had not recorded (searcher.py). PBT runs without a
searcher and so without the copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ray.tune.search import Searcher

from tune_mtl.storage.run_folder import is_url

STATE_GLOB = "experiment_state-*.json"
COPY_PREFIX = ".complete-"  # Tune looks for `experiment_state-*.json`: the copies never match


def state_file(checkpoint_dir: str | Path, session_str: str) -> Path:
    return Path(checkpoint_dir) / f"experiment_state-{session_str}.json"


def copy_of(state: Path) -> Path:
    return state.with_name(COPY_PREFIX + state.name)


def keep_complete_copy(checkpoint_dir: str | Path, session_str: str) -> None:
    """Copy the state file Tune has just written whole (it raises before saving the searcher otherwise)."""
    state = state_file(checkpoint_dir, session_str)
    copy = copy_of(state)
    partial = copy.with_name(copy.name + ".partial")
    try:
        shutil.copyfile(state, partial)
        os.replace(partial, copy)
    except OSError:  # the disk is full (or the state is gone): the previous copy stays, whole
        partial.unlink(missing_ok=True)


class SnapshotSearcher(Searcher):
    """A Tune searcher whose every save (one per experiment snapshot, right after the state file) also keeps
    the complete copy of Tune's experiment state."""

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        super().save_to_dir(checkpoint_dir, session_str)
        keep_complete_copy(checkpoint_dir, session_str)


def parses(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def put_back_complete_states(experiment_dir: str | Path) -> list[str]:
    """Put the complete copy back over every state file of `experiment_dir` that does not parse; returns the
    names of the files put back."""
    put_back = []
    for state in sorted(Path(experiment_dir).glob(STATE_GLOB)):
        copy = copy_of(state)
        if not parses(state) and copy.exists() and parses(copy):
            shutil.copyfile(copy, state)
            put_back.append(state.name)
    return put_back


def put_back_cut_states(experiment_path: str) -> None:
    """Before a resume: put back the complete copy over a cut state file, with a note saying so. A local folder
    only: with storage at a URL, Tune restores from its own uploads."""
    if is_url(experiment_path):
        return
    for name in put_back_complete_states(experiment_path):
        print(f"note: Tune's {name} was cut short (the disk filled up while it was written); resuming from "
              f"its last complete copy", flush=True)
