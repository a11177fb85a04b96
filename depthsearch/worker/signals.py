"""SIGINT and SIGTERM become :class:`~depthsearch.errors.Interrupted`, raised at safe points."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

from depthsearch.errors import Interrupted

__all__ = ["Signals"]


class Signals:
    """Turns SIGINT/SIGTERM into :class:`Interrupted`, raised only at safe points.

    The handler never raises: it records the signal. The worker checks only at safe points
    (before every training batch, before reserving a trial, while waiting), never inside a
    reservation or a tell, so no trial is left RUNNING with no worker. An exception raised
    from a handler could land anywhere, a finaliser included, where Python drops it.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        """Raises :class:`Interrupted` when a signal arrived."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check()
            time.sleep(min(0.1, left))
        self.check()
