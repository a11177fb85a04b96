"""SIGINT and SIGTERM become :class:`~depthsearch.errors.Interrupted`, raised at safe points."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from depthsearch.errors import Interrupted

__all__ = ["Signals"]

_FIRST = (
    b"depthsearch: Ctrl-C: stopping at the next batch; the next run of the study resumes the "
    b"running trial (Ctrl-C again: drop it)\n"
)
_AGAIN = b"depthsearch: Ctrl-C again: the running trial is dropped, not resumed\n"


class Signals:
    """Turns SIGINT/SIGTERM into :class:`Interrupted`, raised only at safe points.

    The handler never raises: it records the signal. The worker checks only at safe points
    (before every training batch, before reserving a trial, while waiting), never inside a
    reservation or a tell, so no trial is left RUNNING with no worker. An exception raised
    from a handler could land anywhere, a finaliser included, where Python drops it.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        #: How many SIGINTs came: a second Ctrl-C means "stop for good" (no resume).
        self.interrupts = 0
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
        if signum == signal.SIGINT:
            self.interrupts += 1
            # Said at once (the stop comes at the next batch); os.write, not logging: a
            # handler may run while this thread holds a logging lock.
            with contextlib.suppress(OSError):
                os.write(2, _FIRST if self.interrupts == 1 else _AGAIN)

    def for_good(self) -> bool:
        """Whether the user pressed Ctrl-C twice: the interrupted trial is not to be resumed."""
        return self.interrupts >= 2

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
