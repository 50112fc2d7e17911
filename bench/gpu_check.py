"""Trains every registered strategy for a few epochs on the toy benchmark on the given device and checks
that the model, the strategy's own parameters and every reported metric live there and stay finite.

    python bench/gpu_check.py --device cuda [--json]

Prints one line per strategy (epoch time, main-task validation MSE before/after) and a final verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from tune_mtl import strategies  # noqa: E402
from tune_mtl.training.trainer import Trainer  # noqa: E402


def check(name: str, device: str, epochs: int) -> dict:
    config = {
        "dataset": {"name": "toy_regression", "num_tasks": 3, "input_dim": 50},
        "optimizer": {"name": "adam", "lr": 3e-3},
        "training": {"batch_size": 32},
        "strategy": {"name": name},
    }
    trainer = Trainer(config, device=device)
    params = list(trainer.model.parameters()) + trainer.strategy.parameters()
    on_device = all(p.device.type == torch.device(device).type for p in params)
    times, first, last = [], None, None
    for _ in range(epochs):
        start = time.perf_counter()
        metrics = trainer.run_epoch()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        first = first if first is not None else metrics["val/objective"]
        last = metrics
    finite = all(math.isfinite(v) for v in last.values() if isinstance(v, float))
    return {
        "strategy": name,
        "on_device": on_device,
        "finite": finite,
        "epoch_s_median": statistics.median(times[1:] or times),
        "val_mse_first": first,
        "val_mse_last": last["val/objective"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [check(name, args.device, args.epochs) for name in strategies.names()]
    ok = all(r["on_device"] and r["finite"] for r in rows)
    if args.json:
        print(json.dumps({"device": args.device, "ok": ok, "rows": rows}, indent=2))
    else:
        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        print(f"device: {args.device} ({gpu}), torch {torch.__version__}")
        for r in rows:
            print(f"{r['strategy']:>12}  on_device={r['on_device']!s:5} finite={r['finite']!s:5} "
                  f"epoch {1000 * r['epoch_s_median']:7.1f} ms  val mse {r['val_mse_first']:.4f} -> {r['val_mse_last']:.4f}")
        print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
