"""Command line behind `launch.py`: `search` (the default), `report`, `dashboard`, `strategies`, `datasets`,
`prepare`.

Every user error ends with exit code 2 and one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from tune_mtl.core.errors import UserError

if TYPE_CHECKING:  # the commands import their layers when they run, to keep `launch.py --help` fast
    from tune_mtl.search.engine import RunOptions
    from tune_mtl.search.spec import SearchSpec
    from tune_mtl.storage.run_folder import RunFolder

SUBCOMMANDS = ("search", "report", "dashboard", "strategies", "datasets", "prepare")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage + message)
        raise UserError(message)


Number = TypeVar("Number", int, float)


def _number(kind: type[Number], low: float, what: str, high: float | None = None) -> Callable[[str], Number]:
    """An argparse type: a finite `kind(text)` in [low, high], else one sentence naming the value."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not math.isfinite(value):  # NaN passes every comparison below, and Ray then waits for it forever
            raise argparse.ArgumentTypeError(f"expected {what} (a finite number), got '{text}'")
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {kind(low)}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {kind(high)}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_non_negative_int = _number(int, 0, "a non-negative integer")
_non_negative_float = _number(float, 0, "a number")
_seed = _number(int, 0, "an integer seed", high=2**32 - 1)  # numpy and torch take 32-bit seeds


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="launch.py",
        description="Distributed hyperparameter search for multi-task learning (Ray Tune + Optuna + W&B). "
        "Without a subcommand, runs `search` on search_spaces/toy.yaml.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    search = sub.add_parser("search", help="run a hyperparameter search (default)")
    search.add_argument("--config", help="search-space YAML (default: search_spaces/toy.yaml)")
    search.add_argument("--strategies", help="comma-separated strategy names (overrides the YAML)")
    search.add_argument("--num-samples", type=_positive_int, help="trials per strategy")
    search.add_argument("--epochs", type=_positive_int, help="training epochs per trial")
    search.add_argument("--seed", type=_seed, help="seed of the sampler and of every trial")
    search.add_argument("--scheduler", choices=("asha", "hyperband", "pbt", "fifo"),
                        help="asha (default), hyperband, pbt (evolves the learning rate) or fifo (no early stopping)")
    search.add_argument("--objectives", help="multi-objective search over validation metrics, e.g. "
                        "task0/mse,task1/mse (reports the Pareto front; runs FIFO)")
    search.add_argument("--final-seeds", type=_non_negative_int,
                        help="after the search, re-train each strategy's best configuration with this many fresh "
                             "seeds for the verdict table (default: search.final.seeds, 3; 0 skips it)")
    search.add_argument("--strategy-mode", choices=("separate", "categorical"),
                        help="separate (default): one study per strategy; categorical: one study that searches "
                             "the strategy and its knobs")
    search.add_argument("--resume", metavar="RUN_DIR", help="finish the search of RUN_DIR after a crash (its "
                        "saved search space and options are used; only --address/--optuna-storage/--wandb-mode "
                        "may be given again)")
    search.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: local Ray")
    search.add_argument("--storage-path", default="runs",
                        help="where run folders go: a folder (NFS on a cluster) or a URL such as s3://bucket/runs "
                             "(default: ./runs)")
    search.add_argument("--optuna-storage", help="Optuna RDB URL, e.g. postgresql://user:pw@host/db "
                        "(default: $TUNE_MTL_OPTUNA_STORAGE, else SQLite in the run folder); a password here is "
                        "visible to `ps`: prefer --optuna-storage-file, the variable, or PGPASSWORD/~/.pgpass")
    search.add_argument("--optuna-storage-file", metavar="FILE",
                        help="read the Optuna RDB URL (with its password) from the first line of FILE")
    search.add_argument("--name", help="run folder name (default: search-<timestamp>)")
    search.add_argument("--cpus-per-trial", type=_non_negative_float, help="CPUs each trial reserves")
    search.add_argument("--gpus-per-trial", type=_non_negative_float, help="GPUs each trial reserves (0.25 packs 4)")
    search.add_argument("--max-concurrent-trials", type=_non_negative_int, help="cap on trials running at once")
    search.add_argument("--wandb-mode", choices=("online", "offline", "disabled"),
                        help="default: online if WANDB_API_KEY is set, else offline")
    search.add_argument("--wandb-project", default="tune-mtl", help="W&B project name")
    search.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    search.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: Ray Tune's own status tables and logs as well (-vv: more)")

    report = sub.add_parser("report", help="summary table and plots of a run folder (also after a crash)")
    report.add_argument("run_dir", metavar="RUN_DIR")

    dashboard = sub.add_parser("dashboard", help="start TensorBoard and optuna-dashboard on a run folder "
                               "(127.0.0.1, free ports; Ctrl-C stops both)")
    dashboard.add_argument("run_dir", metavar="RUN_DIR")
    dashboard.add_argument("--optuna-storage", help="the run's Optuna RDB URL with its password (only for a run "
                           "whose --optuna-storage had one; it is never saved)")

    for name, what in (("strategies", "task-weighting strategies"), ("datasets", "data sets")):
        listing = sub.add_parser(name, help=f"list the {what}")
        listing.add_argument("--json", action="store_true", help="machine-readable output")

    prepare = sub.add_parser("prepare", help="download (where possible) and check a data set's files")
    prepare.add_argument("dataset")
    prepare.add_argument("--root", required=True, help="folder the data set lives in")
    prepare.add_argument("--download", action="store_true", help="download what torchvision can (needs internet)")
    return parser


