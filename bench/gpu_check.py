"""Trains every registered strategy on every model family (MLP, MultiLeNet, ResNet-18, SegNet, UNet,
ResNet-dilated) for a few epochs on the given device and checks that the model, the strategy's own parameters
and every reported metric live there and stay finite. A strategy a model cannot run is refused before
training by `strategies.check_compatibility` (the check a search runs before Ray starts), and listed as such.

    python bench/gpu_check.py --device cuda [--json] [--models ...] [--strategies ...] [--epochs 3]
    .venv/bin/python bench/gpu_check.py --device cpu --tiny --epochs 1   # the whole matrix on a CPU

Data: the MLP trains on the toy benchmark (toy_regression, 3 tasks, input 50: no files). The image models
train on random tensors in the shapes their data sets give (images; class, regression, segmentation and
depth targets; batch norm, max-unpooling and the dense heads all run), built by the tiny-input helpers of
`tests/test_models_x_strategies.py` so the check and the test share one definition. `--tiny` uses the test's
smallest model sizes; without it the models keep their default sizes on 64 images of 3x64x64 (1x28x28 for
MultiLeNet), batch 16. Prints one line per (model, strategy) and a final verdict; exit 1 if any check
failed. The report goes to bench/results/gpu_check-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402
import test_models_x_strategies as tiny  # noqa: E402
import timing  # noqa: E402
import torch  # noqa: E402

from tune_mtl import strategies  # noqa: E402
from tune_mtl.core.errors import UserError  # noqa: E402
from tune_mtl.data.base import DataBundle, TensorSplit  # noqa: E402
from tune_mtl.training import trainer as trainer_module  # noqa: E402
from tune_mtl.training.trainer import Trainer  # noqa: E402

MODELS = ["mlp", "multilenet", "resnet18", "segnet", "unet", "resnet_dilated"]
FULL_SHAPES = {"multilenet": (1, 28, 28)}  # everything else: 3x64x64
FULL_SAMPLES, FULL_BATCH = 64, 16


def full_bundle(model: str) -> DataBundle:
    """Random data in the real shapes, for a model at its default size (see the module doc)."""
    shape = FULL_SHAPES.get(model, (3, 64, 64))
    dense = tiny.MODELS[model][1]
    tasks = tiny._tasks(dense)
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorSplit:
        return TensorSplit(torch.randn(n, *shape, generator=g), tiny._targets(tasks, n, shape, g))

    return DataBundle(f"synthetic_{model}", split(FULL_SAMPLES), split(FULL_BATCH), split(FULL_BATCH), tasks, shape,
                      model)


def trainer_config(model: str, strategy: str, small: bool) -> tuple[dict[str, Any], DataBundle | None]:
    knobs = tiny.KNOBS.get(strategy, {}) if small else {}
    if model == "mlp":
        return {
            "dataset": {"name": "toy_regression", "num_tasks": 3, "input_dim": 50},
            "optimizer": {"name": "adam", "lr": 3e-3},
            "training": {"batch_size": 32},
            "strategy": {"name": strategy, **knobs},
            "seed": 0,
        }, None
    name, options = tiny.model_name_and_options(model) if small else (model, {})
    batch = tiny.BATCH if small else FULL_BATCH
    return {
        "dataset": {"name": "toy_regression"},  # replaced by the synthetic bundle
        "model": {"name": name, **options},
        "strategy": {"name": strategy, **knobs},
        "training": {"batch_size": batch, "val_batch_size": batch},
        "seed": 0,
    }, tiny.tiny_bundle(model) if small else full_bundle(model)


def check(model: str, name: str, device: str, epochs: int, small: bool) -> dict:
    row: dict[str, Any] = {"model": model, "strategy": name}
    config, bundle = trainer_config(model, name, small)
    if bundle is not None:
        model_name, options = config["model"]["name"], {k: v for k, v in config["model"].items() if k != "name"}
        try:
            knobs = {k: v for k, v in config["strategy"].items() if k != "name"}
            strategies.check_compatibility(name, knobs, bundle.num_tasks, model_name, options)
        except UserError as err:
            return {**row, "refused": str(err), "ok": True}
    patch = mock.patch.object(trainer_module.data, "build", lambda *a, **k: bundle) if bundle else mock.MagicMock()
    with patch:
        trainer = Trainer(config, device=device)
        params = list(trainer.model.parameters()) + trainer.strategy.parameters()
        on_device = all(p.device.type == torch.device(device).type for p in params)
        times, first, last = [], None, {}
        for _ in range(epochs):
            start = time.perf_counter()
            metrics = trainer.run_epoch()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            first = first if first is not None else metrics["val/objective"]
            last = metrics
    finite = all(math.isfinite(v) for v in last.values() if isinstance(v, float))
    return {**row, "on_device": on_device, "finite": finite, "ok": on_device and finite,
            "epoch_s_median": statistics.median(times[1:] or times),
            "val_objective_first": first, "val_objective_last": last["val/objective"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="the test suite's smallest model sizes (CPU check)")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--strategies", nargs="+", default=None, help="default: every registered strategy")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--jacobian", default="auto", choices=step_cost.jac.METHODS,
                        help="force the per-task Jacobian method (default: the rule)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    names = args.strategies or strategies.names()
    rows = []
    for model in args.models:
        for name in names:
            try:
                with step_cost.forced_method(args.jacobian):
                    row = check(model, name, args.device, args.epochs, args.tiny)
            except Exception as err:  # a crash is a finding: report it and go on with the matrix
                row = {"model": model, "strategy": name, "ok": False, "error": f"{type(err).__name__}: {err}"}
            rows.append(row)
            if not args.json:
                if "refused" in row:
                    status = f"refused before training: {row['refused']}"
                elif "error" in row:
                    status = f"ERROR {row['error']}"
                else:
                    status = (f"on_device={row['on_device']!s:5} finite={row['finite']!s:5} epoch "
                              f"{1000 * row['epoch_s_median']:8.1f} ms  val objective "
                              f"{row['val_objective_first']:.4f} -> {row['val_objective_last']:.4f}")
                print(f"{model:>14} {name:>12}  {status}", flush=True)
    ok = all(r["ok"] for r in rows)
    report = {"environment": timing.environment(), "device": args.device, "tiny": args.tiny, "epochs": args.epochs,
              "jacobian": args.jacobian, "ok": ok, "rows": rows}
    path = timing.save(report, "gpu_check")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        print(f"device: {args.device} ({gpu}), torch {torch.__version__}, tiny={args.tiny}")
        print("OK" if ok else "FAILED", f"(raw results: {path})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
