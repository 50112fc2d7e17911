"""How full one search keeps the cluster: trials running at once and slot utilisation, from the trials' own
clocks (sub-second `started_at` / `wall_clock` in each result), on a local Ray head with N logical CPUs.

Default (issue 9): 16 slots, 4 strategies x 4 trials x 3 epochs, 1 CPU per trial, FIFO, default settings (no
--max-concurrent-trials). It runs, in one process and one Ray instance:
- the search with the engine's defaults, and the same with 1 strategy (fixed cost per extra strategy =
  (wall_S - wall_1) / (S - 1)); with --equal-total the 1-strategy search gets all S x T trials, so that the
  difference is what a strategy costs beyond its trials' training, not S - 1 strategies' worth of training (the
  figure a 2-core machine can show: `--cpus 1 --equal-total` runs every trial one after another);
- first, one discarded search (it starts Ray's worker pool, which the measured searches then share);
- with --baseline, the S-strategy search again with Tune's own pending-trial limit for a searcher (one
  pending trial, `TUNE_MAX_PENDING_TRIALS_PG=1`), what the engine overrides.

Figures: max and mean trials running at once (mean over the trials' span), utilisation = busy trial-seconds /
(slots x wall) over the whole search and over the trials' span, time to the first trial, wall. The raw JSON
goes to bench/results/cluster_width-<UTC time>.json; --json prints it.

    .venv/bin/python bench/cluster_width.py [--cpus 16] [--strategies 4] [--trials 4] [--epochs 3] [--baseline]
                                            [--equal-total]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timing  # noqa: E402

STRATEGIES = ["uniform", "random", "dwa", "gls", "uw", "pcgrad", "cagrad", "imtl"]


def space(strategies: list[str], trials: int, epochs: int) -> dict[str, Any]:
    return {
        "dataset": {"name": "toy_regression", "input_dim": 50, "num_samples": 2000},
        "model": {"name": "mlp", "shared_layers": 2, "shared_width": {"choice": [32, 64]}},
        "optimizer": {"name": "adam", "lr": {"loguniform": [1.0e-3, 1.0e-1]}},
        "training": {"batch_size": 32, "epochs": epochs},
        "strategies": strategies,
        # No final stage: its re-training of each strategy's best is more work, not the search's width or cost.
        "search": {"num_samples": trials, "scheduler": "fifo", "seed": 0, "final": {"seeds": 0}},
    }


def occupancy(intervals: list[tuple[float, float]], slots: int, wall: float, t0: float) -> dict[str, float]:
    """Max/mean trials at once and utilisation, from each trial's (start, end) on its own clock."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    busy = sum(e - s for s, e in intervals)
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    return {"max_running": peak, "mean_running_over_span": busy / span, "busy_trial_s": busy, "span_s": span,
            "utilisation_wall": busy / (slots * wall), "utilisation_span": busy / (slots * span),
            "first_trial_after_s": min(s for s, _ in intervals) - t0}


def one_search(root: Path, name: str, strategies: list[str], args, pending_one: bool,
               trials: int | None = None) -> dict[str, Any]:
    from tune_mtl.cli import main
    from tune_mtl.search import experiment

    config = root / f"{name}.yaml"
    trials = trials or args.trials
    config.write_text(yaml.safe_dump(space(strategies, trials, args.epochs)))
    original = experiment.tune_env
    if pending_one:  # Tune's own limit for a search algorithm: one pending trial at a time
        experiment.tune_env = lambda pending: original(1)
    out = io.StringIO()
    t0 = time.time()
    try:
        with contextlib.redirect_stdout(out):
            rc = main(["search", "--config", str(config), "--storage-path", str(root), "--name", name, "--quiet",
                       "--wandb-mode", "disabled"])
    finally:
        experiment.tune_env = original
    wall = time.time() - t0
    if rc != 0:
        raise SystemExit(f"search {name} failed ({rc}):\n{out.getvalue()[-3000:]}")
    intervals = []
    for result in (root / name / "trials").glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        intervals.append((rows[0]["started_at"], rows[-1]["wall_clock"]))
    assert len(intervals) == len(strategies) * trials, "every trial ran"
    return {"strategies": len(strategies), "trials": len(intervals), "wall_s": wall,
            **occupancy(intervals, args.cpus, wall, t0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=16, help="logical CPUs (slots) of the local Ray head")
    parser.add_argument("--strategies", type=int, default=4)
    parser.add_argument("--trials", type=int, default=4, help="per strategy")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every search (median reported)")
    parser.add_argument("--baseline", action="store_true", help="also run with Tune's one pending trial")
    parser.add_argument("--equal-total", action="store_true",
                        help="the 1-strategy search runs all strategies x trials trials (same training in both)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import os

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    names = STRATEGIES[: args.strategies]
    runs: dict[str, list[dict[str, Any]]] = {"engine": [], "engine_1_strategy": []}
    if args.baseline:
        runs["one_pending_trial"] = []
    with tempfile.TemporaryDirectory() as folder:
        # Ray keeps idle worker processes for the next tasks: one discarded search first, so that every
        # measured search finds the same warm pool instead of the first one paying for starting it.
        one_search(Path(folder), "warmup", names, args, pending_one=False)
        for r in range(args.repeats):
            runs["engine"].append(one_search(Path(folder), f"s{r}", names, args, pending_one=False))
            one_trials = args.trials * len(names) if args.equal_total else args.trials
            runs["engine_1_strategy"].append(one_search(Path(folder), f"one{r}", names[:1], args, pending_one=False,
                                                        trials=one_trials))
            if args.baseline:
                runs["one_pending_trial"].append(one_search(Path(folder), f"b{r}", names, args, pending_one=True))
    ray.shutdown()

    def med(run: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[run])

    extra = [(a["wall_s"] - b["wall_s"]) / max(args.strategies - 1, 1)
             for a, b in zip(runs["engine"], runs["engine_1_strategy"], strict=True)]
    report = {"environment": timing.environment(), "slots": args.cpus, "strategies": args.strategies,
              "trials_per_strategy": args.trials, "epochs": args.epochs, "repeats": args.repeats,
              "equal_total": args.equal_total, "runs": runs,
              "fixed_cost_per_extra_strategy_s": timing.summary(extra)}
    path = timing.save(report, "cluster_width")
    if args.json:
        print(json.dumps(report, indent=1))
        return
    keys = ["max_running", "mean_running_over_span", "utilisation_wall", "utilisation_span", "first_trial_after_s",
            "wall_s"]
    print(f"{args.strategies} strategies x {args.trials} trials x {args.epochs} epochs, {args.cpus} slots; median "
          f"of {args.repeats} round(s); load average {report['environment']['load_average_1_5_15'][0]:.1f}")
    print("| run | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for run in runs:
        print(f"| {run} | " + " | ".join(f"{med(run, k):.3g}" for k in keys) + " |")
    print(f"fixed cost per extra strategy: {report['fixed_cost_per_extra_strategy_s']['median']:.2f} s")
    print(f"raw: {path}")


if __name__ == "__main__":
    main()
