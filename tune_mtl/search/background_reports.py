"""A trial's results handed to Tune from a thread of its own, so that the next epoch trains meanwhile.

Tune's function API makes `tune.report` wait until the driver has processed the result and asked for the next
one. That round trip (the driver's loggers, callbacks, searcher, scheduler and checkpoint bookkeeping) took
10-20 ms per result on 2 cores, a third of a toy epoch, and grows with the number of trials one driver serves.
Here the training thread hands each result and its checkpoint folder over and goes on; a reporter thread makes
the blocking `tune.report`.

- Order and lag: at most one result is in flight. `send` first waits for the previous report to return, so
  Tune sees every result, in order, and a trial is never more than one epoch ahead of what Tune has seen.
- Stopping: when Tune stops a trial (ASHA, PBT, the end of the search), its report ends the reporter thread
  with SystemExit, or, if no report is in flight, Tune's stop event is set. `stop_requested` sees either; the
  trainer checks it between steps, so a stopped trial ends within one training step and its worker is free for
  the next trial at once (Tune gives a reused worker 2 s to end the previous trial).
- Errors: an exception inside a report (e.g. a full disk while Tune copies the checkpoint) is raised again in
  the training thread at its next `send` or at `finish`, so the trial fails as it did with a direct report.
"""

from __future__ import annotations

import shutil
import threading
from typing import Any


class BackgroundReports:
    def __init__(self, stop_event: threading.Event | None) -> None:
        """`stop_event`: Tune's signal that the trial should stop (`ray_adapter.trial_stop_event`)."""
        self._tune_stop = stop_event
        self._stopped = threading.Event()  # Tune ended a report with SystemExit (it also clears its own event)
        self._idle = threading.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def stop_requested(self) -> bool:
        return self._stopped.is_set() or (self._tune_stop is not None and self._tune_stop.is_set())

    def send(self, result: dict[str, Any], checkpoint_folder: str | None = None) -> None:
        """Report `result` (and the checkpoint in `checkpoint_folder`, which is removed once Tune has copied it)
        once the previous report has returned; raises what that report raised, SystemExit if Tune stopped the
        trial."""
        try:
            self._wait_for_previous()
        except BaseException:
            if checkpoint_folder:
                shutil.rmtree(checkpoint_folder, ignore_errors=True)
            raise
        self._idle.clear()
        self._thread = threading.Thread(target=self._report, args=(result, checkpoint_folder), daemon=True,
                                        name="tune-report")
        self._thread.start()

    def finish(self) -> None:
        """Wait for the last report; raise what it raised (SystemExit if Tune stopped the trial)."""
        self._wait_for_previous()

    def settle(self) -> None:
        """Wait for a report in flight, raising nothing: for a trial ending on an error of its own, so that
        whatever it reports next (a configuration error) cannot overtake it."""
        self._idle.wait()

    def _wait_for_previous(self) -> None:
        self._idle.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self._stopped.is_set():
            raise SystemExit(0)  # as a direct report does when Tune stops the trial: Ray ends the trial quietly

    def _report(self, result: dict[str, Any], checkpoint_folder: str | None) -> None:
        from ray import tune

        try:
            checkpoint = tune.Checkpoint.from_directory(checkpoint_folder) if checkpoint_folder else None
            tune.report(result, checkpoint=checkpoint)
        except SystemExit:
            self._stopped.set()
        except BaseException as err:  # handed to the training thread; nothing may die silently here
            self._error = err
        finally:
            if checkpoint_folder:
                shutil.rmtree(checkpoint_folder, ignore_errors=True)
            self._idle.set()
