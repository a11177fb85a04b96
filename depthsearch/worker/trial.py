"""A trial's life, in one place, read top to bottom as Optuna's ``_run_trial``.

:meth:`Trials.run_trial`: fail the stale trials of workers that died -> reserve one under the
study's budget -> run it (sample, build, train under a heartbeat, each epoch reported and put
to the pruner before the next starts) -> sort every way it can end into one :class:`Outcome`
-> finish it: write its closing attributes and ``fail_reason``, tell its state, queue it to run
again where that is due, clean its checkpoints, log it. This module is the only writer of a
trial's state and closing attributes; :class:`~depthsearch.worker.writer.Writer` carries the
writes, in order, from a thread of the worker.

Two kinds of "again": a *database call* tried again while the database is away
(:attr:`Trials.call_db`, up to ``[workers] db_wait``), and a *trial* queued to run again
(:meth:`Trials.requeue`: a stopped or killed trial resumes from its checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from depthsearch.errors import DatabaseLost, Interrupted, NonFiniteLossError
from depthsearch.learn.train import EpochResult, History, TrainState
from depthsearch.search import trials as keys
from depthsearch.search.objective import (
    Objective,
    Planned,
    closing_attrs,
    objective_values,
    trial_seed,
)
from depthsearch.search.pruners import RecentTrials
from depthsearch.search.trials import best_trial, metrics_text, retried_trials
from depthsearch.spec import StudySpec
from depthsearch.storage import (
    best_complete,
    drop_retry,
    locked_study,
    retry_for,
    running_without_heartbeat,
)
from depthsearch.storage.trials import (
    fail_stale,
    heartbeat_interval,
    opened_trial,
    rdb_backend_of,
    read_trial,
    record_heartbeat,
    requeue,
    reseed,
    set_failed,
    tell_trial,
    trial_number_id,
    trial_of_id,
    trial_ref,
)
from depthsearch.worker.checkpoints import Checkpoints, TrialCheckpoints
from depthsearch.worker.heartbeat import Heartbeat
from depthsearch.worker.writer import Writer

__all__ = ["BudgetMet", "Finished", "Outcome", "PrunedAt", "Trials", "Wait", "WorkerResult"]

_log = logging.getLogger(__name__)

#: How long a worker that lost the database past db_wait tries to mark its trial FAIL and
#: queue it again before it leaves the trial RUNNING for another worker's stale check.
_ABANDON_WAIT_S = 3.0


@dataclasses.dataclass
class WorkerResult:
    """What one worker did."""

    complete: int = 0
    pruned: int = 0
    failed: int = 0

    @property
    def ran(self) -> int:
        return self.complete + self.pruned + self.failed

    def count(self, state: TrialState) -> None:
        if state == TrialState.COMPLETE:
            self.complete += 1
        elif state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1


@dataclasses.dataclass(frozen=True)
class BudgetMet:
    """The study holds its budget: nothing more to do."""


@dataclasses.dataclass(frozen=True)
class Wait:
    """The budget is held by running trials: one of them may still fail and run again."""


@dataclasses.dataclass(frozen=True)
class Finished:
    """A trial this worker ran and finished (in ``state``; a failure may be queued again)."""

    number: int
    state: TrialState


Step = Finished | BudgetMet | Wait


class PrunedAt(optuna.TrialPruned):
    """The pruner's verdict on ``epoch`` (``pruned_reason`` names it)."""

    def __init__(self, epoch: int, val_loss: float) -> None:
        super().__init__(f"pruned at epoch {epoch} (val_loss={val_loss:.6g})")
        self.epoch = epoch


