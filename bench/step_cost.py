"""Per-step cost of every registered strategy, relative to `uniform`, and batched vs looped Jacobians.

A step is what the trainer does per batch: zero_grad + forward + strategy.backward + optimizer.step.
Two hard-parameter-sharing models: the toy MLP (input 250, 3 x 64 shared, per task 32-unit hidden layer) and a
small conv encoder (2 conv + pooling on 1x28x28, T linear heads); T in {2, 3, 10}. Every strategy of the
registry, stepped round-robin (`--repeats` timed rounds after `--warmup` untimed ones); each figure is a
median with its inter-quartile range, and the ratio to `uniform` is taken per round (same round, same load)
before its median is taken. The Jacobian part times forward + `jacobian.task_jacobian_and_head_grads` (the shared
Jacobian and every head's gradient) batched against looped, checks that both give the same numbers, and names
the method the rule picks there.

    .venv/bin/python bench/step_cost.py [--markdown] [--device cuda] [--repeats 30] [--threads 1]
                                         [--jacobian auto|batched|loop]

The full report (environment, raw per-step times) goes to bench/results/step_cost-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timing  # noqa: E402

from tune_mtl import strategies  # noqa: E402
from tune_mtl.models.hps import HPSModel  # noqa: E402
from tune_mtl.models.mlp import build_mlp_hps  # noqa: E402
from tune_mtl.strategies import jacobian as jac  # noqa: E402
from tune_mtl.strategies.base import StepContext  # noqa: E402

BATCH = 32


def conv_model(T: int) -> HPSModel:
    encoder = nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2),  # 28 -> 24 -> 12
        nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),  # 12 -> 8 -> 4
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
    )
    return HPSModel(encoder, [nn.Linear(64, 1) for _ in range(T)])


def make_setup(kind: str, T: int, device: torch.device):
    torch.manual_seed(0)
    if kind == "mlp":
        model = build_mlp_hps(250, [1] * T, shared_layers=3, shared_width=64, task_layers=1, task_width=32)
        shape = (250,)
    else:
        model = conv_model(T)
        shape = (1, 28, 28)
    model = model.to(device)
    x = torch.randn(BATCH, *shape, device=device)
    targets = tuple(torch.randn(BATCH, device=device) for _ in range(T))
    return model, (x, targets)


def compute_losses(model: HPSModel, batch) -> torch.Tensor:
    x, targets = batch
    _, outputs = model(x)
    return torch.stack([(out.squeeze(-1) - y) ** 2 for out, y in zip(outputs, targets, strict=True)])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Runner:
    """One strategy on its own copy of the model, stepping like the trainer does."""

    def __init__(self, name: str, kind: str, T: int, device: torch.device) -> None:
        self.device = device
        self.model, self.batch = make_setup(kind, T, device)
        self.strategy = strategies.build(name, T)
        self.strategy.setup(self.model, device)
        self.optimizer = self._optimizer()
        self.strategy.on_model_change(self._rebuild_optimizer)  # Recon's split replaces parameters
        self.step = 0

    def _rebuild_optimizer(self) -> None:
        self.optimizer = self._optimizer()

    def _optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if self.strategy.parameters():
            groups.append({"params": self.strategy.parameters()})
        return torch.optim.Adam(groups, lr=1e-4)

    def timed_step(self) -> timing.Stopwatch:
        model, batch = self.model, self.batch
        with timing.Stopwatch(lambda: sync(self.device)) as watch:
            self.optimizer.zero_grad(set_to_none=True)
            rep, outputs = model(batch[0])
            losses = torch.stack([(out.squeeze(-1) - y) ** 2 for out, y in zip(outputs, batch[1], strict=True)])
            ctx = StepContext(
                losses=losses, model=model, shared_params=model.shared_parameters(),
                task_params=model.task_parameters(), representation=rep, step=self.step, epoch=0, batch=batch,
                compute_losses=lambda b: compute_losses(model, b), val_batch=batch,
            )
            self.strategy.backward(ctx)
            self.optimizer.step()
        self.step += 1
        return watch


def time_strategies(names: list[str], kind: str, T: int, device: torch.device, warmup: int, repeats: int):
    """Step times (s) per strategy and clock ("wall", "cpu"), one per round, and the errors of those that
    failed. Steps are interleaved round-robin so that load on a shared machine
    hits every strategy alike (timing them one after the other made the ratios drift by 2x)."""
    runners, errors = {}, {}
    for name in names:
        try:
            runners[name] = Runner(name, kind, T, device)
        except Exception as err:  # e.g. a strategy that needs more tasks than this setup has
            errors[name] = f"{type(err).__name__}: {err}"
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
    for round_ in range(warmup + repeats):
        for name in list(runners):
            try:
                watch = runners[name].timed_step()
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {err}"
                del runners[name], times[name]
                continue
            if round_ >= warmup:
                times[name]["wall"].append(watch.wall)
                times[name]["cpu"].append(watch.cpu)
    return times, errors


def time_jacobian(kind: str, T: int, device: torch.device, warmup: int, repeats: int) -> dict:
    """Forward + the shared Jacobian and every head's gradient (`task_jacobian_and_head_grads`, what a
    gradient-aggregation step computes), batched against looped; asserts both give the same numbers."""
    model, batch = make_setup(kind, T, device)
    shared, heads = model.shared_parameters(), model.task_parameters()
    results: dict[str, list[float]] = {"batched": [], "loop": []}
    outputs = {}
    for step in range(warmup + repeats):
        for mode in ("batched", "loop"):
            with timing.Stopwatch(lambda: sync(device)) as watch:
                task_losses = compute_losses(model, batch).mean(dim=1)
                outputs[mode] = jac.task_jacobian_and_head_grads(task_losses, shared, heads, retain_graph=False,
                                                                 method=mode)
            if step >= warmup:
                results[mode].append(watch.cpu if device.type == "cpu" else watch.wall)
    (J_batched, heads_batched), (J_loop, heads_loop) = outputs["batched"], outputs["loop"]
    same_heads = all(p is q and torch.allclose(g, h, rtol=1e-5, atol=1e-5)
                     for (p, g), (q, h) in zip(sorted(heads_batched, key=lambda pg: id(pg[0])),
                                               sorted(heads_loop, key=lambda pg: id(pg[0])), strict=True))
    if not torch.allclose(J_batched, J_loop, rtol=1e-5, atol=1e-5) or not same_heads:
        raise AssertionError(f"batched and looped Jacobians differ ({kind}, T={T})")
    ratios = [loop / batched for batched, loop in zip(results["batched"], results["loop"], strict=True)]
    return {
        "batched_ms": timing.summary(results["batched"], 1e3),
        "loop_ms": timing.summary(results["loop"], 1e3),
        "loop_over_batched": timing.summary(ratios),
        "auto_picks": jac.choose_method(shared, device),
    }


def forced_method(method: str):
    """`--jacobian batched|loop`: every strategy's `task_jacobian(method="auto")` takes that method (to measure
    the rule against the alternatives); "auto" leaves the rule alone."""
    if method == "auto":
        return mock.patch.object(jac, "choose_method", jac.choose_method)
    return mock.patch.object(jac, "choose_method", lambda params, device: method)


def measure(kind: str, T: int, names: list[str], device: torch.device, warmup: int, repeats: int) -> dict:
    entry: dict = {"jacobian": time_jacobian(kind, T, device, warmup, repeats)}
    times, entry["errors"] = time_strategies(names, kind, T, device, warmup, repeats)
    # CPU time on a CPU (steady under load from other processes), wall time on a GPU (CPU time there is
    # launch overhead only); both are in the JSON.
    entry["clock"] = clock = "cpu" if device.type == "cpu" else "wall"
    base = times["uniform"][clock]
    entry["step_ms"] = {name: timing.summary(t[clock], 1e3) for name, t in times.items()}
    entry["step_wall_ms"] = {name: timing.summary(t["wall"], 1e3) for name, t in times.items()}
    entry["ratio_to_uniform"] = {
        name: timing.summary([a / b for a, b in zip(t[clock], base, strict=True)]) for name, t in times.items()
    }
    entry["raw_step_s"] = times
    return entry


def print_text(key: str, entry: dict) -> None:
    j = entry["jacobian"]
    print(f"\n== {key} ({entry['clock']} time): uniform step {timing.fmt(entry['step_ms']['uniform'])} ms; "
          f"Jacobian batched {timing.fmt(j['batched_ms'])} ms, loop {timing.fmt(j['loop_ms'])} ms, loop/batched "
          f"{timing.fmt(j['loop_over_batched'])} (auto: {j['auto_picks']})", flush=True)
    for n, ratio in sorted(entry["ratio_to_uniform"].items(), key=lambda kv: kv[1]["median"]):
        print(f"  {n:14s} {timing.fmt(entry['step_ms'][n]):>24s} ms  x uniform {timing.fmt(ratio)}")
    for n, err in entry["errors"].items():
        print(f"  {n:14s} error: {err}")


def print_markdown(report: dict) -> None:
    keys = list(report["results"])
    print(timing.describe(report["environment"]))
    print(f"Clock: {report['results'][keys[0]]['clock']} time; median [q1-q3] over {report['repeats']} rounds.\n")
    print("| setting | uniform step (ms) | Jacobian batched (ms) | loop (ms) | loop / batched | auto picks |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in keys:
        e = report["results"][key]
        j = e["jacobian"]
        print(f"| {key} | {timing.fmt(e['step_ms']['uniform'])} | {timing.fmt(j['batched_ms'])} | "
              f"{timing.fmt(j['loop_ms'])} | {timing.fmt(j['loop_over_batched'])} | {j['auto_picks']} |")
    print()
    print("| strategy | " + " | ".join(keys) + " |")
    print("| --- |" + " --- |" * len(keys))
    names = sorted({n for k in keys for n in report["results"][k]["ratio_to_uniform"]},
                   key=lambda n: report["results"][keys[0]]["ratio_to_uniform"].get(n, {"median": 1e9})["median"])
    for n in names:
        cells = []
        for k in keys:
            r = report["results"][k]["ratio_to_uniform"].get(n)
            cells.append(timing.fmt(r) if r else "error: " + report["results"][k]["errors"].get(n, "?")[:40])
        print(f"| {n} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md tables")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 3, 10])
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every registered strategy")
    parser.add_argument("--jacobian", default="auto", choices=jac.METHODS, help="force the per-task Jacobian method")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.strategies or strategies.names()
    if "uniform" not in names:
        names = ["uniform", *names]
    report = {"environment": timing.environment(), "device": str(device), "repeats": args.repeats,
              "warmup": args.warmup, "jacobian": args.jacobian, "results": {}}
    with forced_method(args.jacobian):
        for kind in args.models:
            for T in args.tasks:
                key = f"{kind}/T={T}"
                report["results"][key] = entry = measure(kind, T, names, device, args.warmup, args.repeats)
                if not args.markdown:
                    print_text(key, entry)
    report["environment"]["load_average_after"] = list(__import__("os").getloadavg())
    path = timing.save(report, "step_cost")
    if args.markdown:
        print_markdown(report)
    print(f"\nraw results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
