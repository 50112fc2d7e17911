"""Where one search keeps its files, and the record (`run.json`) that lets `--resume` and `report` find them.

`--storage-path` is a folder (local, or an NFS mount shared by the cluster) or a URL (`s3://bucket/runs`).
Tune's trial results and checkpoints go there, under `<name>/<strategy>/`. The driver's own files (the
validated search space, `run.json`, the summary, the default SQLite Optuna study, offline W&B runs) need a
local disk: for a folder they sit in the same `<name>/` folder; for a URL in `./runs/<name>/` on the driver
machine, and the summary is copied next to the trial results as well.

A run folder is self-contained: `run.json` holds no absolute path (the folder is wherever `run.json` is
found, and the default SQLite study is always `<folder>/optuna.db`), so a moved or copied folder resumes
in place and never writes to the original.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from tune_mtl.core.errors import UserError

RECORD = "run.json"
LOCAL_RUNS_FOR_URLS = Path("runs")
OPTUNA_DB = "optuna.db"
SPEC_FILE = "search_space.yaml"
HERE = "."  # run.json's tune_storage for a local run: the folder run.json is in
# URL schemes pyarrow (Ray Tune's storage layer) can write to.
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
# Pseudo file systems: writable-looking paths that do not keep files.
PSEUDO_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def is_url(path: str) -> bool:
    return "://" in path


def default_storage_url(local_dir: Path) -> str:
    """The Optuna study of a run without --optuna-storage: SQLite next to the run's other driver files."""
    return f"sqlite:///{local_dir / OPTUNA_DB}"


def check_storage_path(storage_path: str) -> None:
    """`--storage-path` can hold run folders: a URL of a scheme Tune writes to, or a local folder that is (or
    can be created as) a writable directory. Checked before Ray starts and before anything is written."""
    if is_url(storage_path):
        scheme = storage_path.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            accepted = ", ".join(s + "://" for s in STORAGE_SCHEMES)
            raise UserError(f"--storage-path '{storage_path}' has the scheme '{scheme}://', which Ray Tune cannot "
                            f"write to; give a local folder or a URL of {accepted}")
        return
    path = Path(storage_path).expanduser().absolute()
    pseudo = [fs for fs in PSEUDO_FS if fs == path or fs in path.parents]
    if pseudo:
        raise UserError(f"--storage-path '{storage_path}' lies under {pseudo[0]}, a pseudo file system that cannot "
                        "hold files; give a folder on a disk")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under the file '{existing}'"
        raise UserError(f"--storage-path '{storage_path}' {where}; give a folder")
    try:  # os.access says yes to root on a read-only mount: try the real thing, and leave nothing behind
        probe, name = tempfile.mkstemp(prefix=".tune-mtl-probe-", dir=existing)
        os.close(probe)
        os.unlink(name)
    except OSError as err:
        raise UserError(f"--storage-path '{storage_path}' is not writable ('{existing}': "
                        f"{err.strerror or type(err).__name__}); give a folder you can write to") from None


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

    def record(self) -> dict[str, Any]:
        """What run.json holds: no absolute path (the folder and its SQLite study follow the folder)."""
        saved = asdict(self)
        del saved["local"]
        if not is_url(self.tune_storage):
            saved["tune_storage"] = HERE
        return saved

    def save(self) -> None:
        """Write run.json whole or not at all: a full disk or a kill mid-write leaves the previous record."""
        text = json.dumps(self.record(), indent=2)
        fd, partial = tempfile.mkstemp(prefix=f".{RECORD}.", dir=self.path)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, self.path / RECORD)
        except OSError as err:
            Path(partial).unlink(missing_ok=True)
            raise UserError(f"cannot write '{self.path / RECORD}' ({err.strerror or type(err).__name__}); the "
                            f"previous record is kept: free space, then continue with --resume {self.path}") from None

    def check_resumable(self) -> None:
        """Everything `--resume` needs is there; else one sentence naming what is missing and what is left."""
        missing = [name for name in (SPEC_FILE,) if not (self.path / name).is_file()]
        if not self.optuna_storage and self.studies and not (self.path / OPTUNA_DB).is_file():
            missing.append(OPTUNA_DB)
        if missing:
            raise UserError(f"run folder '{self.path}' has lost {' and '.join(missing)}, so its search cannot "
                            f"continue; {self.recoverable()}")

    def recoverable(self) -> str:
        """What of this run can still be read (for error messages)."""
        if is_url(self.tune_storage):
            return f"its trial results under {self.tune_storage} are still readable with `launch.py report`"
        trials = sorted(self.path.glob("*/*/result.json"))
        if not trials:
            return "no trial results are left in it"
        return (f"{len(trials)} trial result file(s) under it are still readable with "
                f"`launch.py report {self.path}`")

    def mark_finished(self, experiment: str) -> None:
        if experiment not in self.finished:
            self.finished.append(experiment)
        self.save()


def default_run_name() -> str:
    return datetime.now().strftime("search-%Y%m%d-%H%M%S")


def local_folder(storage_path: str, name: str) -> Path:
    """Where the driver's files of run `name` go (see the module docstring)."""
    if is_url(storage_path):
        return (LOCAL_RUNS_FOR_URLS / name).resolve()
    return Path(storage_path).expanduser().resolve() / name


def new_run(storage_path: str, name: str | None) -> RunFolder:
    name = name or default_run_name()
    local = local_folder(storage_path, name)
    tune_storage = f"{storage_path.rstrip('/')}/{name}" if is_url(storage_path) else str(local)
    if (local / RECORD).exists():
        raise UserError(f"run folder '{local}' already holds a search; continue it with --resume {local}, "
                        f"or pick another --name")
    local.mkdir(parents=True, exist_ok=True)
    return RunFolder(name=name, local=str(local), tune_storage=tune_storage)


def open_run(run_dir: str | Path) -> RunFolder:
    """The run folder at `run_dir`, wherever it has been moved or copied to."""
    path = Path(run_dir).expanduser().resolve()
    record = path / RECORD
    if not record.is_file():
        raise UserError(f"'{run_dir}' is not a run folder of launch.py search (no {RECORD} in it)")
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        where = f" at line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise UserError(f"'{record}' is damaged (truncated or not JSON{where}); without it the search cannot "
                        f"continue; {partial_run(path).recoverable()}") from None
    known = {f.name for f in fields(RunFolder)} - {"local"}
    required = {f.name for f in fields(RunFolder) if f.default is MISSING and f.default_factory is MISSING}
    if not isinstance(data, dict):
        data = {}
    lost = sorted(required - {"local"} - set(data))
    unknown = sorted(set(data) - known)
    if lost or unknown:
        problem = f"lacks {', '.join(lost)}" if lost else f"has unknown key(s) {', '.join(unknown)}"
        raise UserError(f"'{record}' {problem} (edited, or written by another version); accepted keys: "
                        f"{', '.join(sorted(known))}; {partial_run(path).recoverable()}")
    data["local"] = str(path)  # the folder may have been moved or mounted elsewhere since
    if not is_url(str(data["tune_storage"])):
        data["tune_storage"] = str(path)
    return RunFolder(**data)


def partial_run(path: Path) -> RunFolder:
    """A stand-in for a run whose record is unreadable, to say what is left of it."""
    return RunFolder(name=path.name, local=str(path), tune_storage=str(path))