@dataclasses.dataclass
class Outcome:
    """How a trial's run ended, before anything is written: what :meth:`Trials.finish` tells.

    ``again``: a failure the system caused (a signal): the trial is queued to run again from
    its checkpoint. ``error``: raised once the trial is finished (this worker stops); ``None``:
    the worker goes on. ``taken_over``: another worker ended the trial meanwhile (after an
    outage that cut this one off): nothing is written. ``lost``: the database stayed away past
    ``db_wait`` (:meth:`Trials.abandon`)."""

    state: TrialState
    value: float | tuple[float, ...] | None = None
    reason: str = ""
    again: bool = False
    free_memory: bool = False
    error: BaseException | None = None
    taken_over: bool = False
    lost: bool = False
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def sorted_out(e: BaseException, device: object = "cpu") -> Outcome:
    """The one funnel: every way a trial's run can fail, as an :class:`Outcome`."""
    if isinstance(e, optuna.TrialPruned):
        attrs = {keys.PRUNED_AT_EPOCH: e.epoch} if isinstance(e, PrunedAt) else {}
        return Outcome(TrialState.PRUNED, reason=str(e), attrs=attrs)
    if isinstance(e, NonFiniteLossError):
        return Outcome(TrialState.PRUNED, reason=f"non-finite loss: {e}")
    if isinstance(e, optuna.exceptions.UpdateFinishedTrialError):
        return Outcome(TrialState.FAIL, reason=_one_line(e), taken_over=True)
    if isinstance(e, Interrupted):
        # SIGTERM is the system's (preemption, a time limit, scancel), Ctrl-C the user's:
        # either way the trial runs again from its checkpoint, unless Ctrl-C came twice.
        return Outcome(TrialState.FAIL, reason=str(e), again=True, error=e)
    if isinstance(e, DatabaseLost):
        return Outcome(TrialState.FAIL, reason=str(e), again=True, error=e, lost=True)
    if _is_oom(e):  # this candidate alone: the same one would fail again
        reason = f"out of memory on {device}: {_one_line(e)}"
        return Outcome(TrialState.FAIL, reason=reason, free_memory=True)
    return Outcome(TrialState.FAIL, reason=_one_line(e), error=e)


