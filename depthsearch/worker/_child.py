"""What a worker's helper processes (reporting, tracking) share: their log records sent to
the process above, dying with it, and errors that survive the pipe."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Callable

from depthsearch.errors import RuntimeFailure
from depthsearch.worker._messages import Log

__all__ = ["Forward", "die_with_parent", "portable"]


class Forward(logging.Handler):
    """Sends every log record to the process above, which logs it as its own."""

    def __init__(self, send: Callable[[Log], None]) -> None:
        super().__init__()
        self._out = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            data = {k: v for k, v in vars(record).items() if k not in ("args", "exc_info", "msg")}
            data.update(msg=message, args=None, exc_info=None, exc_text=None)
            if record.exc_info:
                data["msg"] = message + "\n" + logging.Formatter().formatException(record.exc_info)
            self._out(Log(data))
        except Exception:
            self.handleError(record)


def die_with_parent(parent: int) -> None:
    """This process is killed when the thread that started it ends (Linux's parent-death
    signal: start helpers from a thread that lives as long as its process), and exits now
    when ``parent`` is gone already."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def portable(e: BaseException) -> BaseException:
    """``e`` when it survives pickling both ways, else an error with its text."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return RuntimeFailure(f"{type(e).__name__}: {e}")
    return e
