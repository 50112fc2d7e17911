"""A resumed trial restores the newest checkpoint that exists, even when Tune names one it rotated away."""

from __future__ import annotations

import json

import pyarrow.fs
from ray import tune

from tune_mtl.search.trainable import EPOCH_FILE, existing_checkpoint


def make_checkpoint(trial_dir, number: int, epoch: int | None) -> str:
    folder = trial_dir / f"checkpoint_{number:06d}"
    folder.mkdir(parents=True)
    if epoch is not None:  # None: a folder whose writing was cut short (no epoch file yet)
        (folder / EPOCH_FILE).write_text(json.dumps({"epoch": epoch}))
    return str(folder)


def checkpoint(path) -> tune.Checkpoint:
    return tune.Checkpoint(str(path), filesystem=pyarrow.fs.LocalFileSystem())


def test_a_checkpoint_that_exists_is_used_as_given(tmp_path):
    given = make_checkpoint(tmp_path, 1, 2)
    make_checkpoint(tmp_path, 2, 3)
    assert existing_checkpoint(checkpoint(given)).path == given  # PBT hands over another trial's: keep it


def test_a_rotated_away_checkpoint_falls_back_to_the_newest_by_saved_epoch(tmp_path):
    # Tune renumbers after a restore: folder 000001 holds epoch 28, folder 000027 epoch 27.
    newest = make_checkpoint(tmp_path, 1, 28)
    make_checkpoint(tmp_path, 27, 27)
    make_checkpoint(tmp_path, 30, None)  # incomplete: never chosen
    chosen = existing_checkpoint(checkpoint(tmp_path / "checkpoint_000025"))
    assert chosen.path == newest


def test_nothing_beside_it_leaves_tune_s_choice(tmp_path):
    missing = tmp_path / "checkpoint_000003"
    assert existing_checkpoint(checkpoint(missing)).path == str(missing)
