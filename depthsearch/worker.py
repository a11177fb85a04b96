"""The worker loop: reserve a trial under the budget, train it with heartbeats, tell the result.

Many workers (processes, GPUs, machines) can run this loop on one study. The budget check and
``study.ask()`` happen under one storage-wide lock, so the study never holds more finished,
running and waiting trials than ``[study] n_trials``; a worker with nothing to reserve waits
while others run, ready to take over a trial whose worker died.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import signal
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol, cast

import optuna
import torch
from optuna.trial import TrialState

from depthsearch._optuna import quiet_experimental
from depthsearch._reporting import ReportingProcess, ReportingProcessLost
from depthsearch.config import StudySpec
from depthsearch.data import Windows, prepare
from depthsearch.objective import Objective
from depthsearch.storage import guard_for, mask_url, running_without_heartbeat, storage_lock
from depthsearch.train import EpochResult, keep_freed_memory, resolve_device

__all__ = ["Interrupted", "WorkerReport", "run_worker"]

_log = logging.getLogger(__name__)


#: First pause of a worker that finds the budget held by running trials (doubling up to 2 s).
_FIRST_WAIT_S = 0.1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the running trial has been marked FAIL."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@dataclasses.dataclass
class WorkerReport:
    """What one worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed


class _Signals:
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


class _HeartbeatStorage(Protocol):
    def record_heartbeat(self, trial_id: int) -> None: ...


