"""The search driver (a cluster's head node) never imports torch (issue 9: ~0.5 GB and 1-3 s of start-up).

Each test runs a fresh interpreter whose import system refuses torch and torchvision (a `sys.meta_path` finder
that raises ImportError), so a driver-side module that regains a top-level torch import fails here with the
import chain in its traceback, instead of quietly costing every driver half a gigabyte.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.launch_env import launch_env

ROOT = Path(__file__).resolve().parent.parent

REFUSE_TORCH = textwrap.dedent("""
    import sys

    class RefuseTorch:
        refused = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                RefuseTorch.refused.append(name)
                raise ImportError(f"the driver must not import {name}")
            return None

    sys.meta_path.insert(0, RefuseTorch())
""")

# The driver's whole validation path: every module a `search`, `report`, `dashboard`, `strategies` or `datasets`
# run imports, every shipped search space loaded and planned, the final stage's task declarations, and the
# strategy/data-set/model catalogues.
DRIVER_PATH = textwrap.dedent("""
    import importlib, json, pkgutil
    from pathlib import Path

    import tune_mtl.cli as cli
    for package in ("search", "reporting", "storage"):
        root = importlib.import_module(f"tune_mtl.{package}")
        for module in pkgutil.iter_modules(root.__path__):
            importlib.import_module(f"tune_mtl.{package}.{module.name}")
    importlib.import_module("tune_mtl.training.objective")
    importlib.import_module("tune_mtl.training.trial_config")
    from tune_mtl import data, models, strategies
    from tune_mtl.search import final_stage, plan, spec

    checked = []
    for path in sorted(Path("search_spaces").glob("*.yaml")):
        loaded = spec.load_spec(path)
        plan.resolve_search_objective(loaded)
        plan.plan_notes(loaded)
        plan.budgets(loaded)
        final_stage.primary_metrics(loaded)
        checked.append(path.name)
    for name in strategies.names():
        strategies.check_compatibility(name, {}, 3, "mlp", {})
    for name in data.names():
        data.declared_tasks(name, {})
    for name in models.names():
        models.shares_parameters(name, {})
    for command in (["strategies", "--json"], ["datasets", "--json"], ["strategies"]):
        assert cli.main(command) == 0
    print(json.dumps({"torch": "torch" in sys.modules, "torchvision": "torchvision" in sys.modules,
                      "refused": RefuseTorch.refused, "search_spaces": checked}))
""")


def run_refusing_torch(code: str, tmp_path: Path, timeout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", REFUSE_TORCH + code], cwd=ROOT, env=launch_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def test_the_driver_validation_path_never_imports_torch(tmp_path):
    proc = run_refusing_torch(DRIVER_PATH, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["torch"] and not result["torchvision"]
    # Nothing even tried (a library that tries and falls back on ImportError would be fine, but ours must not).
    assert result["refused"] == [], result["refused"]
    assert len(result["search_spaces"]) == len(list((ROOT / "search_spaces").glob("*.yaml"))) >= 7


def test_the_finder_refuses_torch(tmp_path):
    """The guard itself: a module that imports torch fails under it (so the tests above can fail)."""
    proc = run_refusing_torch("import tune_mtl.data.base\n", tmp_path, timeout=120)
    assert proc.returncode != 0 and "the driver must not import torch" in proc.stderr


@pytest.mark.ray
def test_a_search_and_its_report_run_with_a_driver_that_cannot_import_torch(tmp_path):
    """A real `launch.py search` (local Ray, one trial, the final stage skipped), then `launch.py report` on it: the
    trials import torch in their own worker processes; the driver, which Tune hands the trainable by reference,
    never imports it, nor even tries to."""
    code = textwrap.dedent(f"""
        from tune_mtl import cli
        code = cli.main(["search", "--epochs", "1", "--num-samples", "1", "--final-seeds", "0", "--strategies",
                         "uniform", "--wandb-mode", "disabled", "--storage-path", {str(tmp_path / 'runs')!r},
                         "--name", "no-torch"])
        print("exit", code, "torch" in sys.modules, "wandb" in sys.modules, RefuseTorch.refused, flush=True)
        cli.exit_promptly(code)
    """)
    proc = run_refusing_torch(code, tmp_path, timeout=500)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert last == "exit 0 False False []", last  # nor wandb: the trials log to W&B themselves
    trials = list((tmp_path / "runs" / "no-torch").rglob("result.json"))
    assert trials and all(path.read_text().strip() for path in trials), "the trial ran and reported"
    # `launch.py report` on that run (summary, plots) is driver-side too.
    report = run_refusing_torch(textwrap.dedent(f"""
        from tune_mtl import cli
        code = cli.main(["report", {str(tmp_path / 'runs' / 'no-torch')!r}])
        print("exit", code, "torch" in sys.modules, RefuseTorch.refused, flush=True)
    """), tmp_path, timeout=300)
    assert report.stdout.strip().splitlines()[-1] == "exit 0 False []", report.stdout[-2000:] + report.stderr[-2000:]
