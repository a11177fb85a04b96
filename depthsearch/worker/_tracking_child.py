"""A worker's tracking process: ``python -m depthsearch.worker._tracking_child R W PARENT``.

Started by the worker's reporting process when the study is tracked, it runs the
:class:`~depthsearch.tracking.Tracker` (MLflow's client) at nice 19 once MLflow is imported
(:func:`lower_priority`): on a machine whose every core trains, it takes a sliver of a core and
almost never preempts training on waking, and its Python shares no GIL with the pruner's
answers. It holds no database connection: it asks the
reporting process for trials and the study's run (:class:`~._messages.Ask`), and takes the
study's lock itself while it creates that run. Its log records go up as
:class:`~._messages.Log`; it dies with the reporting process.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from depthsearch.errors import RuntimeFailure
from depthsearch.storage import storage_lock
from depthsearch.tracking import Tracker, TrialRecord, preload
from depthsearch.worker._child import open_child, run_child
from depthsearch.worker._messages import Answer, Ask, Closed, Exit, Init, Ready, Track

_log = logging.getLogger(__name__)

#: How long the tracker may take to send what is queued once the worker exits.
CLOSE_S = 15.0


def _threads() -> list[int]:
    """This process's threads (their ids); this thread's alone where /proc cannot say."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def lower_priority() -> str:
    """Puts every thread of this process (MLflow's import starts some), and so those they
    start, at nice 19; says whether it could.

    Not ``SCHED_IDLE``: that weighs 3 against a busy thread's 1024, and in a test beside two
    busy loops at normal priority the tracker got so little CPU that it neither sent the
    last runs in the 25 s it is given at the worker's end nor, SIGKILLed mid-study, closed
    its pipe before then (dying takes CPU too). Nice 19 weighs 15: about 1.4 % of a core
    that a thread of normal priority keeps busy, more than the tracker needs (~8 ms per trial),
    and Linux's scheduler (EEVDF) lets a waking task of that weight take a busy core almost
    never. An unprivileged process can lower its priority, never raise it again."""
    try:
        for thread in _threads():
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.setpriority(os.PRIO_PROCESS, thread, 19)
    except OSError:
        return "unchanged"
    return "nice 19"


class _Asker:
    """Asks the reporting process, one question at a time, and waits for its answer."""

    def __init__(self, send: Callable[[Ask], None]) -> None:
        self._send = send
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.answers: queue.SimpleQueue[Answer] = queue.SimpleQueue()

    def __call__(self, what: str, arg: Any = None) -> Any:
        with self._lock:
            number = next(self._numbers)
            self._send(Ask(number, what, arg))
            while True:
                answer = self.answers.get()
                if answer.number in (number, -1):  # -1: the reporting process is gone
                    break
        if answer.error is not None:
            raise answer.error
        return answer.value

    def gone(self) -> None:
        self.answers.put(Answer(-1, error=RuntimeFailure("the reporting process is gone")))


def _tracker(init: Init, ask: _Asker) -> Tracker:
    assert init.tracking is not None

    def read(trial_id: int) -> TrialRecord:
        record: TrialRecord = ask("trial", trial_id)
        return record

    def claim(
        fits: Callable[[object], bool], create: Callable[[], dict[str, str]]
    ) -> dict[str, str]:
        # One study run for every worker of the study: created under the study's lock.
        with storage_lock(init.url, scope=f"mlflow:{init.study_name}"):
            known = ask("parent")
            if fits(known):
                return dict(known)
            made = create()
            ask("set_parent", made)
            return made

    spec = init.spec
    settings = {
        "n_trials": spec.n_trials,
        "task": spec.task.kind,
        "objectives": ",".join(spec.objectives),
        "sampler": spec.sampler.kind,
        "pruner": spec.pruner.kind,
        "data": spec.data.path or spec.data.source,
        "max_epochs": spec.train.max_epochs,
    }
    return Tracker(init.tracking, read_trial=read, claim_parent=claim, parent_params=settings)


def _dispatch(tracker: Tracker, event: tuple[Any, ...]) -> None:
    kind = event[0]
    if kind == "begin":
        tracker.begin(event[1])
    elif kind == "epoch":
        tracker.epoch(event[1], event[2], event[3], ms=event[4])
    elif kind == "end":
        tracker.end(event[1])
    elif kind == "done":
        tracker.study_done()
    else:
        _log.error("unknown tracking event %r", event)


def _serve(rx: Connection, tx: Connection) -> None:
    opened = open_child(rx, tx)  # its send: the tracker's thread logs and asks too
    if opened is None:
        return
    init, send = opened
    # MLflow's and its HTTP client's own chatter (a retry warning per request to a lost
    # server) stays out of the worker's log: the tracker says what matters once.
    logging.getLogger("mlflow").setLevel(max(logging.WARNING, init.log_level))
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    preload()  # at the worker's priority, while it loads its data
    priority = lower_priority()
    _log.debug("tracking process %d at CPU priority %s", os.getpid(), priority)
    send(Ready())
    ask = _Asker(send)
    tracker = _tracker(init, ask)

    def finish() -> None:
        ok = tracker.close(CLOSE_S)
        with contextlib.suppress(OSError):
            send(Closed(ok))

    while True:
        try:
            message = rx.recv()
        except EOFError:
            ask.gone()
            return
        if isinstance(message, Answer):
            ask.answers.put(message)
        elif isinstance(message, Track):
            for event in message.events:
                _dispatch(tracker, event)
        elif isinstance(message, Exit):
            # Closing may still ask (a last trial's record): this thread keeps reading the
            # answers until the reporting process, told Closed, closes the pipe.
            threading.Thread(target=finish, name="tracking-close", daemon=True).start()


def main(argv: list[str]) -> None:
    """The process's entry point."""
    run_child(argv, _serve)


if __name__ == "__main__":
    main(sys.argv[1:])
