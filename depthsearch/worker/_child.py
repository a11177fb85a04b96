"""What a worker's helper processes (reporting, tracking) share: how they start and end, their
log records sent to the process above, dying with it, and errors that survive the pipe."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

from depthsearch.errors import RuntimeFailure
from depthsearch.worker._messages import Init, Log

__all__ = [
    "Forward",
    "die_with_parent",
    "incoming",
    "open_child",
    "portable",
    "run_child",
    "start_child",
]

_log = logging.getLogger(__name__)


def start_child(
    module: str, *, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """Starts ``python -m module R W PARENT`` with a pipe each way; returns the process, the
    connection to it and the one from it.

    Raises:
        OSError: it could not start.
    """
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", module, str(to_child_r), str(from_child_w), str(os.getpid())],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            env=None if env is None else dict(env),
        )
    except OSError:
        os.close(to_child_w)
        os.close(from_child_r)
        raise
    finally:
        os.close(to_child_r)
        os.close(from_child_w)
    return (
        process,
        Connection(to_child_w, readable=False),
        Connection(from_child_r, writable=False),
    )


def incoming(rx: Connection, process: subprocess.Popen[bytes], name: str) -> Iterator[Any]:
    """The messages from ``process`` (the ``name`` it is logged by) until its pipe closes; a
    message this side cannot read stops it (there is no way to stay in step after one)."""
    while True:
        try:
            message = rx.recv()
        except (EOFError, OSError):
            return
        except Exception:
            _log.exception("unreadable message from the %s; stopping it", name)
            process.kill()
            return
        yield message


def run_child(argv: list[str], serve: Callable[[Connection, Connection], None]) -> None:
    """The entry point of a program :func:`start_child` started: ``serve(rx, tx)``, then
    ``os._exit`` (every write was made when it was made: the interpreter's teardown, a tenth
    of a second of collecting Optuna's and SQLAlchemy's objects, is skipped)."""
    read_fd, write_fd, parent = (int(a) for a in argv)
    die_with_parent(parent)
    # The worker decides when this process ends; Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rx = Connection(read_fd, writable=False)
    tx = Connection(write_fd, readable=False)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the parent is gone
        serve(rx, tx)
    sys.stderr.flush()
    os._exit(0)


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


def open_child(rx: Connection, tx: Connection) -> tuple[Init, Callable[[Any], None]] | None:
    """A started program's first steps: the :class:`Init` it was sent (None when the pipe
    closed first) and a ``send`` that threads may share, which every log record now takes
    up to the process above."""
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock:
            tx.send(message)

    try:
        init = rx.recv()
    except EOFError:
        return None
    assert isinstance(init, Init)
    root = logging.getLogger()
    root.handlers[:] = [Forward(send)]
    root.setLevel(init.log_level)
    return init, send
