"""The worker loop: reserve a trial under the budget, train it with heartbeats, tell the result.

Many workers (processes, GPUs, machines) can run this loop on one study. The budget check and the
trial's creation happen under one lock per study, so the study never holds more finished,
running and waiting trials than ``[study] n_trials``; a worker with nothing to reserve waits
while others run, ready to take over a trial whose worker died.

One trial reads top to bottom as in Optuna's ``_run_trial`` (`TrialLoop.run_one`): fail stale
trials -> reserve -> run (the objective under a heartbeat; every ending sorted into one
:class:`Outcome`) -> finish (tell, queue a retry, remove checkpoints, log by state: one place).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any, cast

import optuna
import torch
from optuna.trial import TrialState

from depthsearch.errors import DatabaseLost, Interrupted
from depthsearch.search import trials as keys
from depthsearch.search.compat import (
    asked_trial,
    frozen_trial,
    seed_sampler,
    study_storage,
    trial_id,
)
from depthsearch.search.objective import trial_seed
from depthsearch.search.trials import best_trial, metrics_text, retried_trials
from depthsearch.spec import StudySpec
from depthsearch.storage import (
    best_complete,
    dialect_of,
    drop_retry,
    locked_study,
    rdb_backend,
    retry_for,
)
from depthsearch.worker._outcomes import (
    BudgetMet,
    Finished,
    Outcome,
    Reservation,
    Reserved,
    Step,
    Wait,
    WorkerResult,
)
from depthsearch.worker.checkpoints import Checkpoints
from depthsearch.worker.heartbeat import Heartbeat, HeartbeatStorage
from depthsearch.worker.reporting import ReportingProcessLost
from depthsearch.worker.stale import StaleTrials, retry_callback

__all__ = ["BudgetMet", "Finished", "Outcome", "Reserved", "TrialLoop", "Wait", "WorkerResult"]

_log = logging.getLogger(__name__)

#: How long a worker that lost the database past db_wait tries to mark its trial FAIL and
#: queue its retry before it leaves the trial RUNNING for another worker's stale check.
_ABANDON_WAIT_S = 3.0


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


class TrialLoop:
    """One worker's trials on one study: reserve, run, finish (see the module's docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        storage_url: str,
        objective: Callable[[optuna.Trial], float | tuple[float, ...]],
        *,
        device: torch.device | str = "cpu",
        checkpoints: Checkpoints | None = None,
        for_good: Callable[[], bool] = lambda: False,
        only_waiting: bool = False,
        told: Callable[[int], None] | None = None,
    ) -> None:
        self.study = study
        self.spec = spec
        self.url = storage_url
        self.objective = objective
        self.device = device
        self.checkpoints = checkpoints
        #: Whether the user asked that an interrupted trial be dropped, not resumed.
        self.for_good = for_good
        self.only_waiting = only_waiting  # only queued trials (`confirm --wait`), no new one
        #: Hears each trial's id once its end is in the study (the tracker ends its run).
        self.told = told
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
        self.stale = StaleTrials(study, self.heartbeat_interval, spec.workers.grace_period)
        #: The trial whose resumption a first Ctrl-C queued (a second one drops it).
        self.resumed: int | None = None

    # ---- one trial, top to bottom -----------------------------------------------------

    def run_one(self, budget: int | None) -> Step:
        """Fails stale trials, reserves one, runs it with a heartbeat, finishes it.

        Raises:
            Interrupted: after the running trial was finished (FAIL, its resumption queued).
            Exception: what the objective raised that is not the trial's alone (bad data, a
                bug), after the trial was finished FAIL.
        """
        reservation = self.retry(lambda: self.reserve(budget), "reserving a trial")
        if not isinstance(reservation, Reserved):
            return reservation
        trial = reservation.trial
        outcome = self.run(trial)
        self.finish(trial, outcome)
        if outcome.error is not None:
            raise outcome.error
        return Finished(trial.number, outcome.state)

    def run(self, trial: optuna.Trial) -> Outcome:
        """The objective under a heartbeat; every way it can end, as an :class:`Outcome` (the
        one place exceptions of a trial are sorted)."""
        try:
            with self.heartbeat(trial):
                value = self.objective(trial)
        except optuna.TrialPruned as e:
            return Outcome(TrialState.PRUNED, reason=str(e))
        except optuna.exceptions.UpdateFinishedTrialError as e:
            return Outcome(TrialState.FAIL, reason=_one_line(e), taken_over=True)
        except Interrupted as e:
            # SIGTERM is the system's (preemption, a time limit, an eviction, scancel), Ctrl-C
            # the user's: either way the next run or worker of the study resumes the trial
            # from its checkpoint, unless Ctrl-C came twice (`finish`).
            return Outcome(TrialState.FAIL, reason=str(e), retry=True, error=e)
        except DatabaseLost as e:
            # Away past [workers] db_wait: one rule (see `finish`), then this worker exits.
            return Outcome(TrialState.FAIL, reason=str(e), retry=True, error=e, lost=True)
        except ReportingProcessLost as e:
            # Killed from outside, or by the OOM killer: a new one takes over.
            return Outcome(TrialState.FAIL, reason=str(e), retry=True, free_memory=True)
        except Exception as e:
            if _is_oom(e):  # this candidate alone: the same one would fail again
                reason = f"out of memory on {self.device}: {_one_line(e)}"
                return Outcome(TrialState.FAIL, reason=reason, free_memory=True)
            return Outcome(TrialState.FAIL, reason=_one_line(e), error=e)
        return Outcome(TrialState.COMPLETE, value=value)

    def finish(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Tells the outcome, queues a retry where one is due, removes the checkpoints no
        retry will read, and logs the trial by state: the one place a trial ends."""
        if outcome.lost:
            self.abandon(trial, outcome)
            return
        taken_over = outcome.taken_over
        if outcome.state == TrialState.FAIL and not taken_over:
            if outcome.free_memory:
                # Drop every reference to the failed model before freeing the cache.
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            try:
                self.retry(
                    lambda: trial.set_user_attr(keys.FAIL_REASON, outcome.reason),
                    "saving a failure",
                )
            except optuna.exceptions.UpdateFinishedTrialError:  # ended elsewhere meanwhile
                taken_over = True
        if taken_over:
            _log.warning(
                "trial %d was taken over by another worker (this one could not reach the "
                "database in time); its retry resumes it: carrying on",
                trial.number,
            )
            return
        queued = False
        by_user = isinstance(outcome.error, Interrupted) and outcome.error.signum == signal.SIGINT
        dropped = by_user and self.for_good()
        self.tell(trial, outcome.state, outcome.value)
        if outcome.retry and not dropped:
            # The user's stop is resumed whatever [workers] max_retry says (it bounds failures).
            queued = self.retry_later(trial, bounded=not by_user)
            self.resumed = trial.number if queued and by_user else None
        if not queued:
            self.forget(trial)
        if outcome.state == TrialState.COMPLETE:
            value = outcome.value
            if isinstance(value, tuple):
                shown = ", ".join(
                    f"{n}={v:.6g}" for n, v in zip(self.spec.objectives, value, strict=True)
                )
            else:
                shown = f"val_loss={value:.6g}"
                # A classification's accuracy and macro-F1 at the best epoch.
                shown += metrics_text(getattr(self.objective, "last_metrics", {}))
            _log.info("trial %d complete: %s", trial.number, shown)
        elif outcome.state == TrialState.PRUNED:
            _log.info("trial %d %s", trial.number, outcome.reason)
        else:
            if queued:
                then = (
                    "; the next run or worker of the study resumes it (Ctrl-C twice: drop it)"
                    if by_user
                    else "; the next worker retries it"
                )
            else:
                then = "; dropped (Ctrl-C twice)" if dropped else ""
            _log.warning(
                "trial %d %s: %s%s",
                trial.number,
                "failed, worker carries on" if outcome.error is None else "marked FAIL",
                outcome.reason,
                then,
            )

    def drop_resumed(self) -> None:
        """Ctrl-C twice, the second after the first's trial was finished: its queued
        resumption is dropped too, as the second Ctrl-C says (one rule, whatever the gap)."""
        if self.resumed is None:
            return
        number, self.resumed = self.resumed, None
        reason = f"dropped: Ctrl-C twice (the resumption of trial {number})"
        if self.retry(lambda: drop_retry(self.study, number, reason), "dropping a retry"):
            self.forget_number(number)
            _log.warning("trial %d dropped (Ctrl-C twice): its resumption is not queued", number)

    def abandon(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """The one rule for a database away past ``db_wait``: the trial is to be retried from
        its checkpoints, which are kept. One short try (a few seconds) marks it FAIL and
        queues its retry; if the database is still away, the trial is left RUNNING with its
        heartbeat stopped, and the next worker to reach the database fails it as stale and
        queues the same retry. Either way the worker then exits (exit 1)."""
        quick = retry_for(self.url, min(_ABANDON_WAIT_S, self.spec.workers.db_wait))
        try:
            quick(lambda: trial.set_user_attr(keys.FAIL_REASON, outcome.reason), "failing")
            self.tell(trial, TrialState.FAIL, None, retry=quick)
            queued = self.retry_later(trial, bounded=False, retry=quick)
        except (DatabaseLost, optuna.exceptions.UpdateFinishedTrialError):
            _log.warning(
                "trial %d left RUNNING: the next worker to reach the database fails it as "
                "stale and retries it from its checkpoint",
                trial.number,
            )
            return
        _log.warning(
            "trial %d marked FAIL after the outage%s",
            trial.number,
            "; its retry resumes from its checkpoint" if queued else "",
        )

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
            self.stale.check()
        with locked_study(self.study, self.url) as locked:
            if self.dialect != "postgresql":
                self.stale.check()
            finished = None
            if budget is not None:
                counts = locked.counts()
                finished = counts.search_finished
                # Confirmations come on top of the search's budget; what is queued (a
                # confirmation, a retry) is taken first; a new trial only within the budget.
                if not counts.waiting and (self.only_waiting or counts.search_alive >= budget):
                    return Wait() if counts.running else BudgetMet()
            new_id = locked.take_waiting()
            if new_id is None:
                if self.only_waiting:  # `confirm --wait`: nothing queued is left
                    return BudgetMet()
                new_id = locked.create()
        if finished is not None and budget is not None:
            self.announce_best(finished, budget)
        trial = asked_trial(self.study, new_id)
        # Trial k samples from a random state seeded by the study's seed and k (the seed it
        # trains with): one worker draws the same candidates run after run, a resumed study
        # or another worker draws new ones.
        seed_sampler(self.study.sampler, trial_seed(self.spec.seed, trial))
        return Reserved(trial)

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
        *,
        retry: Callable[[Callable[[], Any], str], Any] | None = None,
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

        (retry or self.retry)(do, f"saving trial {trial.number}")
        if self.told is not None:
            self.told(trial_id(trial))

    def failed_copy(
        self, trial: optuna.Trial, retry: Callable[[Callable[[], Any], str], Any] | None = None
    ) -> optuna.trial.FrozenTrial:
        read = retry or self.retry
        got: optuna.trial.FrozenTrial = read(
            lambda: self.storage.get_trial(trial_id(trial)), "reading a trial"
        )
        return copy.deepcopy(got)

    def retry_later(
        self,
        trial: optuna.Trial,
        *,
        bounded: bool = True,
        retry: Callable[[Callable[[], Any], str], Any] | None = None,
    ) -> bool:
        """Queues a retry of the failed ``trial`` (same parameters and seed; it resumes from
        the trial's checkpoint), as a stale heartbeat would, within ``[workers] max_retry``
        when ``bounded``. False when none is queued (its states are then removed)."""
        callback = retry_callback(self.storage)
        if callback is None:
            return False
        failed = self.failed_copy(trial, retry)
        if bounded and len(retried_trials(failed)) >= self.spec.workers.max_retry:
            return False
        # The retry inherits the user attributes: not the reason this one failed.
        failed.user_attrs.pop(keys.FAIL_REASON, None)
        (retry or self.retry)(
            lambda: callback(self.study, failed), f"queueing a retry of {trial.number}"
        )
        return True

    def forget(self, trial: optuna.Trial) -> None:
        """No retry will come: the trial's checkpoints (and its predecessors') go. The retry
        history is the trial's own, as ``ask`` read it."""
        if self.checkpoints is not None:
            self.checkpoints.remove([*retried_trials(frozen_trial(trial)), trial.number])

    def forget_number(self, number: int) -> None:
        """As :meth:`forget`, for a finished trial known by its number."""
        if self.checkpoints is None:
            return
        found = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        history = next((retried_trials(t) for t in found if t.number == number), [])
        self.checkpoints.remove([*history, number])
