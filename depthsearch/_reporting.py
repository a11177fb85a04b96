"""Each epoch's report and the pruner's answer, away from the training thread.

A report is a storage transaction through Optuna's ORM: 1-2 ms of Python per epoch, more on
PostgreSQL, and that much again for every user attribute. In a thread beside training it
holds the GIL that training needs between its (small) kernels, so on a small model the
training thread waits for it as if it were its own work. A worker therefore hands its reports
to a **reporting process** of its own (:class:`ReportingProcess`): a second Python that
imports Optuna but not torch, opens the study, and for every trial runs the very calls the
worker would (``trial.report``, ``trial.should_prune``, ``trial.set_user_attr``) on an
``optuna.Trial`` of the same trial id. The worker only pickles ``(epoch, loss)`` into a pipe.

The reporting process ignores SIGINT and SIGTERM (the worker decides when it ends, and still
reports the last epochs while it fails its trial), and dies with the worker: it is killed
when the worker dies (Linux), and it exits when its pipe closes. Its log records are sent to
the worker, which logs them as its own.

An objective used without a worker reports in the training thread (:class:`InlineReporter`),
with the same calls in the same order.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import pickle
import signal
import site
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from depthsearch.errors import DepthsearchError

if TYPE_CHECKING:
    from depthsearch.config import StudySpec

__all__ = [
    "Guard",
    "InlineReporter",
    "Reporter",
    "ReportingProcess",
    "ReportingProcessLost",
    "TrialReports",
    "no_guard",
    "save_attrs",
]

_log = logging.getLogger(__name__)

#: Wraps a storage call (retries while the database is away); identity by default.
Guard = Callable[[Callable[[], Any], str], Any]
#: What a trial reports: user attributes to set, or ``(epoch, val_loss)``.
Item = dict[str, Any] | tuple[int, float]

#: Times the reporting process may die after starting well before the worker gives up.
MAX_RESTARTS = 3


def no_guard(fn: Callable[[], Any], what: str) -> Any:
    return fn()


def save_attrs(trial: optuna.Trial, attrs: dict[str, Any], guard: Guard) -> None:
    for key, value in attrs.items():
        guard(functools.partial(trial.set_user_attr, key, value), "saving attributes")


class ReportingProcessLost(DepthsearchError):
    """The worker's reporting process died while a trial was running."""


class TrialReports:
    """Reports one trial's items in order: the same calls wherever they run.

    After an error (the database stayed away, the trial was ended elsewhere) the rest is
    skipped: the training side stops at its next batch.
    """

    def __init__(self, trial: optuna.Trial, guard: Guard, *, prunes: bool) -> None:
        self.trial = trial
        self.guard = guard
        self.prunes = prunes
        self.pruned: str | None = None
        self.error: BaseException | None = None

    def handle(self, item: Item) -> None:
        if self.error is not None:
            return
        trial = self.trial
        try:
            if isinstance(item, dict):
                save_attrs(trial, item, self.guard)
                return
            epoch, val_loss = item
            self.guard(functools.partial(trial.report, val_loss, epoch), "reporting an epoch")
            # Epochs that finish before training hears "stop" are still reported.
            if (
                self.prunes
                and self.pruned is None
                and self.guard(trial.should_prune, "asking the pruner")
            ):
                self.pruned = f"pruned at epoch {epoch} (val_loss={val_loss:.6g})"
        except BaseException as e:  # handed to the training side
            self.error = e


class Reporter(Protocol):
    """The training side of one trial's reports."""

    def submit(self, item: Item) -> None:
        """Queues an epoch ``(epoch, val_loss)`` or user attributes; returns at once."""

    def check(self) -> None:
        """Raises the pruner's decision or the reporting error, if one came (cheap)."""

    def drain(self) -> None:
        """Waits until everything submitted so far is written (or failed)."""

    def close(self) -> None:
        """Drains and releases the trial."""

    @property
    def error(self) -> BaseException | None: ...


def _raise_for(pruned: str | None, error: BaseException | None) -> None:
    if error is not None:
        raise error
    if pruned is not None:
        raise optuna.TrialPruned(pruned)