class _Heartbeat:
    """Records a heartbeat for one trial every ``interval`` seconds in a daemon thread."""

    def __init__(self, storage: _HeartbeatStorage, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="depthsearch-heartbeat", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as e:
                _log.warning("heartbeat for trial id %s failed: %s", self._trial_id, e)
            if self._stop.wait(self._interval):
                return


def _is_oom(e: BaseException) -> bool:
    """CUDA out of memory, or the host refusing an allocation (a candidate too big for RAM)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


class _Loop:
    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        storage_url: str,
        objective: Objective,
        signals: _Signals,
    ) -> None:
        self.study = study
        self.spec = spec
        self.url = storage_url
        self.objective = objective
        self.signals = signals
        self.storage = study._storage
        #: Every storage call of the loop goes through it: retried while the database is away.
        self.guard = guard_for(storage_url, spec.workers.db_wait)
        # RDB storages (wrapped in Optuna's cache) implement heartbeats; others do not.
        get_interval = getattr(self.storage, "get_heartbeat_interval", None)
        heartbeat = get_interval() if get_interval is not None else None
        self.heartbeat_interval: float | None = float(heartbeat) if heartbeat else None
        #: (val_loss, number) of the best complete trial last announced in the log.
        self.announced: tuple[float, int] | None = None
        self._stale_checked = -float("inf")
        #: RUNNING trials with no heartbeat yet: trial id -> when this worker first saw them.
        self._unbeaten: dict[int, float] = {}

    def announce_best(
        self, trials: list[optuna.trial.FrozenTrial], finished: int, budget: int
    ) -> None:
        """Logs the study's best trial when it changed, from the trials the budget check has
        just read (every worker's): no storage call of its own."""
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        if not complete or self.spec.multi_objective:
            return
        best = min((t.values[0], t.number) for t in complete)
        if best != self.announced:
            self.announced = best
            _log.info(
                "best so far: trial %d val_loss=%.6g (%d of %d trials finished)",
                best[1],
                best[0],
                finished,
                budget,
            )

    def reserve(self, budget: int | None) -> optuna.Trial | str:
        """A trial to run, ``"done"`` when the budget is met, or ``"wait"``."""
        with storage_lock(self.url):
            now = time.monotonic()
            # A heartbeat goes stale over grace_period seconds: looking more often than
            # once per heartbeat interval finds nothing new.
            if (
                self.heartbeat_interval is not None
                and now - self._stale_checked >= self.heartbeat_interval
            ):
                with quiet_experimental():
                    optuna.storages.fail_stale_trials(self.study)
                self.fail_unbeaten(now)
                self._stale_checked = now
            if budget is not None:
                trials = self.study.get_trials(
                    deepcopy=False,
                    states=(
                        TrialState.COMPLETE,
                        TrialState.PRUNED,
                        TrialState.RUNNING,
                        TrialState.WAITING,
                    ),
                )
                finished = sum(t.state.is_finished() for t in trials)
                self.announce_best(trials, finished, budget)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                waiting = sum(t.state == TrialState.WAITING for t in trials)
                if finished >= budget:
                    return "done"
                if not waiting and finished + running >= budget:
                    return "wait"
            with warnings.catch_warnings():
                # We run our own heartbeat thread around each trial (see _Heartbeat).
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                return self.study.ask()

    def fail_unbeaten(self, now: float) -> None:
        """Fails, and retries, RUNNING trials whose worker died before their first heartbeat.

        Optuna's stale check skips trials that never beat. A live worker beats milliseconds
        after ``ask()``, so a trial this worker sees without a heartbeat at two checks
        ``grace_period`` apart has lost its worker. Timed on this worker's clock only: no
        clock is compared across machines.
        """
        ids = running_without_heartbeat(self.study)
        if ids is None:
            return
        self._unbeaten = {i: self._unbeaten.get(i, now) for i in ids}
        storage = self.storage
        for trial_id, first_seen in self._unbeaten.items():
            if now - first_seen < self.spec.workers.grace_period:
                continue
            try:
                storage.set_trial_user_attr(
                    trial_id, "fail_reason", "its worker stopped before the first heartbeat"
                )
                if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker, or another one, ended it meanwhile
            failed = copy.deepcopy(storage.get_trial(trial_id))
            _log.warning(
                "trial %d marked FAIL: RUNNING for over %ds without a heartbeat",
                failed.number,
                self.spec.workers.grace_period,
            )
            get_callback = getattr(storage, "get_heartbeat_stale_trial_callback", None)
            callback = get_callback() if get_callback is not None else None
            if callback is not None:
                callback(self.study, failed)

    def tell(
        self,
        trial: optuna.Trial,
        state: TrialState,
        value: float | tuple[float, ...] | None,
    ) -> None:
        def do() -> None:
            # skip_if_finished: another worker's stale-trial check may have ended it already,
            # or a retried tell whose first attempt reached the database.
            if state == TrialState.COMPLETE:
                frozen = self.study.tell(trial, value, skip_if_finished=True)
            else:
                frozen = self.study.tell(trial, state=state, skip_if_finished=True)
            if frozen.state != state:
                _log.warning("trial %d was already %s", trial.number, frozen.state.name)

        self.guard(do, f"saving trial {trial.number}")

    def fail(self, trial: optuna.Trial, reason: str) -> None:
        self.guard(lambda: trial.set_user_attr("fail_reason", reason), "saving a failure")
        self.tell(trial, TrialState.FAIL, None)

    def run_one(self, trial: optuna.Trial, report: WorkerReport) -> None:
        beat = (
            _Heartbeat(
                cast(_HeartbeatStorage, self.storage), trial._trial_id, self.heartbeat_interval
            )
            if self.heartbeat_interval is not None
            else contextlib.nullcontext()
        )
        reason: str | None = None
        try:
            with beat:
                value = self.objective(trial)
        except optuna.TrialPruned as e:
            self.tell(trial, TrialState.PRUNED, None)
            report.pruned += 1
            _log.info("trial %d %s", trial.number, e)
            return
        except Interrupted as e:
            self.fail(trial, str(e))
            report.failed += 1
            _log.warning("trial %d marked FAIL: %s", trial.number, e)
            raise
        except ReportingProcessLost as e:
            reason = str(e)  # killed from outside, or by the OOM killer: a new one takes over
        except Exception as e:
            if not _is_oom(e):
                self.fail(trial, _one_line(e))
                report.failed += 1
                raise
            reason = f"out of memory on {self.objective.device}: {_one_line(e)}"
        if reason is not None:
            # Drop every reference to the failed model before freeing the cache.
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.fail(trial, reason)
            report.failed += 1
            _log.warning("trial %d failed, worker carries on: %s", trial.number, reason)
            return
        self.tell(trial, TrialState.COMPLETE, value)
        report.complete += 1
        if isinstance(value, tuple):
            shown = ", ".join(
                f"{n}={v:.6g}" for n, v in zip(self.spec.objectives, value, strict=True)
            )
        else:
            shown = f"val_loss={value:.6g}"
        _log.info("trial %d complete: %s", trial.number, shown)


def run_worker(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    *,
    budget: int | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    device: str | None = None,
    threads: int | None = None,
    on_epoch: Callable[[int, EpochResult], None] | None = None,
    stop: threading.Event | None = None,
    data: Windows | None = None,
) -> WorkerReport:
    """Runs trials of ``study`` until the budget is met, ``n_trials`` ran or time is up.

    Args:
        budget: stop once the study holds this many finished (complete or pruned) trials,
            counting every worker's; never start a trial that could exceed it.
        n_trials: run this many trials in this call (as ``study.optimize`` counts them).
        timeout: start no new trial after this many seconds.
        device: overrides the spec's ``[train] device``.
        threads: torch CPU threads for this process (default: the spec's, else torch's).
        data: the spec's windows when the caller already loaded them (moved to the device).

    Raises:
        Interrupted: SIGINT/SIGTERM; the running trial was marked FAIL first.
        DepthsearchError: bad data, device or database.
    """
    torch_device = resolve_device(device or spec.train.device)
    keep_freed_memory()
    wanted_threads = threads or spec.train.threads
    if wanted_threads:
        torch.set_num_threads(wanted_threads)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # Started first: it imports Optuna while this process loads the data.
    reporting = (
        None if spec.multi_objective else ReportingProcess(spec, storage_url, study.study_name)
    )
    with reporting if reporting is not None else contextlib.nullcontext():
        data = (data or prepare(spec.data, "cpu", seed=spec.seed)).to(torch_device)
        signals = _Signals()
        objective = Objective(
            spec,
            data,
            torch_device,
            on_epoch=on_epoch,
            interrupt=signals.check,
            reporting=reporting,
        )
        loop = _Loop(study, spec, storage_url, objective, signals)
        objective.guard = loop.guard
        report = WorkerReport()
        started = time.monotonic()
        # Waiting (the budget is held by running trials): look again soon, since the wait usually
        # ends when another worker's last trial does, then back off to every `poll` seconds.
        poll = min(2.0, loop.heartbeat_interval or 2.0)
        wait = _FIRST_WAIT_S
        _log.info(
            "worker on %s (%d torch threads), study %r in %s",
            torch_device,
            torch.get_num_threads(),
            study.study_name,
            mask_url(storage_url),
        )
        signals.install()
        try:
            while True:
                if stop is not None and stop.is_set():
                    break
                if n_trials is not None and report.ran >= n_trials:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
                signals.check()
                got = loop.guard(lambda: loop.reserve(budget), "reserving a trial")
                if got == "done":
                    break
                if got == "wait":
                    signals.sleep(wait)
                    wait = min(poll, wait * 2)
                    continue
                assert isinstance(got, optuna.Trial)
                wait = _FIRST_WAIT_S
                loop.run_one(got, report)
        finally:
            signals.restore()
        return report
