"""SLGrad step cost: the one-JVP step against the reference's per-sample backward loop and a `uniform` step.

    python bench/slgrad.py [--json] [--device cuda] [--threads 1] [--reps 15] [--loop-reps 3]

Model: the toy HPS MLP (input_dim 250, 3 shared layers of width 64, one head layer of width 32 per task);
random regression batches; validation batch 64. One "step" = zero_grad, forward, strategy backward,
optimizer.step(). The loop is written the reference's way: the validation gradient from one backward, then a
deepcopy of the model per sample and one backward per (task, sample), inner products, clamp, normalise, and the
weighted backward. Prints medians (ms) and checks that the loop's weights equal the JVP's.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune_mtl.models.mlp import build_mlp_hps  # noqa: E402
from tune_mtl.strategies import build  # noqa: E402
from tune_mtl.strategies.base import StepContext  # noqa: E402

INPUT_DIM, VAL_BATCH = 250, 64


def make_model(T: int, device: torch.device):
    return build_mlp_hps(INPUT_DIM, [1] * T, shared_layers=3, shared_width=64, task_layers=1, task_width=32).to(device)


def loss_fn(model):
    def compute_losses(batch):
        x, targets = batch
        _, outputs = model(x)
        return torch.stack([(out.reshape(y.shape) - y) ** 2 for out, y in zip(outputs, targets, strict=True)])

    return compute_losses


def make_batch(B: int, T: int, device: torch.device):
    return torch.randn(B, INPUT_DIM, device=device), tuple(torch.randn(B, device=device) for _ in range(T))


def strategy_step(model, optimizer, strategy, batch, val_batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    compute_losses = loss_fn(model)
    losses = compute_losses(batch)
    ctx = StepContext(losses, model, model.shared_parameters(), model.task_parameters(), None, 0, 0, batch,
                      compute_losses, val_batch)
    strategy.backward(ctx)
    optimizer.step()


def reference_loop_weights(model, batch, val_batch) -> torch.Tensor:
    """Per-sample gradients the SLGrad repository's way: a model copy per sample, a backward per task."""
    model.zero_grad(set_to_none=True)
    loss_fn(model)(val_batch)[0].mean().backward()
    val_grad = [p.grad.detach().clone() for p in model.shared_parameters()]
    x, targets = batch
    T, B = len(targets), x.shape[0]
    inner = torch.zeros(T, B, device=x.device)
    for i in range(B):
        sample_model = copy.deepcopy(model)
        sample_losses = loss_fn(sample_model)((x[i : i + 1], tuple(y[i : i + 1] for y in targets)))
        for t in range(T):
            sample_model.zero_grad(set_to_none=True)
            sample_losses[t, 0].backward(retain_graph=t < T - 1)
            inner[t, i] = sum((p.grad * v).sum() for p, v in zip(sample_model.shared_parameters(), val_grad))
    clamped = inner.clamp_min(0)
    total = clamped.sum()
    return torch.ones_like(clamped) if total <= 0 else clamped * (clamped.numel() / total)


def loop_step(model, optimizer, batch, val_batch) -> torch.Tensor:
    weights = reference_loop_weights(model, batch, val_batch)
    optimizer.zero_grad(set_to_none=True)
    (weights * loss_fn(model)(batch)).mean(dim=1).sum().backward()
    optimizer.step()
    return weights


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(B: int, T: int, device: torch.device, reps: int, loop_reps: int) -> dict:
    torch.manual_seed(0)
    batch, val_batch = make_batch(B, T, device), make_batch(VAL_BATCH, T, device)
    steps = {}
    for name in ("uniform", "slgrad"):
        model = make_model(T, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        strategy = build(name, T)
        steps[name] = (lambda m, o, s: lambda: strategy_step(m, o, s, batch, val_batch))(model, optimizer, strategy)
    model = make_model(T, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    steps["loop"] = lambda: loop_step(model, optimizer, batch, val_batch)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for rep in range(reps):  # interleaved, so that load from other processes hits every variant alike
        for name, step in steps.items():
            if name != "loop" or rep < loop_reps:
                times[name].append(timed(step, device))
    results = {"B": B, "T": T, **{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()}}

    check = make_model(T, device)  # same weights from both ways, on one untouched model
    clone = copy.deepcopy(check)
    strategy = build("slgrad", T)
    strategy_step(clone, torch.optim.SGD(clone.parameters(), lr=0.0), strategy, batch, val_batch)
    results["max_weight_difference"] = float((strategy.last_weights - reference_loop_weights(check, batch, val_batch))
                                             .abs().max())
    results["speedup_vs_loop"] = results["loop_ms"] / results["slgrad_ms"]
    results["slgrad_over_uniform"] = results["slgrad_ms"] / results["uniform_ms"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=40, help="timed repetitions of the uniform and SLGrad steps")
    parser.add_argument("--loop-reps", type=int, default=3, help="timed repetitions of the per-sample loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise on import
    device = torch.device(args.device)
    rows = [measure(B, T, device, args.reps, args.loop_reps) for B in (16, 64, 256) for T in (2, 10)]
    if args.json:
        print(json.dumps({"device": str(device), "threads": args.threads, "results": rows}, indent=2))
        return
    print(f"SLGrad step, median ms ({device}, {args.threads} thread(s))")
    header = ("B", "T", "uniform", "slgrad", "loop", "loop/slgrad", "slgrad/unif", "max|dw|")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (4, 3, 9, 9, 10, 12, 12, 9))))
    for r in rows:
        print(f"{r['B']:>4} {r['T']:>3} {r['uniform_ms']:>9.2f} {r['slgrad_ms']:>9.2f} {r['loop_ms']:>10.1f} "
              f"{r['speedup_vs_loop']:>11.0f}x {r['slgrad_over_uniform']:>11.2f}x {r['max_weight_difference']:>9.1e}")


if __name__ == "__main__":
    main()