class InlineReporter:
    """Reports in the calling thread, item by item (an objective used without a worker)."""

    def __init__(self, trial: optuna.Trial, guard: Guard, *, prunes: bool) -> None:
        self._reports = TrialReports(trial, guard, prunes=prunes)

    @property
    def error(self) -> BaseException | None:
        return self._reports.error

    def submit(self, item: Item) -> None:
        self._reports.handle(item)

    def check(self) -> None:
        _raise_for(self._reports.pruned, self._reports.error)

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


class _ProcessReporter:
    def __init__(self, owner: ReportingProcess, trial_id: int) -> None:
        self._owner = owner
        self.trial_id = trial_id
        self.pruned: str | None = None
        self.error: BaseException | None = None
        self._sent = 0
        self._acked = 0
        self._changed = threading.Condition()

    def submit(self, item: Item) -> None:
        self._owner._send(("item", self.trial_id, item))

    def check(self) -> None:
        _raise_for(self.pruned, self.error)

    def drain(self) -> None:
        self._sent += 1
        self._owner._send(("sync", self.trial_id, self._sent))
        with self._changed:
            self._changed.wait_for(lambda: self._acked >= self._sent or self.error is not None)

    def close(self) -> None:
        self.drain()
        self._owner._release(self)

    # Called by the owner's receiving thread.
    def _heard(self, kind: str, payload: Any) -> None:
        with self._changed:
            if kind == "pruned":
                self.pruned = payload
            elif kind == "error":
                if self.error is None:
                    self.error = payload
            elif kind == "synced":
                self._acked = max(self._acked, payload)
            self._changed.notify_all()


class ReportingProcess:
    """The training side of a worker's reporting process (one per worker, many trials).

    Args:
        spec: the study's spec (its pruner is rebuilt there; ``db_wait`` applies there too).
        url: the storage URL the worker uses.
        study_name: the study to report to.
    """

    def __init__(self, spec: StudySpec, url: str, study_name: str) -> None:
        self._init = (spec, url, study_name)
        self._lock = threading.Lock()
        self._current: _ProcessReporter | None = None
        self._lost: DepthsearchError | None = None
        self._deaths = 0
        self._closing = False
        self._start()

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "depthsearch._reporting",
                    str(to_child_r),
                    str(from_child_w),
                    str(os.getpid()),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=_child_env(),
            )
        except OSError as e:
            os.close(to_child_w)
            os.close(from_child_r)
            raise DepthsearchError(f"cannot start the reporting process: {e}") from e
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._tx = Connection(to_child_w, readable=False)
        self._rx = Connection(from_child_r, writable=False)
        self._ready = False
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
        self._send(("init", spec, url, name, level, optuna.logging.get_verbosity()))

    def __enter__(self) -> ReportingProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return self._process.pid

    def reporter(self, trial: optuna.Trial, *, prunes: bool) -> Reporter:
        """Starts reporting ``trial`` (restarting the process if it died since).

        Raises:
            DepthsearchError: the process could not start, or died too often.
        """
        with self._lock:
            lost = self._lost
        if lost is not None:
            if not isinstance(lost, ReportingProcessLost):
                raise lost
            if self._deaths > MAX_RESTARTS:
                raise DepthsearchError(f"{lost}; gave up after {MAX_RESTARTS} restarts")
            _log.warning("%s; starting a new one", lost)
            self._receiver.join()
            self._tx.close()
            self._start()
        reporter = _ProcessReporter(self, trial._trial_id)
        with self._lock:
            self._current = reporter
        self._send(("begin", trial._trial_id, prunes))
        return reporter

    def close(self, timeout: float = 30.0) -> None:
        """Asks the process to exit once it has written everything, and waits for it."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._tx.send(("exit",))
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            _log.warning("the reporting process did not exit in %.0fs; killing it", timeout)
            self._process.kill()
            self._process.wait()
        self._receiver.join()
        self._tx.close()

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._tx.send(message)
        except OSError:  # it died; the receiving thread says how
            self._receiver.join(timeout=5.0)
            with self._lock:
                current = self._current
                lost = self._lost or ReportingProcessLost("the reporting process closed its pipe")
                self._lost = lost
            if current is not None:
                current._heard("error", lost)

    def _release(self, reporter: _ProcessReporter) -> None:
        with self._lock:
            if self._current is reporter:
                self._current = None

    def _receive(self, rx: Connection, process: subprocess.Popen[bytes]) -> None:
        while True:
            try:
                message = rx.recv()
            except (EOFError, OSError):
                break
            except Exception:  # a message this side cannot read: no way to stay in step
                _log.exception("unreadable message from the reporting process; stopping it")
                process.kill()
                break
            kind = message[0]
            if kind == "log":
                record = logging.makeLogRecord(message[1])
                logging.getLogger(record.name).handle(record)
            elif kind == "ready":
                self._ready = True
            else:
                with self._lock:
                    current = self._current
                if current is not None and current.trial_id == message[1]:
                    current._heard(kind, message[2])
        rx.close()
        code = process.wait()
        if self._closing and code == 0:
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
        lost: DepthsearchError
        if not self._ready:
            # It would fail the same way again: the worker stops with this.
            lost = DepthsearchError(
                f"the reporting process {how} before it was ready (see the lines above)"
            )
        else:
            lost = ReportingProcessLost(f"the reporting process (pid {process.pid}) {how}")
            self._deaths += 1
        with self._lock:
            self._lost = lost
            current = self._current
        if current is not None:
            current._heard("error", lost)


# ---- the reporting process itself ------------------------------------------------------


class _Forward(logging.Handler):
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._out = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            data = {k: v for k, v in vars(record).items() if k not in ("args", "exc_info", "msg")}
            data.update(msg=message, args=None, exc_info=None, exc_text=None)
            if record.exc_info:
                data["msg"] = message + "\n" + logging.Formatter().formatException(record.exc_info)
            self._out(("log", data))
        except Exception:
            self.handleError(record)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very package: from a source tree that is not installed too.
    root = str(Path(__file__).resolve().parents[1])
    if root not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before we asked
        os._exit(0)


def _portable(e: BaseException) -> BaseException:
    """``e`` when it survives pickling both ways, else an error with its text."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return DepthsearchError(f"{type(e).__name__}: {e}")
    return e


