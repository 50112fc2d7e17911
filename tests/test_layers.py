"""The package's layers import only downwards (docs/architecture.md): read from the source, not by convention.

cli -> search -> reporting -> storage -> training -> strategies / data / models -> core
(the Ray trainable is search/trainable.py: the training layer itself never imports Ray)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tune_mtl"
# Each layer and the tune_mtl layers it must never import (directly or by a lazy import in a function).
FORBIDDEN = {
    "core": ("cli", "search", "reporting", "storage", "training", "strategies", "data", "models"),
    "strategies": ("cli", "search", "reporting", "storage", "training"),
    "data": ("cli", "search", "reporting", "storage", "training", "strategies"),
    "models": ("cli", "search", "reporting", "storage", "training", "strategies"),
    "training": ("cli", "search", "reporting", "storage"),
    "storage": ("cli", "search", "reporting", "training"),
    "reporting": ("cli", "search", "training.trainer"),
    "search": ("cli",),
}
# The trainer knows nothing of Ray, Optuna or W&B (tests and benchmarks drive it directly).
THIRD_PARTY_FORBIDDEN = {"core": ("ray", "optuna", "wandb"), "training": ("ray", "optuna", "wandb")}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_files(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_imports_only_go_down(layer):
    bad = []
    for path in layer_files(layer):
        for name in imported_modules(path):
            for upper in FORBIDDEN[layer]:
                if name == f"tune_mtl.{upper}" or name.startswith(f"tune_mtl.{upper}."):
                    bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
            for package in THIRD_PARTY_FORBIDDEN.get(layer, ()):
                if name == package or name.startswith(f"{package}."):
                    bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def test_every_module_belongs_to_a_layer():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= {"__init__.py", "__main__.py", "cli.py"}, f"loose modules at the top of tune_mtl/: {top}"


def test_layer_check_catches_an_upward_import(tmp_path, monkeypatch):
    # The checker itself must see a lazy import inside a function (the kind that slips through review).
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from tune_mtl.search.engine import run_search\n")
    assert "tune_mtl.search.engine" in imported_modules(source)