class Trials:
    """One worker's trials on one study (see the module's docstring)."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StudySpec,
        url: str,
        objective: Objective,
        *,
        writer: Writer,
        checkpoints: Checkpoints | None = None,
        tracker: Any = None,
        for_good: Callable[[], bool] = lambda: False,
        only_waiting: bool = False,
        on_epoch: Callable[[int, EpochResult], None] | None = None,
    ) -> None:
        self.study, self.spec, self.url = study, spec, url
        self.objective = objective
        self.writer = writer
        self.checkpoints = checkpoints
        self.tracker = tracker
        #: Whether the user asked that an interrupted trial be dropped, not resumed.
        self.for_good = for_good
        self.only_waiting = only_waiting  # only queued trials (`confirm --wait`)
        self.on_epoch = on_epoch
        #: Every database call of the worker: tried again while the database is away.
        self.call_db = retry_for(url, spec.workers.db_wait)
        self.heartbeat_interval = heartbeat_interval(study)
        #: The running trial's heartbeat (None: the storage keeps none).
        self.beats = (
            None
            if self.heartbeat_interval is None
            else Heartbeat(record_heartbeat(study), self.heartbeat_interval)
        )
        self.stale = StaleTrials(study, self.heartbeat_interval, spec.workers.grace_period)
        #: (val_loss, number) of the best complete trial last announced in the log.
        self.announced: tuple[float, int] | None = None
        #: The trial whose run again a first Ctrl-C queued (a second one drops it).
        self.resumed: int | None = None
        #: The last trial's task metrics at its best epoch, for its log line.
        self.last_metrics: dict[str, float] = {}
        #: The running trial's checkpoint writer (closed by :meth:`finish`).
        self.saver: TrialCheckpoints | None = None

    # ---- one trial, top to bottom -------------------------------------------------------

    def run_trial(self, budget: int | None) -> Step:
        """Fails stale trials, reserves one, runs it, finishes it.

        Raises:
            Interrupted: after the running trial was finished (FAIL, queued to run again).
            Exception: what the run raised that is not the trial's alone (bad data, a bug,
                the database gone), after the trial was finished.
        """
        reserved = self.call_db(lambda: self.reserve(budget), "reserving a trial")
        if not isinstance(reserved, optuna.Trial):
            return reserved
        outcome = self.run(reserved)
        self.finish(reserved, outcome)
        if outcome.error is not None:
            raise outcome.error
        return Finished(reserved.number, outcome.state)

    def run(self, trial: optuna.Trial) -> Outcome:
        """Samples, builds and trains the trial's candidate under a heartbeat; whatever
        happens, one :class:`Outcome` with the attributes its epochs give."""
        started, history = time.perf_counter(), History()
        tid = trial_ref(trial)
        self.writer.start(tid)
        if self.tracker is not None:
            self.tracker.begin(tid)
        attrs: dict[str, Any] = {}
        resumed_from = 0
        try:
            with self.heartbeat(tid):
                planned = self.objective.plan(trial)
                self.writer.attrs(planned.attrs)
                resume = self.resume(trial, planned, attrs)
                resumed_from = resume.epoch if resume is not None else 0
                epoch_end = self.epoch_end(trial, planned)
                self.saver = self.saver_for(trial, planned)
                attrs.update(
                    self.objective.train(
                        planned,
                        history,
                        on_epoch_end=epoch_end,
                        resume=resume,
                        checkpoint=self.saver,
                    )
                )
            attrs.update(
                closing_attrs(history, self.spec, resumed_from=resumed_from, started=started)
            )
            value = objective_values(self.spec, history, {**planned.attrs, **attrs})
            outcome = Outcome(TrialState.COMPLETE, value=value)
        except (Exception, Interrupted) as e:  # Interrupted is no Exception: Ctrl-C is not
            outcome = sorted_out(e, self.objective.device)
            attrs.update(
                closing_attrs(history, self.spec, resumed_from=resumed_from, started=started)
            )
        outcome.attrs = {**attrs, **outcome.attrs}
        self.last_metrics = history.best.metrics if history.best is not None else {}
        return outcome

    def finish(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Writes the closing attributes and ``fail_reason``, tells the state, queues the
        trial to run again where due, removes the checkpoints nothing will read, and logs it
        by state: the one place a trial ends."""
        if outcome.state == TrialState.FAIL and outcome.free_memory:
            gc.collect()  # every reference to the failed model first
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        if not outcome.lost and not outcome.taken_over:
            try:
                self.writer.attrs({**outcome.attrs, **self.reason_attrs(outcome)})
                # Told (with the writer's last batch) before its checkpoints go: another
                # worker's stale check may have ended it meanwhile (its retry resumes from them).
                outcome.taken_over = not self.tell(trial, outcome.state, outcome.value)
            except optuna.exceptions.UpdateFinishedTrialError:
                outcome.taken_over = True
            except DatabaseLost as e:
                outcome.lost, outcome.error, outcome.reason = True, e, str(e)
        self.close_saver(keep_last=outcome.again or outcome.lost or outcome.taken_over)
        if outcome.lost:
            self.abandon(trial, outcome)
            return
        if outcome.taken_over:
            _log.warning(
                "trial %d was taken over by another worker (this one could not reach the "
                "database in time); its run again resumes it: carrying on",
                trial.number,
            )
            return
        by_user = isinstance(outcome.error, Interrupted) and outcome.error.signum == signal.SIGINT
        dropped = by_user and self.for_good()
        queued = False
        if outcome.again and not dropped:
            # The user's stop runs again whatever [workers] max_retry says (it bounds failures).
            queued = self.requeue(trial, bounded=not by_user)
            self.resumed = trial.number if queued and by_user else None
        if not queued:
            self.forget(read_trial(trial))
        self.log(trial, outcome, queued=queued, by_user=by_user, dropped=dropped)

    # ---- the steps ----------------------------------------------------------------------

    def reserve(self, budget: int | None) -> optuna.Trial | BudgetMet | Wait:
        """Checks the budget and creates the trial (or takes a queued one) under the
        study's lock, nothing more: the database counts (no trial is read), and on
        PostgreSQL everything runs in the lock's own transaction. The search's trials
        (finished, running, queued) never pass ``n_trials``; confirmations come on top."""
        with locked_study(self.study, self.url, first=self.stale.check) as locked:
            finished = None
            if budget is not None:
                counts = locked.counts()
                finished = counts.search_finished
                if not counts.waiting and (self.only_waiting or counts.search_alive >= budget):
                    return Wait() if counts.running else BudgetMet()
            new_id = locked.take_waiting()
            if new_id is None:
                if self.only_waiting:  # `confirm --wait`: nothing queued is left
                    return BudgetMet()
                new_id = locked.create()
            if self.beats is not None:
                locked.beat(new_id)
        if finished is not None and budget is not None:
            self.announce_best(finished, budget)
        trial = opened_trial(self.study, new_id)
        # Trial k samples from a random state seeded by the study's seed and k (the seed it
        # trains with): one worker draws the same candidates run after run.
        reseed(self.study, trial_seed(self.spec.seed, read_trial(trial)))
        return trial

    def epoch_end(
        self, trial: optuna.Trial, planned: Planned
    ) -> Callable[[EpochResult, History], None]:
        """What each epoch's end does: its report handed to the writer, the pruner asked
        (before the next epoch starts: a pruned trial never trains past its verdict)."""
        prunes = (
            not planned.confirm
            and not self.spec.multi_objective
            and not isinstance(self.study.pruner, optuna.pruners.NopPruner)
        )
        tid = trial_ref(trial)
        view: FrozenTrial | None = None  # the trial as the pruner reads it, built once

        def end(result: EpochResult, history: History) -> None:
            nonlocal view
            self.writer.check()  # the database gone, or the trial ended elsewhere
            read = {keys.VAL_LOSS_SE: result.val_loss_se}
            if "val_accuracy" in result.metrics:
                read["val_accuracy"] = result.metrics["val_accuracy"]
            last = {"epoch": result.epoch, **read}
            self.writer.epoch(result.epoch, result.val_loss, {keys.LAST_EPOCH: last})
            if self.tracker is not None:
                numbers = {"val_loss": result.val_loss, "train_loss": result.train_loss}
                self.tracker.epoch(tid, result.epoch, {**numbers, **result.metrics})
            if self.on_epoch is not None:
                self.on_epoch(trial.number, result)
            if not prunes:
                return
            view = view or _as_known(trial, {}, {})
            view.user_attrs = {**planned.attrs, keys.LAST_EPOCH: last}
            view.intermediate_values = {e.epoch: e.val_loss for e in history.epochs}
            if self.prune(trial, view):
                raise PrunedAt(result.epoch, result.val_loss)

        return end

    def prune(self, trial: optuna.Trial, view: FrozenTrial) -> bool:
        """The pruner's verdict on the trial as this worker knows it (``view``: its curve,
        its noise), against the others' as the pruner's list holds them (refreshed at most
        every 2 s, with this worker's own trials added as told): no read of the trial. A
        pruner that keeps its own state in the storage (successive halving, Hyperband) gets
        the written trial."""
        pruner = self.study.pruner
        if isinstance(
            pruner, (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)
        ):
            self.writer.flush()
            return bool(self.call_db(trial.should_prune, "asking the pruner"))
        return bool(self.call_db(lambda: pruner.prune(self.study, view), "asking the pruner"))

    def resume(
        self, trial: optuna.Trial, planned: Planned, attrs: dict[str, Any]
    ) -> TrainState | None:
        """For a trial that runs a failed one again: that trial's last state (or None), with
        what it cost in ``attrs``."""
        retried = retried_trials(read_trial(trial))
        if not retried:
            return None
        failed = self.call_db(
            lambda: trial_of_id(self.study, trial_number_id(self.study, retried[-1])),
            "reading the failed trial",
        )
        state: TrainState | None = None
        source: int | None = None
        note: str | None = "checkpoints are off ([workers] checkpoints)"
        if self.checkpoints is not None:
            found = self.checkpoints.resume(retried, dict(trial.params), planned.seed)
            state, source, note = found.state, found.source, found.note
        if state is not None:
            _log.info(
                "trial %d resumes trial %d from its epoch %d", trial.number, source, state.epoch
            )
        else:
            attrs[keys.RESUME_NOTE] = note
            _log.warning("trial %d starts over: %s", trial.number, note)
        resumed_from = state.epoch if state is not None else 0
        attrs[keys.RESUMED_FROM_EPOCH] = resumed_from
        reached = max(failed.intermediate_values, default=0)
        attrs[keys.EPOCHS_LOST] = max(0, int(reached) - resumed_from)
        return state

    def heartbeat(self, tid: int) -> contextlib.AbstractContextManager[object]:
        if self.beats is None:
            return contextlib.nullcontext()
        return self.beats.beating(tid)

    def close(self) -> None:
        """Stops the heartbeat's thread (the worker is done)."""
        if self.beats is not None:
            self.beats.close()

    @staticmethod
    def reason_attrs(outcome: Outcome) -> dict[str, Any]:
        if outcome.state == TrialState.FAIL:
            return {keys.FAIL_REASON: outcome.reason}
        if outcome.state == TrialState.PRUNED:
            return {keys.PRUNED_REASON: outcome.reason}
        return {}

    def tell(
        self,
        trial: optuna.Trial,
        state: TrialState,
        value: float | tuple[float, ...] | None,
        *,
        call_db: Callable[[Callable[[], Any], str], Any] | None = None,
        written: bool = True,
    ) -> bool:
        """Ends ``trial`` in ``state``; False when another worker's stale check had ended it
        (taken over: its run again is queued). ``written``: the end goes with the writer's
        last batch, and the trial is told as this worker knows it, without a read first;
        else through the storage, after a read."""

        def do() -> TrialState:
            # Skipped when finished: another worker's stale check may have ended it already,
            # or a tell tried again whose first attempt reached the database.
            told = None if state == TrialState.COMPLETE else state  # COMPLETE: Optuna checks
            known = self.as_known(trial)
            if written:
                ended = tell_trial(self.study, trial, told, value, known, self.writer.end)
            else:
                ended = tell_trial(self.study, trial, told, value)
            if ended == TrialState.COMPLETE and isinstance(self.study.pruner, RecentTrials):
                known.state = ended
                known.values = (
                    None if value is None else list(value) if isinstance(value, tuple) else [value]
                )
                self.study.pruner.finished(known)  # counted from now on
            return ended

        ended = (call_db or self.call_db)(do, f"saving trial {trial.number}")
        if self.tracker is not None:
            self.tracker.end(trial_ref(trial))
        return bool(ended == state)

    def as_known(self, trial: optuna.Trial) -> FrozenTrial:
        """The running trial as the database holds it once the writer flushed, built from
        what this worker read and wrote, not read back."""
        read = read_trial(trial)
        values, attrs = self.writer.handed()
        return _as_known(
            trial,
            {**read.user_attrs, **attrs},
            {**read.intermediate_values, **values},
            system_attrs=read.system_attrs,
        )

    def requeue(
        self,
        trial: optuna.Trial,
        *,
        bounded: bool = True,
        call_db: Callable[[Callable[[], Any], str], Any] | None = None,
    ) -> bool:
        """Queues the failed ``trial`` to run again (same parameters and seed; it resumes
        from its checkpoint), within ``[workers] max_retry`` when ``bounded``. False when
        none is queued."""
        call = call_db or self.call_db
        failed = call(lambda: trial_of_id(self.study, trial_ref(trial)), "reading a trial")
        if bounded and len(retried_trials(failed)) >= self.spec.workers.max_retry:
            return False
        failed.user_attrs.pop(keys.FAIL_REASON, None)  # not the next one's
        return bool(
            call(lambda: requeue(self.study, failed), f"queueing trial {trial.number} again")
        )

    def saver_for(self, trial: optuna.Trial, planned: Planned) -> TrialCheckpoints | None:
        """The trial's checkpoint writer (None when checkpoints are off)."""
        if self.checkpoints is None:
            return None
        return self.checkpoints.for_trial(trial.number, dict(trial.params), planned.seed)

    def close_saver(self, *, keep_last: bool) -> None:
        """Waits for the trial's checkpoint writes; with ``keep_last`` (the trial is to run
        again: stopped, cut off from the database, or taken over), the state held back too,
        before the trial is queued again: its run again resumes from its last epoch."""
        saver, self.saver = self.saver, None
        if saver is not None:
            saver.close(keep_last=keep_last)

    def forget(self, trial: FrozenTrial) -> None:
        """Nothing will run the trial again: its checkpoints (and its predecessors') go."""
        if self.checkpoints is not None:
            self.checkpoints.remove([*retried_trials(trial), trial.number])

    def abandon(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """The one rule for a database away past ``db_wait``: the trial is to run again from
        its checkpoints, which are kept. One short try (a few seconds) marks it FAIL and
        queues it; if the database is still away, the trial is left RUNNING with its
        heartbeat stopped, and the next worker to reach the database fails it as stale and
        queues the same. Either way the worker then exits (exit 1)."""
        quick = retry_for(self.url, min(_ABANDON_WAIT_S, self.spec.workers.db_wait))
        try:
            failed = quick(
                lambda: set_failed(self.study, trial_ref(trial), outcome.reason, keys.FAIL_REASON),
                "failing",
            )
            if not failed:  # another worker's stale check ended it and queued its run again
                _log.warning(
                    "trial %d was taken over by another worker during the outage; its run "
                    "again resumes from its checkpoint",
                    trial.number,
                )
                return
            self.tell(trial, TrialState.FAIL, None, call_db=quick, written=False)
            queued = self.requeue(trial, bounded=False, call_db=quick)
        except (DatabaseLost, optuna.exceptions.UpdateFinishedTrialError):
            _log.warning(
                "trial %d left RUNNING: the next worker to reach the database fails it as "
                "stale and runs it again from its checkpoint",
                trial.number,
            )
            return
        _log.warning(
            "trial %d marked FAIL after the outage%s",
            trial.number,
            "; its run again resumes from its checkpoint" if queued else "",
        )

    def drop_resumed(self) -> None:
        """Ctrl-C twice, the second after the first's trial was finished: its queued run
        again is dropped too, as the second Ctrl-C says (one rule, whatever the gap)."""
        if self.resumed is None:
            return
        number, self.resumed = self.resumed, None
        reason = f"dropped: Ctrl-C twice (the run again of trial {number})"
        if self.call_db(lambda: drop_retry(self.study, number, reason), "dropping a run again"):
            tid = trial_number_id(self.study, number)
            self.forget(trial_of_id(self.study, tid))
            _log.warning("trial %d dropped (Ctrl-C twice): it does not run again", number)

    def log(
        self, trial: optuna.Trial, outcome: Outcome, *, queued: bool, by_user: bool, dropped: bool
    ) -> None:
        if outcome.state == TrialState.COMPLETE:
            value = outcome.value
            if isinstance(value, tuple):
                names = self.spec.objectives
                shown = ", ".join(f"{n}={v:.6g}" for n, v in zip(names, value, strict=True))
            else:
                shown = f"val_loss={value:.6g}{metrics_text(self.last_metrics)}"
            _log.info("trial %d complete: %s", trial.number, shown)
            return
        if outcome.state == TrialState.PRUNED:
            _log.info("trial %d %s", trial.number, outcome.reason)
            return
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

    def announce_best(self, finished: int, budget: int) -> None:
        """Logs the search's best trial when it changed (every worker's count)."""
        if self.spec.multi_objective:
            return
        if rdb_backend_of(self.study) is not None:
            best = best_complete(self.study)
        else:
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


def _as_known(
    trial: optuna.Trial,
    attrs: dict[str, Any],
    intermediate: dict[int, float],
    system_attrs: dict[str, Any] | None = None,
) -> FrozenTrial:
    """Running ``trial`` as this worker knows it, numbered as in the study (a pruner keys on
    it)."""
    known = optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params=dict(trial.params),
        distributions=dict(trial.distributions),
        user_attrs=attrs,
        system_attrs=system_attrs,
        intermediate_values=intermediate,
    )
    known.number = trial.number
    return known


