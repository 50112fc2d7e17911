"""Every bad input is exit 2 and one sentence that names the offending value, before Ray starts and before
anything is written.

The CLI runs in-process (`cli.main([...])`, stderr from capsys); `ray.init` is replaced by a tripwire, and the
working directory (where the default `--storage-path runs` would go) is checked to be unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.fixtures_classification import write_idx, write_mnist
from tests.tmpfs import mount_tmpfs, unmount
from tune_mtl.cli import main
from tune_mtl.storage.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
TOY = {"optimizer": {"lr": {"loguniform": [1.0e-4, 1.0e-1]}}}  # a valid space: cases below break one thing


class RayStarted(BaseException):
    """Not an Exception: nothing in the CLI may swallow it."""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd = tmp_path; Ray cannot start; yields a `run(argv)` that returns (exit code, stderr) and checks that
    nothing under tmp_path changed."""
    import ray

    def tripwire(*args, **kwargs):
        raise RayStarted("Ray started before the input was checked")

    monkeypatch.setattr(ray, "init", tripwire)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.chdir(tmp_path)

    def run(capsys, argv: list[str]) -> tuple[int, str]:
        before = snapshot(tmp_path)
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert snapshot(tmp_path) == before, "a rejected input wrote files"
        return rc, err

    return run


def assert_one_sentence(rc: int, err: str, needles: list[str]) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("launch.py: error: "), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def write_config(tmp_path: Path, content) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


# -- command-line values -------------------------------------------------------------------------------------
FLAG_CASES = {
    "cpus-nan": (["--cpus-per-trial", "nan"], ["--cpus-per-trial", "'nan'", "finite"]),
    "cpus-inf": (["--cpus-per-trial", "inf"], ["--cpus-per-trial", "'inf'"]),
    "cpus-negative": (["--cpus-per-trial", "-1"], ["--cpus-per-trial", "-1"]),
    "gpus-nan": (["--gpus-per-trial", "nan"], ["--gpus-per-trial", "'nan'"]),
    "gpus-minus-inf": (["--gpus-per-trial=-inf"], ["--gpus-per-trial", "'-inf'"]),
    "seed-2**32": (["--seed", "4294967296"], ["--seed", "4294967296", "4294967295"]),
    "seed-negative": (["--seed", "-1"], ["--seed", "-1"]),
    "seed-float": (["--seed", "1.5"], ["--seed", "'1.5'"]),
    "num-samples-nan": (["--num-samples", "nan"], ["--num-samples", "'nan'"]),
    "epochs-zero": (["--epochs", "0"], ["--epochs", "0"]),
    "epochs-inf": (["--epochs", "inf"], ["--epochs", "'inf'"]),
    "max-concurrent-negative": (["--max-concurrent-trials", "-2"], ["--max-concurrent-trials", "-2"]),
    "scheduler": (["--scheduler", "bohb"], ["--scheduler", "'bohb'"]),
    "strategy-mode": (["--strategy-mode", "joint"], ["--strategy-mode", "'joint'"]),
    "wandb-mode": (["--wandb-mode", "maybe"], ["--wandb-mode", "'maybe'"]),
    "strategies-empty": (["--strategies", ","], ["'strategies'", "non-empty"]),
    "strategies-typo": (["--strategies", "uniform,pcgard"], ["'pcgard'", "did you mean 'pcgrad'"]),
    "objectives-one": (["--objectives", "task0/mse"], ["search.objectives", "task0/mse"]),
    "objectives-no-slash": (["--objectives", "task0,task1"], ["search.objectives", "task0,task1"]),
    "unknown-flag": (["--bogus", "1"], ["--bogus"]),
    "storage-scheme": (["--storage-path", "foo://bucket/x"], ["foo://bucket/x", "'foo://'", "s3://"]),
    "storage-proc": (["--storage-path", "/proc/runs"], ["/proc/runs", "pseudo file system"]),
    "storage-sys": (["--storage-path", "/sys/kernel/runs"], ["/sys/kernel/runs"]),
    "resume-missing": (["--resume", "no/such/run"], ["no/such/run", "run.json"]),
    "resume-with-epochs": (["--resume", "x", "--epochs", "3"], ["--resume", "--epochs"]),
    "report-missing": (["report", "no/such/run"], ["no/such/run", "run.json"]),
    "prepare-unknown": (["prepare", "mnits", "--root", "."], ["'mnits'", "multi_mnist"]),
}


