"""One full training step of tune-mtl against LibMTL's own code, same model, same batch, same optimizer.

LibMTL 1.1.5 (PyPI, `pip install -c constraints.txt -e .[bench]`) is the baseline: its weighting classes
(`LibMTL/weighting/*.py`) run unchanged. Its package `__init__` imports `torchvision.models.utils`, which
torchvision 0.29 no longer has, so the weighting modules are loaded without that `__init__` (the weighting
code itself imports only torch, numpy and scipy). LibMTL's step is its trainer's: per-task mean losses written
into a `torch.zeros(T)`, `optimizer.zero_grad()`, `model.backward(losses, **weight_args)`, `optimizer.step()`.
`backward` takes per-task gradients with a loop of T `loss.backward(retain_graph=True)` calls (mode
'backward'), copying the shared gradients into a [T, P] matrix after each, then writes the aggregate into
`.grad`. LibMTL was written for torch 1.8, where `Module.zero_grad()` zeroes gradients in place; torch 2
sets them to None, which breaks its `_reset_grad` (`param.grad.data = ...`), so `zero_grad_share_params`
zeroes in place here, as it did then.

The project's step is `bench/step_cost.Runner` (the trainer's step: zero_grad, forward, strategy.backward,
optimizer.step) with the strategy of the same name and LibMTL's defaults (MGDA without normalisation, CAGrad
alpha 0.5 rescale 1, GradVac beta 0.5, IMTL hybrid). Steps alternate (project, LibMTL) for `--repeats` rounds;
the speed ratio LibMTL time / project time is taken per round and summarised by its median and IQR:
>= 1 means the project's step is at least as fast. Both clocks are kept: this thread's CPU time (steady on
a loaded machine) and wall time (see `timing.Stopwatch`).

    .venv/bin/python bench/libmtl_compare.py [--markdown] [--threads 1] [--repeats 30] [--jacobian auto]

LibMTL 1.1.5's CAGrad hard-codes 3 tasks (`x.reshape(1,3)`), so it runs at T=3 only; GradDrop there works on
representation gradients only, and UPGrad / Nash-MTL / Aligned-MTL are not in 1.1.5: those are not compared.
The report (environment, raw times) goes to bench/results/libmtl_compare-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_cost  # noqa: E402
import timing  # noqa: E402

# project strategy name -> (LibMTL weighting class, its keyword arguments as LibMTL's trainer passes them)
PAIRS: dict[str, tuple[str, dict]] = {
    "uniform": ("EW", {}),
    "mgda": ("MGDA", {"mgda_gn": "none"}),
    "pcgrad": ("PCGrad", {}),
    "cagrad": ("CAGrad", {"calpha": 0.5, "rescale": 1}),
    "imtl": ("IMTL", {}),
    "gradvac": ("GradVac", {"beta": 0.5}),
}
ONLY_THREE_TASKS = {"CAGrad"}


def libmtl_weighting(name: str) -> type[nn.Module]:
    """LibMTL's weighting class `name`, loaded without LibMTL's package `__init__` (see the module doc)."""
    if "LibMTL" not in sys.modules:
        spec = importlib.util.find_spec("LibMTL")
        if spec is None or spec.submodule_search_locations is None:
            raise SystemExit("LibMTL is not installed: .venv/bin/pip install -c constraints.txt -e .[bench]")
        package = types.ModuleType("LibMTL")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["LibMTL"] = package
    return getattr(importlib.import_module(f"LibMTL.weighting.{name}"), name)


def libmtl_model(weighting: str, hps: nn.Module, T: int, device: torch.device) -> nn.Module:
    """The HPS model as LibMTL's trainer builds its `MTLmodel`: architecture and weighting in one module."""
    base = libmtl_weighting(weighting)

    class MTLModel(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.hps = hps
            self.task_num, self.device, self.rep_grad = T, device, False
            self.task_name = [str(t) for t in range(T)]
            self.init_param()

        def get_share_params(self):
            return iter(self.hps.shared_parameters())

        def zero_grad_share_params(self) -> None:
            for p in self.hps.shared_parameters():  # torch-1.8 `zero_grad()`: in place (see the module doc)
                if p.grad is not None:
                    p.grad.detach_().zero_()

    return MTLModel().to(device)


class LibMTLRunner:
    def __init__(self, name: str, kind: str, T: int, device: torch.device) -> None:
        weighting, self.kwargs = PAIRS[name]
        hps, self.batch = step_cost.make_setup(kind, T, device)
        self.model = libmtl_model(weighting, hps, T, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.device, self.T = device, T

    def timed_step(self) -> timing.Stopwatch:
        x, targets = self.batch
        with timing.Stopwatch(lambda: step_cost.sync(self.device)) as watch:
            _, outputs = self.model.hps(x)
            losses = torch.zeros(self.T, device=self.device)  # LibMTL's trainer: train_losses[tn] = loss
            for t, (out, y) in enumerate(zip(outputs, targets, strict=True)):
                losses[t] = ((out.squeeze(-1) - y) ** 2).mean()
            self.optimizer.zero_grad()
            self.model.backward(losses, **self.kwargs)
            self.optimizer.step()
        return watch


def compare(name: str, kind: str, T: int, device: torch.device, warmup: int, repeats: int) -> dict:
    ours, theirs = step_cost.Runner(name, kind, T, device), LibMTLRunner(name, kind, T, device)
    times: dict[str, list[float]] = {f"{who}_{clock}": [] for who in ("project", "libmtl") for clock in ("cpu", "wall")}
    for round_ in range(warmup + repeats):
        for label, runner in (("project", ours), ("libmtl", theirs)):
            watch = runner.timed_step()
            if round_ >= warmup:
                times[f"{label}_cpu"].append(watch.cpu)
                times[f"{label}_wall"].append(watch.wall)
    out: dict = {"raw_s": times}
    for clock in ("cpu", "wall"):
        own, lib = times[f"project_{clock}"], times[f"libmtl_{clock}"]
        out[f"project_{clock}_ms"] = timing.summary(own, 1e3)
        out[f"libmtl_{clock}_ms"] = timing.summary(lib, 1e3)
        out[f"libmtl_over_project_{clock}"] = timing.summary([b / a for a, b in zip(own, lib, strict=True)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the BENCHMARKS.md table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tasks", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--models", nargs="+", default=["conv", "mlp"], choices=["mlp", "conv"])
    parser.add_argument("--strategies", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--jacobian", default="auto", choices=step_cost.jac.METHODS,
                        help="force the project's per-task Jacobian method (default: the rule)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report: dict = {"environment": timing.environment(), "libmtl": importlib.metadata.version("LibMTL"),
                    "jacobian": args.jacobian, "repeats": args.repeats, "results": {}}
    with step_cost.forced_method(args.jacobian):
        for kind in args.models:
            for T in args.tasks:
                for name in args.strategies:
                    if T != 3 and PAIRS[name][0] in ONLY_THREE_TASKS:
                        continue
                    key = f"{kind}/T={T}/{name}"
                    report["results"][key] = r = compare(name, kind, T, device, args.warmup, args.repeats)
                    if not args.markdown:
                        print(f"{key:22s} CPU: project {timing.fmt(r['project_cpu_ms']):>22s} ms  LibMTL "
                              f"{timing.fmt(r['libmtl_cpu_ms']):>22s} ms  LibMTL/project "
                              f"{timing.fmt(r['libmtl_over_project_cpu'])}; wall ratio "
                              f"{timing.fmt(r['libmtl_over_project_wall'])}", flush=True)
    report["environment"]["load_average_after"] = list(__import__("os").getloadavg())
    path = timing.save(report, "libmtl_compare")
    if args.markdown:
        print(timing.describe(report["environment"]), f"LibMTL {report['libmtl']}\n")
        print("| model / T / strategy | project CPU ms | LibMTL CPU ms | LibMTL / project (CPU) | "
              "LibMTL / project (wall) |")
        print("| --- | --- | --- | --- | --- |")
        for key, r in report["results"].items():
            print(f"| {key} | {timing.fmt(r['project_cpu_ms'])} | {timing.fmt(r['libmtl_cpu_ms'])} | "
                  f"{timing.fmt(r['libmtl_over_project_cpu'])} | {timing.fmt(r['libmtl_over_project_wall'])} |")
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
