"""A study's reservation: the budget's counts and the trial a worker takes, under one lock."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import optuna
import sqlalchemy
from optuna.trial import TrialState

from depthsearch._optuna import rdb_backend, study_id, study_storage, tables
from depthsearch.search.confirm import CONFIRM_TRIALS
from depthsearch.storage import locks
from depthsearch.storage.reads import trial_counts
from depthsearch.storage.urls import dialect, parse

__all__ = ["BudgetCounts", "LockedStudy", "locked_study", "take_waiting_trial"]


@dataclasses.dataclass(frozen=True)
class BudgetCounts:
    """What the budget check needs: trials finished (complete + pruned), running, waiting,
    and the confirmation trials enqueued (they do not count against the budget)."""

    finished: int
    running: int
    waiting: int
    confirmations: int = 0


class LockedStudy:
    """A study under its reservation lock: the budget's count, and the trial a worker takes.

    On PostgreSQL everything runs in the lock's own transaction, on the one connection that
    holds it, in three round trips once it is granted (with the study's row, locked as Optuna
    locks it to number a trial): one count, one insert (or a waiting trial taken), and the
    commit that makes the trial visible and frees the lock. The count reads the RUNNING,
    WAITING and FAIL trials and the highest trial number by index
    (:func:`depthsearch.storage.add_indexes`), not every trial, so the lock is held as briefly
    at 100,000 trials as at 1,000. Trial numbers are 0, 1, 2, ... in order of creation: the
    next is the highest plus one. Elsewhere (SQLite) each step is a transaction of its own
    under the file lock, through Optuna's API.
    """

    def __init__(self, study: optuna.Study, conn: sqlalchemy.Connection | None) -> None:
        self._study = study
        self._conn = conn
        self._id = study_id(study)
        self._next_number: int | None = None
        self._waiting: int | None = None

    def counts(self) -> BudgetCounts:
        """The budget's counts, by the database (no trial is read)."""
        if self._conn is None:
            counted = trial_counts(self._study)
            if counted is None:
                trials = self._study.get_trials(deepcopy=False)
                counted = {s: sum(t.state == s for t in trials) for s in TrialState}
            attrs = study_storage(self._study).get_study_user_attrs(self._id)
            return BudgetCounts(
                finished=counted[TrialState.COMPLETE] + counted[TrialState.PRUNED],
                running=counted[TrialState.RUNNING],
                waiting=counted[TrialState.WAITING],
                confirmations=int(attrs.get(CONFIRM_TRIALS, 0)),
            )
        total, running, waiting, failed, added = tables.reservation_counts(
            self._conn, self._id, CONFIRM_TRIALS
        )
        self._next_number, self._waiting = total, waiting
        return BudgetCounts(
            finished=total - running - waiting - failed,
            running=running,
            waiting=waiting,
            confirmations=added,
        )

    def take_waiting(self) -> int | None:
        """The oldest WAITING trial (enqueued, or a retry), set RUNNING; ``None`` if none."""
        if self._conn is None:
            return take_waiting_trial(self._study)
        if self._waiting == 0:
            return None  # counted under this lock: none
        return tables.take_oldest_waiting(self._conn, self._id)

    def create(self) -> int:
        """A new RUNNING trial's id, numbered after the study's last."""
        if self._conn is None:
            return study_storage(self._study).create_new_trial(self._id)
        if self._next_number is None:
            self.counts()
        assert self._next_number is not None  # counts() sets it on this path
        return tables.insert_running(self._conn, self._id, self._next_number)


@contextlib.contextmanager
def locked_study(study: optuna.Study, url: str) -> Iterator[LockedStudy]:
    """The study's reservation lock (one per study, shared by every worker on any machine);
    what is done through the :class:`LockedStudy` is committed when the block ends."""
    backend = rdb_backend(study_storage(study))
    if backend is not None and dialect(parse(url)) == "postgresql":
        key, row = locks.lock_key(study.study_name), study_id(study)
        with locks.advisory_lock(backend.engine, key, study_row=row) as conn:
            yield LockedStudy(study, conn)
    else:
        with locks.storage_lock(url, scope=study.study_name):
            yield LockedStudy(study, None)


def take_waiting_trial(study: optuna.Study) -> int | None:
    """Sets the study's oldest WAITING trial (an enqueued or retried one) RUNNING and returns
    its id; ``None`` when none is waiting. Read by id alone: no trial is loaded."""
    backend = rdb_backend(study_storage(study))
    if backend is None:
        return None
    with backend.engine.connect() as conn:
        waiting = tables.waiting_ids(conn, study_id(study))
    storage = study_storage(study)
    for trial_id in waiting:
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None
