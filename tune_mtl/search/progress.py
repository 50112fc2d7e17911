"""Terminal progress of a whole search: one line per finished trial and one live whole-search line.

The engine adds `progress_callbacks(...)` to its one Tuner's callbacks and runs Tune itself at verbose=0
unless the user asked for -v. What the user sees, by verbosity:
- 0 (-q): nothing while the search runs (the CLI prints the final table);
- 1 (default): a line per finished trial (name, score, epochs run, why it stopped, searched values) and a
  live line (trials done/running/total per strategy, best so far, elapsed, ETA), drawn with rich on a
  terminal, or printed as a plain line every PLAIN_STATUS_EVERY_S when stdout is a file or pipe (CI logs,
  `ray job submit`);
- 2 (-v): Tune's own status tables, unchanged (this module adds nothing).

What else is kept off the terminal, at its source, below -v:
- Tune's own reporter: even at verbose=0 Ray 2.60's default ("new") output prints a "Configuration for
  experiment" box and a "tensorboard --logdir" hint that points at Ray's temporary session folder, not at the
  run folder (`launch.py dashboard RUN_DIR` is the right command). `progress_callbacks` selects Tune's legacy
  reporter (RAY_AIR_NEW_OUTPUT=0), which prints nothing at verbose=0.
- Python log records of `ray.tune.tune` below WARNING ("Wrote the latest version of all result files ...") and
  its ERROR "Trials did not complete: [<Tune ids>]": the trial lines and the final table already name every
  failed trial and its reason (`QuietTuneLogs`).
- The full traceback Tune logs for every failed trial attempt (TUNE_PRINT_ALL_TRIAL_ERRORS=0): the trial's
  line gives the exception's last line and the path of its error.txt.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from ray.tune import Callback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

from tune_mtl.core.keys import DIVERGED, FAILURE_REASON, SCORE, SCORE_EPOCH, TRACKING, TRIAL_NAME

PLAIN_STATUS_EVERY_S = 30.0  # a log file gets the whole-search line this often (and at every finished trial)
EPOCHS = "training_iteration"  # Tune counts one iteration per reported epoch
TUNE_LOGGER = "ray.tune.tune"
NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"  # "0": Tune's legacy reporter, silent at verbose=0
TRIAL_ERRORS_ENV = "TUNE_PRINT_ALL_TRIAL_ERRORS"  # "0": no traceback per failed trial (its line names the file)
# Config entries that are bookkeeping, not searched values (never shown as a trial's parameters).
NOT_PARAMETERS = (TRIAL_NAME, TRACKING)


# -- what the terminal shows of one trial ----------------------------------------------------------------
@dataclass
class TrialView:
    name: str  # "<strategy>-<n>"
    experiment: str  # the budget key it counts against: a strategy name, or 'categorical'
    strategy: str
    status: str  # Tune's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    epochs_run: int = 0
    score: float | None = None  # best validation objective so far (keys.SCORE)
    score_epoch: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the searched values, flattened ("optimizer/lr")
    diverged: str | None = None  # the failure reason of a diverged trial
    error: str | None = None  # the last line of a trial's error, once Tune gave up on it

    @property
    def finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


def experiment_of(name: str, budget: dict[str, int]) -> str:
    """The budget key of trial `name` ("uniform-3" -> "uniform"; a categorical search's trials -> 'categorical')."""
    prefix = name.rsplit("-", 1)[0]
    if prefix in budget or len(budget) != 1:
        return prefix
    return next(iter(budget))


def view_of(trial: Trial, budget: dict[str, int]) -> TrialView:
    """A Tune `Trial` as the terminal shows it."""
    config, result = trial.config or {}, trial.last_result or {}
    name = config.get(TRIAL_NAME) or str(trial)
    strategy = (config.get("strategy") or {}).get("name") or name.rsplit("-", 1)[0]
    score = result.get(SCORE, None)
    return TrialView(
        name=name,
        experiment=experiment_of(name, budget),
        strategy=strategy,
        status=trial.status,
        epochs_run=int(result.get(EPOCHS, 0) or 0),
        score=None if score is None or not math.isfinite(score) else float(score),
        score_epoch=result.get(SCORE_EPOCH),
        params={k: v for k, v in (trial.evaluated_params or {}).items()
                if k.split("/")[0] not in NOT_PARAMETERS and k != "strategy/name"},
        diverged=(result.get(FAILURE_REASON) or "loss not finite") if result.get(DIVERGED) else None,
    )


def last_error_line(trial: Trial) -> str:
    """The last line of the trial's error text (Ray wraps the exception; its last line names the cause) and
    where the whole traceback is (Tune's own traceback print is off below -v)."""
    text = ""
    try:  # Tune writes error.txt in the driver's staging folder first and syncs it to storage later
        if trial.error_file and os.path.exists(trial.error_file):
            with open(trial.error_file, errors="replace") as file:
                text = file.read()
        else:
            text = str(trial.get_error() or "")
    except Exception:  # storage gone or unreadable: the status still says the trial failed
        pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no error file)"
    return f"{lines[-1]} (traceback: {trial.path}/{trial.run_metadata.error_filename})"


