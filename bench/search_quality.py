"""Does TPE search? The best validation objective (the trial score) found with a budget of N trials on the
toy benchmark, TPE as the engine configures it vs random search, at 1 and at C concurrent trials; median and
quartiles over R repeats (seeds 0..R-1).

Both arms drive the engine's own searcher (`StudySearcher`: the same space, start-up plan, multivariate TPE,
constant liar when concurrent); random search is the same searcher with every trial a start-up trial.
Concurrency is replayed in-process, deterministically: C trials are handed out before the first result comes
back, then each finished trial (the oldest first) is told before the next is asked, as Tune does with C slots.
Each trial trains the toy problem for real (search_spaces/toy.yaml's ranges, smaller data: see SPACE_OVERRIDES)
and is scored like the trainable scores it (best validation epoch).

    .venv/bin/python bench/search_quality.py [--trials 30] [--repeats 10] [--concurrency 1 8] [--json]

The raw JSON goes to bench/results/search_quality-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The shipped toy search space, on less data and fewer epochs so that ~1000 trials fit in minutes on a CPU.
SPACE_OVERRIDES = {"dataset": {"input_dim": 20, "num_samples": 400}, "training": {"epochs": 4}}


def load_space(seed: int):
    from tune_mtl.search.spec import load_spec

    raw = yaml.safe_load((ROOT / "search_spaces" / "toy.yaml").read_text())
    for section, values in SPACE_OVERRIDES.items():
        raw[section] = {**raw[section], **values}
    raw["strategies"] = ["uniform"]
    raw["search"] = {"seed": seed}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
        yaml.safe_dump(raw, out)
    return load_spec(out.name)


def score_of(config: dict[str, Any]) -> float:
    """Train one trial and score it as the trainable does: its best validation objective."""
    from tune_mtl.search.trainable import Score, split_config
    from tune_mtl.training.trainer import Trainer, TrialDiverged

    trainer_config, _, _ = split_config(config)
    trainer = Trainer(trainer_config)
    score = Score(trainer.objective.mode)
    try:
        while trainer.epoch < trainer.cfg.training["epochs"]:
            score.update(trainer.run_epoch(), trainer.epoch, trainer.model)
    except TrialDiverged:
        return float("nan")
    return score.value if score.value is not None else float("nan")


def search(seed: int, trials: int, concurrency: int, random_only: bool) -> float:
    """Best score of one search (the engine's searcher, in memory); concurrency replayed FIFO."""
    from tune_mtl.core.keys import SCORE
    from tune_mtl.search.categorical_space import StrategySpace, fixed_space
    from tune_mtl.search.plan import sampler_plan
    from tune_mtl.search.searcher import Objectives, StudySearcher, StudySetup

    spec = load_space(seed)
    plan = sampler_plan(trials, concurrency)
    setup = StudySetup("uniform", f"q-{seed}-{concurrency}-{random_only}", StrategySpace(spec, "uniform"), trials,
                       seed, trials if random_only else plan.startup, plan.constant_liar)
    searcher = StudySearcher([setup], None, Objectives([SCORE], ["min"], ["score"]), "/bench", "bench")
    fixed = fixed_space(spec)
    running: collections.deque[tuple[str, dict]] = collections.deque()
    best, asked = float("inf"), 0
    while asked < trials or running:
        while asked < trials and len(running) < concurrency:
            suggestion = searcher.suggest(f"t{asked}")
            config = {k: {**fixed.get(k, {}), **v} if isinstance(v, dict) else v for k, v in suggestion.items()}
            running.append((f"t{asked}", {**fixed, **config}))
            asked += 1
        trial_id, config = running.popleft()
        value = score_of(config)
        searcher.on_trial_complete(trial_id, {SCORE: value})
        if value == value:
            best = min(best, value)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for concurrency in args.concurrency:
        for arm, random_only in (("tpe", False), ("random", True)):
            bests = [search(seed, args.trials, concurrency, random_only) for seed in range(args.repeats)]
            results[f"{arm}@{concurrency}"] = {"best": bests, "summary": timing.summary(bests)}
    report = {"environment": timing.environment(), "trials": args.trials, "repeats": args.repeats,
              "space": {"file": "search_spaces/toy.yaml", "overrides": SPACE_OVERRIDES}, "results": results,
              "seconds": time.perf_counter() - start}
    for concurrency in args.concurrency:
        tpe, rnd = results[f"tpe@{concurrency}"]["best"], results[f"random@{concurrency}"]["best"]
        report.setdefault("tpe_wins", {})[str(concurrency)] = sum(t < r for t, r in zip(tpe, rnd, strict=True))
    path = timing.save(report, "search_quality")
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"best validation objective (min) after {args.trials} trials, median [q1, q3] over {args.repeats} seeds")
    print("| concurrency | TPE | random | TPE better on (same seed) |")
    print("|---|---|---|---|")
    for concurrency in args.concurrency:
        t, r = (results[f"{arm}@{concurrency}"]["summary"] for arm in ("tpe", "random"))
        print(f"| {concurrency} | {t['median']:.4f} [{t['q1']:.4f}, {t['q3']:.4f}] | {r['median']:.4f} "
              f"[{r['q1']:.4f}, {r['q3']:.4f}] | {report['tpe_wins'][str(concurrency)]}/{args.repeats} |")
    print(f"{report['seconds']:.0f} s; raw: {path}")


if __name__ == "__main__":
    main()
