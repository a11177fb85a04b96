"""The worker loop: reserve a trial under the budget, train it with heartbeats, tell the result.

Many workers (processes, GPUs, machines) can run this loop on one study. The budget check and the
trial's creation happen under one lock per study, so the study never holds more finished,
running and waiting trials than ``[study] n_trials``; a worker with nothing to reserve waits
while others run, ready to take over a trial whose worker died.

One trial reads top to bottom as in Optuna's ``_run_trial``: fail stale trials -> reserve ->
heartbeat -> objective -> tell -> log by state (:meth:`_Loop.run_one`).
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
from collections.abc import Callable
from pathlib import Path
from typing import cast

import optuna
import torch
from optuna.trial import TrialState

from depthsearch.errors import InputError, Interrupted
from depthsearch.learn.data import Windows, prepare
from depthsearch.learn.train import EpochResult, resolve_device
from depthsearch.search import trials as keys
from depthsearch.search.checkpoints import Checkpoints
from depthsearch.search.compat import (
    asked_trial,
    quiet_experimental,
    seed_sampler,
    study_storage,
    trial_id,
)
from depthsearch.search.objective import Objective, retried_trials, trial_seed
from depthsearch.search.trials import best_trial
from depthsearch.spec import StudySpec
from depthsearch.storage import (
    Backoff,
    best_complete,
    dialect_of,
    load_all_trials,
    locked_study,
    mask_url,
    rdb_backend,
    retry_for,
    running_without_heartbeat,
    sqlite_file,
)
from depthsearch.worker.heartbeat import Heartbeat, HeartbeatStorage
from depthsearch.worker.process import training_settings
from depthsearch.worker.reporting import ReportingProcess, ReportingProcessLost
from depthsearch.worker.signals import Signals

__all__ = ["BudgetMet", "Reserved", "Wait", "WorkerResult", "open_checkpoints", "run_worker"]

_log = logging.getLogger(__name__)


#: First pause of a worker that finds the budget held by running trials (doubling up to 2 s).
_FIRST_WAIT_S = 0.1


@dataclasses.dataclass
class WorkerResult:
    """What one worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed


@dataclasses.dataclass(frozen=True)
class Reserved:
    """A trial this worker is now running."""

    trial: optuna.Trial


@dataclasses.dataclass(frozen=True)
class BudgetMet:
    """The study holds its budget of finished trials: nothing more to do."""


@dataclasses.dataclass(frozen=True)
class Wait:
    """The budget is held by running trials: one of them may still fail and be retried."""


Reservation = Reserved | BudgetMet | Wait