def why_stopped(view: TrialView, epochs: int, scheduler: str) -> str:
    if view.error is not None:
        return f"error: {view.error}"
    if view.diverged is not None:
        return f"diverged: {view.diverged}"
    if view.epochs_run < epochs:
        return f"stopped early by {scheduler}"
    return "completed"


def format_value(value: Any) -> str:
    # 4 digits: a beta2 drawn from [0.99, 0.9999] must not print as 1
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_params(params: dict[str, Any]) -> str:
    """`optimizer/lr` -> `lr=0.0123`; the section is dropped unless two sections share a key."""
    short = [key.rsplit("/", 1)[-1] for key in params]
    return " ".join(f"{s if short.count(s) == 1 else key}={format_value(v)}"
                    for s, (key, v) in zip(short, params.items(), strict=True))


def format_score(score: float | None) -> str:
    return "-" if score is None else f"{score:.5g}"


def trial_line(view: TrialView, epochs: int, scheduler: str) -> str:
    """`uniform-3  score 0.04704 (epoch 3)  3/3 epochs  completed  lr=0.0266 beta1=0.92`"""
    at = f" (epoch {view.score_epoch})" if view.score is not None and view.score_epoch else ""
    strategy = "" if view.name.rsplit("-", 1)[0] == view.strategy else f" [{view.strategy}]"
    parts = [f"{view.name}{strategy}", f"score {format_score(view.score)}{at}", f"{view.epochs_run}/{epochs} epochs",
             why_stopped(view, epochs, scheduler)]
    params = format_params(view.params)
    return "  ".join(parts + ([params] if params else []))


# -- the whole search ------------------------------------------------------------------------------------
def best_trial(views: list[TrialView], mode: str) -> TrialView | None:
    scored = [v for v in views if v.score is not None]
    if not scored:
        return None
    pick = min if mode == "min" else max
    return pick(scored, key=lambda v: v.score if v.score is not None else math.nan)


def eta_seconds(views: list[TrialView], budget: dict[str, int], epochs: int, elapsed: float) -> float | None:
    """Seconds left at the pace so far, counting work in trial-epochs: a finished trial counts as its whole
    `epochs` (a trial stopped early frees the rest of its slot), a running one as the epochs it has run.
    None before the first epoch ends."""
    total = sum(budget.values()) * epochs
    done = sum(epochs if v.finished else min(v.epochs_run, epochs) for v in views)
    if done <= 0 or elapsed <= 0:
        return None
    return elapsed * max(total - done, 0) / done


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def status_line(views: list[TrialView], budget: dict[str, int], epochs: int, mode: str, elapsed: float) -> str:
    """`uniform 6/6 | pcgrad 2/6 (1 running) | best 0.047043 uniform-3 | 1:02 elapsed, ETA 2:48`"""
    counts = []
    for experiment in dict.fromkeys([*budget, *(v.experiment for v in views)]):
        mine = [v for v in views if v.experiment == experiment]
        done = sum(v.finished for v in mine)
        running = sum(v.status == "RUNNING" for v in mine)
        counts.append(f"{experiment} {done}/{budget.get(experiment, len(mine))}"
                      + (f" ({running} running)" if running else ""))
    best = best_trial(views, mode)
    eta = eta_seconds(views, budget, epochs, elapsed)
    clock = f"{format_duration(elapsed)} elapsed" + ("" if eta is None else f", ETA {format_duration(eta)}")
    return " | ".join(counts + [f"best {format_score(best.score)} {best.name}" if best else "best -", clock])


# -- where the lines go ----------------------------------------------------------------------------------
class PlainOutput:
    """Stdout that is not a terminal: whole lines only, the status line now and then."""

    def __init__(self, stream: IO[str] | None = None, every_s: float = PLAIN_STATUS_EVERY_S) -> None:
        self.stream, self.every_s, self.last_status = stream, every_s, -math.inf
        self.status_is_last = False  # the last line printed is a status line: the final one would repeat it

    def start(self, status: Callable[[], str]) -> None:
        self.status = status

    def print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def line(self, text: str) -> None:
        self.print(text)
        self.status_is_last = False

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_status >= self.every_s:
            self.last_status = now
            self.print(f"[search] {self.status()}")
            self.status_is_last = True

    def stop(self) -> None:
        if not self.status_is_last:
            self.tick(force=True)