def _serve(rx: Connection, tx: Connection) -> None:
    from depthsearch.storage import guard_for, open_storage
    from depthsearch.study import make_pruner

    def send(message: tuple[Any, ...]) -> None:
        tx.send(message)

    try:
        _, spec, url, name, level, verbosity = rx.recv()
    except EOFError:
        return
    root = logging.getLogger()
    root.handlers[:] = [_Forward(send)]
    root.setLevel(level)
    optuna.logging.set_verbosity(verbosity)

    guard = guard_for(url, spec.workers.db_wait)
    study: optuna.Study | None = None
    failed: BaseException | None = None
    try:
        study = guard(
            lambda: optuna.load_study(
                study_name=name,
                storage=open_storage(url),
                sampler=optuna.samplers.RandomSampler(),
                pruner=make_pruner(spec),
            ),
            "opening the study to report to",
        )
        send(("ready",))
    except Exception as e:
        failed = _portable(e)
    reports: TrialReports | None = None
    trial_id = -1
    while True:
        try:
            message = rx.recv()
        except EOFError:
            return
        kind = message[0]
        if kind == "exit":
            return
        if kind == "begin":
            _, trial_id, prunes = message
            reports = None
            if study is None:  # it could not open the study: say why, for every trial
                send(("error", trial_id, failed))
                continue
            try:
                trial = guard(
                    functools.partial(optuna.Trial, study, trial_id), "reading the trial"
                )
            except Exception as e:
                send(("error", trial_id, _portable(e)))
                continue
            reports = TrialReports(trial, guard, prunes=prunes)
        elif kind == "item":
            if reports is None or message[1] != trial_id:
                continue
            pruned, error = reports.pruned, reports.error
            reports.handle(message[2])
            if reports.error is not None and error is None:
                send(("error", trial_id, _portable(reports.error)))
            if reports.pruned is not None and pruned is None:
                send(("pruned", trial_id, reports.pruned))
        elif kind == "sync":
            send(("synced", message[1], message[2]))


def _main(argv: list[str]) -> None:
    read_fd, write_fd, parent = (int(a) for a in argv)
    _die_with_parent(parent)
    # The worker decides when this process ends; Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    rx = Connection(read_fd, writable=False)
    tx = Connection(write_fd, readable=False)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the worker is gone
        _serve(rx, tx)
    # Every write was committed when it was made: skip the interpreter's teardown (a tenth
    # of a second of collecting Optuna's and SQLAlchemy's objects that the worker waits for).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    _main(sys.argv[1:])