def _print_strategies(as_json: bool) -> None:
    from tune_mtl import strategies

    rows = strategies.catalogue()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        aliases = f" (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        print(f"{row['name']}{aliases} [{row['family']}]: {row['summary']}")
        for knob, spec in row["hyperparameters"].items():
            print(f"    {knob} = {spec['default']!r} ({spec['type']}) {spec.get('help', '')}".rstrip())


def _print_datasets(as_json: bool) -> None:
    from tune_mtl import data

    rows = data.catalogue()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        print(f"{row['name']}: {row['description']}")
        for key, spec in row["options"].items():
            print(f"    {key} = {spec['default']!r} ({spec['type']}) {spec['help']}".rstrip())


RESUME_KEEPS = ("config", "strategies", "num_samples", "epochs", "seed", "cpus_per_trial", "gpus_per_trial",
                "max_concurrent_trials", "scheduler", "objectives", "strategy_mode", "name")


def _search(args: argparse.Namespace) -> int:
    from tune_mtl.search.cluster import disconnect

    try:
        return _run_search(args)
    finally:
        disconnect()  # after the last line is printed: the user sees the results before Ray stops


def _run_search(args: argparse.Namespace) -> int:
    from tune_mtl.search.engine import RunOptions, resume_search, run_search
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import check_storage_path, default_run_name, local_folder, open_run
    from tune_mtl.storage.secrets import optuna_storage_url

    options = RunOptions(
        storage_path=args.storage_path,
        name=args.name,  # a resumed run keeps its saved name (a --name here is refused below)
        address=args.address,
        wandb_mode=args.wandb_mode,
        wandb_project=args.wandb_project,
        verbose=0 if args.quiet else 1 + args.verbose,
        optuna_storage=optuna_storage_url(args.optuna_storage, args.optuna_storage_file),
    )
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in RESUME_KEEPS if getattr(args, k) is not None]
        if given:
            raise UserError(f"--resume continues a search with its saved settings; leave out {', '.join(given)}")
        run = open_run(args.resume)
        run.check_resumable()  # a damaged run is one sentence, before Ray starts
        if not run.optuna_storage and not (args.optuna_storage or args.optuna_storage_file):
            options.optuna_storage = None  # its own SQLite study, whatever $TUNE_MTL_OPTUNA_STORAGE says
        _check_optuna_storage(options.optuna_storage)
        summary = _storage_failures_as_sentences(lambda: resume_search(args.resume, options), run.path, options)
    else:
        overrides: dict[str, Any] = {
            "strategies": args.strategies,
            "num_samples": args.num_samples,
            "epochs": args.epochs,
            "seed": args.seed,
            "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": args.gpus_per_trial,
            "max_concurrent_trials": args.max_concurrent_trials,
            "scheduler": args.scheduler,
            "objectives": args.objectives,
            "strategy_mode": args.strategy_mode,
            "final_seeds": args.final_seeds,
        }
        spec = load_spec(args.config, overrides)
        check_storage_path(args.storage_path)
        _check_optuna_storage(options.optuna_storage)
        name: str = args.name or default_run_name()
        options.name = name  # known before the search starts, for the failure hint
        folder = local_folder(args.storage_path, name)
        summary = _storage_failures_as_sentences(lambda: run_search(spec, options), folder, options)
    _print_summary(summary)
    return 0


def _check_optuna_storage(url: str | None) -> None:
    """Driver installed and server answering, before Ray starts (the default SQLite study needs neither)."""
    if url:
        from tune_mtl.storage.database import check_optuna_url

        check_optuna_url(url)


