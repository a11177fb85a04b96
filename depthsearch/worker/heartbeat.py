"""The running trial's heartbeat, recorded every ``heartbeat_interval`` seconds by one thread
of the worker. A trial's first beat is written with its reservation (it exists with one);
the thread beats from ``interval`` after that.

A trial whose heartbeat is older than ``grace_period`` is failed (and retried) by the next
worker that checks: its worker died.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from depthsearch.storage.urls import describe

__all__ = ["Heartbeat"]

_log = logging.getLogger(__name__)


class Heartbeat:
    """Beats for one trial at a time (:meth:`beating`), from a daemon thread started with
    the first trial and stopped by :meth:`close`."""

    def __init__(self, record: Callable[[int], None], interval: float) -> None:
        self._record = record
        self._interval = interval
        self._changed = threading.Condition()
        self._trial: int | None = None
        self._due = 0.0
        self._recording = False
        self._closed = False
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, trial_id: int) -> Iterator[None]:
        """Beats for ``trial_id`` (its first beat written with its reservation) during the
        block; when it ends, no beat for it is in flight."""
        with self._changed:
            self._trial, self._due = trial_id, time.monotonic() + self._interval
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="depthsearch-heartbeat", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._trial = None
                self._changed.wait_for(lambda: not self._recording)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _next(self) -> int | None:
        """Waits until a beat is due; the trial to beat for (None: closed)."""
        with self._changed:
            while not self._closed:
                if self._trial is None:
                    self._changed.wait()
                elif (left := self._due - time.monotonic()) > 0:
                    self._changed.wait(left)
                else:
                    self._due = time.monotonic() + self._interval
                    self._recording = True
                    return self._trial
            return None

    def _run(self) -> None:
        failing = False  # said once per outage, not every interval
        while (trial := self._next()) is not None:
            try:
                self._record(trial)
            except Exception as e:
                if not failing:
                    _log.warning(
                        "heartbeat for trial id %s failed: %s (said once until it beats again)",
                        trial,
                        describe(e),
                    )
                failing = True
            else:
                if failing:
                    _log.info("heartbeat for trial id %s beats again", trial)
                failing = False
            finally:
                with self._changed:
                    self._recording = False
                    self._changed.notify_all()
