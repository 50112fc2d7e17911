"""SLGrad step cost: the project's one-JVP step against the SLGrad reference's own algorithm, a modern
per-sample-gradient baseline (`torch.func`: vmap over grad), and a plain `uniform` step, on the same batch.

    .venv/bin/python bench/slgrad.py [--markdown] [--device cuda] [--threads 1] [--reps 20] [--loop-reps 5]

Model: the toy HPS MLP (input_dim 250, 3 shared layers of width 64, one head layer of width 32 per task);
random regression batches; validation batch 64. One "step" = zero_grad, forward, weights, the weighted
backward, optimizer.step(). All three ways compute the same sample weights
w[t, i] = max(0, <grad_shared l_t(x_i), grad_shared L_main(val)>), normalised to mean 1:

* `slgrad`: the project's strategy (all T*B inner products from one forward-mode JVP);
* `reference`: the SLGrad reference's algorithm: the validation gradient from one backward, then ONE
  forward per task and ONE backward per sample (`retain_graph=True`) on the shared parameters, an inner
  product after each, then the weighted backward (no model copies);
* `func_vmap`: per-sample gradients as torch.func computes them (`vmap(jacrev(per-sample task losses))`
  over the batch with `functional_call`, the standard modern way), inner products with the validation
  gradient, then the weighted backward.

Every variant runs on its own copy of the same initial model with the same batch, interleaved round-robin
(so load hits them alike). CPU time (this thread) and wall time; median and IQR per variant, and the speed-up
ratios per round. A check on one untouched model asserts that all three give the same weights.
The report (environment, raw times) goes to bench/results/slgrad-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import timing  # noqa: E402

from tune_mtl.models.mlp import build_mlp_hps  # noqa: E402
from tune_mtl.strategies import build  # noqa: E402
from tune_mtl.strategies.base import StepContext  # noqa: E402
from tune_mtl.strategies.slgrad import normalised_sample_weights  # noqa: E402

INPUT_DIM, VAL_BATCH = 250, 64
VARIANTS = ("uniform", "slgrad", "func_vmap", "reference")


def make_model(T: int, device: torch.device) -> nn.Module:
    torch.manual_seed(1)
    return build_mlp_hps(INPUT_DIM, [1] * T, shared_layers=3, shared_width=64, task_layers=1, task_width=32).to(device)


def loss_fn(model: nn.Module) -> Callable:
    def compute_losses(batch):
        x, targets = batch
        _, outputs = model(x)
        return torch.stack([(out.reshape(y.shape) - y) ** 2 for out, y in zip(outputs, targets, strict=True)])

    return compute_losses


def make_batch(B: int, T: int, device: torch.device):
    return torch.randn(B, INPUT_DIM, device=device), tuple(torch.randn(B, device=device) for _ in range(T))


def validation_gradient(model, val_batch) -> list[Tensor]:
    shared = model.shared_parameters()
    return list(torch.autograd.grad(loss_fn(model)(val_batch)[0].mean(), shared))


def reference_inner_products(model, batch, val_batch) -> Tensor:
    """The reference's way: one forward per task, one backward (retain_graph) per sample, an inner product
    with the validation gradient after each."""
    val_grad = validation_gradient(model, val_batch)
    shared = model.shared_parameters()
    x, targets = batch
    T, B = len(targets), x.shape[0]
    inner = torch.zeros(T, B, device=x.device)
    for t in range(T):
        task_losses = loss_fn(model)(batch)[t]  # this task's per-sample losses, one forward
        for i in range(B):
            grads = torch.autograd.grad(task_losses[i], shared, retain_graph=i < B - 1)
            inner[t, i] = sum((g * v).sum() for g, v in zip(grads, val_grad, strict=True))
    return inner


def func_vmap_inner_products(model, batch, val_batch) -> Tensor:
    """Per-sample gradients with torch.func: vmap over samples of jacrev of the [T] losses of one sample."""
    val_grad = validation_gradient(model, val_batch)
    shared_names = {id(p) for p in model.shared_parameters()}
    named = dict(model.named_parameters())
    shared = {k: v.detach() for k, v in named.items() if id(v) in shared_names}
    fixed = {k: v.detach() for k, v in named.items() if id(v) not in shared_names}

    def sample_losses(params, x, *ys):
        return loss_fn(lambda inp: torch.func.functional_call(model, {**params, **fixed}, (inp,)))(
            (x[None], tuple(y[None] for y in ys)))[:, 0]

    x, targets = batch
    per_sample = torch.func.vmap(torch.func.jacrev(sample_losses), in_dims=(None, 0, *[0] * len(targets)))(
        shared, x, *targets)  # name -> [B, T, *shape]
    order = [k for k, v in named.items() if id(v) in shared_names]
    return sum((per_sample[k] * v).flatten(2).sum(-1) for k, v in zip(order, val_grad, strict=True)).T


def weighted_step(model, optimizer, batch, inner: Tensor) -> Tensor:
    weights, _ = normalised_sample_weights(inner)
    optimizer.zero_grad(set_to_none=True)
    (weights * loss_fn(model)(batch)).mean(dim=1).sum().backward()
    optimizer.step()
    return weights


def strategy_step(model, optimizer, strategy, batch, val_batch) -> None:
    optimizer.zero_grad(set_to_none=True)
    compute_losses = loss_fn(model)
    losses = compute_losses(batch)
    ctx = StepContext(losses, model, model.shared_parameters(), model.task_parameters(), None, 0, 0, batch,
                      compute_losses, val_batch)
    strategy.backward(ctx)
    optimizer.step()


def make_steps(B: int, T: int, device: torch.device, batch, val_batch) -> dict[str, Callable[[], None]]:
    steps = {}
    for name in VARIANTS:
        model = make_model(T, device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        if name in ("uniform", "slgrad"):
            strategy = build(name, T)
            steps[name] = (lambda m, o, s: lambda: strategy_step(m, o, s, batch, val_batch))(model, optimizer, strategy)
        else:
            inner = reference_inner_products if name == "reference" else func_vmap_inner_products
            steps[name] = (lambda m, o, f: lambda: weighted_step(m, o, batch, f(m, batch, val_batch)))(
                model, optimizer, inner)
    return steps


def weight_differences(T: int, device: torch.device, batch, val_batch) -> dict[str, float]:
    """Max |w - w_slgrad| of each baseline, all on one untouched model."""
    model = make_model(T, device)
    probe = copy.deepcopy(model)
    strategy = build("slgrad", T)
    strategy_step(probe, torch.optim.SGD(probe.parameters(), lr=0.0), strategy, batch, val_batch)
    ours = strategy.last_weights
    return {
        f"max_weight_difference_{name}": float(
            (normalised_sample_weights(fn(model, batch, val_batch))[0] - ours).abs().max())
        for name, fn in (("reference", reference_inner_products), ("func_vmap", func_vmap_inner_products))
    }


def measure(B: int, T: int, device: torch.device, reps: int, loop_reps: int) -> dict:
    torch.manual_seed(0)
    batch, val_batch = make_batch(B, T, device), make_batch(VAL_BATCH, T, device)
    steps = make_steps(B, T, device, batch, val_batch)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else None
    times = {name: {"cpu": [], "wall": []} for name in steps}
    for step in steps.values():
        step()  # warm-up
    for rep in range(reps):
        for name, step in steps.items():
            if name == "reference" and rep >= loop_reps:
                continue
            with timing.Stopwatch(sync) as watch:
                step()
            times[name]["cpu"].append(watch.cpu)
            times[name]["wall"].append(watch.wall)
    out: dict = {"B": B, "T": T, "raw_s": times, **weight_differences(T, device, batch, val_batch)}
    for clock in ("cpu", "wall"):
        for name in steps:
            out[f"{name}_{clock}_ms"] = timing.summary(times[name][clock], 1e3)
        slgrad = times["slgrad"][clock]
        # Paired per round where both ran; the reference ran in the first `loop_reps` rounds only.
        for name in ("reference", "func_vmap", "uniform"):
            other = times[name][clock]
            key = f"slgrad_over_uniform_{clock}" if name == "uniform" else f"{name}_over_slgrad_{clock}"
            pairs = zip(slgrad, other, strict=False)
            out[key] = timing.summary([s / o if name == "uniform" else o / s for s, o in pairs])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--reps", type=int, default=20, help="timed rounds of the uniform, slgrad and func steps")
    parser.add_argument("--loop-reps", type=int, default=5, help="timed rounds of the reference loop")
    parser.add_argument("--sizes", nargs="+", default=["16x2", "16x10", "64x2", "64x10", "256x2", "256x10"],
                        help="BxT settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise on import
    device = torch.device(args.device)
    report = {"environment": timing.environment(), "device": str(device), "reps": args.reps,
              "loop_reps": args.loop_reps, "results": []}
    clock = "cpu" if device.type == "cpu" else "wall"
    for size in args.sizes:
        B, T = (int(v) for v in size.split("x"))
        r = measure(B, T, device, args.reps, args.loop_reps)
        report["results"].append(r)
        if not args.markdown:
            print(f"B={B:4d} T={T:3d} ({clock}) uniform {timing.fmt(r[f'uniform_{clock}_ms'])} slgrad "
                  f"{timing.fmt(r[f'slgrad_{clock}_ms'])} func {timing.fmt(r[f'func_vmap_{clock}_ms'])} "
                  f"reference {timing.fmt(r[f'reference_{clock}_ms'], 1)} ms | ref/slgrad "
                  f"{timing.fmt(r[f'reference_over_slgrad_{clock}'], 1)} func/slgrad "
                  f"{timing.fmt(r[f'func_vmap_over_slgrad_{clock}'])} | max|dw| ref "
                  f"{r['max_weight_difference_reference']:.1e} func {r['max_weight_difference_func_vmap']:.1e}",
                  flush=True)
    report["environment"]["load_average_after"] = list(__import__("os").getloadavg())
    path = timing.save(report, "slgrad")
    if args.markdown:
        print(timing.describe(report["environment"]))
        print(f"Clock: {clock} time (ms), median [q1-q3]; ratios per round.\n")
        print("| B | T | uniform | slgrad | func_vmap | reference | reference / slgrad | func_vmap / slgrad "
              "| slgrad / uniform | reference / slgrad (wall) | max abs dw (ref, func) |")
        print("| --: | -: | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in report["results"]:
            print(f"| {r['B']} | {r['T']} | {timing.fmt(r[f'uniform_{clock}_ms'])} | "
                  f"{timing.fmt(r[f'slgrad_{clock}_ms'])} | {timing.fmt(r[f'func_vmap_{clock}_ms'])} | "
                  f"{timing.fmt(r[f'reference_{clock}_ms'], 1)} | "
                  f"{timing.fmt(r[f'reference_over_slgrad_{clock}'], 1)} | "
                  f"{timing.fmt(r[f'func_vmap_over_slgrad_{clock}'])} | "
                  f"{timing.fmt(r[f'slgrad_over_uniform_{clock}'])} | "
                  f"{timing.fmt(r['reference_over_slgrad_wall'], 1)} | "
                  f"{r['max_weight_difference_reference']:.1e}, {r['max_weight_difference_func_vmap']:.1e} |")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
