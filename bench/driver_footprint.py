"""What the search driver (a cluster's head node) costs before its first trial: memory, start-up, torch or not.

Two measurements, each in a fresh subprocess of a given checkout (`--root`, default this one), repeated and
interleaved with the baseline checkout when `--baseline-root` is given (e.g. `git archive` of an older commit):

- imports: import the CLI and every module of `tune_mtl.search`, load every shipped search space
  (`search_spaces/*.yaml`), build each one's plan and final-stage task declarations, and list the strategies and
  data sets, the driver's whole validation path. Reports the wall time of that, the process's peak RSS
  (VmHWM) and whether torch got imported.
- search: `launch.py search --epochs 1 --num-samples 1 --final-seeds 0 --strategies uniform --wandb-mode disabled`
  on the toy data set: the peak RSS of the *driver process alone* (psutil on its pid, sampled every 0.1 s; Ray's
  daemons and the trial workers are its children and are not counted here: bench/overhead.py counts the tree).

    .venv/bin/python bench/driver_footprint.py --json
    .venv/bin/python bench/driver_footprint.py --baseline-root /tmp/before --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import environment, save, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.1

# Run inside the measured checkout: the driver's whole validation path, then one JSON line.
IMPORTS_SCRIPT = r"""
import importlib, json, pkgutil, sys, time
from pathlib import Path
start = time.perf_counter()
import tune_mtl.cli
import tune_mtl.search
for module in pkgutil.iter_modules(tune_mtl.search.__path__):
    importlib.import_module(f"tune_mtl.search.{module.name}")
from tune_mtl import data, strategies
from tune_mtl.search import final_stage, plan, spec
for path in sorted(Path("search_spaces").glob("*.yaml")):
    loaded = spec.load_spec(path)
    plan.resolve_search_objective(loaded)
    plan.plan_notes(loaded)
    final_stage.primary_metrics(loaded)
strategies.catalogue()
data.catalogue()
wall = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would report this bench's own (torch) RSS.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"wall_s": wall, "peak_rss_mb": hwm_kb / 1024,
                  "torch_loaded": "torch" in sys.modules, "numpy_loaded": "numpy" in sys.modules}))
"""

SEARCH_ARGS = ["search", "--epochs", "1", "--num-samples", "1", "--final-seeds", "0", "--strategies", "uniform",
               "--wandb-mode", "disabled"]


def python_of(root: Path) -> str:
    venv = root / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def measure_imports(root: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([python_of(ROOT), "-c", IMPORTS_SCRIPT], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"imports in {root} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_search(root: Path) -> dict[str, Any]:
    """Peak RSS of the driver process alone, and its wall time, for one tiny search."""
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "PYTHONPATH": str(root), "RAY_AUTH_MODE": "disabled"}
        command = [python_of(ROOT), "launch.py", *SEARCH_ARGS, "--storage-path", runs]
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        driver = psutil.Process(proc.pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                try:
                    peak = max(peak, driver.memory_info().rss)
                except psutil.Error:
                    return
                stop.wait(SAMPLE_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate(timeout=600)
        stop.set()
        sampler.join()
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"search in {root} failed (exit {proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": wall, "driver_peak_rss_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    parser.add_argument("--baseline-root", type=Path, default=None, help="a checkout to compare with, interleaved")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true", help="only the import path (no Ray)")
    parser.add_argument("--json", action="store_true", help="save the raw results under bench/results/")
    args = parser.parse_args()
    roots = {"measured": args.root.resolve()}
    if args.baseline_root is not None:
        roots["baseline"] = args.baseline_root.resolve()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {arm: {"imports": [], "search": []} for arm in roots}
    for _ in range(args.repeats):
        for arm, root in roots.items():  # interleaved: machine load drifts over both arms alike
            raw[arm]["imports"].append(measure_imports(root))
            if not args.skip_search:
                raw[arm]["search"].append(measure_search(root))
    report: dict[str, Any] = {"environment": environment(), "roots": {k: str(v) for k, v in roots.items()},
                              "raw": raw, "summary": {}}
    for arm, runs in raw.items():
        arm_summary: dict[str, Any] = {
            "imports_wall_s": summary([r["wall_s"] for r in runs["imports"]]),
            "imports_peak_rss_mb": summary([r["peak_rss_mb"] for r in runs["imports"]]),
            "torch_loaded": [r["torch_loaded"] for r in runs["imports"]],
        }
        if runs["search"]:
            arm_summary["search_wall_s"] = summary([r["wall_s"] for r in runs["search"]])
            arm_summary["search_driver_peak_rss_mb"] = summary([r["driver_peak_rss_mb"] for r in runs["search"]])
        report["summary"][arm] = arm_summary
    if "baseline" in raw:
        measured, baseline = report["summary"]["measured"], report["summary"]["baseline"]
        report["ratios_measured_over_baseline"] = {
            key: measured[key]["median"] / baseline[key]["median"]
            for key in measured if isinstance(measured[key], dict) and key in baseline
        }
    print(json.dumps({k: v for k, v in report.items() if k != "raw"}, indent=1))
    if args.json:
        print(f"saved {save(report, 'driver_footprint')}")


if __name__ == "__main__":
    main()
