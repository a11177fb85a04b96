"""The worker's one writer: a thread that writes its running trial's reports (each epoch's
validation loss, the attributes) in the order they came, in batches at most every
``interval`` seconds, so that training never waits for the database and short epochs do not
each cost a transaction; :meth:`Writer.flush` writes what is pending at once, and
:meth:`Writer.end` writes it with the trial's end (its state and values) in one transaction:
the reports are always in the database before, or with, the trial's final state.

A database away is waited out as every storage call of the worker is (``[workers] db_wait``,
with backoff); past it, or when another worker ended the trial meanwhile, the error is kept
and the training thread raises it at its next epoch (:meth:`Writer.check`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.trial import TrialState

from depthsearch.storage.trials import TrialWrites

__all__ = ["Writer"]

_log = logging.getLogger(__name__)

#: Wraps a database call: tried again while the database is away (``storage.retry_for``).
CallDb = Callable[[Callable[[], Any], str], Any]


@dataclasses.dataclass
class _Batch:
    values: dict[int, float] = dataclasses.field(default_factory=dict)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The trial's finished state and values, written after the reports (the last batch).
    end: tuple[TrialState, list[float] | None] | None = None

    def __bool__(self) -> bool:
        return bool(self.values or self.attrs or self.end)


class Writer:
    """Writes one trial at a time (:meth:`start`), from a thread of its own."""

    def __init__(self, target: TrialWrites, call_db: CallDb, interval: float = 1.0) -> None:
        self._target = target
        self._call_db = call_db
        self._interval = interval
        self._urgent = 0  # flushes waiting: write now, whatever the interval
        self._changed = threading.Condition()
        self._pending = _Batch()
        self._handed = _Batch()  # everything handed over for the running trial
        self._writing = False
        self._due = 0.0  # when the next batch may go without a flush asking for it
        self._trial: int | None = None
        self._closed = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="depthsearch-writer", daemon=True)
        self._thread.start()

    def start(self, trial_id: int) -> None:
        """Writes for ``trial_id`` from now on (the previous trial was flushed); its first
        batch goes ``interval`` seconds later, or at a flush: a trial shorter than that is
        written once, by its finish, while nothing trains."""
        with self._changed:
            self._trial, self.error = trial_id, None
            self._pending, self._handed = _Batch(), _Batch()
            self._due = time.monotonic() + self._interval

    def handed(self) -> tuple[dict[int, float], dict[str, Any]]:
        """Every value and attribute handed over for the running trial: what the database
        holds of this worker's writes once :meth:`flush` returned."""
        with self._changed:
            return dict(self._handed.values), dict(self._handed.attrs)

    def epoch(self, step: int, value: float, attrs: dict[str, Any] | None = None) -> None:
        self._hand_over({step: value}, attrs or {})

    def attrs(self, attrs: dict[str, Any]) -> None:
        self._hand_over({}, attrs)

    def _hand_over(self, values: dict[int, float], attrs: dict[str, Any]) -> None:
        """Adds to the pending batch; wakes the thread only for a first report (it waits for
        one). With reports pending it sleeps until their batch is due: waking it at every
        epoch only takes a core from training (a 2-thread torch loop waits for a preempted
        thread)."""
        with self._changed:
            idle = not self._pending
            self._pending.values.update(values)
            self._pending.attrs.update(attrs)
            self._handed.values.update(values)
            self._handed.attrs.update(attrs)
            if idle:
                self._changed.notify_all()

    def check(self) -> None:
        """Raises what stopped the writes (the database gone past db_wait, the trial ended
        elsewhere), if anything did."""
        if self.error is not None:
            raise self.error

    def end(self, state: TrialState, values: list[float] | None) -> None:
        """Writes what is pending and the trial's end in one transaction, and waits for it;
        raises what stopped it (``UpdateFinishedTrialError``: the trial was finished
        already, and nothing was written)."""
        with self._changed:
            self._pending.end = (state, values)
        self.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Waits until everything handed over is written; raises what stopped it."""
        with self._changed:
            self._urgent += 1
            self._changed.notify_all()
            try:
                self._changed.wait_for(
                    lambda: (not self._pending and not self._writing) or self.error is not None,
                    timeout,
                )
            finally:
                self._urgent -= 1
        self.check()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._pending and self._closed:
                    return
                self._changed.wait_for(
                    lambda: self._urgent > 0 or self._closed,
                    max(0.0, self._due - time.monotonic()),
                )
                batch, self._pending, self._writing = self._pending, _Batch(), True
                trial = self._trial
                self._due = time.monotonic() + self._interval
            try:
                if trial is not None and self.error is None:
                    self._write(trial, batch)
            except BaseException as e:  # the training thread raises it
                self.error = e
            with self._changed:
                self._writing = False
                self._changed.notify_all()

    def _write(self, trial: int, batch: _Batch) -> None:
        self._call_db(
            lambda: self._target.write(trial, batch.values, batch.attrs, batch.end),
            "writing a trial's reports",
        )
