"""A trial's heartbeat: a daemon thread that records it every ``heartbeat_interval`` seconds.

A trial whose heartbeat is older than ``grace_period`` is failed (and retried) by the next
worker that checks: its worker died.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from depthsearch.storage.urls import describe

__all__ = ["Heartbeat"]

_log = logging.getLogger(__name__)


class Heartbeat:
    """Records a heartbeat for one trial every ``interval`` seconds in a daemon thread."""

    def __init__(self, record: Callable[[int], None], trial_id: int, interval: float) -> None:
        self._record = record
        self._id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="depthsearch-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        failing = False  # said once per outage, not every interval
        while True:
            try:
                self._record(self._id)
            except Exception as e:
                if not failing:
                    _log.warning(
                        "heartbeat for trial id %s failed: %s (said once until it beats again)",
                        self._id,
                        describe(e),
                    )
                failing = True
            else:
                if failing:
                    _log.info("heartbeat for trial id %s beats again", self._id)
                failing = False
            if self._stop.wait(self._interval):
                return