class LiveOutput:
    """A terminal: trial lines scroll above one live whole-search line that rich redraws twice a second."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console

        self.console = console or Console()
        self.live: Live | None = None

    def start(self, status: Callable[[], str]) -> None:
        from rich.live import Live
        from rich.text import Text

        class StatusLine:  # re-rendered on each refresh, so that elapsed time and ETA move between events
            def __rich__(self) -> Text:
                return Text(status(), no_wrap=True, overflow="ellipsis", style="bold")

        self.status = status
        self.live = Live(StatusLine(), console=self.console, refresh_per_second=2, transient=True)
        self.live.start()

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def tick(self, force: bool = False) -> None:
        pass  # the Live thread redraws by itself

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            self.line(self.status())


def default_output() -> PlainOutput | LiveOutput:
    from rich.console import Console

    console = Console()
    return LiveOutput(console) if console.is_terminal and not console.is_dumb_terminal else PlainOutput()


# -- the Tune callback -----------------------------------------------------------------------------------
class QuietTuneLogs(logging.Filter):
    """Drops `ray.tune.tune` records a user cannot act on (INFO chatter; the failed-trials list, which the
    trial lines and the final table give with reasons); every other warning and error still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        return not str(record.msg).startswith("Trials did not complete")


def quiet_tune_logs() -> None:
    logger = logging.getLogger(TUNE_LOGGER)
    if not any(isinstance(f, QuietTuneLogs) for f in logger.filters):
        logger.addFilter(QuietTuneLogs())


class SearchProgress(Callback):
    """Prints the progress of a whole search. `output` None prints nothing (quiet)."""

    def __init__(self, budget: dict[str, int], epochs: int, mode: str, scheduler: str = "the scheduler",
                 output: PlainOutput | LiveOutput | None = None, show_params: bool = True) -> None:
        self.budget, self.epochs, self.mode, self.scheduler = dict(budget), epochs, mode, scheduler
        self.output = output
        self.show_params = show_params  # False where nothing was searched (the final stage's fixed configs)
        self.trials: list[Trial] = []
        # Tune calls on_trial_complete/on_trial_error before it changes the trial's status: keep the outcome.
        self.ended: dict[str, str] = {}  # trial_id -> TERMINATED | ERROR
        self.errors: dict[str, str] = {}  # trial_id -> last error line (read once, when it fails)
        self.started = time.time()

    # Tune pickles its callbacks with the experiment (tuner.pkl, for --resume): a rich console holds locks and a
    # live display a thread, so the output travels as what it was (quiet or not) and is made again on load.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "output": None if self.output is None else "default", "trials": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        made_again = state.get("output") == "default"
        self.__dict__.update({**state, "output": default_output() if made_again else None})

    def setup(self, **info: Any) -> None:  # type: ignore[override]  # Tune passes keywords only
        self.started = time.time()
        quiet_tune_logs()
        if self.output is not None:
            self.output.start(self.status)

    def view(self, trial: Trial) -> TrialView:
        view = view_of(trial, self.budget)
        if not self.show_params:
            view.params = {}
        view.status = self.ended.get(trial.trial_id, view.status)
        view.error = self.errors.get(trial.trial_id)
        return view

    def status(self) -> str:
        views = [self.view(trial) for trial in self.trials]
        return status_line(views, self.budget, self.epochs, self.mode, time.time() - self.started)

    def finished(self, trials: list[Trial], trial: Trial, status: str) -> None:
        self.trials, self.ended[trial.trial_id] = trials, status
        if self.output is not None:
            self.output.line(trial_line(self.view(trial), self.epochs, self.scheduler))
            self.output.tick(force=isinstance(self.output, PlainOutput))

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self.trials = trials
        if self.output is not None:
            self.output.tick()

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        self.trials = trials

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.finished(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.errors[trial.trial_id] = last_error_line(trial)
        self.finished(trials, trial, "ERROR")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.trials = trials
        if self.output is not None:
            self.output.line(f"{self.view(trial).name}  failed, retried from its last checkpoint "
                             f"(failure {trial.num_failures}): {last_error_line(trial)}")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.trials = trials
        if self.output is not None:
            self.output.stop()


def tune_output_env(verbose: int) -> dict[str, str]:
    """The environment that keeps Tune's own output off the terminal below -v (the module docstring says what
    each variable silences). Tune reads it in the driver when the Tuner runs: a fresh or a restored one."""
    tune_prints = "1" if verbose >= 2 else "0"
    return {NEW_OUTPUT_ENV: tune_prints, TRIAL_ERRORS_ENV: tune_prints}


def progress_callbacks(budget: dict[str, int], epochs: int, mode: str, verbose: int,
                       scheduler: str = "the scheduler", show_params: bool = True) -> list[Any]:
    """Tune callbacks that print the search's progress (the driver sets `tune_output_env(verbose)` around `fit`).

    budget: trials per experiment (strategy name, or 'categorical') in this search; epochs: per trial;
    mode: 'min' or 'max' of the score; verbose: 0 quiet, 1 default, 2 Tune's own tables instead;
    scheduler: named in the lines of trials it stopped early ("ASHA", "HyperBand");
    show_params: print each trial's searched values in its line.
    """
    if verbose >= 2:
        return []  # Tune's own reporter prints its tables
    output = default_output() if verbose == 1 else None
    return [SearchProgress(budget, epochs, mode, scheduler, output, show_params)]
