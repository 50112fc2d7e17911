"""What the service costs over plain Optuna for the same trials (issue 9).

The same search (search_spaces/toy.yaml, one strategy, 12 trials x 8 epochs, FIFO, seed 0) two ways, in one run:
- service: `launch.py search ... --max-concurrent-trials 1` in a subprocess, exactly as a user runs it (local Ray,
  Tune, the Optuna searcher, W&B offline by default);
- plain: a subprocess that drives the same searcher (same TPE sampler, same seeds, same SQLite storage) in-process
  with a plain loop: ask -> Trainer -> tell. No Ray, no Tune, no W&B.

Per run: wall time (spawn to exit), time to first trial (spawn to the first trial's start by its own clock,
`started_at` in its results, taken before its Trainer is built; a version without it: Tune's whole-second
timestamp of epoch 1 less the epoch's time, +-1 s), peak RSS of the whole process tree (driver, Ray's daemons and
workers, wandb-core; RSS counts shared library pages once per process), and lines printed. Both runs' Optuna
values are compared: the same configurations must give the same results, or the comparison means nothing.

    .venv/bin/python bench/overhead.py --json                 # 3 repeats each, interleaved
    .venv/bin/python bench/overhead.py --repeats 1 --wandb disabled
    .venv/bin/python bench/overhead.py --service-root /tmp/old  # the service of another checkout ("before")
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
from timing import environment, fmt, save, summary  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "search_spaces" / "toy.yaml"
TRIALS, EPOCHS, STRATEGY, SEED = 12, 8, "uniform", 0
SAMPLE_S = 0.2  # how often the process tree's memory is sampled


# -- running one measured process ------------------------------------------------------------------------------
def tree_rss(root: psutil.Process) -> int:
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in processes:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Wall time, peak process-tree RSS and printed lines of one command."""
    start = time.time()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []  # (seconds after spawn, line)
    reader = threading.Thread(target=lambda: lines.extend((time.time() - start, line) for line in proc.stdout),
                              daemon=True)
    reader.start()
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(root))
        time.sleep(SAMPLE_S)
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}):\n{''.join(t for _, t in lines[-40:])}")
    # When the last line was printed: for the service, the summary (then Ray's local shutdown takes its time).
    return {"start": start, "wall_s": time.time() - start, "peak_rss_mb": peak / 2**20, "lines": len(lines),
            "last_output_s": lines[-1][0] if lines else 0.0, "output": lines}


def bench_env() -> dict[str, str]:
    """No W&B key (so the service's default is offline) and no RAY_ADDRESS (so it starts its own local Ray)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_ADDRESS"))}


# -- the service -------------------------------------------------------------------------------------------
def service_run(storage: Path, wandb: str, root: Path) -> dict[str, Any]:
    command = [sys.executable, str(root / "launch.py"), "search", "--config", str(CONFIG), "--strategies", STRATEGY,
               "--num-samples", str(TRIALS), "--epochs", str(EPOCHS), "--scheduler", "fifo", "--seed", str(SEED),
               "--max-concurrent-trials", "1", "--storage-path", str(storage), "--name", "service"]
    if wandb != "offline":  # offline is the default without a W&B key: pass nothing, as a user would
        command += ["--wandb-mode", wandb]
    if "--final-seeds" in (root / "tune_mtl" / "cli.py").read_text():
        command += ["--final-seeds", "0"]  # the verdict's re-training after the search is more work, not overhead
    # The checkout's own package, in the driver and in Ray's workers (they inherit the driver's environment).
    result = measure(command, root, {**bench_env(), "PYTHONPATH": str(root)})
    run = storage / "service"
    firsts = []
    for path in run.rglob("result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:  # the trial's own start clock; older versions: Tune's whole-second timestamp of epoch 1
            first = rows[0]
            firsts.append(first.get("started_at", first["timestamp"] - first["time_this_iter_s"]))
    result["first_trial_s"] = min(firsts) - result["start"]
    # The plan line comes right after Ray is up (cluster.connect): what start-up costs before Tune starts.
    result["ray_ready_s"] = next((t for t, line in result["output"] if line.startswith("search:")), None)
    result["trials"] = len(firsts)
    result["values"] = study_values(run)
    result["wandb_runs"] = len(list(run.glob("wandb/*run-*")))
    return result


def study_values(run: Path) -> list[float]:
    import optuna

    studies = json.loads((run / "run.json").read_text()).get("studies") or {STRATEGY: STRATEGY}
    url = f"sqlite:///{run / 'optuna.db'}"
    trials = [t for name in studies.values() for t in optuna.load_study(study_name=name, storage=url).trials]
    return [t.value for t in sorted(trials, key=lambda t: t.number)]


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` merged into `base` key by key, nested dicts too (as Tune merges a searcher's suggestion)."""
    out = dict(base)
    for key, value in update.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# -- plain Optuna (runs in its own process: `overhead.py --plain-worker FOLDER`) -------------------------------
