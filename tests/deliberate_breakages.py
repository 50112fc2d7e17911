"""Break each strategy on purpose, the ways issue 11 lists (and a few more), and check that a test fails.

    .venv/bin/python tests/deliberate_breakages.py [--only NAME] [--json PATH]

Each breakage is one textual edit of one source file. The script copies the package and the tests to a
temporary directory (the work tree is never touched), applies one edit at a time there, runs the named tests
against the copy, and reports which test caught it. Exit status 1 if any breakage goes unnoticed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Breakage:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids or files, relative to the root (with -k via "file::k=expr")


S = "tune_mtl/strategies/"
REF = "tests/test_strategies_references.py"
PROPS = "tests/test_strategy_properties.py"
OWN = "tests/test_strategy_ranges.py::k=not only_that_strategys"  # the Ray search is covered by its own run
BREAKAGES = [
    Breakage("gradnorm objective replaced (squared instead of L1)", S + "gradnorm.py",
             "return (G - target).abs().sum()", "return (G - target).pow(2).sum()", (REF,)),
    Breakage("sdmgrad weight optimisation removed", S + "sdmgrad.py",
             "for _ in range(self.knobs.niter):", "for _ in range(0):", (REF,)),
    Breakage("sdmgrad momentum restarted every step", S + "sdmgrad.py",
             "velocity = self.velocity\n", "velocity = None\n", (REF,)),
    Breakage("forum replaced by the uniform step", S + "forum.py",
             "jac.write_grads(params, direction[T:])", "jac.write_grads(params, g_f[T:] * T)", (REF,)),
    Breakage("mgda-ub computes MGDA on the parameters", S + "mgda.py",
             "J = jac.task_jacobian(task_losses, [ctx.representation], retain_graph=True)",
             "J = jac.task_jacobian(task_losses, ctx.shared_params, retain_graph=True)", (REF,)),
    Breakage("nashmtl update_weights_every ignored", S + "nashmtl.py",
             "update = self.updates % self.knobs.update_weights_every == 0", "update = True", (REF,)),
    Breakage("nashmtl max_norm ignored", S + "nashmtl.py", "if self.knobs.max_norm > 0:", "if False:", (REF,)),
    Breakage("nashmtl solved on the normalised Gramian (old scale)", S + "nashmtl.py",
             "max_iter=self.knobs.optim_niter) / root", "max_iter=self.knobs.optim_niter)", (REF,)),
    Breakage("moml upper: mgda ignored", S + "moml.py", 'if self.knobs.upper == "mgda":', "if False:", (REF,)),
    Breakage("cagrad rescale 1 and 2 swapped", S + "cagrad.py",
             "(1.0, 1.0 + self.knobs.alpha**2, 1.0 + self.knobs.alpha)",
             "(1.0, 1.0 + self.knobs.alpha, 1.0 + self.knobs.alpha**2)", (REF,)),
    Breakage("slgrad lookahead ignored", S + "slgrad.py", "if not self.knobs.lookahead:", "if True:",
             ("tests/test_slgrad.py",)),
    Breakage("imtl-h does not scale the losses", S + "imtl.py",
             "task_losses = s.detach().exp().to(task_losses.dtype) * task_losses", "task_losses = task_losses",
             (REF,)),
    Breakage("imtl log-scale gradient in the losses' dtype", S + "imtl.py",
             "task_losses.detach().to(s.dtype) - 1", "task_losses.detach() - 1", (REF,)),
    Breakage("gcosim weighted variant ignored", S + "gcosim.py",
             "gates = cosine_gates(J, self.knobs.weighted)", "gates = cosine_gates(J, False)", (REF,)),
    Breakage("gramian formed in float32", S + "base.py", "    J = jacobian.double()\n", "    J = jacobian\n",
             (REF,)),
    Breakage("look-ahead forwards move the real batch-norm buffers", S + "stochastic_moo.py",
             "        module._buffers[name] = buf.clone()\n", "        module._buffers[name] = buf\n",
             ("tests/test_models_x_strategies.py::k=moml or forum",)),
    Breakage("famo re-evaluation moves batch-norm statistics", S + "famo.py",
             "after = jac.functional_losses(ctx.model, ctx.compute_losses, batch, {}).mean(dim=1)",
             "after = ctx.compute_losses(batch).mean(dim=1)",
             ("tests/test_models_x_strategies.py::k=batch_norm_statistics and famo",)),
    Breakage("pcgrad draws its order from the global generator", S + "pcgrad.py",
             "pcgrad_coefficients(gramian, self.generator)", "pcgrad_coefficients(gramian)",
             (PROPS + "::k=global_random_generator and pcgrad",)),
    Breakage("the random stream left out of the checkpoint", S + "base.py",
             "for p in self.parameters()], **self.random_state()}", "for p in self.parameters()]}",
             (PROPS + "::k=checkpoint_round_trip and (random or pcgrad or graddrop)",)),
    Breakage("setup ignores the trial seed", S + "base.py",
             "torch.Generator(device=device).manual_seed(seed)", "torch.Generator(device=device).manual_seed(0)",
             (PROPS + "::k=trial_seed",)),
    Breakage("learned weights lose Adam's moments when moved", S + "learned_weights.py",
             "self._rebuild(self.values.to(device, dtype), self.optimizer.state_dict())",
             "self._rebuild(self.values.to(device, dtype), None)",
             ("tests/test_strategies_weighting.py::k=learned_weights",)),
    # per_strategy: a strategy's own range for a shared key (tests/test_strategy_ranges.py)
    Breakage("own range: a strategy's study ignores its own values", "tune_mtl/search/categorical_space.py",
             "self.shared = SharedRanges(spec, strategy)", "self.shared = SharedRanges(spec)", (OWN,)),
    Breakage("own range: categorical mode shares the name of an own range", "tune_mtl/search/categorical_space.py",
             'SharedRanges(spec, s, own_prefix=f"{s}/")', "SharedRanges(spec, s)", (OWN,)),
    Breakage("own range: paired start-up keeps the shared draw", "tune_mtl/search/categorical_space.py",
             "carried[name] = value_at(own, where)", "carried[name] = draw.get(name, value_at(own, where))", (OWN,)),
    Breakage("own range: discrete position without its jitter", "tune_mtl/search/unit_cube.py",
             "point = cell_low + jitter * (cell_high - cell_low)", "point = (cell_low + cell_high) / 2", (OWN,)),
    Breakage("own range: logint positioned on a linear scale", "tune_mtl/search/unit_cube.py",
             'if kind in ("loguniform", "logint"):', 'if kind == "loguniform":', (OWN,)),
    Breakage("own range: epochs allowed per strategy", "tune_mtl/search/spec.py",
             'SAME_FOR_EVERY_STRATEGY = {("training", "epochs"):', 'SAME_FOR_EVERY_STRATEGY = {("training", "-"):',
             (OWN,)),
    Breakage("own range: the summary table drops the disclosure", "tune_mtl/reporting/summary.py",
             'lines += [f"- {line}" for line in disclosure_lines(summary["own_ranges"])]', "pass", (OWN,)),
    Breakage("own range: a real search's summary drops the disclosure", "tune_mtl/reporting/summary.py",
             'summary["own_ranges"] = own', "pass", ("tests/test_strategy_ranges.py::k=only_that_strategys",)),
    # Issue 10: the verdict in W&B, and the final stage through a Ctrl-C and a driver kill.
    Breakage("verdict W&B: the summary is not logged", "tune_mtl/search/verdict_wandb.py",
             '    run.summary.update(given["summary"])', "    pass", ("tests/test_verdict_wandb.py",)),
    Breakage("verdict W&B: logging again adds a second run", "tune_mtl/search/verdict_wandb.py",
             "            if older != folder:", "            if False:", ("tests/test_verdict_wandb.py",)),
    Breakage("verdict W&B: the search does not log it", "tune_mtl/search/engine.py",
             "        log_verdict(spec, run, verdict, summary.get(\"own_ranges\") or {})", "        pass",
             ("tests/test_search_e2e.py::k=two_strategies",)),
    Breakage("final stage: a resume re-runs its finished trials", "tune_mtl/search/final_stage.py",
             "        if tune.Tuner.can_restore(path):", "        if False:", ("tests/test_final_stage_resume.py",)),
    Breakage("torch-free driver: torch imported at the top of the trainable module", "tune_mtl/search/trainable.py",
             "from tune_mtl.core.keys import AT_SCORE",
             "import torch  # noqa: F401\nfrom tune_mtl.core.keys import AT_SCORE",
             ("tests/test_torch_free_driver.py::k=validation_path",)),
    Breakage("declarations: IMTL-L declared as needing shared parameters", "tune_mtl/strategies/declarations.py",
             'return knobs.mode != "loss"', "return True",
             ("tests/test_registries.py::k=knobs",)),
    Breakage("declarations: the MLP declared without its sequential encoder", "tune_mtl/models/declarations.py",
             'mlp:build",\n    sequential_encoder=True,', 'mlp:build",\n    sequential_encoder=False,',
             ("tests/test_registries.py::k=tells_the_truth",)),
    Breakage("a stopped trial's ending not waited for", "tune_mtl/search/ray_adapter.py",
             "                threading.Thread.join(thread, timeout_s)", "                pass",
             ("tests/test_ray_adapter.py::k=stopped_trial",)),
    Breakage("a cut experiment state not put back on resume", "tune_mtl/search/engine.py",
             "        put_back_cut_states(experiment_path)", "        pass",
             ("tests/test_experiment_state.py::k=killed",)),
    Breakage("final stage: a Ctrl-C marks it finished", "tune_mtl/search/final_stage.py",
             "        if missing:", "        if False:", ("tests/test_final_stage_resume.py",)),
    Breakage("a resumed trial's re-run epoch: the first row kept, not the re-run's", "tune_mtl/reporting/summary.py",
             "            latest[epoch] = row", "            latest.setdefault(epoch, row)",
             ("tests/test_report.py::k=resumed_trial",)),
    Breakage("background reports: Tune's stop never asked for", "tune_mtl/search/background_reports.py",
             "        return self._stopped.is_set() or (self._tune_stop is not None and self._tune_stop.is_set())",
             "        return False", ("tests/test_background_reports.py",)),
    Breakage("background reports: a report's error swallowed", "tune_mtl/search/background_reports.py",
             "            self._error = err", "            pass", ("tests/test_background_reports.py",)),
    Breakage("trainer: should_stop ignored during the epoch", "tune_mtl/training/trainer.py",
             "            if should_stop is not None and should_stop():\n                raise EpochInterrupted",
             "            if False:\n                raise EpochInterrupted", ("tests/test_trainer.py::k=stop",)),
    Breakage("W&B opened in the background: close not passed on", "tune_mtl/search/tracking.py",
             "    def close(self) -> None:\n        self._opened().close()",
             "    def close(self) -> None:\n        self._opened()", ("tests/test_tracking.py::k=background",)),
    Breakage("local Ray: its idle API server and monitor started again", "tune_mtl/search/cluster.py",
             "        with ray_adapter.local_ray_without_idle_services():",
             "        if True:", ("tests/test_ray_adapter.py::k=idle_api",)),
    Breakage("driver: Tune's callback telemetry (and wandb with it) imported again", "tune_mtl/search/experiment.py",
             "    ray_adapter.without_callback_telemetry()  # nor wandb", "    pass",
             ("tests/test_torch_free_driver.py::k=search_and_its_report",)),
    Breakage("a retried trial: the run folder's older log put back over the driver's", "tune_mtl/search/ray_adapter.py",
             "local.stat().st_size >= synced.size", "False", ("tests/test_ray_adapter.py::k=retried_trial",)),
    Breakage("the search logs through Ray's own loggers", "tune_mtl/search/experiment.py",
             "callbacks=[*callbacks, *ray_adapter.loggers_keeping_the_driver_s_own_log()]", "callbacks=callbacks",
             ("tests/test_ray_adapter.py::k=those_loggers",)),
]


def pytest_args(spec: str) -> list[str]:
    if "::k=" in spec:
        path, expr = spec.split("::k=")
        return [path, "-k", expr]
    return [spec]


def run_breakage(copy_root: Path, b: Breakage) -> dict:
    target = copy_root / b.path
    original = target.read_text()
    if original.count(b.old) != 1:
        return {"name": b.name, "caught": False, "by": f"edit does not apply ({original.count(b.old)} matches)"}
    target.write_text(original.replace(b.old, b.new))
    try:
        args = [arg for spec in b.tests for arg in pytest_args(spec)]
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
            cwd=copy_root, capture_output=True, text=True, timeout=900,
            env={"PYTHONPATH": str(copy_root), "PATH": "/usr/bin:/bin", "HOME": str(copy_root)},
        )
    finally:
        target.write_text(original)
    failed = [line.split(" ")[1] for line in proc.stdout.splitlines() if line.startswith("FAILED ")]
    # 1: tests ran and failed; anything else (2: collection error, 4: bad arguments) proves nothing
    return {"name": b.name, "caught": proc.returncode == 1, "by": failed[0] if failed else proc.stdout[-200:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the breakages whose name contains this text")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    chosen = [b for b in BREAKAGES if not args.only or args.only in b.name]
    with tempfile.TemporaryDirectory(prefix="breakages-") as tmp:
        copy_root = Path(tmp)
        shutil.copytree(ROOT / "tune_mtl", copy_root / "tune_mtl", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", copy_root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", copy_root / "pyproject.toml")
        check = subprocess.run([sys.executable, "-c", "import tune_mtl; print(tune_mtl.__file__)"], cwd=copy_root,
                               capture_output=True, text=True, env={"PYTHONPATH": str(copy_root)})
        if not check.stdout.startswith(str(copy_root)):
            raise SystemExit(f"the copy is not the imported package: {check.stdout or check.stderr}")
        results = []
        for b in chosen:
            result = run_breakage(copy_root, b)
            results.append(result)
            print(f"{'caught ' if result['caught'] else 'MISSED '} {b.name:55s} {result['by']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