def open_checkpoints(spec: StudySpec, storage_url: str, study_name: str) -> Checkpoints | None:
    """The study's checkpoint store, from ``[workers] checkpoints``: ``auto`` is a folder beside
    a SQLite file (every worker on that machine sees it) and off for a server database (whose
    workers may share no folder: name one, or an ``s3://`` bucket). None when off or when the
    folder cannot be made (one warning; trials then train without checkpoints)."""
    where = spec.workers.checkpoints
    if where == "auto":
        database = sqlite_file(storage_url)
        if database is None:
            return None
        where = str(database.with_name(database.name + ".checkpoints"))
    if where == "off":
        return None
    if where.startswith("s3://"):
        bucket, _, prefix = where[5:].partition("/")
        import importlib.util

        if importlib.util.find_spec("boto3") is None:  # optional: only S3 stores need it
            raise InputError(
                f"[workers] checkpoints = {where!r} needs boto3 (pip install boto3), "
                "or use a folder every worker sees"
            )
        from optuna.artifacts import Boto3ArtifactStore

        prefix = prefix.strip("/")
        return Checkpoints(
            Boto3ArtifactStore(bucket), study_name, where, prefix=f"{prefix}/" if prefix else ""
        )
    from optuna.artifacts import FileSystemArtifactStore

    folder = Path(where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _log.warning(
            "trials train without checkpoints: cannot create the folder %s ([workers] "
            "checkpoints): %s",
            folder,
            e.strerror or e,
        )
        return None
    return Checkpoints(FileSystemArtifactStore(folder), study_name, str(folder))


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
    ) -> None:
        self.study = study
        self.spec = spec
        self.url = storage_url
        self.objective = objective
        self.storage = study_storage(study)
        self.rdb = rdb_backend(self.storage) is not None
        self.dialect = dialect_of(storage_url)
        #: Every storage call of the loop goes through it: retried while the database is away.
        self.retry = retry_for(storage_url, spec.workers.db_wait)
        # RDB storages (wrapped in Optuna's cache) implement heartbeats; others do not.
        get_interval = getattr(self.storage, "get_heartbeat_interval", None)
        heartbeat = get_interval() if get_interval is not None else None
        self.heartbeat_interval: float | None = float(heartbeat) if heartbeat else None
        #: (val_loss, number) of the best complete trial last announced in the log.
        self.announced: tuple[float, int] | None = None
        self._stale_checked = -float("inf")
        #: RUNNING trials with no heartbeat yet: trial id -> when this worker first saw them.
        self._unbeaten: dict[int, float] = {}

    # ---- one trial, top to bottom -----------------------------------------------------

    def run_one(self, budget: int | None, result: WorkerResult) -> Reservation:
        """Fails stale trials, reserves one, runs it with a heartbeat, tells and logs it."""
        reservation = self.retry(lambda: self.reserve(budget), "reserving a trial")
        if not isinstance(reservation, Reserved):
            return reservation
        trial = reservation.trial
        try:
            with self.heartbeat(trial):
                value = self.objective(trial)
        except optuna.TrialPruned as e:
            self.tell(trial, TrialState.PRUNED, None)
            result.pruned += 1
            _log.info("trial %d %s", trial.number, e)
            return reservation
        except Interrupted as e:
            self.fail(trial, str(e))
            result.failed += 1
            # SIGTERM is the system's (preemption, a time limit, an eviction, scancel): the
            # trial is retried, from its checkpoint, by the next worker. Ctrl-C is the user's.
            again = e.signum == signal.SIGTERM and self.retry_later(trial)
            if e.signum != signal.SIGTERM:
                self.forget(trial)
            _log.warning(
                "trial %d marked FAIL: %s%s",
                trial.number,
                e,
                "; the next worker retries it" if again else "",
            )
            raise
        except ReportingProcessLost as e:
            # Killed from outside, or by the OOM killer: a new one takes over.
            self.fail_and_carry_on(trial, str(e), result, retry=True)
            return reservation
        except Exception as e:
            if not _is_oom(e):
                self.fail(trial, _one_line(e))
                self.forget(trial)
                result.failed += 1
                raise
            reason = f"out of memory on {self.objective.device}: {_one_line(e)}"
            self.fail_and_carry_on(trial, reason, result)
            return reservation
        self.tell(trial, TrialState.COMPLETE, value)
        result.complete += 1
        if isinstance(value, tuple):
            shown = ", ".join(
                f"{n}={v:.6g}" for n, v in zip(self.spec.objectives, value, strict=True)
            )
        else:
            shown = f"val_loss={value:.6g}"
        _log.info("trial %d complete: %s", trial.number, shown)
        return reservation

    # ---- the steps ---------------------------------------------------------------------

    def reserve(self, budget: int | None) -> Reservation:
        """Checks the budget and creates the trial under the study's lock, nothing more.

        The lock is held for a count, an update and an insert, whatever the study's size:
        the budget is counted by the database (no trial is read), the trial is created or
        taken from the waiting ones by id, on PostgreSQL in the lock's own transaction.
        Reading the study and sampling (at the trial's first suggest) happen outside it, in
        parallel across workers. The budget stays exact: finished + running + waiting never
        passes ``n_trials``.
        """
        if self.dialect == "postgresql":
            # Row locks make Optuna's stale check safe to race; SQLite has none (below).
            self.fail_stale()
        with locked_study(self.study, self.url) as locked:
            if self.dialect != "postgresql":
                self.fail_stale()
            finished = None
            if budget is not None:
                counts = locked.counts()
                finished = counts.finished
                if finished >= budget:
                    return BudgetMet()
                if not counts.waiting and finished + counts.running >= budget:
                    return Wait()
            new_id = locked.take_waiting()
            if new_id is None:
                new_id = locked.create()
        if finished is not None and budget is not None:
            self.announce_best(finished, budget)
        trial = asked_trial(self.study, new_id)
        # Trial k samples from a random state seeded by the study's seed and k (the seed it
        # trains with): one worker draws the same candidates run after run, a resumed study
        # or another worker draws new ones.
        seed_sampler(self.study.sampler, trial_seed(self.spec.seed, trial))
        return Reserved(trial)

    def fail_stale(self) -> None:
        """Fails, and retries, trials whose worker died: stale heartbeats, and trials that
        never beat. At most once per heartbeat interval (a heartbeat goes stale over
        ``grace_period`` seconds: looking more often finds nothing new)."""
        now = time.monotonic()
        if self.heartbeat_interval is None or now - self._stale_checked < self.heartbeat_interval:
            return
        with quiet_experimental():
            optuna.storages.fail_stale_trials(self.study)
        self.fail_unbeaten(now)
        self._stale_checked = now

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
        for unbeaten_id, first_seen in self._unbeaten.items():
            if now - first_seen < self.spec.workers.grace_period:
                continue
            try:
                storage.set_trial_user_attr(
                    unbeaten_id, keys.FAIL_REASON, "its worker stopped before the first heartbeat"
                )
                if not storage.set_trial_state_values(unbeaten_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # its worker, or another one, ended it meanwhile
            failed = copy.deepcopy(storage.get_trial(unbeaten_id))
            _log.warning(
                "trial %d marked FAIL: RUNNING for over %ds without a heartbeat",
                failed.number,
                self.spec.workers.grace_period,
            )
            get_callback = getattr(storage, "get_heartbeat_stale_trial_callback", None)
            callback = get_callback() if get_callback is not None else None
            if callback is not None:
                callback(self.study, failed)

    def announce_best(self, finished: int, budget: int) -> None:
        """Logs the study's best trial when it changed (every worker's trials count); one
        query, outside the lock."""
        if self.spec.multi_objective:
            return
        if self.rdb:
            best = best_complete(self.study)
        else:  # not an RDB storage: read the trials
            top = best_trial(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            best = None if top is None else (top.values[0], top.number)
        if best is not None and best != self.announced:
            self.announced = best
            _log.info(
                "best so far: trial %d val_loss=%.6g (%d of %d trials finished)",
                best[1],
                best[0],
                finished,
                budget,
            )

    def heartbeat(self, trial: optuna.Trial) -> contextlib.AbstractContextManager[object]:
        if self.heartbeat_interval is None:
            return contextlib.nullcontext()
        return Heartbeat(
            cast(HeartbeatStorage, self.storage), trial_id(trial), self.heartbeat_interval
        )

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

        self.retry(do, f"saving trial {trial.number}")

    def fail(self, trial: optuna.Trial, reason: str) -> None:
        self.retry(lambda: trial.set_user_attr(keys.FAIL_REASON, reason), "saving a failure")
        self.tell(trial, TrialState.FAIL, None)

    def fail_and_carry_on(
        self, trial: optuna.Trial, reason: str, result: WorkerResult, *, retry: bool = False
    ) -> None:
        """A failure of this trial alone: out of memory (the same candidate would fail
        again), or a lost reporting process (``retry``: the trial is retried)."""
        # Drop every reference to the failed model before freeing the cache.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.fail(trial, reason)
        result.failed += 1
        if not (retry and self.retry_later(trial)):
            self.forget(trial)
        _log.warning("trial %d failed, worker carries on: %s", trial.number, reason)

    def failed_copy(self, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
        return copy.deepcopy(
            self.retry(lambda: self.storage.get_trial(trial_id(trial)), "reading a trial")
        )

    def retry_later(self, trial: optuna.Trial) -> bool:
        """Queues a retry of the failed ``trial`` (same parameters and seed; it resumes from
        the trial's checkpoint), as a stale heartbeat would, within ``[workers] max_retry``.
        False when none is queued (its states are then removed)."""
        get_callback = getattr(self.storage, "get_heartbeat_stale_trial_callback", None)
        callback = get_callback() if get_callback is not None else None
        failed = self.failed_copy(trial)
        if callback is None or len(retried_trials(failed)) >= self.spec.workers.max_retry:
            self.objective.discard_checkpoints(failed)
            return False
        # The retry inherits the user attributes: not the reason this one failed.
        failed.user_attrs.pop(keys.FAIL_REASON, None)
        self.retry(lambda: callback(self.study, failed), f"queueing a retry of {trial.number}")
        return True

    def forget(self, trial: optuna.Trial) -> None:
        """No retry will come: the trial's checkpoints (and its predecessors') go."""
        if self.objective.checkpoints is not None:
            self.objective.discard_checkpoints(self.failed_copy(trial))


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
    tune_process: bool = False,
) -> WorkerResult:
    """Runs trials of ``study`` until the budget is met, ``n_trials`` ran or time is up.

    The process is left as it was found: torch's threads, cuDNN's flag and the signal
    handlers are put back at the end. ``tune_process``: also tune glibc's allocator for
    training, for good (:func:`~depthsearch.worker.process.training_settings`): for processes
    that exist to train, as the CLI's.

    Args:
        budget: stop once the study holds this many finished (complete or pruned) trials,
            counting every worker's; never start a trial that could exceed it.
        n_trials: run this many trials in this call (as ``study.optimize`` counts them).
        timeout: start no new trial after this many seconds.
        device: overrides the spec's ``[train] device``.
        threads: torch CPU threads while it runs (default: the spec's, else torch's).
        data: the spec's windows when the caller already loaded them (moved to the device).

    Raises:
        Interrupted: SIGINT/SIGTERM; the running trial was marked FAIL first.
        DepthsearchError: bad data, device or database.
    """
    torch_device = resolve_device(device or spec.train.device)
    with training_settings(
        torch_device, threads or spec.train.threads, tune_allocator=tune_process
    ):
        return _run_worker(
            study,
            spec,
            storage_url,
            torch_device,
            budget=budget,
            n_trials=n_trials,
            timeout=timeout,
            on_epoch=on_epoch,
            stop=stop,
            data=data,
        )


def _run_worker(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    torch_device: torch.device,
    *,
    budget: int | None,
    n_trials: int | None,
    timeout: float | None,
    on_epoch: Callable[[int, EpochResult], None] | None,
    stop: threading.Event | None,
    data: Windows | None,
) -> WorkerResult:
    # Started first: it imports Optuna while this process loads the data.
    reporting = (
        None if spec.multi_objective else ReportingProcess(spec, storage_url, study.study_name)
    )
    with reporting if reporting is not None else contextlib.nullcontext():
        data = (data or prepare(spec.data, "cpu", seed=spec.seed)).to(torch_device)
        # What the sampler reads at the first suggest, read once before the first reservation
        # (in seconds at 100,000 trials, where Optuna's own first read takes minutes); the
        # reads after it are incremental.
        retry = retry_for(storage_url, spec.workers.db_wait)
        retry(lambda: load_all_trials(study), "reading the study's trials")
        if reporting is not None:
            # Its start-up CPU is spent before training, not on a core training uses. A
            # process that fails to start says why at the first trial.
            reporting.wait_ready(timeout=spec.workers.db_wait + 60.0)
        signals = Signals()
        objective = Objective(
            spec,
            data,
            torch_device,
            retry=retry,
            on_epoch=on_epoch,
            interrupt=signals.check,
            reporting=reporting,
            checkpoints=open_checkpoints(spec, storage_url, study.study_name),
        )
        loop = _Loop(study, spec, storage_url, objective)
        result = WorkerResult()
        started = time.monotonic()
        # Waiting (the budget is held by running trials): look again soon, since the wait usually
        # ends when another worker's last trial does, then back off to every `poll` seconds.
        wait = Backoff(_FIRST_WAIT_S, max(_FIRST_WAIT_S, min(2.0, loop.heartbeat_interval or 2.0)))
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
                if n_trials is not None and result.ran >= n_trials:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
                signals.check()
                match loop.run_one(budget, result):
                    case BudgetMet():
                        break
                    case Wait():
                        signals.sleep(wait.next())
                    case Reserved():
                        wait.reset()
        finally:
            signals.restore()
        return result
