"""Per-step cost of every registered strategy, relative to `uniform`, and batched vs looped Jacobians.

A step is what the trainer does per batch: zero_grad + forward + strategy.backward + optimizer.step.
Two hard-parameter-sharing models: the toy MLP (input 250, 3 x 64 shared, per task 32-unit hidden layer) and a
small conv encoder (2 conv + pooling on 1x28x28, T linear heads); T in {2, 3, 10}. Median over `--repeats`
timed steps after `--warmup` untimed ones. The Jacobian part times `jacobian.task_jacobian` (one batched
reverse pass) against a loop of T backward passes and checks that both give the same matrix.

    .venv/bin/python bench/step_cost.py [--json] [--device cuda] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
        self.step = 0

    def _optimizer(self) -> torch.optim.Optimizer:
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        if self.strategy.parameters():
            groups.append({"params": self.strategy.parameters()})
        return torch.optim.Adam(groups, lr=1e-4)

    def timed_step(self) -> float:
        model, batch = self.model, self.batch
        sync(self.device)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        rep, outputs = model(batch[0])
        losses = torch.stack([(out.squeeze(-1) - y) ** 2 for out, y in zip(outputs, batch[1], strict=True)])
        ctx = StepContext(
            losses=losses, model=model, shared_params=model.shared_parameters(),
            task_params=model.task_parameters(), representation=rep, step=self.step, epoch=0, batch=batch,
            compute_losses=lambda b: compute_losses(model, b), val_batch=batch,
        )
        self.strategy.backward(ctx)
        if self.strategy.parameters_changed:
            self.optimizer = self._optimizer()
            self.strategy.parameters_changed = False
        self.optimizer.step()
        sync(self.device)
        self.step += 1
        return time.perf_counter() - start


def time_strategies(names: list[str], kind: str, T: int, device: torch.device, warmup: int, repeats: int):
    """Median step time per strategy. Steps are interleaved round-robin so that load on a shared machine
    hits every strategy alike (timing them one after the other made the ratios drift by 2x)."""
    runners, errors = {}, {}
    for name in names:
        try:
            runners[name] = Runner(name, kind, T, device)
        except Exception as err:  # e.g. a strategy that needs more tasks than this setup has
            errors[name] = f"{type(err).__name__}: {err}"
    times: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(warmup + repeats):
        for name in list(runners):
            try:
                elapsed = runners[name].timed_step()
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {err}"
                del runners[name], times[name]
                continue
            if round_ >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(t) for name, t in times.items()}, errors


def time_jacobian(kind: str, T: int, device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    model, batch = make_setup(kind, T, device)
    params = model.shared_parameters()
    results: dict[str, list[float]] = {"batched": [], "loop": []}
    matrices = {}
    for step in range(warmup + repeats):
        for mode in ("batched", "loop"):
            task_losses = compute_losses(model, batch).mean(dim=1)
            sync(device)
            start = time.perf_counter()
            matrices[mode] = jac.task_jacobian(task_losses, params, retain_graph=False, batched=mode == "batched")
            sync(device)
            if step >= warmup:
                results[mode].append(time.perf_counter() - start)
    if not torch.allclose(matrices["batched"], matrices["loop"], rtol=1e-5, atol=1e-5):
        raise AssertionError(f"batched and looped Jacobians differ ({kind}, T={T})")
    batched, loop = (statistics.median(results[m]) for m in ("batched", "loop"))
    return {"batched_ms": 1e3 * batched, "loop_ms": 1e3 * loop, "speedup": loop / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 3, 10])
    parser.add_argument("--models", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every registered strategy")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.strategies or strategies.names()
    if "uniform" not in names:
        names = ["uniform", *names]
    report = {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats, "results": {}}
    for kind in args.models:
        for T in args.tasks:
            key = f"{kind}/T={T}"
            entry: dict = {"jacobian": time_jacobian(kind, T, device, args.warmup, args.repeats)}
            medians, entry["errors"] = time_strategies(names, kind, T, device, args.warmup, args.repeats)
            entry["step_ms"] = {name: 1e3 * median for name, median in medians.items()}
            base = entry["step_ms"]["uniform"]
            entry["ratio_to_uniform"] = {n: ms / base for n, ms in entry["step_ms"].items()}
            report["results"][key] = entry
            if not args.json:
                j = entry["jacobian"]
                print(f"\n== {key}: uniform step {base:.2f} ms; Jacobian batched {j['batched_ms']:.2f} ms, "
                      f"loop {j['loop_ms']:.2f} ms, speed-up {j['speedup']:.2f}x", flush=True)
                for n, ratio in sorted(entry["ratio_to_uniform"].items(), key=lambda kv: kv[1]):
                    print(f"  {n:14s} {entry['step_ms'][n]:8.2f} ms  {ratio:5.2f}x")
                for n, err in entry["errors"].items():
                    print(f"  {n:14s} error: {err}")
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
