"""A worker's reporting process: each epoch's report and the pruner's answer, away from the
training thread.

A report is a storage transaction through Optuna's ORM: 1-2 ms of Python per epoch, more on
PostgreSQL, and that much again for every user attribute. In a thread beside training it
holds the GIL that training needs between its (small) kernels, so on a small model the
training thread waits for it as if it were its own work. A worker therefore hands its reports
to a **reporting process** of its own (:class:`ReportingProcess`, which implements the search's
:class:`~depthsearch.search.reporting.ReporterFactory`): a second Python that imports Optuna
but not torch, opens the study, and for every trial runs the very calls the worker would
(``trial.report``, ``trial.should_prune``, ``trial.set_user_attr``) on an ``optuna.Trial`` of
the same trial id. The worker only pickles ``(epoch, loss)`` into a pipe.

The reporting process (``depthsearch.worker._reporting_child``) ignores SIGINT and SIGTERM (the
worker decides when it ends, and still reports the last epochs while it fails its trial), and
dies with the worker: it is killed when the worker dies (Linux), and it exits when its pipe
closes. Its log records are sent to the worker, which logs them as its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import site
import subprocess
import threading
from multiprocessing.connection import Connection
from pathlib import Path

import optuna

from depthsearch.errors import RuntimeFailure
from depthsearch.search.compat import trial_id
from depthsearch.search.reporting import Item, Reporter, Verdict, raise_for
from depthsearch.spec import StudySpec
from depthsearch.tracking import Target
from depthsearch.worker._child import incoming, start_child
from depthsearch.worker._messages import (
    Begin,
    Ended,
    Exit,
    Failed,
    Init,
    Log,
    Pruned,
    Ready,
    StudyDone,
    Submit,
    Sync,
    Synced,
)

__all__ = ["CHILD_MODULE", "MAX_RESTARTS", "ReportingProcess", "ReportingProcessLost"]

_log = logging.getLogger(__name__)

#: Times the reporting process may die after starting well before the worker gives up.
MAX_RESTARTS = 3
#: What the reporting process runs (``python -m``).
CHILD_MODULE = "depthsearch.worker._reporting_child"


class ReportingProcessLost(RuntimeFailure):
    """The worker's reporting process died while a trial was running."""


class _ProcessReporter:
    def __init__(self, owner: ReportingProcess, trial_id: int) -> None:
        self._owner = owner
        self.trial_id = trial_id
        self.pruned: Verdict | None = None
        self.error: BaseException | None = None
        self._sent = 0
        self._acked = 0
        #: The Sync numbers that followed the last two epochs submitted: the older one answered
        #: means every epoch but the last was reported and asked about.
        self._epochs: tuple[int, int] = (0, 0)
        self._changed = threading.Condition()

    def submit(self, item: Item) -> None:
        self._owner._send(Submit(self.trial_id, item))
        if isinstance(item, tuple):  # an epoch: its answer is awaited by settle()
            self._sent += 1
            self._owner._send(Sync(self.trial_id, self._sent))
            self._epochs = (self._epochs[1], self._sent)

    def check(self) -> None:
        raise_for(self.pruned, self.error)

    def settle(self, timeout: float) -> bool:
        upto = self._epochs[0]
        if self._acked >= upto or self.error is not None:  # no lock: the usual, cheap case
            return True
        with self._changed:
            return self._changed.wait_for(
                lambda: self._acked >= upto or self.error is not None, timeout
            )

    def drain(self) -> None:
        self._sent += 1
        self._owner._send(Sync(self.trial_id, self._sent))
        with self._changed:
            self._changed.wait_for(lambda: self._acked >= self._sent or self.error is not None)

    def close(self) -> None:
        self.drain()
        self._owner._release(self)

    # Called by the owner's receiving thread.
    def _heard(self, message: Pruned | Failed | Synced) -> None:
        with self._changed:
            if isinstance(message, Pruned):
                self.pruned = message.verdict
            elif isinstance(message, Failed):
                if self.error is None:
                    self.error = message.error
            else:
                self._acked = max(self._acked, message.upto)
            self._changed.notify_all()

    def _lost(self, error: BaseException) -> None:
        self._heard(Failed(self.trial_id, error))


