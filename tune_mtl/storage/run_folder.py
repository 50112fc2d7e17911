"""Where one search keeps its files, and the record (`run.json`) that lets `--resume` and `report` find them.

`--storage-path` is a folder (local, or an NFS mount shared by the cluster) or a URL (`s3://bucket/runs`).
Tune's trial results and checkpoints go there, under `<name>/<strategy>/`. The driver's own files (the
validated search space, `run.json`, the summary, the default SQLite Optuna study, offline W&B runs) need a
local disk: for a folder they sit in the same `<name>/` folder; for a URL in `./runs/<name>/` on the driver
machine, and the summary is copied next to the trial results as well.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError

RECORD = "run.json"
LOCAL_RUNS_FOR_URLS = Path("runs")


def is_url(path: str) -> bool:
    return "://" in path


def default_storage_url(local_dir: Path) -> str:
    """The Optuna study of a run without --optuna-storage: SQLite next to the run's other driver files."""
    return f"sqlite:///{local_dir / 'optuna.db'}"


@dataclass
class RunFolder:
    name: str
    local: str  # absolute local folder of the driver's files
    tune_storage: str  # Tune's storage_path: each strategy's experiment is <tune_storage>/<strategy>
    optuna_storage: str = ""  # --optuna-storage, masked (never holds a password); "": SQLite in the run folder
    wandb_mode: str = "offline"
    wandb_project: str = "tune-mtl"
    objective: dict[str, Any] = field(default_factory=dict)  # what the search optimises (report needs it)
    studies: dict[str, str] = field(default_factory=dict)  # experiment -> Optuna study name
    finished: list[str] = field(default_factory=list)  # experiments whose search completed

    @property
    def path(self) -> Path:
        return Path(self.local)

    def optuna_display_url(self) -> str:
        return self.optuna_storage or default_storage_url(self.path)

    def experiment(self, name: str) -> str:
        return f"{self.tune_storage.rstrip('/')}/{name}"

    def save(self) -> None:
        (self.path / RECORD).write_text(json.dumps(asdict(self), indent=2))

    def mark_finished(self, experiment: str) -> None:
        if experiment not in self.finished:
            self.finished.append(experiment)
        self.save()


def new_run(storage_path: str, name: str | None) -> RunFolder:
    name = name or datetime.now().strftime("search-%Y%m%d-%H%M%S")
    if is_url(storage_path):
        local = (LOCAL_RUNS_FOR_URLS / name).resolve()
        tune_storage = f"{storage_path.rstrip('/')}/{name}"
    else:
        local = Path(storage_path).expanduser().resolve() / name
        tune_storage = str(local)
    if (local / RECORD).exists():
        raise UserError(f"run folder '{local}' already holds a search; continue it with --resume {local}, "
                        f"or pick another --name")
    local.mkdir(parents=True, exist_ok=True)
    return RunFolder(name=name, local=str(local), tune_storage=tune_storage)


def open_run(run_dir: str | Path) -> RunFolder:
    path = Path(run_dir).expanduser().resolve()
    record = path / RECORD
    if not record.is_file():
        raise UserError(f"'{run_dir}' is not a run folder of launch.py search (no {RECORD} in it)")
    data: dict[str, Any] = json.loads(record.read_text())
    data["local"] = str(path)  # the folder may have been moved or mounted elsewhere since
    if not is_url(data["tune_storage"]):
        data["tune_storage"] = str(path)
    return RunFolder(**data)