def plain_worker(folder: Path) -> None:
    """Ask the search's own searcher for each configuration, train it in-process, tell it the score."""
    import torch

    from tune_mtl.core.keys import OBJECTIVE, SCORE, SCORE_EPOCH
    from tune_mtl.search.categorical_space import fixed_space
    from tune_mtl.search.engine import make_searcher, study_name
    from tune_mtl.search.plan import resolve_search_objective, study_keys
    from tune_mtl.search.spec import load_spec
    from tune_mtl.search.studies import open_storage
    from tune_mtl.search.trainable import split_config
    from tune_mtl.storage.run_folder import default_storage_url, new_run
    from tune_mtl.training.trainer import Trainer

    torch.set_num_threads(1)  # what the service gives a 1-CPU trial (trainable.assigned_cpus)
    spec = load_spec(str(CONFIG), {"strategies": STRATEGY, "num_samples": TRIALS, "epochs": EPOCHS,
                                   "scheduler": "fifo", "seed": SEED, "max_concurrent_trials": 1})
    run = new_run(str(folder), "plain")
    run.objective = resolve_search_objective(spec)
    run.studies = {k: study_name(run, k, True) for k in study_keys(spec)}
    run.save()
    searcher = make_searcher(spec, run, open_storage(default_storage_url(run.path)), concurrency=1)
    sign = 1 if run.objective["mode"] == "min" else -1
    for n in range(TRIALS):
        # What Tune hands the trial: the param space's fixed values with the searcher's suggestion merged in.
        config, _, _ = split_config(merged(fixed_space(spec), searcher.suggest(f"plain_{n}")))
        started, best = time.time(), None  # as the trainable's started_at: before the Trainer is built
        trainer = Trainer(config, device=torch.device("cpu"))
        while trainer.epoch < EPOCHS:
            value = trainer.run_epoch()[OBJECTIVE]
            if best is None or sign * value < sign * best[0]:
                best = (value, trainer.epoch)
        searcher.on_trial_complete(f"plain_{n}", {SCORE: best[0], SCORE_EPOCH: best[1]})
        print(json.dumps({"trial": n, "started": started, "score": best[0]}), flush=True)


def plain_run(storage: Path) -> dict[str, Any]:
    result = measure([sys.executable, __file__, "--plain-worker", str(storage)], ROOT, bench_env())
    rows = [json.loads(line) for _, line in result["output"] if line.startswith("{")]
    result["first_trial_s"] = rows[0]["started"] - result["start"]
    result["trials"] = len(rows)
    result["values"] = study_values(storage / "plain")
    return result


# -- the report -----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wandb", choices=("offline", "disabled"), default="offline",
                        help="W&B mode of the service (default offline, the default without a key)")
    parser.add_argument("--service-root", type=Path, default=ROOT, help="checkout whose launch.py is measured")
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    parser.add_argument("--plain-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        plain_worker(args.plain_worker)
        return

    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "service": []}
    for _ in range(args.repeats):  # interleaved, so that a change in machine load hits both alike
        with tempfile.TemporaryDirectory(prefix="overhead-") as folder:
            runs["plain"].append(plain_run(Path(folder) / "plain"))
            runs["service"].append(service_run(Path(folder) / "service", args.wandb, args.service_root))
    for kind in runs.values():
        for run in kind:
            run.pop("output"), run.pop("start")

    def stats(kind: str, key: str) -> dict[str, float]:
        return summary([r[key] for r in runs[kind]])

    keys = ("wall_s", "last_output_s", "first_trial_s", "peak_rss_mb", "lines")
    report = {
        "environment": environment(),
        "setup": {"config": str(CONFIG.relative_to(ROOT)), "strategy": STRATEGY, "trials": TRIALS, "epochs": EPOCHS,
                  "wandb": args.wandb, "service_root": str(args.service_root)},
        "plain": {k: stats("plain", k) for k in keys},
        "service": {k: stats("service", k) for k in keys},
        "ratios": {k: summary([s[k] / p[k] for s, p in zip(runs["service"], runs["plain"], strict=True)])
                   for k in ("wall_s", "peak_rss_mb")},
        "same_results": all(s["values"] == p["values"] for s, p in zip(runs["service"], runs["plain"], strict=True)),
        "runs": runs,
    }
    path = save(report, "overhead")
    if args.json:
        print(json.dumps(report, indent=1))
    print(f"{TRIALS} trials x {EPOCHS} epochs, one at a time; service W&B {args.wandb}; {args.repeats} repeat(s)")
    print(f"{'':14}{'plain':>24}{'service':>24}")
    for key in keys:
        print(f"{key:14}{fmt(report['plain'][key]):>24}{fmt(report['service'][key]):>24}")
    ready = [r["ray_ready_s"] for r in runs["service"] if r["ray_ready_s"] is not None]
    if ready:
        print(f"service: Ray connected (plan printed) after {fmt(summary(ready))} s")
    print(f"wall ratio {fmt(report['ratios']['wall_s'])}, memory ratio {fmt(report['ratios']['peak_rss_mb'])}, "
          f"same Optuna values: {report['same_results']}")
    print(f"raw: {path}")


if __name__ == "__main__":
    main()
