"""The reporting process's side of its tracking process (``depthsearch.worker._tracking_child``).

:class:`TrackingProcess` has the tracker's calls (``begin``, ``epoch``, ``end``,
``study_done``, ``close``); each queues and returns, and a thread sends what is queued down
the pipe (so a tracking process that has fallen behind never holds back the pruner's
answers). Another thread reads what comes up: log records, which go to the worker, and the
tracking process's questions about the study, answered here on this process's own database
connection (a worker keeps its two).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from depthsearch._text import mask_uri
from depthsearch.tracking import Target
from depthsearch.worker._child import incoming, portable, start_child
from depthsearch.worker._messages import Answer, Ask, Closed, Exit, Init, Log, Ready, Track

__all__ = ["TRACKING_MODULE", "TrackingProcess"]

_log = logging.getLogger(__name__)

#: What the tracking process runs (``python -m``).
TRACKING_MODULE = "depthsearch.worker._tracking_child"
#: Longer than the tracking process's own wait for the server at its end.
_EXIT_S = 25.0

#: The study's reads and writes the tracking process may ask for, by name.
Answers = Mapping[str, Callable[[Any], Any]]


class TrackingProcess:
    """Starts the tracking process for ``init.tracking``; ``log`` takes its log records.

    Call :meth:`attach` with the study's answers once the study is open (questions wait for
    it), and :meth:`close` at the end.
    """

    def __init__(self, init: Init, *, log: Callable[[Log], None]) -> None:
        assert init.tracking is not None
        self.target: Target = init.tracking
        self._log = log
        self._events: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._answers: Answers | None = None
        self._attached = threading.Event()
        self._ready = threading.Event()
        self._closing = False
        #: Set when the process ended: what comes is dropped.
        self._dead = False
        #: False once it is known that runs were left unsent.
        self._ok = True
        self._send_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        try:
            self._process, self._tx, self._rx = start_child(TRACKING_MODULE)
        except OSError as e:
            self._ready.set()
            _log.warning(
                "MLflow tracking at %s is off for this worker (cannot start its process: %s)",
                mask_uri(self.target.uri),
                e,
            )
            return
        with contextlib.suppress(OSError):  # it died at once: the receiving thread says how
            self._send(init)
        self._threads = [
            threading.Thread(target=self._sender, name="tracking-tx", daemon=True),
            threading.Thread(target=self._receiver, name="tracking-rx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def attach(self, answers: Answers) -> None:
        """The study is open: its questions are answered from now on."""
        self._answers = answers
        self._attached.set()

    def wait_ready(self, timeout: float) -> None:
        """Waits until the process has imported MLflow (or ended), ``timeout`` at most."""
        self._ready.wait(timeout)

    def begin(self, trial_id: int) -> None:
        self._put(("begin", trial_id))

    def epoch(self, trial_id: int, step: int, values: Mapping[str, float]) -> None:
        self._put(("epoch", trial_id, step, dict(values), int(time.time() * 1000)))

    def end(self, trial_id: int) -> None:
        self._put(("end", trial_id))

    def study_done(self) -> None:
        self._put(("done",))

    def _put(self, event: tuple[Any, ...]) -> None:
        if not self._dead:
            self._events.put(event)

    def close(self) -> bool:
        """Sends what is queued, lets the process send it to MLflow, and waits for it to
        end (killed after a while); False when it could not send everything in time (not
        when tracking was off already: that was said)."""
        process = self._process
        if process is None:
            return True
        self._closing = True
        self._attached.set()  # a question still waiting gets no answer
        self._events.put(None)
        try:
            process.wait(_EXIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for thread in self._threads:
            thread.join()
        return self._ok

    # Threads.

    def _send(self, message: Any) -> None:
        with self._send_lock:
            self._tx.send(message)

    def _sender(self) -> None:
        try:
            while True:
                batch = [self._events.get()]
                with contextlib.suppress(queue.Empty):
                    while batch[-1] is not None:  # None, the end, is the last thing queued
                        batch.append(self._events.get_nowait())
                events = [e for e in batch if e is not None]
                if events:
                    self._send(Track(events))
                if batch[-1] is None:
                    self._send(Exit())
                    return
        except OSError:  # the process ended; the receiving thread says how
            return

    def _answer(self, ask: Ask) -> Answer:
        self._attached.wait()
        answers = self._answers
        if answers is None or ask.what not in answers:
            return Answer(ask.number, error=LookupError(f"nothing answers {ask.what!r} here"))
        try:
            return Answer(ask.number, answers[ask.what](ask.arg))
        except Exception as e:
            return Answer(ask.number, error=portable(e))

    def _receiver(self) -> None:
        process = self._process
        assert process is not None
        closed = False
        for message in incoming(self._rx, process, "tracking process"):
            if isinstance(message, Log):
                self._log(message)
            elif isinstance(message, Ask):
                with contextlib.suppress(OSError):
                    self._send(self._answer(message))
            elif isinstance(message, Ready):
                self._ready.set()
            elif isinstance(message, Closed):
                self._ok, closed = message.ok, True
                break
        # Told Closed (or it ended): closing its pipe lets it exit.
        self._dead = True
        self._rx.close()
        with self._send_lock, contextlib.suppress(OSError):
            self._tx.close()
        self._ready.set()
        code = process.wait()
        if self._closing and not closed:
            self._ok = False  # killed before it said it was done
        elif not (self._closing and code == 0):
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            _log.warning(
                "the tracking process (pid %d) %s; MLflow tracking is off for this worker "
                "(the study database still records every trial)",
                process.pid,
                how,
            )