@pytest.mark.parametrize("argv,needles", FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_bad_flag(sandbox, capsys, argv, needles):
    assert_one_sentence(*sandbox(capsys, argv), needles)


# -- search-space YAML -----------------------------------------------------------------------------------------
def nested(depth: int) -> str:
    return "optimizer:\n  lr: " + "[" * depth + "1" + "]" * depth + "\n"


YAML_CASES = {
    # sections that are not mappings
    "objective-scalar": ("objective: delta_m\n", ["'objective'", "'delta_m'", "mapping"]),
    "search-list": ("search: [1]\n", ["'search'", "[1]", "mapping"]),
    "model-list": ("model: [mlp]\n", ["'model'", "['mlp']"]),
    "dataset-list": ("dataset: [toy_regression]\n", ["'dataset'", "['toy_regression']"]),
    "optimizer-number": ("optimizer: 0.1\n", ["'optimizer'", "0.1"]),
    "training-list": ("training: [1]\n", ["'training'", "[1]"]),
    "knobs-list": ({**TOY, "strategy_knobs": ["cagrad"]}, ["'strategy_knobs'", "['cagrad']"]),
    "knob-section-list": ({**TOY, "strategies": ["cagrad"], "strategy_knobs": {"cagrad": [1, 2]}},
                          ["'strategy_knobs.cagrad'", "[1, 2]", "alpha"]),
    "strategies-mapping": ({**TOY, "strategies": {"uniform": 1}}, ["'strategies'", "{'uniform': 1}"]),
    "top-level-list": ("- 1\n- 2\n", ["top level", "list"]),
    # knobs of strategies that are not searched are still checked
    "knob-typo-unsearched": ({**TOY, "strategies": ["uniform"], "strategy_knobs": {"cagrad": {"alpah": 0.5}}},
                             ["'strategy_knobs.cagrad.alpah'", "did you mean 'alpha'"]),
    "knob-range-unsearched": ({**TOY, "strategies": ["uniform"], "strategy_knobs": {"cagrad": {"alpha": 2.0}}},
                              ["'strategy_knobs.cagrad.alpha'", "2.0"]),
    "knob-unsearched-section": ({**TOY, "strategies": ["uniform"], "strategy_knobs": {"pcgrad": 3}},
                                ["'strategy_knobs.pcgrad'", "3"]),
    "knobs-unknown-strategy": ({**TOY, "strategy_knobs": {"cagard": {"alpha": 0.5}}},
                               ["'cagard'", "did you mean 'cagrad'"]),
    # NaN and infinity anywhere
    "lr-nan": ("optimizer:\n  lr: .nan\n", ["optimizer.lr", "nan", "finite"]),
    "lr-range-inf": ("optimizer:\n  lr: {loguniform: [1.0e-4, .inf]}\n", ["optimizer.lr", "inf", "finite"]),
    "cpus-yaml-nan": ("search:\n  cpus_per_trial: .nan\n", ["search.cpus_per_trial", "nan"]),
    "gpus-yaml-inf": ("search:\n  gpus_per_trial: .inf\n", ["search.gpus_per_trial", "inf"]),
    "noise-nan": ("dataset:\n  name: toy_regression\n  noise: .nan\n", ["dataset.noise", "nan"]),
    "baseline-nan": ("objective:\n  metric: delta_m\n  baselines: {task0/mse: .nan}\n",
                     ["objective.baselines.task0/mse", "nan"]),
    "knob-nan": ("strategies: [cagrad]\nstrategy_knobs:\n  cagrad: {alpha: .nan}\n",
                 ["strategy_knobs.cagrad.alpha", "nan"]),
    "choice-minus-inf": ("optimizer:\n  lr: {choice: [0.1, -.inf]}\n", ["optimizer.lr.choice[1]", "-inf"]),
    # numbers out of range
    "seed-yaml-2**32": ({**TOY, "search": {"seed": 2**32}}, ["'search.seed'", "4294967296"]),
    "seed-yaml-negative": ({**TOY, "search": {"seed": -1}}, ["'search.seed'", "-1"]),
    "num-samples-zero": ({**TOY, "search": {"num_samples": 0}}, ["'search.num_samples'", "0"]),
    "max-failures-negative": ({**TOY, "search": {"max_failures": -1}}, ["'search.max_failures'", "-1"]),
    "epochs-float": ({**TOY, "training": {"epochs": 1.5}}, ["'training.epochs'", "1.5"]),
    "batch-size-bool": ({**TOY, "training": {"batch_size": True}}, ["'training.batch_size'", "True"]),
    "lr-empty-choice": ({"optimizer": {"lr": {"choice": []}}}, ["'optimizer.lr.choice'", "[]"]),
    "lr-two-kinds": ({"optimizer": {"lr": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}}}, ["'optimizer.lr'"]),
    "objectives-yaml-duplicate": ({**TOY, "search": {"objectives": ["task0/mse", "task0/mse"]}},
                                  ["search.objectives", "task0/mse"]),
    # names the data set's tasks do not have
    "objective-task": ({**TOY, "objective": {"task": "task9"}}, ["'task9'", "task0"]),
    "objective-metric": ({**TOY, "objective": {"metric": "rmse"}}, ["'rmse'", "mse"]),
    "delta-m-no-baselines": ({**TOY, "objective": {"metric": "delta_m"}}, ["'delta_m'", "objective.baselines"]),
    "baseline-zero": ({**TOY, "objective": {"metric": "delta_m", "baselines": {"task0/mse": 0}}},
                      ["objective.baselines.task0/mse", "0"]),
    "objectives-unknown-metric": ({**TOY, "search": {"objectives": ["task0/mse", "task1/rmse"]}}, ["rmse"]),
    # strategy x model x data set misfits (strategies.check_compatibility), before Ray rather than in every trial
    "jacobian-no-shared-layers": ({**TOY, "model": {"name": "mlp", "shared_layers": 0}, "strategies": ["mgda"]},
                                  ["'model.shared_layers", "mgda"]),
    "jacobian-searched-zero-layers": ({**TOY, "model": {"name": "mlp", "shared_layers": {"int": [0, 2]}},
                                       "strategies": ["pcgrad"]}, ["'model.shared_layers", "pcgrad"]),
    "recon-unknown-base": ({**TOY, "strategies": ["recon"], "strategy_knobs": {"recon": {"base": "pcgard"}}},
                           ["'base'", "pcgard"]),
    "recon-not-sequential": ({**TOY, "model": "multilenet", "strategies": ["recon"]},
                             ["recon", "'model: multilenet'"]),
    "auxiliary-on-one-task": ({**TOY, "dataset": {"name": "toy_regression", "num_tasks": 1}, "strategies": ["slgrad"]},
                              ["slgrad", "at least 2 tasks"]),
    # files that are not a search space
    "nested-1000": (nested(1000), ["space.yaml", "nested"]),
    "nested-30": (nested(30), ["space.yaml", "nested deeper than"]),
    "not-utf8": ("optimizer:\n  lr: 0.1 # caf\xe9\n".encode("latin-1"), ["space.yaml", "UTF-8"]),
    "binary": (bytes(range(256)) * 4, ["space.yaml"]),
    "tab-indented": ("optimizer:\n\tlr: 0.1\n", ["space.yaml", "not valid YAML", "line 2"]),
}