class StaleTrials:
    """Trials whose worker died: failed, and queued to run again, by whichever worker looks
    next; at most once per heartbeat ``interval`` (``None``: no heartbeats, nothing to do)."""

    def __init__(self, study: optuna.Study, interval: float | None, grace_period: int) -> None:
        self.study = study
        self.interval = interval
        self.grace_period = grace_period
        self._checked = -float("inf")
        #: RUNNING trials with no heartbeat yet: trial id -> when this worker first saw them.
        self._unbeaten: dict[int, float] = {}

    def check(self) -> None:
        """Optuna's stale-heartbeat check, and the trials that never beat."""
        now = time.monotonic()
        if self.interval is None or now - self._checked < self.interval:
            return
        fail_stale(self.study)
        self.fail_unbeaten(now)
        self._checked = now

    def fail_unbeaten(self, now: float) -> None:
        """Fails RUNNING trials whose worker died before their first heartbeat (Optuna's
        check skips them). A worker's trial has its first heartbeat from its reservation
        on, so a trial seen without one at two checks ``grace_period`` apart has lost its
        worker (or was made by another program). Timed on this worker's clock only."""
        ids = running_without_heartbeat(self.study)
        if ids is None:
            return
        self._unbeaten = {i: self._unbeaten.get(i, now) for i in ids}
        for unbeaten_id, first_seen in self._unbeaten.items():
            if now - first_seen < self.grace_period:
                continue
            reason = "its worker stopped before the first heartbeat"
            if not set_failed(self.study, unbeaten_id, reason, keys.FAIL_REASON):
                continue  # its worker, or another one, ended it meanwhile
            failed = trial_of_id(self.study, unbeaten_id)
            _log.warning(
                "trial %d marked FAIL: RUNNING for over %ds without a heartbeat",
                failed.number,
                self.grace_period,
            )
            requeue(self.study, failed)