def _storage_failures_as_sentences(search: Callable[[], dict[str, Any]], folder: Path,
                                   options: RunOptions) -> dict[str, Any]:
    """Run `search()`; a full disk or a lost database mid-search becomes one sentence (exit 2) that says how to
    continue, instead of the traceback of whichever layer noticed it."""
    from tune_mtl.storage.failures import failure_sentence, quiet_tune_storage_failures
    from tune_mtl.storage.run_folder import default_storage_url
    from tune_mtl.storage.secrets import mask_url

    quiet_tune_storage_failures()
    try:
        return search()
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:
        url = mask_url(options.optuna_storage) if options.optuna_storage else default_storage_url(folder)
        sentence = failure_sentence(err, str(folder), url)
        if sentence is None:
            raise
        raise UserError(sentence) from None


def _print_summary(summary: dict[str, Any]) -> None:
    from tune_mtl.reporting.summary import format_locations, format_table, format_verdict

    objective = summary["objective"]
    print(f"\nBest configuration per strategy (objective: validation {objective['metric']} of task "
          f"'{objective['task']}', {objective['mode']}imised; test value at the best validation epoch):")
    print(format_table(summary))
    print()
    print(format_verdict(summary), end="")
    print(format_locations(summary))


def _report(args: argparse.Namespace) -> int:
    from tune_mtl.reporting.plots import write_plots
    from tune_mtl.reporting.summary import load_trials, summarise_run, write_summary
    from tune_mtl.search.experiment import EXPERIMENT
    from tune_mtl.search.final_stage import verdict_for_run
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import OPTUNA_DB, SPEC_FILE, open_run

    try:
        run = open_run(args.run_dir)
        spec = load_spec(run.path / SPEC_FILE)
    except UserError as damaged:  # run.json unreadable: report what the trial folders still hold
        run, spec = _readable_part(args.run_dir, damaged)
    if not run.optuna_storage and not (run.path / OPTUNA_DB).is_file():
        print(f"note: '{run.path / OPTUNA_DB}' is missing: no parameter importances", file=sys.stderr)
        run.studies = {}  # reading a missing SQLite study would create an empty one
    rows = load_trials(run.experiment(EXPERIMENT))
    summary = summarise_run(run, rows)
    verdict = verdict_for_run(spec, run, rows)
    if verdict:  # the run has a final stage
        summary["verdict"] = verdict
    write_summary(summary, run)
    _print_summary(summary)
    plots, skipped = write_plots(summary, run)
    print("\nplots:\n" + "\n".join(f"  {p}" for p in plots))
    for reason in skipped:
        print(f"  (skipped: {reason})")
    return 0


def _readable_part(run_dir: str, damaged: UserError) -> tuple[RunFolder, SearchSpec]:
    """A run whose run.json is damaged, rebuilt from its search space (the objective is re-derived from it);
    without the search space there is nothing to report against, and the original sentence stands."""
    from tune_mtl.search.plan import resolve_search_objective
    from tune_mtl.search.spec import load_spec
    from tune_mtl.storage.run_folder import SPEC_FILE, partial_run

    path = Path(run_dir).expanduser().resolve()
    if not (path / SPEC_FILE).is_file():
        raise damaged
    spec = load_spec(path / SPEC_FILE)
    run = partial_run(path)
    run.objective = resolve_search_objective(spec)
    print(f"note: {damaged}; reporting what is readable", file=sys.stderr)
    return run, spec


def run() -> NoReturn:
    """The console entry point (`launch.py`, `python -m tune_mtl`, `tune-mtl`): `main`, then a prompt exit."""
    exit_promptly(main())


def exit_promptly(code: int) -> NoReturn:
    """Exit with `code` once everything an exit owes is done, without the interpreter's module teardown.

    What an orderly exit does that matters is kept: other non-daemon threads are joined and every `atexit`
    handler runs (logging's flush, a W&B run's finish, Ray's shutdown if still connected). What is skipped is
    the finalisation of every imported module, which writes nothing and took 1.5-1.9 s after a search (torch's
    and Ray's extension modules; measured on the 2-core machine, BENCHMARKS.md): every result is on disk
    and every line printed before it would start."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # the interpreter's own exit sequence, minus the teardown os._exit skips
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that left, or a stream already closed
            pass
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["search", *argv]
    try:
        args = build_parser().parse_args(argv)
        if args.command == "strategies":
            _print_strategies(args.json)
        elif args.command == "datasets":
            _print_datasets(args.json)
        elif args.command == "report":
            return _report(args)
        elif args.command == "dashboard":
            from tune_mtl.reporting.dashboard import serve

            return serve(args.run_dir, args.optuna_storage)
        elif args.command == "prepare":
            from tune_mtl import data

            print(data.prepare(args.dataset, args.root, args.download))
        else:
            return _search(args)
        return 0
    except UserError as err:
        print(f"launch.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # the engine's SearchInterrupted says how to resume
        print(f"launch.py: interrupted{': ' + str(err) if str(err) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `launch.py datasets | head -1`: the reader left; say nothing more, and keep Python's exit-time
        # flush of stdout from raising again (the documented recipe of the signal module).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