class ReportingProcess:
    """The training side of a worker's reporting process (one per worker, many trials).

    Args:
        spec: the study's spec (its pruner is rebuilt there; ``db_wait`` applies there too).
        url: the storage URL the worker uses.
        study_name: the study to report to.
        tracking: where the trials are also logged (MLflow), by a process that one starts.
    """

    def __init__(
        self, spec: StudySpec, url: str, study_name: str, *, tracking: Target | None = None
    ) -> None:
        self._init = (spec, url, study_name)
        self.tracking = tracking
        self._lock = threading.Lock()
        self._current: _ProcessReporter | None = None
        self._lost: RuntimeFailure | None = None
        self._deaths = 0
        self._closing = False
        self._start()

    def _start(self) -> None:
        try:
            self._process, self._tx, self._rx = start_child(CHILD_MODULE, env=_child_env())
        except OSError as e:
            raise RuntimeFailure(f"cannot start the reporting process: {e}") from e
        self._ready = False
        #: Set when the process said it is ready, or when it ended.
        self._settled = threading.Event()
        self._lost = None
        self._receiver = threading.Thread(
            target=self._receive,
            args=(self._rx, self._process),
            daemon=True,
            name="depthsearch-report-rx",
        )
        self._receiver.start()
        level = logging.getLogger("depthsearch").getEffectiveLevel()
        spec, url, name = self._init
        self._send(Init(spec, url, name, level, optuna.logging.get_verbosity(), self.tracking))

    def __enter__(self) -> ReportingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def wait_ready(self, timeout: float) -> bool:
        """Waits until the process has opened the study (or ended); whether it is ready.

        Its start (a second Python importing Optuna and reading the study: a few tenths of a
        second of CPU) is best over before training starts: on a machine whose every core
        trains, it would otherwise slow the worker's first epochs.
        """
        self._settled.wait(timeout)
        return self._ready

    def reporter(self, trial: optuna.Trial, *, prunes: bool) -> Reporter:
        """Starts reporting ``trial`` (restarting the process if it died since).

        Raises:
            RuntimeFailure: the process could not start, or died too often.
        """
        with self._lock:
            lost = self._lost
        if lost is not None:
            if not isinstance(lost, ReportingProcessLost):
                raise lost
            if self._deaths > MAX_RESTARTS:
                raise RuntimeFailure(f"{lost}; gave up after {MAX_RESTARTS} restarts")
            _log.warning("%s; starting a new one", lost)
            self._receiver.join()
            self._tx.close()
            self._start()
        reporter = _ProcessReporter(self, trial_id(trial))
        with self._lock:
            self._current = reporter
        self._send(Begin(reporter.trial_id, prunes))
        return reporter

    def ended(self, trial_id: int) -> None:
        """The trial's end is told: its tracked run ends too."""
        self._to_tracker(Ended(trial_id))

    def study_done(self) -> None:
        """The study's budget is met: its tracked study run ends FINISHED."""
        self._to_tracker(StudyDone())

    def _to_tracker(self, message: Ended | StudyDone) -> None:
        """A message only the tracker reads: nothing without tracking, nothing lost but the
        message when the process died (the next trial restarts it)."""
        if self.tracking is not None:
            with contextlib.suppress(OSError):
                self._tx.send(message)

    def close(self, timeout: float = 30.0) -> None:
        """Asks the process to exit once it has written everything, and waits for it."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._tx.send(Exit())
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("the reporting process did not exit in %.0fs; killing it", timeout)
            self._process.kill()
            self._process.wait()
        self._receiver.join()
        self._tx.close()

    def _send(self, message: Init | Begin | Submit | Sync) -> None:
        try:
            self._tx.send(message)
        except OSError:  # it died; the receiving thread says how
            self._receiver.join(timeout=5.0)
            with self._lock:
                current = self._current
                lost = self._lost or ReportingProcessLost("the reporting process closed its pipe")
                self._lost = lost
            if current is not None:
                current._lost(lost)

    def _release(self, reporter: _ProcessReporter) -> None:
        with self._lock:
            if self._current is reporter:
                self._current = None

    def _receive(self, rx: Connection, process: subprocess.Popen[bytes]) -> None:
        for message in incoming(rx, process, "reporting process"):
            if isinstance(message, Log):
                record = logging.makeLogRecord(message.record)
                logging.getLogger(record.name).handle(record)
            elif isinstance(message, Ready):
                self._ready = True
                self._settled.set()
            elif isinstance(message, (Pruned, Failed, Synced)):
                with self._lock:
                    current = self._current
                if current is not None and current.trial_id == message.trial_id:
                    current._heard(message)
            else:  # a message this side cannot place: no way to stay in step
                _log.error(
                    "unexpected message from the reporting process: %r; stopping it", message
                )
                process.kill()
                break
        rx.close()
        self._settled.set()
        code = process.wait()
        if self._closing and code == 0:
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        lost: RuntimeFailure
        if not self._ready:
            # It would fail the same way again: the worker stops with this.
            lost = RuntimeFailure(
                f"the reporting process {how} before it was ready (see the lines above)"
            )
        else:
            lost = ReportingProcessLost(f"the reporting process (pid {process.pid}) {how}")
            self._deaths += 1
        with self._lock:
            self._lost = lost
            current = self._current
        if current is not None:
            current._lost(lost)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very package: from a source tree that is not installed too.
    root = str(Path(__file__).resolve().parents[2])
    if root not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