@pytest.mark.parametrize("content,needles", YAML_CASES.values(), ids=YAML_CASES.keys())
def test_bad_search_space(sandbox, tmp_path, capsys, content, needles):
    path = tmp_path / "space.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_config(tmp_path, content)
    assert_one_sentence(*sandbox(capsys, ["search", "--config", str(path)]), needles)


def test_config_that_is_a_folder(sandbox, tmp_path, capsys):
    (tmp_path / "folder.yaml").mkdir()
    rc, err = sandbox(capsys, ["--config", str(tmp_path / "folder.yaml")])
    assert_one_sentence(rc, err, ["folder.yaml", "not a regular file"])


# -- --storage-path on the local disk ---------------------------------------------------------------------------
def test_storage_path_that_is_a_file(sandbox, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, err = sandbox(capsys, ["--config", write_config(tmp_path, TOY), "--storage-path", str(tmp_path / "afile")])
    assert_one_sentence(rc, err, ["afile", "is a file"])


def test_storage_path_under_a_file(sandbox, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "runs"
    rc, err = sandbox(capsys, ["--config", write_config(tmp_path, TOY), "--storage-path", str(target)])
    assert_one_sentence(rc, err, [str(target), "under the file", "afile"])


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only mount (root ignores permission bits, so chmod alone would not do)."""
    folder = tmp_path / "ro"
    if not mount_tmpfs(folder, "ro,size=1m"):
        if os.geteuid() == 0:
            pytest.skip("cannot mount a read-only tmpfs here (no CAP_SYS_ADMIN)")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    yield folder
    unmount(folder)


def test_storage_path_read_only(sandbox, tmp_path, capsys, read_only_folder):
    target = read_only_folder / "runs"
    rc, err = sandbox(capsys, ["--config", write_config(tmp_path, TOY), "--storage-path", str(target)])
    assert_one_sentence(rc, err, [str(target), "not writable"])


# -- damaged run folders -------------------------------------------------------------------------------------
def make_run(tmp_path: Path) -> Path:
    """A run folder as `launch.py search` leaves it before its first trial (no Ray needed)."""
    folder = tmp_path / "run"
    folder.mkdir()
    run = RunFolder(name="run", local=str(folder), tune_storage=str(folder), wandb_mode="disabled",
                    objective={"task": "task0", "metric": "mse", "mode": "min"}, studies={"uniform": "uniform"})
    run.save()
    (folder / "search_space.yaml").write_text(yaml.safe_dump(TOY))
    (folder / "optuna.db").write_bytes(b"")
    trial = folder / "uniform" / "train_trial_0"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text('{"epoch": 1}\n')
    return folder


DAMAGE = {
    "run-json-truncated": (lambda f: (f / "run.json").write_text((f / "run.json").read_text()[:40]),
                           ["run.json", "truncated", "line"]),
    "run-json-extra-key": (lambda f: (f / "run.json").write_text(json.dumps(
        {**json.loads((f / "run.json").read_text()), "colour": "blue"})), ["run.json", "colour"]),
    "run-json-lost-key": (lambda f: (f / "run.json").write_text(json.dumps(
        {k: v for k, v in json.loads((f / "run.json").read_text()).items() if k != "name"})), ["run.json", "name"]),
    "run-json-list": (lambda f: (f / "run.json").write_text("[]"), ["run.json", "lacks"]),
    "optuna-db-deleted": (lambda f: (f / "optuna.db").unlink(),
                          ["optuna.db", "cannot continue", "1 trial result", "report"]),
    "search-space-deleted": (lambda f: (f / "search_space.yaml").unlink(), ["search_space.yaml"]),
}


@pytest.mark.parametrize("damage,needles", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_run_cannot_resume(sandbox, tmp_path, capsys, damage, needles):
    folder = make_run(tmp_path)
    damage(folder)
    assert_one_sentence(*sandbox(capsys, ["search", "--resume", str(folder)]), needles)


def test_run_json_saves_no_absolute_path(tmp_path):
    folder = make_run(tmp_path)
    text = (folder / "run.json").read_text()
    assert str(tmp_path) not in text
    assert json.loads(text)["tune_storage"] == "."


# -- data files ------------------------------------------------------------------------------------------------
def test_mnist_with_fewer_labels_than_images(sandbox, tmp_path, capsys):
    write_mnist(tmp_path / "data")
    write_idx(tmp_path / "data/MNIST/raw/train-labels-idx1-ubyte", np.arange(40) % 10)  # 48 images
    rc, err = sandbox(capsys, ["prepare", "multi_mnist", "--root", str(tmp_path / "data")])
    assert_one_sentence(rc, err, ["48 images", "40 labels", "train-labels-idx1-ubyte"])


def test_mnist_label_outside_0_to_9(sandbox, tmp_path, capsys):
    write_mnist(tmp_path / "data")
    labels = np.arange(24) % 10
    labels[7] = 12
    write_idx(tmp_path / "data/MNIST/raw/t10k-labels-idx1-ubyte", labels)
    rc, err = sandbox(capsys, ["prepare", "multi_mnist", "--root", str(tmp_path / "data")])
    assert_one_sentence(rc, err, ["label 12", "index 7", "t10k-labels-idx1-ubyte", "0-9"])


# -- the metric a search optimises must declare its direction --------------------------------------------------
def test_metric_without_a_declared_direction_is_an_error():
    from tune_mtl.core.errors import UserError
    from tune_mtl.core.metrics import MetricDirection, RegressionMetric, per_sample_mse
    from tune_mtl.data.base import Task
    from tune_mtl.training.objective import resolve_objective

    class WithR2(RegressionMetric):
        names = ("mse", "r2")  # r2 declares no direction

    task = Task("t", "regression", 1, per_sample_mse, WithR2, MetricDirection("mse", False))
    assert resolve_objective([task], {"metric": "mse"}).mode == "min"
    with pytest.raises(UserError, match="declares no direction.*'r2'"):
        resolve_objective([task], {"metric": "r2"})
    with pytest.raises(UserError, match="declares no direction.*'r2'"):
        resolve_objective([task], {"metric": "delta_m", "baselines": {"t/r2": 1.0}})


# -- the output pipe closes early ------------------------------------------------------------------------------
def test_listing_into_a_closed_pipe_is_quiet():
    """`launch.py datasets | head -1`: no BrokenPipeError traceback."""
    proc = subprocess.run(f"{sys.executable} launch.py datasets | head -1", shell=True, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
